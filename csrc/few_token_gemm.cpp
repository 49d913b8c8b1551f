// Products of Q8_0, Q5_0 and Q4_1 weights by 2 to 8 tokens on x86 AVX2: each weight row is read
// and unpacked once for all the tokens; bit for bit ggml's one-token dot (ggml_vec_dot_q8_0_q8_0,
// ggml_vec_dot_q5_0_q8_0, ggml_vec_dot_q4_1_q8_1).
//
// Batches of a few tokens are what speculative decoding verifies (a sampled token and its draft,
// every row with logits) and what a few streams decoding together make. For these types ggml
// gives them to llamafile's tinyBLAS, whose AVX2 tiles (4 weight rows by 2 tokens, as sixteen
// vector registers allow) take about as long per token as the one-token product does per token
// once there are 3 or more. Gemma 3 270M's output matrix is Q8_0 (262,144 rows of 640: 62 % of
// the model's weights; its width is no multiple of 256, so K-quants cannot hold it) and its
// gate, up, q and k matrices are Q5_0; a verify step's rows all need logits, so a 6-token step
// took 3.9x a one-token step. SmolLM2's output matrix is Q8_0 too; its other matrices are Q4_1,
// whose products of 2 to 8 tokens come here from csrc/q4_1_gemm.cpp's wrap rather than to its
// prompt tiles (2 rows by 3 tokens), 0.78-0.87 of their time (SmolLM2's up matrix, 1,536 x 576,
// one thread, `lmfast-q4_1-gemm-test bench 1536 N 576 1 60` against LMFAST_FEW_TOKEN_GEMM=0:
// 2 tokens 0.196 / 0.226 ms, 4 tokens 0.314 / 0.402, 8 tokens 0.543 / 0.701).
//
// Here a thread streams its share of the weight rows once; each block of a row is unpacked to
// signed bytes and made unsigned once (its sign goes to the tokens' bytes, as ggml does) and
// dotted with every token's block, while the tokens' blocks and their scales (converted to float
// once per product) stay in L1. Each result keeps ggml's sequence of floating-point operations:
// the same exact integer dot per block in eight lanes, the same product of the two converted
// scales, the same fused multiply-add block after block, the same horizontal sum. So a token's
// logits are the same whatever shares its batch, as with one token:
// tests/native/q4_1_gemm_test.cpp compares every output bit with ggml's vec_dot on random
// matrices.
//
// Measured on the 2-core EPYC (AVX2), 2 threads, Gemma's output matrix (262,144 x 640), median of
// 10 (`lmfast-q4_1-gemm-test bench 262144 N 640 2 10 q8_0`, with LMFAST_FEW_TOKEN_GEMM=0 for
// tinyBLAS): 2 tokens 18.5 against 29.7 ms, 4 tokens 30.6 against 40.6, 6 tokens 43.5 against
// 57.9, 8 tokens 56.8 against 76.4 (one token, ggml's own dot: 12.2 ms).
#include "few_token_gemm.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ggml-cpu-impl.h"
#include "ggml-quants.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LMFAST_FEW_TOKENS 1
#include "ggml_x86_order.h"
#endif

namespace {

std::atomic<uint64_t> few_token_products{0};

#ifdef LMFAST_FEW_TOKENS

// Tokens a product may have to come here, and blocks a row may have (K up to 16,384 weights):
// the tokens' scales live in fixed buffers on the stack, no allocation in ggml's threads.
constexpr int kMaxTokens = 8;
constexpr int64_t kMaxBlocks = 512;

bool env_enabled() {
    static const bool on = [] {
        const char * v = std::getenv("LMFAST_FEW_TOKEN_GEMM");
        return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
    }();
    return on;
}

using lmfast::x86::dot_us8;
using lmfast::x86::half;
using lmfast::x86::hsum8;
using lmfast::x86::nibbles;

// A weight block's 32 signed bytes, as ggml's vec_dot makes them.
__m256i weights(const block_q8_0 & x) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x.qs)); }

