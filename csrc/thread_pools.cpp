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

// The registry lists ggml_threadpool_new and _free but not _pause and _resume, so through it
// those two were no-ops. They are exported beside _new in the same module (this extension
// when ggml is linked in, the loaded CPU variant in a portable build): found from there.
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

void call(const char * name, ggml_threadpool * tp) {
    if (!tp) return;
    if (auto * fn = cpu_proc<void(ggml_threadpool *)>(name)) fn(tp);
}

void pause(ggml_threadpool * tp) {
    static auto * fn = cpu_module_symbol<void(ggml_threadpool *)>("ggml_threadpool_pause");
    if (tp && fn) fn(tp);
}

void resume(ggml_threadpool * tp) {
    static auto * fn = cpu_module_symbol<void(ggml_threadpool *)>("ggml_threadpool_resume");
    if (tp && fn) fn(tp);
}

}  // namespace

ThreadPools::~ThreadPools() {
    for (auto & [n, tp] : pools_) call("ggml_threadpool_free", tp);
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
        if (old != 0 && old != n && old != n_batch) pause(pools_[old]);
    }
    resume(tp);
    resume(tp_batch);
    n_ = n;
    n_batch_ = n_batch;
    attach(ctx);
}

void ThreadPools::idle() const {
    if (n_ == 0) return;
    pause(pools_.at(n_));
    if (n_batch_ != n_) pause(pools_.at(n_batch_));
}

void ThreadPools::attach(llama_context * ctx) const {
    if (n_ == 0) return;
    ggml_threadpool * tp = pools_.at(n_);
    ggml_threadpool * tp_batch = pools_.at(n_batch_);
    if (tp) llama_attach_threadpool(ctx, tp, tp_batch == tp ? nullptr : tp_batch);
}

}  // namespace lmfast
