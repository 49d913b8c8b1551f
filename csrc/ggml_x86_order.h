// What lmfast's x86 kernels (csrc/q4_1_gemm.cpp, csrc/few_token_gemm.cpp) take from ggml's AVX2
// code to give its results bit for bit: a half-precision scale as ggml converts it (exactly,
// through F16C), a block's 4-bit weights as ggml unpacks them, a block's integer dot in eight
// lanes, and ggml's horizontal sum of eight lanes in its order of additions. Include it only
// where __AVX2__, __FMA__ and __F16C__ are defined.
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

// A block's 32 four-bit weights (16 bytes) as bytes 0..15: low nibbles first, then high
// (ggml's bytes_from_nibbles_32).
inline __m256i nibbles(const uint8_t * qs) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Unsigned bytes by signed bytes as eight float lanes, each the exact sum of four products:
// ggml's mul_sum_us8_pairs_float in its AVX2 form. Its VNNI forms give the same integers where
// a pair of products cannot saturate a 16-bit lane: Q4_1's (at most 2 x 15 x 127), and the
// sign-moved bytes of Q8_0 and Q5_0 (2 x 128 x 127).
inline __m256 dot_us8(__m256i ux, __m256i sy) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ux, sy), _mm256_set1_epi16(1)));
}

// ggml's hsum_float_8 (ggml-cpu/arch/x86/quants.c), in its order of additions.
inline float hsum8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

}  // namespace lmfast::x86
