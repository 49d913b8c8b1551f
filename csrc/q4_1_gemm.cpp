// Products of Q4_1 weights on x86 AVX2: prompts in register tiles, decode steps row by row
// without ggml's lookup table; bit for bit ggml's result.
//
// For Q4_1 ggml has neither a llamafile tile kernel nor a repacked layout on x86, so a prompt's
// matrix products fall to its generic loop: each weight row is dotted with one token's row at a
// time (ggml_vec_dot_q4_1_q8_1). Every such dot unpacks the row's nibbles and converts its
// half-precision scales again, for every token; of the ~22 instructions per 32-weight block on
// AVX2, five multiply. SmolLM2's checkpoints (the project's test model) are Q4_1 in every
// linear layer, so this loop is most of a prompt's time.
//
// Here a tile of 2 weight rows by 3 tokens is computed at once: a block of a weight row is
// unpacked once for three tokens, a token's block is loaded once for both rows, and a job's
// scales are converted to float once for all its tiles. Each result keeps ggml's own sequence of
// floating-point operations: the same integer dot per block (exact), the same product of the two
// scales, the same fused multiply-add into the same eight lanes, block after block, the same
// horizontal sum, then the minimum's term (its own fused sum over the blocks, in order) added
// last. A product of two half-precision numbers is exact in float, so the scale product and the
// minimum's terms are the same fused or not; the order of the sums is what must match, and does.
// So logits are identical to ggml's: tests/native/q4_1_gemm_test.cpp compares every output bit
// with ggml's kernel on random matrices, and the oracle tests compare greedy output with
// llama.cpp's programs, which keep ggml's loop.
//
// Measured on a 2-core EPYC (AVX2), one thread: SmolLM2's products take 0.50-0.57 of the time
// of ggml's loop, at 27 tokens and at 512 (lmfast-q4_1-gemm-test bench M N K 1 30, which
// alternates the two in one process; both include quantizing the tokens). A 742-token prompt
// evaluates 1.45x faster end to end (2 threads, LMFAST_Q4_1_GEMM=1 against 0).
//
// Decode steps (one token) go row by row, as in ggml, but convert the scales without ggml's
// lookup table (gemv_row, below): 1.19x the decode speed.
//
// ggml asks llamafile_sgemm for every matrix product before its generic loop; the link routes
// that call here (-Wl,--wrap=llamafile_sgemm, CMakeLists.txt). A Q4_1, Q8_0 or Q5_0 product of
// 2 to 8 tokens goes to csrc/few_token_gemm.cpp; anything else goes on to llamafile as before.
// LMFAST_Q4_1_GEMM=0 turns the Q4_1 kernel off, for measuring.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <type_traits>

#include "ggml-cpu-impl.h"
#include "ggml-quants.h"
#include "ggml.h"
#include "llamafile/sgemm.h"
#include "few_token_gemm.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LMFAST_Q4_1_TILES 1
#include "ggml_x86_order.h"
#endif

extern "C" {
bool __real_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc,
                            int Atype, int Btype, int Ctype);
bool __wrap_llamafile_sgemm(const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k,
                            const void * A, int64_t lda, const void * B, int64_t ldb, void * C, int64_t ldc,
                            int Atype, int Btype, int Ctype);
}

// llamafile_sgemm is internal to ggml-cpu: a bump that changes its parameters must stop the build
// here rather than have the wrap misread them at run time.
static_assert(std::is_same_v<decltype(&llamafile_sgemm), decltype(&__real_llamafile_sgemm)>,
              "llamafile_sgemm changed upstream: update csrc/q4_1_gemm.cpp");
static_assert(std::is_same_v<decltype(&__wrap_llamafile_sgemm), decltype(&__real_llamafile_sgemm)>);

