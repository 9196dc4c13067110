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
// stream(), a non-temporal store for large fresh outputs (followed by stream_fence()); bfloat16
// loads and stores of float32 vectors, and 32-bit integer lanes (IVec) beside them. Each
// target implements it in its own file (vec_scalar.h, vec_avx2.h, vec_avx512.h, chosen by
// BNFAST_TARGET_<ISA>); what follows them here is written once on top of it.
#pragma once

#ifndef BNFAST_NS
#error "vec.h is only for kernel sources compiled per ISA (BNFAST_NS undefined)"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {
namespace BNFAST_NS {

using i64 = std::int64_t;

template <class T>
struct Vec;

}  // namespace BNFAST_NS
}  // namespace bnfast

#define BNFAST_VEC_H_INSIDE_ 1
#if defined(BNFAST_TARGET_SCALAR)
#include "bnfast/vec_scalar.h"
#elif defined(BNFAST_TARGET_AVX2)
#include "bnfast/vec_avx2.h"
#elif defined(BNFAST_TARGET_AVX512) || defined(BNFAST_TARGET_AVX512_BF16)
#include "bnfast/vec_avx512.h"
#else
#error "unknown BNFAST_TARGET"
#endif
#undef BNFAST_VEC_H_INSIDE_

namespace bnfast {
namespace BNFAST_NS {

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
// The same for bfloat16 storage, read into and written from float32 vectors (Compute<bf16>):
// kernels templated on a storage type X load Vec<Compute<X>> through these, whatever X is.
inline Vec<float> ld(const bf16* p, int n) {
  return n == Vec<float>::N ? load_bf16(p) : load_bf16_partial(p, n);
}
inline Vec<float> ld(const bf16* p, int n, Vec<float> fill) {
  return n == Vec<float>::N ? load_bf16(p) : load_bf16_partial(p, n, fill);
}
inline void st(bf16* p, Vec<float> v, int n) {
  if (n == Vec<float>::N) {
    store_bf16(p, v);
  } else {
    store_bf16_partial(p, v, n);
  }
}
// A full vector's non-temporal store (p aligned to the stored vector's size).
template <class T>
inline void stream_st(T* p, Vec<T> v) {
  v.stream(p);
}
inline void stream_st(bf16* p, Vec<float> v) { stream_bf16(p, v); }

// v in the first n lanes, 0 elsewhere (a tail's lanes before a horizontal sum).
template <class T>
inline Vec<T> keep(Vec<T> v, int n) {
  return n == Vec<T>::N ? v : select(Vec<T>::tail_mask(n), v, Vec<T>::zero());
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
