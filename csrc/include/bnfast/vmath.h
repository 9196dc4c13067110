// vmath.h — vectorized exp, log and log1p on Vec<T> (vec.h), for every ISA.
//
// exp(x): k = round(x / ln2), r = x - k*ln2 (ln2 split in hi + lo, k*ln2_hi exact), so
//   |r| <= ln2/2 and exp(x) = 2^k * exp(r), exp(r) = 1 + r + r^2 * P(r) with P a polynomial
//   of (e^r - 1 - r) / r^2 (float: near-minimax of degree 4, 0.1 ulp; double: Taylor to r^13).
//   2^k is built in the exponent bits, as 2^k1 * 2^(k - k1) with k1 = k clamped to a range
//   where p * 2^k1 is exact and normal, so overflow gives inf and subnormal results round once.
// log(x): x = 2^e * m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f),
//   log(1 + f) = 2 atanh(s) = 2s + s * R(s^2), R the atanh series (float: 4 terms, double: 10;
//   |s| <= 0.172 so the truncation is < 0.05 ulp), evaluated as f - (f^2/2 - s (f^2/2 + R))
//   so the exact f carries the result; log(x) = e*ln2_hi + (that + e*ln2_lo).
//   Subnormal inputs are scaled by 2^(mantissa bits) first.
// Special values: exp(-inf) = 0, exp(inf) = inf, exp(NaN) = NaN; log(0) = -inf, log(x<0) = NaN,
//   log(inf) = inf, log(NaN) = NaN.
//
// Measured maximum error (float32 exp: every float32 input from -104 to 89 against float64;
// float32 log: tests/test_vmath.py, every 4099th bit pattern of the whole range; float64 against
// long double over 5 * 10^6 random inputs of the whole range and of [-5, 5]):
//   float32 exp : 1.04 ulp (avx2, avx512), 1.02 ulp (scalar)
//   float32 log : 0.75 ulp (every ISA)
//   float64 exp : 0.98 ulp (avx2, avx512), 0.96 ulp (scalar);  float64 log : 0.72 ulp
// The tests assert <= 2 ulp; BNFAST_VMATH_EXHAUSTIVE=1 measures every float32 input.
// (The scalar build has no FMA: fmadd rounds twice there.)
#pragma once

#include <limits>

#include "bnfast/vec.h"