namespace {

// Matrix products that came through the wrap, whatever their types (counted by the first
// thread of each: every thread calls it): csrc/link_wraps.cpp reads it.
std::atomic<uint64_t> wrap_calls{0};

// Products computed here, for tests that must see this path taken (a wrap that is not linked
// changes nothing a user could see but the speed).
std::atomic<uint64_t> tiled_products{0};

#ifdef LMFAST_Q4_1_TILES

bool env_enabled() {
    static const bool on = [] {
        const char * v = std::getenv("LMFAST_Q4_1_GEMM");
        return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
    }();
    return on;
}

// A block's two leading half-precision numbers (d and m, or d and s) as floats in lanes 0 and 1.
__m128 halves(const void * block) {
    int32_t bits;
    std::memcpy(&bits, block, sizeof bits);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
}

using lmfast::x86::half;
using lmfast::x86::hsum8;

using lmfast::x86::dot_us8;

// The 32 weights of a block as bytes 0..15 (ggml's order).
__m256i unpack(const block_q4_1 & x) { return lmfast::x86::nibbles(x.qs); }

// A tile of 2 weight rows by 3 tokens: six running sums, which with their operands fit x86's
// sixteen vector registers (GCC 12 kept 4 x 2, 3 x 2 and 2 x 4 tiles' sums on the stack, and
// they ran slower).
constexpr int kRM = 2;
constexpr int kRN = 3;
static_assert(kRN == 3, "run_rows finishes a row group with one 2- or 1-token tile");

// Jobs of kJobRows weight rows by kJobCols tokens, handed out through ggml's chunk counter as its
// own loop does, so a thread that the OS delays leaves its share to the others. A job's tokens
// (kJobCols x k blocks of 36 bytes: 52 KiB for SmolLM2's widest, k = 48) stay in L2 while its
// weight rows go past.
constexpr int64_t kJobRows = 16;  // a multiple of 8: sum_minimums sums 8 rows a vector
constexpr int64_t kJobCols = 30;  // a multiple of kRN
// A job goes through its blocks in slices, so its scratch (below) has a fixed size on the stack
// whatever the model's width: no allocation in ggml's compute threads. SmolLM2's products are
// one slice (k = 18 or 48 blocks).
constexpr int64_t kSlice = 64;

// A job's scratch: one slice's half-precision scales converted to float once for all the job's
// tiles, and the running sums that carry each result from slice to slice (exact: a float stored
// and loaded again is the same float). Block b's scales of the job's rows are contiguous, so
// the minimums of sixteen rows are summed as two vectors; rows past the job's last are summed
// too (from zeros) and never stored.
struct Scratch {
    float xd[kSlice * kJobRows];  // [b * kJobRows + r]
    float xm[kSlice * kJobRows];
    float yd[kSlice * kJobCols];  // [b * kJobCols + c]
    float ys[kSlice * kJobCols];
    alignas(32) float acc[kJobRows][kJobCols][8];  // ggml's eight lanes, per result
    float mins[kJobCols][kJobRows];  // the minimum's term, per result
};

// One job: its operands, from its first weight row and first token, and its slice of blocks.
struct Job {
    const block_q4_1 * A;
    int64_t lda;
    const block_q8_1 * B;
    int64_t ldb;
    int64_t b0, b1;  // the slice: blocks [b0, b1)
    Scratch * s;
};

// Blocks [b0, b1) into the running sums of the job's rows r0..r0+RM and tokens c0..c0+RN. One
// pointer per row and per token: a version that indexed rows from one pointer ran out of
// general registers, reloaded offsets from the stack and ran 20 % slower.
template <int RM, int RN>
void tile(const Job & job, int64_t r0, int64_t c0) {
    Scratch & s = *job.s;
    const int64_t nb = job.b1 - job.b0;
    const block_q4_1 * x[RM];
    const block_q8_1 * y[RN];
    for (int r = 0; r < RM; ++r) x[r] = job.A + (r0 + r) * job.lda + job.b0;
    for (int c = 0; c < RN; ++c) y[c] = job.B + (c0 + c) * job.ldb + job.b0;
    const float * xd = s.xd + r0;
    const float * yd = s.yd + c0;
    __m256 acc[RM][RN];
    if (job.b0 == 0) {
        for (int r = 0; r < RM; ++r) {
            for (int c = 0; c < RN; ++c) acc[r][c] = _mm256_setzero_ps();
        }
    } else {
        for (int r = 0; r < RM; ++r) {
            for (int c = 0; c < RN; ++c) acc[r][c] = _mm256_load_ps(s.acc[r0 + r][c0 + c]);
        }
    }
    for (int64_t i = 0; i < nb; ++i, xd += kJobRows, yd += kJobCols) {
        for (int r = 0; r < RM; ++r) {
            const __m256i qx = unpack(x[r][i]);
            const __m256 d = _mm256_broadcast_ss(xd + r);
            for (int c = 0; c < RN; ++c) {
                const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[c][i].qs));
                acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_broadcast_ss(yd + c)), dot_us8(qx, qy), acc[r][c]);
            }
        }
    }
    for (int r = 0; r < RM; ++r) {
        for (int c = 0; c < RN; ++c) _mm256_store_ps(s.acc[r0 + r][c0 + c], acc[r][c]);
    }
}

