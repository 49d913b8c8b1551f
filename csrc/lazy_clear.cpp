// KV memory that is resident only where it is used (Linux).
//
// llama.cpp zeroes a KV cache's whole buffer when it makes a context (and again on a clear
// with data), so every page of it is resident from the start: 94 MiB per stream for SmolLM2 at
// 4096 tokens, although a short chat writes a few MiB of it. Zero is all it needs: cells past a
// sequence's end must not hold NaNs that the attention mask would multiply. Memory the C
// library hands out is private anonymous memory, and after madvise(MADV_DONTNEED) such memory
// reads as zeros and takes a page only when first written. So a clear to zero of a large CPU
// buffer tells the kernel to drop the pages instead of writing them: the same contents, no
// pages resident until a token's K and V land there. The engine's extra KV streams then cost
// address space until conversations use them, and loading skips the write of the whole cache
// (a fifth of a SmolLM2 load's samples, profiled with perf).
//
// The dropped range is also advised MADV_NOHUGEPAGE. csrc/hugepages.cpp advises large buffers
// onto 2 MiB pages, which made the old up-front zeroing cheap; but one layer's cells of one
// SmolLM2 stream span 1.5 MiB, so the first token written to each layer would fault in a whole
// huge page and the cache would be resident again. Faulting 4 KiB pages as cells fill costs
// ~6 faults per SmolLM2 token, a few microseconds against milliseconds of compute.
//
// llama.cpp's calls to ggml_backend_buffer_clear come here through the link
// (-Wl,--wrap=ggml_backend_buffer_clear, CMakeLists.txt). Anything that is not a plain CPU
// buffer (GPU memory, pinned host memory, a multi-buffer), a non-zero value, a small buffer, or
// a kernel that refuses the advice (locked memory: EINVAL) gets ggml's own clear.
// LMFAST_LAZY_CLEAR=0 turns this off, for measuring it.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>

#include "ggml-backend.h"

extern "C" {
void __real_ggml_backend_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value);
void __wrap_ggml_backend_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value);
// ggml-backend-impl.h, which is not among ggml's public headers.
bool ggml_backend_buffer_is_multi_buffer(ggml_backend_buffer_t buffer);
}

// A llama.cpp bump that changes the wrapped function's prototype must stop the build here, not
// misread its arguments at run time (only dropping noexcept converts between function pointers).
static_assert(std::is_convertible_v<decltype(&ggml_backend_buffer_clear), decltype(&__real_ggml_backend_buffer_clear)>,
              "ggml_backend_buffer_clear changed upstream: update csrc/lazy_clear.cpp");
static_assert(std::is_same_v<decltype(&__wrap_ggml_backend_buffer_clear), decltype(&__real_ggml_backend_buffer_clear)>);

namespace {

// Calls that came through the wrap (csrc/link_wraps.cpp reads it): zero after a load means the
// link no longer routes llama.cpp's clears here.
std::atomic<uint64_t> wrap_calls{0};

constexpr size_t kMinSize = size_t(4) << 20;

bool enabled() {
    static const bool on = [] {
        const char * v = std::getenv("LMFAST_LAZY_CLEAR");
        return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
    }();
    return on;
}

// Zeroes [p, p + n) by dropping its whole pages; false (nothing changed) where the kernel
// refuses.
bool drop_pages(uint8_t * p, size_t n) {
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (end <= begin) return false;
    auto * b = reinterpret_cast<uint8_t *>(begin);
    if (madvise(b, end - begin, MADV_DONTNEED) != 0) return false;
    madvise(b, end - begin, MADV_NOHUGEPAGE);  // advice only: without THP, nothing to undo
    std::memset(p, 0, b - p);
    std::memset(reinterpret_cast<uint8_t *>(end), 0, reinterpret_cast<uint8_t *>(p) + n - reinterpret_cast<uint8_t *>(end));
    return true;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) uint64_t lmfast_wrap_calls_lazy_clear() {
    return wrap_calls.load(std::memory_order_relaxed);
}

extern "C" __attribute__((visibility("default"))) void __wrap_ggml_backend_buffer_clear(ggml_backend_buffer_t buffer,
                                                                                        uint8_t value) {
    wrap_calls.fetch_add(1, std::memory_order_relaxed);
    const size_t size = buffer ? ggml_backend_buffer_get_size(buffer) : 0;
    if (value == 0 && size >= kMinSize && enabled() && !ggml_backend_buffer_is_multi_buffer(buffer) &&
        ggml_backend_buffer_get_type(buffer) == ggml_backend_cpu_buffer_type() &&
        drop_pages(static_cast<uint8_t *>(ggml_backend_buffer_get_base(buffer)), size)) {
        return;
    }
    __real_ggml_backend_buffer_clear(buffer, value);
}
