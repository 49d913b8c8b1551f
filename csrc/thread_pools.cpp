#include "thread_pools.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace lmfast {

namespace {

// Looked up through the backend registry, as llama-bench does, so that it also works when the
// CPU backend is a dynamically loaded variant.
template <typename F>
F * cpu_proc(const char * name) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!dev) return nullptr;
    return reinterpret_cast<F *>(ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name));
}

// In the module that holds ggml_threadpool_new: this extension when ggml is linked in, the
// loaded CPU variant in a portable build.
template <typename F>
F * cpu_module_symbol(const char * name) {
#if defined(__unix__) || defined(__APPLE__)
    void * anchor = reinterpret_cast<void *>(cpu_proc<decltype(ggml_threadpool_new)>("ggml_threadpool_new"));
    Dl_info info;
    if (!anchor || !dladdr(anchor, &info) || !info.dli_fname) return nullptr;
    void * module = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!module) return nullptr;
    void * sym = dlsym(module, name);
    dlclose(module);  // only drops the reference RTLD_NOLOAD took: ggml keeps the module loaded
    return reinterpret_cast<F *>(sym);
#else
    (void) name;
    return nullptr;
#endif
}

using PoolFn = void(ggml_threadpool *);

// The registry lists ggml_threadpool_free but not _pause and _resume (through it alone, pausing
// was a silent no-op): what it lacks is found beside ggml_threadpool_new. Looked up once, since
// the engine pauses its pools every time it goes idle.
PoolFn * pool_fn(const char * name) {
    if (auto * fn = cpu_proc<PoolFn>(name)) return fn;
    return cpu_module_symbol<PoolFn>(name);
}

struct PoolFns {
    PoolFn * free = pool_fn("ggml_threadpool_free");
    PoolFn * pause = pool_fn("ggml_threadpool_pause");
    PoolFn * resume = pool_fn("ggml_threadpool_resume");
};

const PoolFns & pool_fns() {
    static const PoolFns fns;
    return fns;
}

void call(PoolFn * fn, ggml_threadpool * tp) {
    if (fn && tp) fn(tp);
}

}  // namespace

ThreadPools::~ThreadPools() {
    for (auto & [n, tp] : pools_) call(pool_fns().free, tp);
}

ggml_threadpool * ThreadPools::pool(int32_t n) {
    auto it = pools_.find(n);
    if (it != pools_.end()) return it->second;
    ggml_threadpool * tp = nullptr;
    if (auto * fn = cpu_proc<decltype(ggml_threadpool_new)>("ggml_threadpool_new")) {
        ggml_threadpool_params tpp = ggml_threadpool_params_default(n);
        tp = fn(&tpp);
    }
    pools_[n] = tp;
    return tp;
}

void ThreadPools::use(llama_context * ctx, int32_t n, int32_t n_batch) {
    llama_set_n_threads(ctx, n, n_batch);
    if (n == n_ && n_batch == n_batch_) return;
    ggml_threadpool * tp = pool(n);
    ggml_threadpool * tp_batch = pool(n_batch);
    for (const int32_t old : {n_, n_batch_}) {
        if (old != 0 && old != n && old != n_batch) call(pool_fns().pause, pools_[old]);
    }
    call(pool_fns().resume, tp);
    call(pool_fns().resume, tp_batch);
    n_ = n;
    n_batch_ = n_batch;
    attach(ctx);
}

void ThreadPools::idle() const {
    if (n_ == 0) return;
    call(pool_fns().pause, pools_.at(n_));
    if (n_batch_ != n_) call(pool_fns().pause, pools_.at(n_batch_));
}

void ThreadPools::attach(llama_context * ctx) const {
    if (n_ == 0) return;
    ggml_threadpool * tp = pools_.at(n_);
    ggml_threadpool * tp_batch = pools_.at(n_batch_);
    if (tp) llama_attach_threadpool(ctx, tp, tp_batch == tp ? nullptr : tp_batch);
}

}  // namespace lmfast
