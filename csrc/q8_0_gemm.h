// Products of Q8_0 weights by 2 to 8 tokens (csrc/q8_0_gemm.cpp), reached through the wrap of
// llamafile_sgemm in csrc/q4_1_gemm.cpp. Compiled into each CPU backend target.
#pragma once

#include <cstdint>

struct ggml_compute_params;

namespace lmfast {

// C (n rows of ldc floats) = A (m rows of Q8_0, lda blocks apart) times B (n rows of Q8_0, ldb
// blocks apart), k blocks a row; this thread's share of the rows (params->ith of nth). False, and
// nothing computed, where the kernel does not apply (n outside 2..8, no AVX2, switched off):
// the caller goes on to ggml's own.
bool q8_0_few_tokens(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A,
                     int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc);

}  // namespace lmfast
