// Large ggml host buffers on transparent huge pages (Linux).
//
// llama.cpp clears the whole KV cache when a context is created, so every page of it is
// faulted in at load: for SmolLM2 with 4 sequences of 4096 tokens that is 377 MB, ~92,000
// faults of 4 KiB, and they took 60 % of the Engine's construction. Most kernels run
// transparent huge pages in "madvise" mode, where only memory advised MADV_HUGEPAGE gets
// them; advised before the clear, the same buffer takes ~190 faults of 2 MiB (Engine
// construction 160 -> 60 ms on the 2-core CI machine).
//
// Since csrc/lazy_clear.cpp that clear drops the KV cache's pages instead of writing them, and
// advises them off huge pages (a 2 MiB page would make a small model's whole cache resident
// again). The advice here still reaches the large buffers that are written whole (repacked
// weights, compute buffers) and, with LMFAST_LAZY_CLEAR=0, the KV cache as before.
//
// Not where the guest kernel reports free memory to its hypervisor (free page reporting:
// virtio-balloon with VIRTIO_BALLOON_F_REPORTING, as on Firecracker, or Hyper-V's
// hv_balloon, as in WSL2). It reports free 2 MiB blocks, the host drops their backing, and a
// huge page is always such a block: on the CI machine (Firecracker) a third of the loads
// then took 400-1000 ms instead of 60, a worse mean than 4 KiB pages (~250 ms), which reuse
// memory that is still backed. So the default is "auto": advise unless such reporting is on.
// LMFAST_HUGEPAGES=1 forces the advice, LMFAST_HUGEPAGES=0 turns it off.
//
// ggml allocates every host buffer with posix_memalign (ggml_aligned_malloc); the link that
// holds ggml's objects wraps that symbol (-Wl,--wrap=posix_memalign, CMakeLists.txt), so
// these requests come here. Requests of 4 MiB and more are aligned to 2 MiB and advised; the
// rest go straight to the C library. The memory is still released with free(), as ggml does.
#include <dirent.h>
#include <cstddef>
#include <cstdio>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>

extern "C" int __real_posix_memalign(void ** ptr, size_t alignment, size_t size);
extern "C" int __wrap_posix_memalign(void ** ptr, size_t alignment, size_t size);

// The C library's prototype, checked at compile time (glibc's is noexcept in C++: only that
// may differ).
static_assert(std::is_convertible_v<decltype(&::posix_memalign), decltype(&__real_posix_memalign)>,
              "posix_memalign's prototype differs: update csrc/hugepages.cpp");
static_assert(std::is_same_v<decltype(&__wrap_posix_memalign), decltype(&__real_posix_memalign)>);

namespace {

// Calls that came through the wrap (csrc/link_wraps.cpp reads it): zero after a load means the
// link no longer routes ggml's allocations here.
std::atomic<uint64_t> wrap_calls{0};

constexpr size_t kHuge = size_t(2) << 20;
constexpr size_t kMinSize = size_t(4) << 20;

// The devices bound to a sysfs driver folder (its entries other than the driver's own files).
template <typename F>
bool any_device(const char * driver_dir, F && pred) {
    DIR * d = opendir(driver_dir);
    if (!d) return false;
    bool found = false;
    while (const dirent * e = readdir(d)) {
        const std::string name = e->d_name;
        if (name == "." || name == ".." || name == "bind" || name == "unbind" || name == "uevent" ||
            name == "new_id" || name == "remove_id" || name == "module") {
            continue;
        }
        if (pred(std::string(driver_dir) + "/" + name)) {
            found = true;
            break;
        }
    }
    closedir(d);
    return found;
}

// Which free-page-reporting balloon this guest has, or nullptr.
const char * free_page_reporting() {
    // virtio feature bits are listed as '0'/'1' characters, bit 0 first; bit 5 is
    // VIRTIO_BALLOON_F_REPORTING.
    const bool virtio = any_device("/sys/bus/virtio/drivers/virtio_balloon", [](const std::string & dev) {
        FILE * f = std::fopen((dev + "/features").c_str(), "r");
        if (!f) return false;
        char bits[64] = {0};
        const bool got = std::fgets(bits, sizeof bits, f) != nullptr;
        std::fclose(f);
        return got && std::strlen(bits) > 5 && bits[5] == '1';
    });
    if (virtio) return "virtio-balloon";
    // Hyper-V's balloon reports free pages whenever the host takes them (WSL2 does).
    if (any_device("/sys/bus/vmbus/drivers/hv_balloon", [](const std::string &) { return true; })) return "hv_balloon";
    return nullptr;
}

struct Policy {
    bool on;
    std::string why;
};

const Policy & policy() {
    static const Policy p = [] {
        const char * v = std::getenv("LMFAST_HUGEPAGES");
        const std::string s = v ? v : "";
        if (s == "0" || s == "off") return Policy{false, "off (LMFAST_HUGEPAGES=" + s + ")"};
        if (s == "1" || s == "on") return Policy{true, "on (LMFAST_HUGEPAGES=" + s + ")"};
        if (const char * balloon = free_page_reporting()) {
            return Policy{false, std::string("off (free page reporting by ") + balloon +
                                     "; LMFAST_HUGEPAGES=1 forces it)"};
        }
        return Policy{true, "on"};
    }();
    return p;
}

}  // namespace

// For backend_info(): "on", or "off (<reason>)".
extern "C" __attribute__((visibility("default"))) const char * lmfast_hugepages_status() {
    return policy().why.c_str();
}

extern "C" __attribute__((visibility("default"))) uint64_t lmfast_wrap_calls_hugepages() {
    return wrap_calls.load(std::memory_order_relaxed);
}

extern "C" __attribute__((visibility("default"))) int __wrap_posix_memalign(void ** ptr, size_t alignment,
                                                                             size_t size) {
    wrap_calls.fetch_add(1, std::memory_order_relaxed);
    if (size < kMinSize || alignment > kHuge || !policy().on) {
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
