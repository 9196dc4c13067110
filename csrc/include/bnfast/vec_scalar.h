// vec_scalar.h — Vec<T> for BNFAST_TARGET_SCALAR: one lane of T (plain C++; baseline x86-64 or any
// other CPU). Included by vec.h only, which documents the interface every target implements.
#pragma once

#ifndef BNFAST_VEC_H_INSIDE_
#error "include bnfast/vec.h, not a target's own file"
#endif

namespace bnfast {
namespace BNFAST_NS {

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

// bfloat16 storage: one value per float32 lane.
inline Vec<float> load_bf16(const bf16* p) { return {widen(*p)}; }
inline Vec<float> load_bf16_partial(const bf16* p, int n) { return {n > 0 ? widen(*p) : 0.0f}; }
inline Vec<float> load_bf16_partial(const bf16* p, int n, Vec<float> fill) {
  return n > 0 ? load_bf16(p) : fill;
}
inline void store_bf16(bf16* p, Vec<float> v) { *p = round_bf16(v.v); }
inline void store_bf16_partial(bf16* p, Vec<float> v, int n) {
  if (n > 0) store_bf16(p, v);
}
inline void stream_bf16(bf16* p, Vec<float> v) { store_bf16(p, v); }

// 32-bit integer lanes beside Vec<float> (hashes and bit-level rounding need integer adds and
// multiplies): IVec, iset1, iota (0, 1, ... per lane), iadd, imul, ixor, iand, isrl<N>, ibits (a
// float vector's bit patterns); select_special(v, t): v where v is zero, subnormal, infinite or
// NaN (rounded by the rules of bfloat16.h), else the lanes t as floats.
using IVec = std::uint32_t;
inline IVec iset1(std::uint32_t x) { return x; }
inline IVec iota() { return 0; }
inline IVec iadd(IVec a, IVec b) { return a + b; }
inline IVec imul(IVec a, IVec b) { return a * b; }
inline IVec ixor(IVec a, IVec b) { return a ^ b; }
inline IVec iand(IVec a, IVec b) { return a & b; }
template <int N>
inline IVec isrl(IVec a) {
  return a >> N;
}
inline IVec ibits(Vec<float> v) { return float_bits(v.v); }
inline Vec<float> select_special(Vec<float> v, IVec t) {
  const std::uint32_t e = float_bits(v.v) & 0x7f800000u;
  return {e == 0 || e == 0x7f800000u ? v.v : bits_float(t)};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