// Q5_0: the low nibbles (bytes 0..15 from the low halves, 16..31 from the high), and each byte's
// fifth bit from qh; a clear bit makes the byte negative (0xF0 | nibble = nibble - 16), as in
// ggml's bytes_from_nibbles_32 and bytes_from_bits_32.
__m256i weights(const block_q5_0 & x) {
    const __m256i low = nibbles(x.qs);
    uint32_t bits;
    std::memcpy(&bits, x.qh, sizeof bits);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int32_t>(bits)),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)),
                                          _mm256_set1_epi64x(-1));
    return _mm256_or_si256(low, _mm256_andnot_si256(set, _mm256_set1_epi8(static_cast<char>(0xF0))));
}

// ggml's mul_sum_i8_pairs_float with the weight block's absolute value computed once: x's sign
// moved onto y, then an unsigned-by-signed dot.
__m256 block_dot(__m256i abs_x, __m256i x, __m256i y) { return dot_us8(abs_x, _mm256_sign_epi8(y, x)); }

// Rows [i0, i1) by N tokens. yd[b][c]: token c's scale of block b, as a float. Per block the
// eight scale products are made in one multiply (each the same float as ggml's scalar one) and
// read back one lane at a time from memory, which costs a load rather than an ALU shuffle.
template <typename Block, int N>
void rows(const Block * A, int64_t lda, const block_q8_0 * B, int64_t ldb, const float (*yd)[kMaxTokens], float * C,
          int64_t ldc, int64_t i0, int64_t i1, int64_t nb) {
    for (int64_t i = i0; i < i1; ++i) {
        const Block * x = A + i * lda;
        __m256 acc[N];
        for (int c = 0; c < N; ++c) acc[c] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i qx = weights(x[b]);
            const __m256i ax = _mm256_sign_epi8(qx, qx);
            alignas(32) float d[kMaxTokens];
            _mm256_store_ps(d, _mm256_mul_ps(_mm256_set1_ps(half(x[b].d)), _mm256_load_ps(yd[b])));
            for (int c = 0; c < N; ++c) {
                const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B[c * ldb + b].qs));
                acc[c] = _mm256_fmadd_ps(_mm256_broadcast_ss(d + c), block_dot(ax, qx, qy), acc[c]);
            }
        }
        for (int c = 0; c < N; ++c) C[c * ldc + i] = hsum8(acc[c]);
    }
}

// Q4_1 by Q8_1, ggml's ggml_vec_dot_q4_1_q8_1: the unsigned nibbles need no sign trick, and the
// minimum's term of each token, sum over blocks of m * s, is summed apart in block order (lane c
// of `mins`; each product of two halves is exact, so fused or not it is ggml's scalar sum) and
// added after the horizontal sum. ys[b][c]: token c's s of block b.
template <int N>
void rows_q4_1(const block_q4_1 * A, int64_t lda, const block_q8_1 * B, int64_t ldb, const float (*yd)[kMaxTokens],
               const float (*ys)[kMaxTokens], float * C, int64_t ldc, int64_t i0, int64_t i1, int64_t nb) {
    for (int64_t i = i0; i < i1; ++i) {
        const block_q4_1 * x = A + i * lda;
        __m256 acc[N];
        for (int c = 0; c < N; ++c) acc[c] = _mm256_setzero_ps();
        __m256 mins = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m256i qx = nibbles(x[b].qs);
            mins = _mm256_fmadd_ps(_mm256_set1_ps(half(x[b].m)), _mm256_load_ps(ys[b]), mins);
            alignas(32) float d[kMaxTokens];
            _mm256_store_ps(d, _mm256_mul_ps(_mm256_set1_ps(half(x[b].d)), _mm256_load_ps(yd[b])));
            for (int c = 0; c < N; ++c) {
                const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(B[c * ldb + b].qs));
                acc[c] = _mm256_fmadd_ps(_mm256_broadcast_ss(d + c), dot_us8(qx, qy), acc[c]);
            }
        }
        alignas(32) float m[kMaxTokens];
        _mm256_store_ps(m, mins);
        for (int c = 0; c < N; ++c) C[c * ldc + i] = hsum8(acc[c]) + m[c];
    }
}

using RowsQ41Fn = void (*)(const block_q4_1 *, int64_t, const block_q8_1 *, int64_t, const float (*)[kMaxTokens],
                           const float (*)[kMaxTokens], float *, int64_t, int64_t, int64_t, int64_t);
