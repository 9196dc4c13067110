// vec_avx2.h — Vec<T> for BNFAST_TARGET_AVX2: one 256-bit register of T (AVX2 + FMA).
// Included by vec.h only, which documents the interface every target implements.
#pragma once

#ifndef BNFAST_VEC_H_INSIDE_
#error "include bnfast/vec.h, not a target's own file"
#endif

#include <immintrin.h>

namespace bnfast {
namespace BNFAST_NS {

// Orders this thread's non-temporal stores before whatever follows.
inline void stream_fence() { _mm_sfence(); }

namespace detail {
inline __m256i tail_mask32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i tail_mask64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
}  // namespace detail

template <>
struct Vec<float> {
  static constexpr int N = 8;
  using Mask = __m256;
  __m256 v;
  static Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static Mask tail_mask(int n) { return _mm256_castsi256_ps(detail::tail_mask32(n)); }
  static Vec load_partial(const float* p, int n) {
    return {_mm256_maskload_ps(p, detail::tail_mask32(n))};
  }
  static Vec load_partial(const float* p, int n, Vec fill) {
    return {_mm256_blendv_ps(fill.v, load_partial(p, n).v, tail_mask(n))};
  }
  static Vec set1(float x) { return {_mm256_set1_ps(x)}; }
  static Vec zero() { return {_mm256_setzero_ps()}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  void store_partial(float* p, int n) const { _mm256_maskstore_ps(p, detail::tail_mask32(n), v); }
  // Non-temporal store; p must be aligned to the vector size.
  void stream(float* p) const { _mm256_stream_ps(p, v); }
};
template <>
struct Vec<double> {
  static constexpr int N = 4;
  using Mask = __m256d;
  __m256d v;
  static Vec load(const double* p) { return {_mm256_loadu_pd(p)}; }
  static Mask tail_mask(int n) { return _mm256_castsi256_pd(detail::tail_mask64(n)); }
  static Vec load_partial(const double* p, int n) {
    return {_mm256_maskload_pd(p, detail::tail_mask64(n))};
  }
  static Vec load_partial(const double* p, int n, Vec fill) {
    return {_mm256_blendv_pd(fill.v, load_partial(p, n).v, tail_mask(n))};
  }
  static Vec set1(double x) { return {_mm256_set1_pd(x)}; }
  static Vec zero() { return {_mm256_setzero_pd()}; }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  void store_partial(double* p, int n) const { _mm256_maskstore_pd(p, detail::tail_mask64(n), v); }
  // Non-temporal store; p must be aligned to the vector size.
  void stream(double* p) const { _mm256_stream_pd(p, v); }
};

#define BNFAST_VEC_OPS(T, S)                                                                      \
  inline Vec<T> operator+(Vec<T> a, Vec<T> b) { return {_mm256_add_##S(a.v, b.v)}; }              \
  inline Vec<T> operator-(Vec<T> a, Vec<T> b) { return {_mm256_sub_##S(a.v, b.v)}; }              \
  inline Vec<T> operator*(Vec<T> a, Vec<T> b) { return {_mm256_mul_##S(a.v, b.v)}; }              \
  inline Vec<T> operator/(Vec<T> a, Vec<T> b) { return {_mm256_div_##S(a.v, b.v)}; }              \
  inline Vec<T> fmadd(Vec<T> a, Vec<T> b, Vec<T> c) { return {_mm256_fmadd_##S(a.v, b.v, c.v)}; } \
  inline Vec<T> fnmadd(Vec<T> a, Vec<T> b, Vec<T> c) {                                            \
    return {_mm256_fnmadd_##S(a.v, b.v, c.v)};                                                    \
  }                                                                                               \
  inline Vec<T> sqrt(Vec<T> a) { return {_mm256_sqrt_##S(a.v)}; }                                 \
  inline Vec<T> min(Vec<T> a, Vec<T> b) { return {_mm256_min_##S(a.v, b.v)}; }                    \
  inline Vec<T> max(Vec<T> a, Vec<T> b) { return {_mm256_max_##S(a.v, b.v)}; }                    \
  inline Vec<T> abs(Vec<T> a) { return {_mm256_andnot_##S(_mm256_set1_##S(T(-0.0)), a.v)}; }      \
  inline Vec<T>::Mask cmp_lt(Vec<T> a, Vec<T> b) { return _mm256_cmp_##S(a.v, b.v, _CMP_LT_OQ); } \
  inline Vec<T>::Mask cmp_le(Vec<T> a, Vec<T> b) { return _mm256_cmp_##S(a.v, b.v, _CMP_LE_OQ); } \
  inline Vec<T>::Mask cmp_eq(Vec<T> a, Vec<T> b) { return _mm256_cmp_##S(a.v, b.v, _CMP_EQ_OQ); } \
  inline Vec<T>::Mask is_nan(Vec<T> a) { return _mm256_cmp_##S(a.v, a.v, _CMP_UNORD_Q); }         \
  inline Vec<T> select(Vec<T>::Mask m, Vec<T> a, Vec<T> b) {                                      \
    return {_mm256_blendv_##S(b.v, a.v, m)};                                                      \
  }
BNFAST_VEC_OPS(float, ps)
BNFAST_VEC_OPS(double, pd)
#undef BNFAST_VEC_OPS

inline float reduce_add(Vec<float> a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double reduce_add(Vec<double> a) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
inline float reduce_max(Vec<float> a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double reduce_max(Vec<double> a) {
  __m128d s = _mm_max_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  return _mm_cvtsd_f64(_mm_max_sd(s, _mm_unpackhi_pd(s, s)));
}

// 8 x 8 (float) and 4 x 4 (double) transposes: pairs interleaved within 128-bit lanes, then
// the 128-bit lanes exchanged.
inline void transpose(Vec<float>* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i].v, r[2 * i + 1].v);
  }
  // u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 3.
  for (int g = 0; g < 2; ++g) {
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c].v = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c].v = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}
inline void transpose(Vec<double>* r) {
  __m256d t[4];
  for (int i = 0; i < 2; ++i) {
    t[2 * i] = _mm256_unpacklo_pd(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm256_unpackhi_pd(r[2 * i].v, r[2 * i + 1].v);
  }
  for (int c = 0; c < 2; ++c) {
    r[c].v = _mm256_permute2f128_pd(t[c], t[2 + c], 0x20);
    r[2 + c].v = _mm256_permute2f128_pd(t[c], t[2 + c], 0x31);
  }
}

#define BNFAST_VEC_BITS(T, S, W)                                                       \
  inline Vec<T> bit_and(Vec<T> a, Vec<T> b) { return {_mm256_and_##S(a.v, b.v)}; }     \
  inline Vec<T> bit_or(Vec<T> a, Vec<T> b) { return {_mm256_or_##S(a.v, b.v)}; }       \
  inline Vec<T> shift_left(Vec<T> a, int n) {                                          \
    return {_mm256_castsi256_##S(_mm256_slli_epi##W(_mm256_cast##S##_si256(a.v), n))}; \
  }                                                                                    \
  inline Vec<T> shift_right(Vec<T> a, int n) {                                         \
    return {_mm256_castsi256_##S(_mm256_srli_epi##W(_mm256_cast##S##_si256(a.v), n))}; \
  }
BNFAST_VEC_BITS(float, ps, 32)
BNFAST_VEC_BITS(double, pd, 64)
#undef BNFAST_VEC_BITS

// round_even(x): x rounded to the nearest integer, ties to even (one instruction).
inline constexpr bool kHasRound = true;
inline constexpr bool kHasScalef = false;
inline Vec<float> round_even(Vec<float> a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline Vec<double> round_even(Vec<double> a) {
  return {_mm256_round_pd(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}

// bfloat16 storage: 8 values per float32 register. AVX2 has no 16-bit masked loads or stores:
// tails go through a small buffer.
inline __m256 widen_bf16(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Vec<float> load_bf16(const bf16* p) {
  return {widen_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
inline Vec<float> load_bf16_partial(const bf16* p, int n) {
  alignas(16) std::uint16_t t[8] = {};
  std::memcpy(t, p, static_cast<std::size_t>(n) * 2);
  return {widen_bf16(_mm_load_si128(reinterpret_cast<const __m128i*>(t)))};
}
inline Vec<float> load_bf16_partial(const bf16* p, int n, Vec<float> fill) {
  return {_mm256_blendv_ps(fill.v, load_bf16_partial(p, n).v, Vec<float>::tail_mask(n))};
}
// The rounding of bfloat16.h, 8 lanes at a time.
inline __m128i round_bf16(Vec<float> v) {
  const __m256i u = _mm256_castps_si256(v.v);
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v.v, v.v, _CMP_UNORD_Q));
  r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
  const __m256i sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7f800000)),
                                         _mm256_setzero_si256());
  r = _mm256_blendv_epi8(r, _mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), sub);
  // Every lane is in [0, 0xffff], so the saturating pack is exact; it packs within 128-bit
  // halves, and the permute gathers the two results.
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}
inline void store_bf16(bf16* p, Vec<float> v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), round_bf16(v));
}
inline void store_bf16_partial(bf16* p, Vec<float> v, int n) {
  alignas(16) std::uint16_t t[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(t), round_bf16(v));
  std::memcpy(p, t, static_cast<std::size_t>(n) * 2);
}
// Non-temporal store; p must be aligned to 16 bytes.
inline void stream_bf16(bf16* p, Vec<float> v) {
  _mm_stream_si128(reinterpret_cast<__m128i*>(p), round_bf16(v));
}

// 32-bit integer lanes beside Vec<float> (hashes and bit-level rounding need integer adds and
// multiplies): IVec, iset1, iota (0, 1, ... per lane), iadd, imul, ixor, iand, isrl<N>, ibits (a
// float vector's bit patterns); select_special(v, t): v where v is zero, subnormal, infinite or
// NaN (rounded by the rules of bfloat16.h), else the lanes t as floats.
using IVec = __m256i;
inline IVec iset1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
inline IVec iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
inline IVec iadd(IVec a, IVec b) { return _mm256_add_epi32(a, b); }
inline IVec imul(IVec a, IVec b) { return _mm256_mullo_epi32(a, b); }
inline IVec ixor(IVec a, IVec b) { return _mm256_xor_si256(a, b); }
inline IVec iand(IVec a, IVec b) { return _mm256_and_si256(a, b); }
template <int N>
inline IVec isrl(IVec a) {
  return _mm256_srli_epi32(a, N);
}
inline IVec ibits(Vec<float> v) { return _mm256_castps_si256(v.v); }
inline Vec<float> select_special(Vec<float> v, IVec t) {
  const IVec e = iand(ibits(v), iset1(0x7f800000u));
  const IVec special = _mm256_or_si256(_mm256_cmpeq_epi32(e, _mm256_setzero_si256()),
                                       _mm256_cmpeq_epi32(e, iset1(0x7f800000u)));
  return {_mm256_castsi256_ps(_mm256_blendv_epi8(t, ibits(v), special))};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
