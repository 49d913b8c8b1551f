#include "link_wraps.h"

#include <dlfcn.h>

#include "backends.h"

namespace lmfast {

namespace {

struct Known {
    const char * name, * symbol, * file, * counter, * platforms;
};

// Each wrap exports its call counter under this name, from the binary its CMake rule links it
// into: _core in a development build; libllama, libggml-base or each CPU variant module in a
// portable one.
constexpr Known kKnown[] = {
    {"lazy_clear", "ggml_backend_buffer_clear", "csrc/lazy_clear.cpp", "lmfast_wrap_calls_lazy_clear", "Linux"},
    {"hugepages", "posix_memalign", "csrc/hugepages.cpp", "lmfast_wrap_calls_hugepages",
     "Linux, unless built with -DLMFAST_HUGEPAGES=OFF"},
    {"q4_1_gemm", "llamafile_sgemm", "csrc/q4_1_gemm.cpp", "lmfast_wrap_calls_q4_1_gemm",
     "Linux with ggml's llamafile kernels (GGML_LLAMAFILE)"},
};

using Counter = uint64_t (*)();

// The binaries to look in: this extension (dlsym on its handle also searches the shared
// libraries it was linked against) and the CPU backend modules a portable build loaded.
std::vector<std::string> binaries() {
    std::vector<std::string> out;
    Dl_info self{};
    if (dladdr(reinterpret_cast<const void *>(&link_wraps), &self) != 0 && self.dli_fname) {
        out.emplace_back(self.dli_fname);
    }
    for (const BackendInfo & b : list_backends()) {
        if (!b.library.empty() && (out.empty() || b.library != out.front())) out.push_back(b.library);
    }
    return out;
}

}  // namespace

std::vector<LinkWrap> link_wraps() {
    const std::vector<std::string> files = binaries();
    std::vector<LinkWrap> out;
    for (const Known & k : kKnown) {
        LinkWrap w{k.name, k.symbol, k.file, false, -1, std::string("not linked (") + k.platforms + ")"};
        for (const std::string & f : files) {
            // RTLD_NOLOAD: only binaries already in the process; the handle keeps nothing loaded.
            void * h = dlopen(f.c_str(), RTLD_LAZY | RTLD_NOLOAD);
            if (!h) continue;
            auto counter = reinterpret_cast<Counter>(dlsym(h, k.counter));
            Dl_info at{};
            if (counter && dladdr(reinterpret_cast<const void *>(counter), &at) != 0) {
                w.linked = true;
                w.calls = static_cast<int64_t>(counter());
                w.where = at.dli_fname ? at.dli_fname : f;
            }
            dlclose(h);
            if (w.linked) break;
        }
        out.push_back(std::move(w));
    }
    return out;
}

}  // namespace lmfast