namespace bnfast {
namespace BNFAST_NS {
namespace vmath_detail {

template <class T>
struct Consts;

template <>
struct Consts<float> {
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;  // 9 significant bits: k * ln2_hi is exact
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: x + magic - magic rounds
  static constexpr float pow2_magic = 8388608.0f + 127.0f;
  static constexpr int mant_bits = 23;
  static constexpr float exp_lo = -110.0f, exp_hi = 100.0f;  // beyond: 0 / inf
  static constexpr float split_k = 120.0f;
  static constexpr float tiny = 1.17549435e-38f;  // smallest normal
  static constexpr float sub_scale = 8388608.0f;  // 2^23
  static constexpr float sqrt2 = 1.41421356237309505f;
};

template <>
struct Consts<double> {
  static constexpr double log2e = 1.44269504088896340736;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // 32 trailing zero bits
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double pow2_magic = 4503599627370496.0 + 1023.0;
  static constexpr int mant_bits = 52;
  static constexpr double exp_lo = -760.0, exp_hi = 720.0;
  static constexpr double split_k = 1000.0;
  static constexpr double tiny = 2.2250738585072014e-308;
  static constexpr double sub_scale = 4503599627370496.0;  // 2^52
  static constexpr double sqrt2 = 1.41421356237309505;
};

template <class T>
inline T bits_as(std::uint64_t u) {
  if constexpr (sizeof(T) == 4) {
    const std::uint32_t w = static_cast<std::uint32_t>(u);
    T x;
    std::memcpy(&x, &w, 4);
    return x;
  } else {
    T x;
    std::memcpy(&x, &u, 8);
    return x;
  }
}

// 2^k for integer-valued k with k + bias in [1, 2*bias]: k + (2^mant + bias) puts k + bias in
// the low mantissa bits, and the shift moves them into the exponent field.
template <class T>
inline Vec<T> pow2i(Vec<T> k) {
  using C = Consts<T>;
  return shift_left(k + Vec<T>::set1(C::pow2_magic), C::mant_bits);
}

// (e^r - 1 - r) / r^2 for |r| <= ln2/2 (float): degree 4, near-minimax for the absolute
// error of e^r (5.8e-9, 0.1 ulp; fitted by iteratively reweighted least squares on Chebyshev
// nodes), one degree below the Taylor series of the same accuracy.
inline Vec<float> exp_poly(Vec<float> r) {
  using V = Vec<float>;
  V p = V::set1(0x1.6db414p-10f);
  p = fmadd(p, r, V::set1(0x1.123b46p-7f));
  p = fmadd(p, r, V::set1(0x1.55545ep-5f));
  p = fmadd(p, r, V::set1(0x1.55549p-3f));
  return fmadd(p, r, V::set1(0.5f));
}
// n = 2..13 (double).
inline Vec<double> exp_poly(Vec<double> r) {
  using V = Vec<double>;
  V p = V::set1(1.0 / 6227020800.0);
  p = fmadd(p, r, V::set1(1.0 / 479001600.0));
  p = fmadd(p, r, V::set1(1.0 / 39916800.0));
  p = fmadd(p, r, V::set1(1.0 / 3628800.0));
  p = fmadd(p, r, V::set1(1.0 / 362880.0));
  p = fmadd(p, r, V::set1(1.0 / 40320.0));
  p = fmadd(p, r, V::set1(1.0 / 5040.0));
  p = fmadd(p, r, V::set1(1.0 / 720.0));
  p = fmadd(p, r, V::set1(1.0 / 120.0));
  p = fmadd(p, r, V::set1(1.0 / 24.0));
  p = fmadd(p, r, V::set1(1.0 / 6.0));
  return fmadd(p, r, V::set1(0.5));
}

// R(z) = sum_{j>=1} 2 z^j / (2j + 1), the atanh series after 2s (float: j <= 4).
inline Vec<float> log_poly(Vec<float> z) {
  using V = Vec<float>;
  V p = V::set1(2.0f / 9);
  p = fmadd(p, z, V::set1(2.0f / 7));
  p = fmadd(p, z, V::set1(2.0f / 5));
  p = fmadd(p, z, V::set1(2.0f / 3));
  return p * z;
}
// j <= 10 (double).
inline Vec<double> log_poly(Vec<double> z) {
  using V = Vec<double>;
  V p = V::set1(2.0 / 21);
  p = fmadd(p, z, V::set1(2.0 / 19));
  p = fmadd(p, z, V::set1(2.0 / 17));
  p = fmadd(p, z, V::set1(2.0 / 15));
  p = fmadd(p, z, V::set1(2.0 / 13));
  p = fmadd(p, z, V::set1(2.0 / 11));
  p = fmadd(p, z, V::set1(2.0 / 9));
  p = fmadd(p, z, V::set1(2.0 / 7));
  p = fmadd(p, z, V::set1(2.0 / 5));
  p = fmadd(p, z, V::set1(2.0 / 3));
  return p * z;
}

}  // namespace vmath_detail

namespace vmath_detail {
// kNonPos: the caller guarantees x <= 0 or NaN, so the upper clamp (a no-op there) is left out.
template <bool kNonPos, class T>
inline Vec<T> exp_impl(Vec<T> x) {
  using V = Vec<T>;
  using C = vmath_detail::Consts<T>;
  // max/min return their second operand for NaN, so NaN passes through the clamp.
  V xc = max(V::set1(C::exp_lo), x);
  if constexpr (!kNonPos) xc = min(V::set1(C::exp_hi), xc);
  // round_even is the same value as the magic-number rounding (|x log2e| < 2^22), in one
  // instruction where the ISA has one.
  V k;
  if constexpr (kHasRound) {
    k = round_even(xc * V::set1(C::log2e));
  } else {
    const V magic = V::set1(C::round_magic);
    k = (xc * V::set1(C::log2e) + magic) - magic;
  }
  V r = fnmadd(k, V::set1(C::ln2_hi), xc);
  r = fnmadd(k, V::set1(C::ln2_lo), r);
  const V p = V::set1(T(1)) + fmadd(r * r, vmath_detail::exp_poly(r), r);
  // p * 2^k rounded once: scalef (AVX-512) in one instruction; otherwise 2^k1 * 2^(k - k1)
  // with k1 = k clamped to +-split_k: p * 2^k1 is exact (normal), so the second product rounds
  // once (overflow to inf, subnormal results) — the same value, in 5 operations and no blend.
  if constexpr (kHasScalef) {
    return scalef(p, k);
  } else {
    const V k1 = min(V::set1(C::split_k), max(V::set1(-C::split_k), k));
    return (p * vmath_detail::pow2i(k1)) * vmath_detail::pow2i(k - k1);
  }
}
}  // namespace vmath_detail

template <class T>
inline Vec<T> vexp(Vec<T> x) {
  return vmath_detail::exp_impl<false>(x);
}
// exp(x) for x <= 0 or NaN only (x - max(x), -|x|): the same value as vexp, one operation less.
template <class T>
inline Vec<T> vexp_nonpos(Vec<T> x) {
  return vmath_detail::exp_impl<true>(x);
}

template <class T>
inline Vec<T> vlog(Vec<T> x) {
  using V = Vec<T>;
  using C = vmath_detail::Consts<T>;
  using vmath_detail::bits_as;
  constexpr int mb = C::mant_bits;
  const auto sub = cmp_lt(x, V::set1(C::tiny));
  const V xs = select(sub, x * V::set1(C::sub_scale), x);
  const V e_off = select(sub, V::set1(T(mb)), V::zero());
  const std::uint64_t mant_mask = (std::uint64_t(1) << mb) - 1;
  const V one = V::set1(T(1));
  // The biased exponent OR-ed into the mantissa of 2^mb gives the float 2^mb + e + bias.
  const V eb = bit_or(shift_right(xs, mb), V::set1(C::sub_scale));
  V e = (eb - V::set1(C::pow2_magic)) - e_off;
  V m = bit_or(bit_and(xs, V::set1(bits_as<T>(mant_mask))), one);
  const auto hi = cmp_lt(V::set1(C::sqrt2), m);
  m = select(hi, m * V::set1(T(0.5)), m);
  e = select(hi, e + one, e);
  const V f = m - one;
  const V s = f / (V::set1(T(2)) + f);
  const V R = vmath_detail::log_poly(s * s);
  // 2s + s R = f - (hfsq - s (hfsq + R)) with hfsq = f^2 / 2: f is exact and carries the
  // result, the rounding of s only touches the small correction.
  const V hfsq = V::set1(T(0.5)) * f * f;
  const V corr = hfsq - fmadd(s, hfsq + R, e * V::set1(C::ln2_lo));
  V res = fmadd(e, V::set1(C::ln2_hi), f - corr);
  const T inf = std::numeric_limits<T>::infinity();
  res = select(cmp_eq(x, V::set1(inf)), x, res);
  res = select(cmp_eq(x, V::zero()), V::set1(-inf), res);
  res = select(cmp_lt(x, V::zero()), V::set1(std::numeric_limits<T>::quiet_NaN()), res);
  return select(is_nan(x), x, res);
}

// log(1 + u) for u >= 0 (used with u = exp(-|x|) in (0, 1]): w = 1 + u rounded, then
// log(w) + (u - (w - 1)) / w corrects the rounding of w.
template <class T>
inline Vec<T> vlog1p_pos(Vec<T> u) {
  using V = Vec<T>;
  const V w = V::set1(T(1)) + u;
  return vlog(w) + (u - (w - V::set1(T(1)))) / w;
}

}  // namespace BNFAST_NS
}  // namespace bnfast
