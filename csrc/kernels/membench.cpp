// Speed-of-light kernels (membench.h): the least work an access pattern allows, so that their
// time is what moving the bytes costs on this machine.
//
// One pass over memory: each of k inputs is read once, each of m outputs written once (update:
// read and written once). The number of arrays and the mode are template parameters, so the
// loop body is fully unrolled: two vectors per iteration (two independent sum chains in read
// mode, so the add latency never limits an in-cache read), then one vector, then one partial
// (masked) vector for the tail; no scalar remainder loop.
// Work units of kUnit elements, fixed by n alone; read-mode partial sums are added in unit order
// (in double), so every result is bitwise the same for any thread count.
#include <algorithm>

#include "bnfast/contract.h"
#include "bnfast/membench.h"
#include "bnfast/parallel.h"
#include "bnfast/vec.h"
#include "bnfast/vmath.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kUnit = 1 << 14;  // elements per work unit (64 KiB of float32 per array)

template <class T>
using UnitFn = double (*)(const MemArgs<T>&, i64, i64);

// s = sum of the K inputs at i (zero for K = 0), n lanes (n < N only at the tail).
template <class T, int K>
inline Vec<T> load_sum(const T* const* in, i64 i, int n) {
  using V = Vec<T>;
  V s = V::zero();
  for (int r = 0; r < K; ++r) {
    const V x = n == V::N ? V::load(in[r] + i) : V::load_partial(in[r] + i, n);
    s = r == 0 ? x : s + x;
  }
  return s;
}

template <class T, MemMode Mo, int M>
inline void put(T* const* out, i64 i, Vec<T> s, int n) {
  using V = Vec<T>;
  for (int j = 0; j < M; ++j) {
    T* p = out[j] + i;
    if constexpr (Mo == MemMode::exp) {
      if (j == 0) s = vexp(s);
    }
    if (n < V::N) {
      (Mo == MemMode::update ? V::load_partial(p, n) + s : s).store_partial(p, n);
    } else if constexpr (Mo == MemMode::update) {
      (V::load(p) + s).store(p);
    } else if constexpr (Mo == MemMode::write_nt) {
      s.stream(p);
    } else {
      s.store(p);
    }
  }
}

// Elements [lo, hi) of one unit; returns the unit's sum in read mode.
template <class T, MemMode Mo, int K, int M>
double unit(const MemArgs<T>& a, i64 lo, i64 hi) {
  using V = Vec<T>;
  constexpr int N = V::N;
  const T* in[kMemMaxArrays];
  T* out[kMemMaxArrays];
  std::copy(a.in, a.in + kMemMaxArrays, in);
  std::copy(a.out, a.out + kMemMaxArrays, out);
  V acc0 = V::zero(), acc1 = V::zero();
  i64 i = lo;
  for (; i + 2 * N <= hi; i += 2 * N) {
    const V s0 = load_sum<T, K>(in, i, N);
    const V s1 = load_sum<T, K>(in, i + N, N);
    if constexpr (Mo == MemMode::read) {
      acc0 = acc0 + s0;
      acc1 = acc1 + s1;
    } else {
      put<T, Mo, M>(out, i, s0, N);
      put<T, Mo, M>(out, i + N, s1, N);
    }
  }
  for (; i < hi; i += N) {
    const int n = static_cast<int>(std::min<i64>(N, hi - i));
    const V s = load_sum<T, K>(in, i, n);  // masked-off lanes are 0
    if constexpr (Mo == MemMode::read) {
      acc0 = acc0 + s;
    } else {
      put<T, Mo, M>(out, i, s, n);
    }
  }
  return Mo == MemMode::read ? static_cast<double>(reduce_add(acc0 + acc1)) : 0.0;
}

template <class T, MemMode Mo, int K>
UnitFn<T> pick_m(int m) {
  switch (m) {
    case 0:
      return &unit<T, Mo, K, 0>;
    case 1:
      return &unit<T, Mo, K, 1>;
    case 2:
      return &unit<T, Mo, K, 2>;
    case 3:
      return &unit<T, Mo, K, 3>;
    default:
      return &unit<T, Mo, K, 4>;
  }
}

template <class T, MemMode Mo>
UnitFn<T> pick_k(int k, int m) {
  switch (k) {
    case 0:
      return pick_m<T, Mo, 0>(m);
    case 1:
      return pick_m<T, Mo, 1>(m);
    case 2:
      return pick_m<T, Mo, 2>(m);
    case 3:
      return pick_m<T, Mo, 3>(m);
    default:
      return pick_m<T, Mo, 4>(m);
  }
}

template <class T>
UnitFn<T> pick(const MemArgs<T>& a) {
  switch (a.mode) {
    case MemMode::read:
      return pick_k<T, MemMode::read>(a.k, 0);
    case MemMode::write:
      return pick_k<T, MemMode::write>(a.k, a.m);
    case MemMode::write_nt:
      return pick_k<T, MemMode::write_nt>(a.k, a.m);
    case MemMode::exp:
      return pick_k<T, MemMode::exp>(a.k, a.m);
    default:
      return pick_k<T, MemMode::update>(a.k, a.m);
  }
}

template <class T>
double run(const MemArgs<T>& a) {
  // n is the extent of every array (the caller checks each one's size).
  BNFAST_EXPECT(a.n >= 0 && a.k >= 0 && a.k <= kMemMaxArrays && a.m >= 0 && a.m <= kMemMaxArrays);
  if (a.n == 0) return 0.0;
  const UnitFn<T> f = pick(a);
  const i64 units = (a.n + kUnit - 1) / kUnit;
  const i64 arrays = a.k + (a.mode == MemMode::update ? 2 : 1) * a.m;
  const int nt = threads_for(a.n * static_cast<i64>(sizeof(T)) * arrays);
  Scratch<double> part(units);
  parallel_for(
      units, nt, [&](i64 u) { part[u] = f(a, u * kUnit, std::min(a.n, (u + 1) * kUnit)); },
      [&] {
        if (a.mode == MemMode::write_nt) stream_fence();
      });
  double total = 0;
  for (i64 u = 0; u < units; ++u) total += part[u];
  return total;
}

}  // namespace

MembenchKernels membench_kernels() { return {{&run<float>}, {&run<double>}}; }

}  // namespace BNFAST_NS
}  // namespace bnfast
