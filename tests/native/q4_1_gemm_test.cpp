// csrc/q4_1_gemm.cpp and csrc/few_token_gemm.cpp against ggml's own kernels, on random matrices.
//
// The subject is a ggml graph (one mul_mat of a Q4_1, Q8_0 or Q5_0 matrix by F32 token rows) computed
// by ggml's CPU backend in this program, which is linked as _core is (--wrap=llamafile_sgemm), so
// the product takes whichever path the build gives it. The reference is what ggml's generic
// loop computes for each output: the type's vec_dot (ggml_vec_dot_q4_1_q8_1,
// ggml_vec_dot_q8_0_q8_0, ggml_vec_dot_q5_0_q8_0) of the weight row with the token row quantized by ggml's from_float.
// The two must be equal bit for bit.
//
//   lmfast-q4_1-gemm-test                   check every shape below; prints "q4_1_gemm: ok", and
//                                           fails where a product did not take the path expected
//                                           (lmfast's kernel, or ggml's with LMFAST_Q4_1_GEMM=0 /
//                                           LMFAST_FEW_TOKEN_GEMM=0)
//   lmfast-q4_1-gemm-test bench M N K T R [q8_0|q5_0]
//                                           R products of M rows, N tokens, K weights a row,
//                                           T threads; prints the median time a product takes
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"

extern "C" uint64_t lmfast_q4_1_tiled_products();
extern "C" uint64_t lmfast_few_token_products();

namespace {

// Whether this build's CPU backend has lmfast's kernel (csrc/q4_1_gemm.cpp needs AVX2, FMA and
// F16C), and whether it is on: then every product must take it, one token or many.
bool switched_on(const char * name) {
    const char * v = std::getenv(name);
    return !(v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0));
}

bool avx2() { return ggml_cpu_has_avx2() && ggml_cpu_has_fma() && ggml_cpu_has_f16c(); }

// Q4_1: every product; Q8_0 and Q5_0 (csrc/few_token_gemm.cpp): products of 2 to 8 tokens, rows of at most
// 512 blocks.
bool lmfast_expected(ggml_type type, int64_t n, int64_t k) {
    if (type == GGML_TYPE_Q4_1) return switched_on("LMFAST_Q4_1_GEMM") && avx2();
    return switched_on("LMFAST_FEW_TOKEN_GEMM") && avx2() && n >= 2 && n <= 8 && k <= 512 * 32;
}

// Products taken by either of lmfast's kernels (Q4_1 products of 2 to 8 tokens go to the
// few-token one unless LMFAST_FEW_TOKEN_GEMM=0, then to the tiles).
uint64_t lmfast_products() { return lmfast_q4_1_tiled_products() + lmfast_few_token_products(); }

struct Product {
    ggml_context * ctx = nullptr;
    ggml_tensor * w = nullptr;
    ggml_tensor * x = nullptr;
    ggml_tensor * y = nullptr;
    ggml_cgraph * graph = nullptr;
    ~Product() { ggml_free(ctx); }
};

// W: m rows of k weights (Q4_1 or Q8_0), X: n rows of k floats; both from seed.
void make(Product & p, ggml_type type, int64_t m, int64_t n, int64_t k, unsigned seed) {
    const size_t bytes = ggml_row_size(type, k) * m + sizeof(float) * (k * n + m * n) + (size_t(1) << 20);
    ggml_init_params ip = {bytes, nullptr, false};
    p.ctx = ggml_init(ip);
    p.w = ggml_new_tensor_2d(p.ctx, type, k, m);
    p.x = ggml_new_tensor_2d(p.ctx, GGML_TYPE_F32, k, n);
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> weights(k * m);
    // Rows of different scales and offsets, so the minimum term and the scales both vary.
    for (int64_t r = 0; r < m; ++r) {
        const float scale = 0.02f + 0.05f * float(r % 7), shift = 0.01f * float(r % 5) - 0.02f;
        for (int64_t i = 0; i < k; ++i) weights[r * k + i] = scale * dist(rng) + shift;
    }
    ggml_quantize_chunk(type, weights.data(), p.w->data, 0, m, k, nullptr);
    auto * xs = static_cast<float *>(p.x->data);
    for (int64_t i = 0; i < k * n; ++i) xs[i] = dist(rng) * (i % 97 == 0 ? 8.0f : 1.0f);
    p.y = ggml_mul_mat(p.ctx, p.w, p.x);
    p.graph = ggml_new_graph(p.ctx);
    ggml_build_forward_expand(p.graph, p.y);
}