// The minimum's term of every result of the job, for the slice: per token, a fused
// multiply-add per block into sixteen rows' sums at once, block after block as ggml sums them.
void sum_minimums(const Job & job, int64_t cols) {
    Scratch & s = *job.s;
    for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < kJobRows; r += 8) {
            __m256 sum = job.b0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(&s.mins[c][r]);
            for (int64_t sb = 0; sb < job.b1 - job.b0; ++sb) {
                sum = _mm256_fmadd_ps(_mm256_loadu_ps(s.xm + sb * kJobRows + r), _mm256_broadcast_ss(s.ys + sb * kJobCols + c), sum);
            }
            _mm256_storeu_ps(&s.mins[c][r], sum);
        }
    }
}

// The slice for one row group of the job: whole tiles, then the last one or two tokens (two
// tokens as one tile: a batch of two streams decoding is all edge, and as two one-token tiles it
// took 1.2x ggml's loop's time).
template <int RM>
void run_rows(const Job & job, int64_t r, int64_t cols) {
    const int64_t ct = cols / kRN * kRN;
    for (int64_t c = 0; c < ct; c += kRN) tile<RM, kRN>(job, r, c);
    if (cols - ct == 2) tile<RM, 2>(job, r, ct);
    if (cols - ct == 1) tile<RM, 1>(job, r, ct);
}

// The slice for all of a job of `rows` x `cols`: rows in tiles' pairs, then a last odd row.
void run_slice(const Job & job, int64_t rows, int64_t cols) {
    int64_t r = 0;
    for (; r + kRM <= rows; r += kRM) run_rows<kRM>(job, r, cols);
    for (; r < rows; ++r) run_rows<1>(job, r, cols);
}

void convert_scales(const Job & job, int64_t rows, int64_t cols) {
    Scratch & s = *job.s;
    const int64_t n = job.b1 - job.b0;
    if (rows < kJobRows) std::fill(s.xd, s.xd + n * kJobRows, 0.0f), std::fill(s.xm, s.xm + n * kJobRows, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t b = 0; b < n; ++b) {
            const block_q4_1 & x = job.A[r * job.lda + job.b0 + b];
            s.xd[b * kJobRows + r] = half(x.d);
            s.xm[b * kJobRows + r] = half(x.m);
        }
    }
    for (int64_t c = 0; c < cols; ++c) {
        for (int64_t b = 0; b < n; ++b) {
            const block_q8_1 & y = job.B[c * job.ldb + job.b0 + b];
            s.yd[b * kJobCols + c] = half(y.d);
            s.ys[b * kJobCols + c] = half(y.s);
        }
    }
}

// Rows [i0, i0 + rows) by tokens [j0, j0 + cols) of C, all k blocks.
void run_job(Scratch & s, const block_q4_1 * A, int64_t lda, const block_q8_1 * B, int64_t ldb, float * C,
             int64_t ldc, int64_t k, int64_t rows, int64_t cols) {
    for (int64_t b0 = 0; b0 < k; b0 += kSlice) {
        const int64_t b1 = std::min(k, b0 + kSlice);
        const Job job{A, lda, B, ldb, b0, b1, &s};
        convert_scales(job, rows, cols);
        sum_minimums(job, cols);
        run_slice(job, rows, cols);
    }
    for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < rows; ++r) C[c * ldc + r] = hsum8(_mm256_load_ps(s.acc[r][c])) + s.mins[c][r];
    }
}

void gemm(const ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const block_q4_1 * A, int64_t lda,
          const block_q8_1 * B, int64_t ldb, float * C, int64_t ldc) {
    Scratch scratch;  // 40 KiB of this thread's stack
    const int64_t row_jobs = (m + kJobRows - 1) / kJobRows;
    const int64_t jobs = row_jobs * ((n + kJobCols - 1) / kJobCols);
    if (params->ith == 0) {
        ggml_threadpool_chunk_set(params->threadpool, params->nth);
        tiled_products.fetch_add(1, std::memory_order_relaxed);
    }
    ggml_barrier(params->threadpool);
    for (int64_t j = params->ith; j < jobs; j = ggml_threadpool_chunk_add(params->threadpool, 1)) {
        const int64_t i0 = j % row_jobs * kJobRows, j0 = j / row_jobs * kJobCols;
        run_job(scratch, A + i0 * lda, lda, B + j0 * ldb, ldb, C + j0 * ldc + i0, ldc, k,
                std::min(kJobRows, m - i0), std::min(kJobCols, n - j0));
    }
    // ggml may call again for the next matrix of a batched product, and thread 0 then resets
    // the counter: nobody may still be taking jobs from this one.
    ggml_barrier(params->threadpool);
}

