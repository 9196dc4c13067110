// vec.h — the one place where ISAs differ.
//
// A kernel source includes this header and is compiled once per ISA with BNFAST_NS set to the
// ISA's name (scalar, avx2, avx512) and that ISA's compiler flags. Everything here lives in
// bnfast::BNFAST_NS, so inline functions compiled with AVX-512 flags never share a symbol with
// the scalar build (the linker would otherwise keep one copy for both and crash older CPUs).
//
// Vec<T> is one SIMD register of T (float or double): N lanes, a Mask type, loads and stores
// (full, partial with n < N lanes for tails, masked so they never touch memory past the end;
// masked-off lanes read 0 or a given fill value),
// arithmetic, fma, sqrt, min/max, compare/select, horizontal sums, bit operations on the
// lanes' IEEE representation (and/or, logical shifts) for the range reductions of vmath.h, and
// stream(), a non-temporal store for large fresh outputs (followed by stream_fence()).
#pragma once

#ifndef BNFAST_NS
#error "vec.h is only for kernel sources compiled per ISA (BNFAST_NS undefined)"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bnfast/isa.h"

#if defined(BNFAST_TARGET_AVX2) || defined(BNFAST_TARGET_AVX512)
#include <immintrin.h>
#endif

namespace bnfast {
namespace BNFAST_NS {

using i64 = std::int64_t;

template <class T>
struct Vec;

#if defined(BNFAST_TARGET_SCALAR)

template <class T>
struct Vec {
  static constexpr int N = 1;
  using Mask = bool;
  T v;
  static Vec load(const T* p) { return {*p}; }
  static Mask tail_mask(int n) { return n > 0; }
  static Vec load_partial(const T* p, int n) { return {n > 0 ? *p : T(0)}; }
  static Vec load_partial(const T* p, int n, Vec fill) { return n > 0 ? Vec{*p} : fill; }
  static Vec set1(T x) { return {x}; }
  static Vec zero() { return {T(0)}; }
  void store(T* p) const { *p = v; }
  void store_partial(T* p, int n) const {
    if (n > 0) *p = v;
  }
  void stream(T* p) const { *p = v; }
};
inline void stream_fence() {}
template <class T>
inline Vec<T> operator+(Vec<T> a, Vec<T> b) {
  return {a.v + b.v};
}
template <class T>
inline Vec<T> operator-(Vec<T> a, Vec<T> b) {
  return {a.v - b.v};
}
template <class T>
inline Vec<T> operator*(Vec<T> a, Vec<T> b) {
  return {a.v * b.v};
}
template <class T>
inline Vec<T> operator/(Vec<T> a, Vec<T> b) {
  return {a.v / b.v};
}
// Baseline x86-64 has no FMA instruction; std::fma would be a slow library call.
template <class T>
inline Vec<T> fmadd(Vec<T> a, Vec<T> b, Vec<T> c) {
  return {a.v * b.v + c.v};
}
template <class T>
inline Vec<T> fnmadd(Vec<T> a, Vec<T> b, Vec<T> c) {
  return {c.v - a.v * b.v};
}
template <class T>
inline Vec<T> sqrt(Vec<T> a) {
  return {std::sqrt(a.v)};
}
// min/max return b when either is NaN (like the x86 instructions), so kernels behave alike.
template <class T>
inline Vec<T> min(Vec<T> a, Vec<T> b) {
  return {a.v < b.v ? a.v : b.v};
}
template <class T>
inline Vec<T> max(Vec<T> a, Vec<T> b) {
  return {a.v > b.v ? a.v : b.v};
}
template <class T>
inline Vec<T> abs(Vec<T> a) {
  return {std::fabs(a.v)};
}
template <class T>
inline bool cmp_lt(Vec<T> a, Vec<T> b) {
  return a.v < b.v;
}
template <class T>
inline bool cmp_le(Vec<T> a, Vec<T> b) {
  return a.v <= b.v;
}
template <class T>
inline bool cmp_eq(Vec<T> a, Vec<T> b) {
  return a.v == b.v;
}
template <class T>
inline bool is_nan(Vec<T> a) {
  return a.v != a.v;
}
template <class T>
inline Vec<T> select(bool m, Vec<T> a, Vec<T> b) {
  return m ? a : b;
}
template <class T>
inline T reduce_add(Vec<T> a) {
  return a.v;
}
template <class T>
inline T reduce_max(Vec<T> a) {
  return a.v;
}
template <class T>
inline T reduce_min(Vec<T> a) {
  return a.v;
}
// transpose(r): r[i] lane j becomes r[j] lane i (an N x N block; N = 1 here).
template <class T>
inline void transpose(Vec<T>*) {}

// Bit operations on each lane's IEEE-754 representation (shifts are logical).
namespace detail {
template <class T>
struct Bits;
template <>
struct Bits<float> {
  using U = std::uint32_t;
};
template <>
struct Bits<double> {
  using U = std::uint64_t;
};
template <class T>
inline typename Bits<T>::U to_bits(T x) {
  typename Bits<T>::U u;
  std::memcpy(&u, &x, sizeof(T));
  return u;
}
template <class T>
inline T from_bits(typename Bits<T>::U u) {
  T x;
  std::memcpy(&x, &u, sizeof(T));
  return x;
}
}  // namespace detail
template <class T>
inline Vec<T> bit_and(Vec<T> a, Vec<T> b) {
  return {detail::from_bits<T>(detail::to_bits(a.v) & detail::to_bits(b.v))};
}
template <class T>
inline Vec<T> bit_or(Vec<T> a, Vec<T> b) {
  return {detail::from_bits<T>(detail::to_bits(a.v) | detail::to_bits(b.v))};
}
template <class T>
inline Vec<T> shift_left(Vec<T> a, int n) {
  return {detail::from_bits<T>(detail::to_bits(a.v) << n)};
}
template <class T>
inline Vec<T> shift_right(Vec<T> a, int n) {
  return {detail::from_bits<T>(detail::to_bits(a.v) >> n)};
}
// No single-instruction rounding or scaling here: vmath.h falls back to bit tricks.
inline constexpr bool kHasRound = false;
inline constexpr bool kHasScalef = false;

#elif defined(BNFAST_TARGET_AVX2)

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
inline float reduce_min(Vec<float> a) {
  __m128 s = _mm_min_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_min_ps(s, _mm_movehl_ps(s, s));
  s = _mm_min_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double reduce_min(Vec<double> a) {
  __m128d s = _mm_min_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  return _mm_cvtsd_f64(_mm_min_sd(s, _mm_unpackhi_pd(s, s)));
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

#elif defined(BNFAST_TARGET_AVX512)

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
  inline T reduce_max(Vec<T> a) { return _mm512_reduce_max_##S(a.v); }                            \
  inline T reduce_min(Vec<T> a) { return _mm512_reduce_min_##S(a.v); }
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

#else
#error "unknown BNFAST_TARGET"
#endif

// Loads and stores of the first n lanes (n == N: a full vector; the test folds away where n is
// a constant), and the loop over a row in vectors with a partial last one: the tail strategy
// every kernel shares.
template <class T>
inline Vec<T> ld(const T* p, int n) {
  return n == Vec<T>::N ? Vec<T>::load(p) : Vec<T>::load_partial(p, n);
}
template <class T>
inline Vec<T> ld(const T* p, int n, Vec<T> fill) {
  return n == Vec<T>::N ? Vec<T>::load(p) : Vec<T>::load_partial(p, n, fill);
}
template <class T>
inline void st(T* p, Vec<T> v, int n) {
  if (n == Vec<T>::N) {
    v.store(p);
  } else {
    v.store_partial(p, n);
  }
}
// The loops over a row's vectors are flattened: their per-vector body is always inlined. GCC
// otherwise may keep a body that a loop calls twice (full vectors, tail) out of line and pay a
// call, spilled registers and reloaded captures per vector (batch-norm statistics: 5-15%).
#define BNFAST_FLATTEN __attribute__((flatten))

// Calls f(j, n) over [0, w) in steps of one vector; n < N only for the last step.
template <class T, class F>
BNFAST_FLATTEN inline void for_lanes(i64 w, F&& f) {
  constexpr int N = Vec<T>::N;
  i64 j = 0;
  for (; j + N <= w; j += N) f(j, N);
  if (j < w) f(j, static_cast<int>(w - j));
}

// Like for_lanes, calling f(j, n, chain): consecutive vectors alternate between chain 0 and 1
// (std::integral_constant, so per-chain accumulators index arrays at compile time and stay in
// registers). Two accumulation chains halve the latency bound of a reduction over a long row.
template <class T, class F>
BNFAST_FLATTEN inline void for_lanes2(i64 w, F&& f) {
  constexpr int N = Vec<T>::N;
  const std::integral_constant<int, 0> c0;
  const std::integral_constant<int, 1> c1;
  i64 j = 0;
  for (; j + 2 * N <= w; j += 2 * N) {
    f(j, N, c0);
    f(j + N, N, c1);
  }
  if (j + N <= w) {
    f(j, N, c0);
    j += N;
    if (j < w) f(j, static_cast<int>(w - j), c1);
  } else if (j < w) {
    f(j, static_cast<int>(w - j), c0);
  }
}

// Uninitialised aligned scratch memory owned by a kernel call (from the per-thread arena; LIFO).
template <class T>
class Scratch {
 public:
  explicit Scratch(i64 n) : raw_(scratch_alloc(n * i64(sizeof(T)))), p_(static_cast<T*>(raw_)) {}
  // Accumulators stored to while streaming rows of `data`: placed `offset` bytes past `data`
  // modulo 4 KiB (half a page by default), so loads of rows a multiple of 4 KiB apart do not
  // look like they depend on recent accumulator stores (4K aliasing stalls such loads).
  Scratch(i64 n, const void* data, std::uintptr_t offset = 2048)
      : raw_(scratch_alloc(n * i64(sizeof(T)) + 4096)), p_(static_cast<T*>(raw_)) {
    const auto a = reinterpret_cast<std::uintptr_t>(raw_);
    const auto d = reinterpret_cast<std::uintptr_t>(data);
    p_ = reinterpret_cast<T*>(a + ((d + offset - a) & 4095 & ~std::uintptr_t(63)));
  }
  ~Scratch() { scratch_free(raw_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const { return p_; }
  T& operator[](i64 i) const { return p_[i]; }

 private:
  void* raw_;
  T* p_;
};

}  // namespace BNFAST_NS
}  // namespace bnfast