// What ggml's generic loop computes: one vec_dot per output.
std::vector<float> reference(const Product & p) {
    const int64_t k = p.w->ne[0], m = p.w->ne[1], n = p.x->ne[1];
    const auto * traits = ggml_get_type_traits_cpu(p.w->type);
    const auto * q8 = ggml_get_type_traits_cpu(traits->vec_dot_type);
    const size_t qrow = ggml_row_size(traits->vec_dot_type, k);
    std::vector<uint8_t> xq(qrow * n);
    for (int64_t j = 0; j < n; ++j) q8->from_float(static_cast<const float *>(p.x->data) + j * k, xq.data() + j * qrow, k);
    std::vector<float> out(m * n);
    for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < m; ++i) {
            traits->vec_dot(int(k), &out[j * m + i], 0, static_cast<const char *>(p.w->data) + i * p.w->nb[1], 0,
                            xq.data() + j * qrow, 0, 1);
        }
    }
    return out;
}

int check(ggml_type type, int64_t m, int64_t n, int64_t k, int threads, unsigned seed) {
    Product p;
    make(p, type, m, n, k, seed);
    const uint64_t before = lmfast_products();
    if (ggml_graph_compute_with_ctx(p.ctx, p.graph, threads) != GGML_STATUS_SUCCESS) {
        std::printf("FAIL %s m=%lld n=%lld k=%lld t=%d: compute failed\n", ggml_type_name(type), (long long)m, (long long)n, (long long)k, threads);
        return 1;
    }
    const bool tiled = lmfast_products() != before;
    if (tiled != lmfast_expected(type, n, k)) {
        std::printf("FAIL %s m=%lld n=%lld k=%lld t=%d: took %s\n", ggml_type_name(type), (long long)m, (long long)n, (long long)k, threads,
                    tiled ? "lmfast's kernel" : "ggml's loop");
        return 1;
    }
    const std::vector<float> want = reference(p);
    const auto * got = static_cast<const float *>(p.y->data);
    int64_t differ = 0, first = -1;
    for (int64_t i = 0; i < m * n; ++i) {
        if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            if (first < 0) first = i;
            ++differ;
        }
    }
    if (differ) {
        std::printf("FAIL %s m=%lld n=%lld k=%lld t=%d: %lld of %lld differ, first [%lld] %.9g != %.9g\n", ggml_type_name(type), (long long)m,
                    (long long)n, (long long)k, threads, (long long)differ, (long long)(m * n), (long long)first,
                    got[first], want[first]);
        return 1;
    }
    std::printf("ok %s m=%lld n=%lld k=%lld t=%d (%s)\n", ggml_type_name(type), (long long)m, (long long)n, (long long)k, threads,
                tiled ? "lmfast" : "ggml");
    return 0;
}