// Indexed by the token count, 2 to 8 (one token is ggml's).
constexpr RowsQ41Fn kRowsQ41[kMaxTokens + 1] = {nullptr,      nullptr,      rows_q4_1<2>, rows_q4_1<3>, rows_q4_1<4>,
                                                rows_q4_1<5>, rows_q4_1<6>, rows_q4_1<7>, rows_q4_1<8>};

template <typename Block>
using RowsFn = void (*)(const Block *, int64_t, const block_q8_0 *, int64_t, const float (*)[kMaxTokens], float *,
                        int64_t, int64_t, int64_t, int64_t);

template <typename Block>
constexpr RowsFn<Block> kRows[kMaxTokens + 1] = {nullptr,         nullptr,        rows<Block, 2>,
                                                 rows<Block, 3>,  rows<Block, 4>, rows<Block, 5>,
                                                 rows<Block, 6>,  rows<Block, 7>, rows<Block, 8>};

// This thread's share of the product. Each thread its own contiguous rows, as ggml's loop for
// one token: no chunk counter and no barrier (ggml's graph waits for every thread after the
// product).
template <typename Block>
void product(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A, int64_t lda,
             const void * B, int64_t ldb, void * C, int64_t ldc) {
    const auto * y = static_cast<const block_q8_0 *>(B);
    alignas(32) float yd[kMaxBlocks][kMaxTokens];  // 16 KiB of this thread's stack
    for (int64_t b = 0; b < k; ++b) {
        for (int c = 0; c < kMaxTokens; ++c) yd[b][c] = c < n ? half(y[c * ldb + b].d) : 0.0f;
    }
    if (params->ith == 0) few_token_products.fetch_add(1, std::memory_order_relaxed);
    kRows<Block>[n](static_cast<const Block *>(A), lda, y, ldb, yd, static_cast<float *>(C), ldc,
                    m * params->ith / params->nth, m * (params->ith + 1) / params->nth, k);
}

void product_q4_1(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A, int64_t lda,
                  const void * B, int64_t ldb, void * C, int64_t ldc) {
    const auto * y = static_cast<const block_q8_1 *>(B);
    alignas(32) float yd[kMaxBlocks][kMaxTokens];  // 16 KiB each of this thread's stack
    alignas(32) float ys[kMaxBlocks][kMaxTokens];
    for (int64_t b = 0; b < k; ++b) {
        for (int c = 0; c < kMaxTokens; ++c) {
            yd[b][c] = c < n ? half(y[c * ldb + b].d) : 0.0f;
            ys[b][c] = c < n ? half(y[c * ldb + b].s) : 0.0f;
        }
    }
    if (params->ith == 0) few_token_products.fetch_add(1, std::memory_order_relaxed);
    kRowsQ41[n](static_cast<const block_q4_1 *>(A), lda, y, ldb, yd, ys, static_cast<float *>(C), ldc,
                m * params->ith / params->nth, m * (params->ith + 1) / params->nth, k);
}

#endif  // LMFAST_FEW_TOKENS

}  // namespace

namespace lmfast {

bool few_token_product(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A,
                       int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc, int Atype, int Btype,
                       int Ctype) {
#ifdef LMFAST_FEW_TOKENS
    if (Ctype != GGML_TYPE_F32 || n < 2 || n > kMaxTokens || k > kMaxBlocks || params->use_ref || !env_enabled()) {
        return false;
    }
    if (Atype == GGML_TYPE_Q4_1 && Btype == GGML_TYPE_Q8_1) {
        product_q4_1(params, m, n, k, A, lda, B, ldb, C, ldc);
        return true;
    }
    if (Btype != GGML_TYPE_Q8_0) return false;
    if (Atype == GGML_TYPE_Q8_0) {
        product<block_q8_0>(params, m, n, k, A, lda, B, ldb, C, ldc);
        return true;
    }
    if (Atype == GGML_TYPE_Q5_0) {
        product<block_q5_0>(params, m, n, k, A, lda, B, ldb, C, ldc);
        return true;
    }
#else
    (void)params, (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc;
    (void)Atype, (void)Btype, (void)Ctype;
#endif
    return false;
}

}  // namespace lmfast

extern "C" __attribute__((visibility("default"))) uint64_t lmfast_few_token_products() {
    return few_token_products.load(std::memory_order_relaxed);
}
