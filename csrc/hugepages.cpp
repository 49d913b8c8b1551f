// Large ggml host buffers on transparent huge pages (Linux).
//
// llama.cpp clears the whole KV cache when a context is created, so every page of it is
// faulted in at load: for SmolLM2 with 4 sequences of 4096 tokens that is 377 MB, ~92,000
// faults of 4 KiB, and they took 60 % of the Engine's construction. Most kernels run
// transparent huge pages in "madvise" mode, where only memory advised MADV_HUGEPAGE gets
// them; advised before the clear, the same buffer takes ~190 faults of 2 MiB (Engine
// construction 168 -> 62 ms here) and the attention kernels then walk it with fewer TLB
// misses.
//
// ggml allocates every host buffer with posix_memalign (ggml_aligned_malloc); the link that
// holds ggml's objects wraps that symbol (-Wl,--wrap=posix_memalign, CMakeLists.txt), so
// these requests come here. Requests of 4 MiB and more are aligned to 2 MiB and advised;
// the rest, and everything with LMFAST_HUGEPAGES=0, go straight to the C library. The
// memory is still released with free(), as ggml does. The advice changes nothing where THP
// is off ("never") and is already the behaviour where it is "always".
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

extern "C" int __real_posix_memalign(void ** ptr, size_t alignment, size_t size);

namespace {

constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kMinSize = size_t(4) << 20;

bool enabled() {
    static const bool on = [] {
        const char * v = std::getenv("LMFAST_HUGEPAGES");
        return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
    }();
    return on;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int __wrap_posix_memalign(void ** ptr, size_t alignment,
                                                                             size_t size) {
    if (size < kMinSize || alignment > kHuge || !enabled()) {
        return __real_posix_memalign(ptr, alignment, size);
    }
    const int rc = __real_posix_memalign(ptr, kHuge, size);
    if (rc == 0) {
        // Whole pages from the (2 MiB aligned) start. It is advice: where it reaches past the
        // allocation, or the kernel has no THP (EINVAL), nothing changes but page sizes.
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        madvise(*ptr, (size + page - 1) / page * page, MADV_HUGEPAGE);
    }
    return rc;
}