// Alternates the graph (whichever path the build gives the product) with ggml's generic loop
// (reference(), one thread, its token quantization included), so both see the same spells of
// this host's speed; prints the medians and the median of the per-pair ratios.
int bench(ggml_type type, int64_t m, int64_t n, int64_t k, int threads, int reps) {
    Product p;
    make(p, type, m, n, k, 1);
    ggml_cplan plan = ggml_graph_plan(p.graph, threads, nullptr);
    std::vector<uint8_t> work(plan.work_size);
    plan.work_data = work.data();
    std::vector<double> graph_ms, loop_ms, ratio;
    using clock = std::chrono::steady_clock;
    for (int r = 0; r < reps + 2; ++r) {
        const auto t0 = clock::now();
        ggml_graph_compute(p.graph, &plan);
        const auto t1 = clock::now();
        const std::vector<float> want = reference(p);
        const auto t2 = clock::now();
        if (r < 2) continue;
        graph_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        loop_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count());
        ratio.push_back(graph_ms.back() / loop_ms.back());
    }
    auto median = [](std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; };
    std::printf("graph %.3f ms, generic loop %.3f ms, ratio %.3f (median of %d; m=%lld n=%lld k=%lld t=%d)\n",
                median(graph_ms), median(loop_ms), median(ratio), reps, (long long)m, (long long)n, (long long)k, threads);
    return 0;
}

}  // namespace

int main(int argc, char ** argv) {
    ggml_cpu_init();
    if ((argc == 7 || argc == 8) && std::strcmp(argv[1], "bench") == 0) {
        ggml_type type = GGML_TYPE_Q4_1;
        if (argc == 8 && std::strcmp(argv[7], "q8_0") == 0) type = GGML_TYPE_Q8_0;
        if (argc == 8 && std::strcmp(argv[7], "q5_0") == 0) type = GGML_TYPE_Q5_0;
        return bench(type, std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]), std::atoi(argv[5]),
                     std::atoi(argv[6]));
    }
    // Whole tiles, edge rows and edge tokens, one token (a decode step, over 1 to 3 threads), a
    // job boundary crossed, several threads taking jobs, rows of several slices (k > 64 blocks),
    // and SmolLM2's own shapes.
    const struct { int64_t m, n, k; int threads; } shapes[] = {
        {4, 2, 32, 1},      {5, 3, 64, 1},     {7, 1, 96, 1},      {16, 32, 32, 1},   {17, 33, 160, 2},
        {64, 5, 256, 3},    {576, 27, 576, 2}, {1536, 19, 576, 2}, {576, 64, 1536, 2}, {3, 70, 64, 2},
        {192, 2, 576, 1},   {37, 11, 4160, 2}, {16, 30, 2048, 1}, {18, 31, 2080, 2}, {576, 1, 576, 2},
        {1536, 1, 576, 3},  {576, 1, 1536, 2}, {3, 1, 4160, 2},
    };
    // Q8_0 and Q5_0: every token count the kernel takes (2..8) and its neighbours (1 and 9, ggml's), rows
    // split unevenly over 1 to 3 threads, Gemma 3 270M's width (640) and its matrices' rows, and rows
    // longer than the kernel's 512 blocks (ggml's).
    const struct { int64_t m, n, k; int threads; } q8_shapes[] = {
        {5, 2, 32, 1},      {7, 3, 64, 2},      {33, 4, 640, 3},    {64, 5, 640, 2},   {2048, 6, 640, 2},
        {17, 7, 1024, 2},   {640, 8, 640, 2},   {640, 1, 640, 2},   {640, 9, 640, 2},  {4096, 6, 640, 3},
        {9, 3, 16384, 2},   {9, 3, 16416, 2},
    };
    int failed = 0;
    unsigned seed = 1;
    for (const auto & s : shapes) failed += check(GGML_TYPE_Q4_1, s.m, s.n, s.k, s.threads, seed++);
    for (const auto & s : q8_shapes) {
        failed += check(GGML_TYPE_Q8_0, s.m, s.n, s.k, s.threads, seed++);
        failed += check(GGML_TYPE_Q5_0, s.m, s.n, s.k, s.threads, seed++);
    }
    if (failed) {
        std::printf("q4_1_gemm: %d shapes differ\n", failed);
        return 1;
    }
    std::printf("q4_1_gemm: ok\n");
    return 0;
}
