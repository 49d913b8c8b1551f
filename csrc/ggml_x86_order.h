// What lmfast's x86 kernels (csrc/q4_1_gemm.cpp, csrc/few_token_gemm.cpp) take from ggml's AVX2
// code to give its results bit for bit: a half-precision scale as ggml converts it (exactly,
// through F16C), and ggml's horizontal sum of eight lanes in its order of additions. Include it
// only where __AVX2__, __FMA__ and __F16C__ are defined.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace lmfast::x86 {

// A ggml_half (two bytes) as a float.
template <typename Half>
inline float half(Half h) {
    static_assert(sizeof(Half) == sizeof(uint16_t), "a ggml_half is two bytes");
    uint16_t bits;
    std::memcpy(&bits, &h, sizeof bits);
    return _cvtsh_ss(bits);
}

// ggml's hsum_float_8 (ggml-cpu/arch/x86/quants.c), in its order of additions.
inline float hsum8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

}  // namespace lmfast::x86
