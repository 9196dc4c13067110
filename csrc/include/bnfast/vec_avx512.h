// vec_avx512.h — Vec<T> for BNFAST_TARGET_AVX512 and BNFAST_TARGET_AVX512_BF16: one 512-bit
// register of T (AVX-512 F/BW/DQ/VL), tails by mask registers. The two targets differ only in
// how float32 lanes round to bfloat16: AVX512_BF16's convert instruction, or integer code. Included
// by vec.h only, which documents the interface every target implements.
#pragma once

#ifndef BNFAST_VEC_H_INSIDE_
#error "include bnfast/vec.h, not a target's own file"
#endif

#include <immintrin.h>

namespace bnfast {
namespace BNFAST_NS {

// Orders this thread's non-temporal stores before whatever follows.
inline void stream_fence() { _mm_sfence(); }

template <>
struct Vec<float> {
  static constexpr int N = 16;
  using Mask = __mmask16;
  __m512 v;
  static Mask tail_mask(int n) { return static_cast<Mask>((1u << n) - 1u); }
  static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static Vec load_partial(const float* p, int n) {
    return {_mm512_maskz_loadu_ps(tail_mask(n), p)};
  }
  static Vec load_partial(const float* p, int n, Vec fill) {
    return {_mm512_mask_loadu_ps(fill.v, tail_mask(n), p)};
  }
  static Vec set1(float x) { return {_mm512_set1_ps(x)}; }
  static Vec zero() { return {_mm512_setzero_ps()}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  void store_partial(float* p, int n) const { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
  // Non-temporal store; p must be aligned to the vector size.
  void stream(float* p) const { _mm512_stream_ps(p, v); }
};
template <>
struct Vec<double> {
  static constexpr int N = 8;
  using Mask = __mmask8;
  __m512d v;
  static Mask tail_mask(int n) { return static_cast<Mask>((1u << n) - 1u); }
  static Vec load(const double* p) { return {_mm512_loadu_pd(p)}; }
  static Vec load_partial(const double* p, int n) {
    return {_mm512_maskz_loadu_pd(tail_mask(n), p)};
  }
  static Vec load_partial(const double* p, int n, Vec fill) {
    return {_mm512_mask_loadu_pd(fill.v, tail_mask(n), p)};
  }
  static Vec set1(double x) { return {_mm512_set1_pd(x)}; }
  static Vec zero() { return {_mm512_setzero_pd()}; }
  void store(double* p) const { _mm512_storeu_pd(p, v); }
  void store_partial(double* p, int n) const { _mm512_mask_storeu_pd(p, tail_mask(n), v); }
  // Non-temporal store; p must be aligned to the vector size.
  void stream(double* p) const { _mm512_stream_pd(p, v); }
};

#define BNFAST_VEC_OPS(T, S)                                                                      \
  inline Vec<T> operator+(Vec<T> a, Vec<T> b) { return {_mm512_add_##S(a.v, b.v)}; }              \
  inline Vec<T> operator-(Vec<T> a, Vec<T> b) { return {_mm512_sub_##S(a.v, b.v)}; }              \
  inline Vec<T> operator*(Vec<T> a, Vec<T> b) { return {_mm512_mul_##S(a.v, b.v)}; }              \
  inline Vec<T> operator/(Vec<T> a, Vec<T> b) { return {_mm512_div_##S(a.v, b.v)}; }              \
  inline Vec<T> fmadd(Vec<T> a, Vec<T> b, Vec<T> c) { return {_mm512_fmadd_##S(a.v, b.v, c.v)}; } \
  inline Vec<T> fnmadd(Vec<T> a, Vec<T> b, Vec<T> c) {                                            \
    return {_mm512_fnmadd_##S(a.v, b.v, c.v)};                                                    \
  }                                                                                               \
  inline Vec<T> sqrt(Vec<T> a) { return {_mm512_sqrt_##S(a.v)}; }                                 \
  inline Vec<T> min(Vec<T> a, Vec<T> b) { return {_mm512_min_##S(a.v, b.v)}; }                    \
  inline Vec<T> max(Vec<T> a, Vec<T> b) { return {_mm512_max_##S(a.v, b.v)}; }                    \
  inline Vec<T> abs(Vec<T> a) { return {_mm512_abs_##S(a.v)}; }                                   \
  inline Vec<T>::Mask cmp_lt(Vec<T> a, Vec<T> b) {                                                \
    return _mm512_cmp_##S##_mask(a.v, b.v, _CMP_LT_OQ);                                           \
  }                                                                                               \
  inline Vec<T>::Mask cmp_le(Vec<T> a, Vec<T> b) {                                                \
    return _mm512_cmp_##S##_mask(a.v, b.v, _CMP_LE_OQ);                                           \
  }                                                                                               \
  inline Vec<T>::Mask cmp_eq(Vec<T> a, Vec<T> b) {                                                \
    return _mm512_cmp_##S##_mask(a.v, b.v, _CMP_EQ_OQ);                                           \
  }                                                                                               \
  inline Vec<T>::Mask is_nan(Vec<T> a) { return _mm512_cmp_##S##_mask(a.v, a.v, _CMP_UNORD_Q); }  \
  inline Vec<T> select(Vec<T>::Mask m, Vec<T> a, Vec<T> b) {                                      \
    return {_mm512_mask_blend_##S(m, b.v, a.v)};                                                  \
  }                                                                                               \
  inline T reduce_add(Vec<T> a) { return _mm512_reduce_add_##S(a.v); }                            \
  inline T reduce_max(Vec<T> a) { return _mm512_reduce_max_##S(a.v); }
BNFAST_VEC_OPS(float, ps)
BNFAST_VEC_OPS(double, pd)
#undef BNFAST_VEC_OPS

// 16 x 16 (float) and 8 x 8 (double) transposes: pairs interleaved within 128-bit lanes, then
// 128-bit lanes gathered across rows in two steps.
inline void transpose(Vec<float>* r) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i].v, r[2 * i + 1].v);
  }
  // u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 3.
  for (int g = 0; g < 4; ++g) {
    u[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 e0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);  // lanes 0, 2 of rows 0-7
    const __m512 e1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);  // lanes 1, 3
    const __m512 e2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 e3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c].v = _mm512_shuffle_f32x4(e0, e2, 0x88);
    r[8 + c].v = _mm512_shuffle_f32x4(e0, e2, 0xDD);
    r[4 + c].v = _mm512_shuffle_f32x4(e1, e3, 0x88);
    r[12 + c].v = _mm512_shuffle_f32x4(e1, e3, 0xDD);
  }
}
inline void transpose(Vec<double>* r) {
  __m512d t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i].v, r[2 * i + 1].v);
  }
  // t[2g + c], 128-bit lane L: column 2L + c of rows 2g, 2g + 1.
  for (int c = 0; c < 2; ++c) {
    const __m512d e0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x88);
    const __m512d e1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xDD);
    const __m512d e2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x88);
    const __m512d e3 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xDD);
    r[c].v = _mm512_shuffle_f64x2(e0, e2, 0x88);
    r[4 + c].v = _mm512_shuffle_f64x2(e0, e2, 0xDD);
    r[2 + c].v = _mm512_shuffle_f64x2(e1, e3, 0x88);
    r[6 + c].v = _mm512_shuffle_f64x2(e1, e3, 0xDD);
  }
}

#define BNFAST_VEC_BITS(T, S, W)                                                       \
  inline Vec<T> bit_and(Vec<T> a, Vec<T> b) {                                          \
    return {_mm512_castsi512_##S(                                                      \
        _mm512_and_si512(_mm512_cast##S##_si512(a.v), _mm512_cast##S##_si512(b.v)))};  \
  }                                                                                    \
  inline Vec<T> bit_or(Vec<T> a, Vec<T> b) {                                           \
    return {_mm512_castsi512_##S(                                                      \
        _mm512_or_si512(_mm512_cast##S##_si512(a.v), _mm512_cast##S##_si512(b.v)))};   \
  }                                                                                    \
  inline Vec<T> shift_left(Vec<T> a, int n) {                                          \
    return {_mm512_castsi512_##S(_mm512_slli_epi##W(_mm512_cast##S##_si512(a.v), n))}; \
  }                                                                                    \
  inline Vec<T> shift_right(Vec<T> a, int n) {                                         \
    return {_mm512_castsi512_##S(_mm512_srli_epi##W(_mm512_cast##S##_si512(a.v), n))}; \
  }
BNFAST_VEC_BITS(float, ps, 32)
BNFAST_VEC_BITS(double, pd, 64)
#undef BNFAST_VEC_BITS

// round_even(x): x rounded to the nearest integer, ties to even. scalef(a, k): a * 2^k for
// integer-valued k, rounded once (inf on overflow, subnormal results rounded correctly).
inline constexpr bool kHasRound = true;
inline constexpr bool kHasScalef = true;
inline Vec<float> round_even(Vec<float> a) {
  return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline Vec<double> round_even(Vec<double> a) {
  return {_mm512_roundscale_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline Vec<float> scalef(Vec<float> a, Vec<float> k) { return {_mm512_scalef_ps(a.v, k.v)}; }
inline Vec<double> scalef(Vec<double> a, Vec<double> k) { return {_mm512_scalef_pd(a.v, k.v)}; }

// bfloat16 storage: 16 values per float32 register.
inline __m512 widen_bf16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec<float> load_bf16(const bf16* p) {
  return {widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
inline Vec<float> load_bf16_partial(const bf16* p, int n) {
  return {widen_bf16(_mm256_maskz_loadu_epi16(Vec<float>::tail_mask(n), p))};
}
inline Vec<float> load_bf16_partial(const bf16* p, int n, Vec<float> fill) {
  return {_mm512_mask_blend_ps(Vec<float>::tail_mask(n), fill.v, load_bf16_partial(p, n).v)};
}
// The rounding of bfloat16.h, 16 lanes at a time.
inline __m256i round_bf16(Vec<float> v) {
#if defined(BNFAST_TARGET_AVX512_BF16)
  return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v.v));
#else
  const __m512i u = _mm512_castps_si512(v.v);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v.v, v.v, _CMP_UNORD_Q),
                            _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
  r = _mm512_mask_mov_epi32(r, _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000)),
                            _mm512_and_si512(hi, _mm512_set1_epi32(0x8000)));
  return _mm512_cvtepi32_epi16(r);
#endif
}
inline void store_bf16(bf16* p, Vec<float> v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), round_bf16(v));
}
inline void store_bf16_partial(bf16* p, Vec<float> v, int n) {
  _mm256_mask_storeu_epi16(p, Vec<float>::tail_mask(n), round_bf16(v));
}
// Non-temporal store; p must be aligned to 32 bytes.
inline void stream_bf16(bf16* p, Vec<float> v) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(p), round_bf16(v));
}

// 32-bit integer lanes beside Vec<float> (hashes and bit-level rounding need integer adds and
// multiplies): IVec, iset1, iota (0, 1, ... per lane), iadd, imul, ixor, iand, isrl<N>, ibits (a
// float vector's bit patterns); select_special(v, t): v where v is zero, subnormal, infinite or
// NaN (rounded by the rules of bfloat16.h), else the lanes t as floats.
using IVec = __m512i;
inline IVec iset1(std::uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
inline IVec iota() {
  return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}
inline IVec iadd(IVec a, IVec b) { return _mm512_add_epi32(a, b); }
inline IVec imul(IVec a, IVec b) { return _mm512_mullo_epi32(a, b); }
inline IVec ixor(IVec a, IVec b) { return _mm512_xor_si512(a, b); }
inline IVec iand(IVec a, IVec b) { return _mm512_and_si512(a, b); }
template <int N>
inline IVec isrl(IVec a) {
  return _mm512_srli_epi32(a, N);
}
inline IVec ibits(Vec<float> v) { return _mm512_castps_si512(v.v); }
inline Vec<float> select_special(Vec<float> v, IVec t) {
  const IVec e = iand(ibits(v), iset1(0x7f800000u));
  const __mmask16 special = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512()) |
                            _mm512_cmpeq_epi32_mask(e, iset1(0x7f800000u));
  return {_mm512_castsi512_ps(_mm512_mask_blend_epi32(special, t, ibits(v)))};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
