// The CPU backend's compute thread pools of one engine, one per thread count in use.
//
// Without a persistent pool ggml starts and joins its workers on every llama_decode. A pool's
// workers, between graphs, poll for the next one (ggml's default polling level spins ~10^8
// cycles, a few hundred milliseconds, before sleeping), and a graph computed with fewer
// threads than its pool leaves the rest polling: when the engine steps with fewer threads
// (other processes busy, cpu_share.h, or a prediction's own cpuThreads), those idle workers
// took the CPU the step needed (measured beside two busy processes on 2 cores: 24 tokens/s
// with a 2-thread pool stepping with 1, 73 with a 1-thread pool). So each thread count gets a
// pool of exactly that many, made when first used; the others are paused (their workers
// sleep). Used by the engine thread only, after construction.
#pragma once

#include <cstdint>
#include <map>

#include "llama.h"

namespace lmfast {

class ThreadPools {
public:
    ThreadPools() = default;
    ~ThreadPools();
    ThreadPools(const ThreadPools &) = delete;
    ThreadPools & operator=(const ThreadPools &) = delete;

    // Makes ctx compute its next graphs with n threads (n_batch for batches of many tokens),
    // on pools of those sizes; the pools that were in use and are no longer are paused.
    // Without the CPU backend's pool API, only sets the counts.
    void use(llama_context * ctx, int32_t n, int32_t n_batch);
    // Attaches the pools in use to another context (the engine's, after it grows).
    void attach(llama_context * ctx) const;
    // The engine has nothing to compute: the pools in use stop polling now. ggml resumes a
    // paused pool itself when the next graph is computed on it.
    void idle() const;

private:
    ggml_threadpool * pool(int32_t n);

    std::map<int32_t, ggml_threadpool *> pools_;
    int32_t n_ = 0, n_batch_ = 0;  // in use; 0: none yet
};

}  // namespace lmfast