// One token (a decode step): a row at a time, as ggml does, but with a row's two scales
// converted in one instruction and multiplied with the token's two in another ([d0 d1, m0 s1]:
// both products exact, as above), where ggml's build converts each half through a 256 KiB
// lookup table, four scattered loads per block. The minimum's term sums in lane 1 of a vector
// with plain adds, which equal ggml's fused multiply-adds because the products are exact.
// Decoding SmolLM2 with 2 threads: 94.4 against 79.3 tok/s (paired median ratio 1.19), 6
// alternated llama-bench runs linked with this file, LMFAST_Q4_1_GEMM=1 against 0. Rows taken 2
// or 4 at a time, sharing the token's block, were faster in cache-resident microbenchmarks but
// ran the model at 79 tok/s: interleaved rows defeat the hardware prefetcher where the weights
// come from memory.
void gemv_row(const block_q4_1 * x, const block_q8_1 * y, float * out, int64_t k) {
    __m256 acc = _mm256_setzero_ps();
    __m128 mins = _mm_setzero_ps();  // lane 1: the minimum's term; lane 0 sums the scale products, unused
    for (int64_t b = 0; b < k; ++b) {
        const __m128 p = _mm_mul_ps(halves(&x[b]), halves(&y[b]));
        mins = _mm_add_ps(mins, p);
        const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(y[b].qs));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(p), dot_us8(unpack(x[b]), qy), acc);
    }
    *out = hsum8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(mins));
}

// Each thread takes its own contiguous share of the rows: no chunk counter, so no barriers. A
// decode step makes 210 of these products for SmolLM2, where two more barriers each would cost
// more than the kernel saves.
void gemv(const ggml_compute_params * params, int64_t m, int64_t k, const block_q4_1 * A, int64_t lda,
          const block_q8_1 * y, float * C) {
    if (params->ith == 0) tiled_products.fetch_add(1, std::memory_order_relaxed);
    for (int64_t i = m * params->ith / params->nth; i < m * (params->ith + 1) / params->nth; ++i) {
        gemv_row(A + i * lda, y, C + i, k);
    }
}

#endif  // LMFAST_Q4_1_TILES

}  // namespace

extern "C" __attribute__((visibility("default"))) uint64_t lmfast_q4_1_tiled_products() {
    return tiled_products.load(std::memory_order_relaxed);
}

extern "C" __attribute__((visibility("default"))) uint64_t lmfast_wrap_calls_q4_1_gemm() {
    return wrap_calls.load(std::memory_order_relaxed);
}

extern "C" __attribute__((visibility("default"))) bool __wrap_llamafile_sgemm(
    const struct ggml_compute_params * params, int64_t m, int64_t n, int64_t k, const void * A, int64_t lda,
    const void * B, int64_t ldb, void * C, int64_t ldc, int Atype, int Btype, int Ctype) {
    if (params->ith == 0) wrap_calls.fetch_add(1, std::memory_order_relaxed);
#ifdef LMFAST_Q4_1_TILES
    // use_ref: a caller asked ggml's CPU backend for its reference kernels (ggml_backend_cpu_set_use_ref).
    if (Atype == GGML_TYPE_Q4_1 && Btype == GGML_TYPE_Q8_1 && Ctype == GGML_TYPE_F32 && !params->use_ref &&
        env_enabled()) {
        if (n == 1) {
            gemv(params, m, k, static_cast<const block_q4_1 *>(A), lda, static_cast<const block_q8_1 *>(B),
                 static_cast<float *>(C));
        } else if (!lmfast::few_token_product(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype)) {
            // 2 to 8 tokens went to csrc/few_token_gemm.cpp (each weight row unpacked once for all
            // of them); prompts come here.
            gemm(params, m, n, k, static_cast<const block_q4_1 *>(A), lda, static_cast<const block_q8_1 *>(B), ldb,
                 static_cast<float *>(C), ldc);
        }
        return true;
    }
#endif
    // Q4_1 reaches the few-token kernel only through the block above, so that LMFAST_Q4_1_GEMM=0
    // leaves every Q4_1 product to ggml.
    if (Atype != GGML_TYPE_Q4_1 && lmfast::few_token_product(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype,
                                                             Ctype)) {
        return true;
    }
    return __real_llamafile_sgemm(params, m, n, k, A, lda, B, ldb, C, ldc, Atype, Btype, Ctype);
}
