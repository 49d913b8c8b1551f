// Products of Q8_0, Q5_0 and Q4_1 weights by 2 to 8 tokens (csrc/few_token_gemm.cpp), reached
// through the wrap of llamafile_sgemm in csrc/q4_1_gemm.cpp. Compiled into each CPU backend target.
#pragma once

#include <cstdint>

struct ggml_compute_params;

namespace lmfast {

// C (n rows of ldc floats) = A (m rows of Atype, lda blocks apart) times B (n rows of Btype, ldb
// blocks apart), k blocks a row, in llamafile_sgemm's terms; this thread's share of the rows
// (params->ith of nth). False, and nothing computed, where the kernel does not apply (another
// type, n outside 2..8, no AVX2, switched off by LMFAST_FEW_TOKEN_GEMM=0): the caller goes on to
// ggml's own.
bool few_token_product(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A,
                       int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc, int Atype, int Btype,
                       int Ctype);

}  // namespace lmfast
