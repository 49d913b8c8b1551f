// How many CPUs other work leaves an engine, for its default thread count.
//
// ggml's thread pool synchronises its threads with spinning barriers, hundreds per token.
// When another process holds a CPU that one of them needs, the others spin until the
// scheduler gives it back: on this project's 2-core machine, with a parallel build running,
// SmolLM2 decoded at 0.3 tokens/s with 2 threads against 74-86 with 1 (measured). So an
// engine whose load config leaves cpuThreads to lmfast uses, each step, only the CPUs that
// other processes leave free, shared among this process's engines that are decoding, and at
// least one. Other processes' use is the system's CPU time (/proc/stat) minus this process's
// (getrusage); niced processes (nice > 0) are not counted, since the scheduler gives way to
// the engine before them. Linux only; elsewhere, and until the first sample, the whole pool
// is used. Each CpuShare is used by its engine's thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace lmfast {

class CpuShare {
public:
    explicit CpuShare(int32_t n_max);
    ~CpuShare();
    CpuShare(const CpuShare &) = delete;
    CpuShare & operator=(const CpuShare &) = delete;

    // The threads to use for the step about to run: 1..n_max.
    int32_t threads();

private:
    int32_t n_max_;
    std::atomic<int64_t> last_step_ns_{0};  // read by other engines' CpuShare (busy_engines)
    friend int32_t busy_engines(int64_t now_ns);
};

}  // namespace lmfast
