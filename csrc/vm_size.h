// The size of this process's address space, for "what it has now + a budget" RLIMIT_AS limits
// (sandbox.cpp's forked child, the template worker).
#pragma once

#include <cstddef>
#include <cstdio>

#include <unistd.h>

namespace lmfast {

// 0 where it cannot be read (no /proc: macOS, which does not enforce RLIMIT_AS anyway).
inline size_t current_vm_bytes() {
    FILE * f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long pages = 0;
    const int n = std::fscanf(f, "%lu", &pages);
    std::fclose(f);
    return n == 1 ? static_cast<size_t>(pages) * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace lmfast
