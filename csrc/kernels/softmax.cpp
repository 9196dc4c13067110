// Softmax, log-softmax (forward and backward) and softmax cross-entropy with its gradient; one
// source compiled for every ISA.
//
// Math per row (K values x_k): m = max x_k (0 instead when the row is all -inf, so -inf - m
// stays -inf and never becomes NaN), z_k = x_k - m, e_k = exp(z_k), s = sum e_k, L = log s:
//   softmax = e_k / s, log_softmax = z_k - L (x - max - log(sum), in that order), and the
// cross-entropy of a target y is L - z_y (formulas of every option in softmax.h). Logits of
// 1e30 or 1e8 stay exact in z; s >= 1 unless the row is all -inf (s = 0, handled explicitly).
//
// Two traversals of the (A, K, B) view, chosen from the shape:
//  - rows (B == 1): each row is contiguous; vector lanes run along the row. Rows are taken in
//    groups of N (the vector width; 1 when a row is over 1 KiB) so that the per-row scalar
//    work (log of the sum, loss, gradient coefficients) is done N rows at once in vectors.
//  - columns (B > 1): lanes run along b, one lane per row, the K values of a row are B apart.
//  - tiled (B == 1, rows of at most kTileMaxRowBytes): a unit of rows is transposed into a
//    (K, rows) tile in cache and run through the columns traversal, then the result is
//    transposed back: still one read of the input and one write of the output in memory.
// Passes over memory: one read of the logits (pass 1 max, pass 2 exp writing e into the output,
// pass 3 scaling it in place re-read from cache: a row or a group of rows stays in L1/L2).
// Cross-entropy with long rows (one row per group): pass 2 prefetches the next row, and the next
// row's pass 1 runs inside this row's pass 3. exp(z) needs no upper clamp (vexp_nonpos): z <= 0,
// or, in a row holding a NaN (where the max may miss larger values), any z, but that row's sum
// and so every output of it is NaN whatever exp gives.
// Work units are fixed runs of rows (about kUnitBytes of logits) that depend only on the shape;
// each unit sums its row losses in double in row order and the units are added in unit order,
// so the loss is bitwise the same for any thread count. Tails use partial (masked) loads and
// stores; masked-off lanes are loaded as -inf (max, exp) or 0 and never reach a result.
//
// Storage type X (float, double or bf16) and compute type T = Compute<X>: every function is
// written once on X and loads/stores through ld/st, which widen and round bfloat16. A bfloat16
// output is rounded exactly once, from its final float32 value: where the float kernels keep
// e = exp(z) in the output between passes, bfloat16 ones keep it in a float32 scratch (Stage),
// and the tiled traversal runs the float32 columns kernel on float32 tiles.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "bnfast/contract.h"
#include "bnfast/parallel.h"
#include "bnfast/softmax.h"
#include "bnfast/vec.h"
#include "bnfast/vmath.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kUnitBytes = 32 * 1024;
constexpr i64 kGroupMaxRowBytes = 1024;
constexpr int kUnitMultiple = 16;  // unit sizes are multiples of every ISA's group size
// Rows this short are transposed into a (K, rows) tile and run through the columns traversal:
// one lane per row removes the per-row horizontal reductions, whose latency would otherwise
// bound the small-K case (K = 10: 4x faster).
constexpr i64 kTileMaxRowBytes = 128;

// A stored value in the compute type, and a compute value stored (bfloat16: rounded, the same
// bits as st's vector rounding).
inline float widened(bf16 v) { return bnfast::widen(v); }
template <class T>
inline T widened(T v) {
  return v;
}
inline void put(bf16* p, float v) { *p = bnfast::round_bf16(v); }
template <class T>
inline void put(T* p, T v) {
  *p = v;
}

template <class X>
constexpr bool kWide = !std::is_same<X, Compute<X>>::value;  // X is stored narrower than T

// Where a pass keeps e = exp(z) for a later pass to scale: the output itself when it holds T,
// else (bfloat16 output) a float32 scratch of n values, so that the output is rounded once
// (e rounded to bfloat16 and then scaled would be rounded twice: up to 1.5 ulp instead of 0.5).
// The rows traversal stages a group of rows (at most N K values), the columns one a block of
// N columns (K N values; the tiled traversal needs none: its tiles are already float32).
// at(out, i): the place of the value whose output element is *out and scratch index is i.
template <class X>
class Stage {
 public:
  explicit Stage(i64) {}
  X* at(X* out, i64) const { return out; }
};
template <>
class Stage<bf16> {
 public:
  explicit Stage(i64 n) : buf_(n) {}
  float* at(bf16*, i64 i) const { return buf_.data() + i; }

 private:
  Scratch<float> buf_;
};

// tile[k * n + i] = src[i * K + k] for n rows of K values, and back (widened to T on the way in,
// rounded to X on the way out). Rows of at most one vector go N at a time through an
// in-register transpose (vec.h): N masked row loads and K column stores instead of 2 N K scalar
// moves. (Gathers measured ~7% slower than scalar moves end to end at (65536, 10) on Zen 4.)
template <class X, class T = Compute<X>>
inline void tile_in(const X* src, T* tile, i64 n, i64 K) {
  using V = Vec<T>;
  constexpr int N = V::N;
  i64 i = 0;
  if (K <= N) {
    const int k = static_cast<int>(K);
    V r[N];
    for (; i + N <= n; i += N) {
      for (int j = 0; j < N; ++j) r[j] = ld(src + (i + j) * K, k);
      transpose(r);
      for (int j = 0; j < k; ++j) r[j].store(tile + j * n + i);
    }
  }
  for (; i < n; ++i) {
    for (i64 k = 0; k < K; ++k) tile[k * n + i] = widened(src[i * K + k]);
  }
}
template <class X, class T = Compute<X>>
inline void tile_out(const T* tile, X* dst, i64 n, i64 K) {
  using V = Vec<T>;
  constexpr int N = V::N;
  i64 i = 0;
  if (K <= N) {
    const int k = static_cast<int>(K);
    V r[N];
    for (; i + N <= n; i += N) {
      for (int j = 0; j < N; ++j) r[j] = j < k ? V::load(tile + j * n + i) : V::zero();
      transpose(r);
      for (int j = 0; j < N; ++j) st(dst + (i + j) * K, r[j], k);
    }
  }
  for (; i < n; ++i) {
    for (i64 k = 0; k < K; ++k) put(dst + i * K + k, tile[k * n + i]);
  }
}

template <class T>
constexpr T kInf = std::numeric_limits<T>::infinity();

// Fixed partition of the rows into units, from the shape only.
struct Plan {
  i64 A, K, B, rows;
  bool cols;
  i64 R;     // rows per unit (rows traversal)
  i64 S;     // lanes (b values) per unit (columns traversal)
  i64 nseg;  // units per a (columns traversal)
  i64 units;
  int group;   // rows per group (rows traversal)
  bool tiled;  // rows traversal of short rows through a transposed tile (see tile_in)
};

template <class T>
Plan make_plan(Shape3 s) {
  Plan p{};
  p.A = s.A;
  p.K = s.C;
  p.B = s.B;
  p.rows = s.A * s.B;
  p.cols = s.B > 1;
  const i64 row_bytes = std::max<i64>(1, s.C * static_cast<i64>(sizeof(T)));
  const i64 per_unit =
      std::max<i64>(kUnitMultiple, kUnitBytes / row_bytes / kUnitMultiple * kUnitMultiple);
  p.group = row_bytes <= kGroupMaxRowBytes ? Vec<T>::N : 1;
  p.tiled = !p.cols && row_bytes <= kTileMaxRowBytes;
  if (p.cols) {
    p.S = per_unit;
    p.nseg = (s.B + p.S - 1) / p.S;
    p.units = s.A * p.nseg;
  } else {
    p.R = per_unit;
    p.units = (p.rows + p.R - 1) / p.R;
  }
  return p;
}

// Softmax is bound by its exp, not by memory: its time follows the element count, so a
// bfloat16 input counts at its float32 compute width (else half the elements would stay on one
// thread at the same cost per element).
template <class X>
inline int threads(const Plan& p, int arrays) {
  return threads_for(p.rows * p.K * static_cast<i64>(sizeof(Compute<X>)) * arrays);
}

// Calls f(first_row, end_row) for the rows traversal or f(a, b0, b1) for columns, per unit.
template <class FR, class FC>
inline void unit_range(const Plan& p, i64 u, FR&& rows, FC&& cols) {
  if (p.cols) {
    const i64 a = u / p.nseg, b0 = (u % p.nseg) * p.S;
    cols(a, b0, std::min(p.B, b0 + p.S));
  } else {
    rows(u * p.R, std::min(p.rows, (u + 1) * p.R));
  }
}

// The columns plan of a (K, n) tile.
inline Plan tile_plan(const Plan& p, i64 n) {
  Plan q = p;
  q.A = 1;
  q.B = n;
  q.cols = true;
  return q;
}

// Row max with the all -inf row mapped to 0 (see the header comment).
template <class X, class T = Compute<X>>
inline T row_max(const X* x, i64 K) {
  using V = Vec<T>;
  const V ninf = V::set1(-kInf<T>);
  V mv[2] = {ninf, ninf};
  for_lanes2<T>(K, [&](i64 j, int k, auto q) { mv[q] = max(mv[q], ld(x + j, k, ninf)); });
  const T m = reduce_max(max(mv[0], mv[1]));
  return m == -kInf<T> ? T(0) : m;
}
// The same, also storing x widened to T into w (bfloat16 rows: later passes read w instead of
// widening x again).
template <class X, class T = Compute<X>>
inline T row_max_widen(const X* x, T* w, i64 K) {
  using V = Vec<T>;
  const V ninf = V::set1(-kInf<T>);
  V mv[2] = {ninf, ninf};
  for_lanes2<T>(K, [&](i64 j, int k, auto q) {
    const V v = ld(x + j, k, ninf);
    st(w + j, v, k);
    mv[q] = max(mv[q], v);
  });
  const T m = reduce_max(max(mv[0], mv[1]));
  return m == -kInf<T> ? T(0) : m;
}
template <class T>
inline Vec<T> fix_max(Vec<T> m) {
  return select(cmp_eq(m, Vec<T>::set1(-kInf<T>)), Vec<T>::zero(), m);
}

// 1/s, with 0 for s == 0 (all -inf row: softmax 0).
template <class T>
inline Vec<T> inv_sum(Vec<T> s) {
  using V = Vec<T>;
  return select(cmp_eq(s, V::zero()), V::zero(), V::set1(T(1)) / s);
}
// log s, with 0 for s == 0 (all -inf row: log_softmax = x - 0 - 0 = -inf).
template <class T>
inline Vec<T> log_sum(Vec<T> s) {
  using V = Vec<T>;
  return select(cmp_eq(s, V::zero()), V::zero(), vlog(s));
}

// ---- softmax / log_softmax ------------------------------------------------------------------

template <class X>
void run_rows(const SoftmaxArgs<X>& a, const Plan& p, i64 r0, i64 r1) {
  using T = Compute<X>;
  using V = Vec<T>;
  constexpr int N = V::N;
  const i64 K = p.K;
  const V ninf = V::set1(-kInf<T>);
  alignas(64) T m_[N], s_[N], c_[N];
  const Stage<X> stage(p.group * K);
  for (i64 r = r0; r < r1; r += p.group) {
    const int n = static_cast<int>(std::min<i64>(p.group, r1 - r));
    for (int i = 0; i < N; ++i) s_[i] = T(1);
    for (int i = 0; i < n; ++i) {
      const X* xr = a.x + (r + i) * K;
      T* er = stage.at(a.y + (r + i) * K, i * K);
      // x as T for the passes after the max: x itself, or (bfloat16) the copy the max pass
      // widened into the stage, so each value is widened once (softmax overwrites it with e).
      const T* xs;
      T m;
      if constexpr (kWide<X>) {
        m = row_max_widen(xr, er, K);
        xs = er;
      } else {
        m = row_max(xr, K);
        xs = xr;
      }
      const V vm = V::set1(m);
      V sv = V::zero();
      for_lanes<T>(K, [&](i64 j, int k) {
        const V e = vexp_nonpos(ld(xs + j, k, ninf) - vm);
        if (!a.log) st(er + j, e, k);
        sv = sv + e;
      });
      m_[i] = m;
      s_[i] = reduce_add(sv);
    }
    const V s = V::load(s_);
    (a.log ? log_sum(s) : inv_sum(s)).store(c_);
    for (int i = 0; i < n; ++i) {
      X* yr = a.y + (r + i) * K;
      const T* er = stage.at(yr, i * K);
      const V c = V::set1(c_[i]);
      if (a.log) {
        const T* xs = er;  // bfloat16: the widened copy
        if constexpr (!kWide<X>) xs = a.x + (r + i) * K;
        const V vm = V::set1(m_[i]);
        for_lanes<T>(K, [&](i64 j, int k) { st(yr + j, (ld(xs + j, k) - vm) - c, k); });
      } else {
        for_lanes<T>(K, [&](i64 j, int k) { st(yr + j, ld(er + j, k) * c, k); });
      }
    }
  }
}

template <class X>
void run_cols(const SoftmaxArgs<X>& a, const Plan& p, i64 ai, i64 b0, i64 b1) {
  using T = Compute<X>;
  using V = Vec<T>;
  constexpr int N = V::N;
  const i64 K = p.K, B = p.B;
  const V ninf = V::set1(-kInf<T>);
  const Stage<X> stage(a.log ? 1 : K * N);
  for (i64 b = b0; b < b1; b += N) {
    const int n = static_cast<int>(std::min<i64>(N, b1 - b));
    const X* x = a.x + ai * K * B + b;
    X* y = a.y + ai * K * B + b;
    V m = ninf;
    for (i64 k = 0; k < K; ++k) m = max(m, ld(x + k * B, n, ninf));
    m = fix_max(m);
    V s = V::zero();
    for (i64 k = 0; k < K; ++k) {
      const V e = vexp_nonpos(ld(x + k * B, n, ninf) - m);
      if (!a.log) st(stage.at(y + k * B, k * N), e, n);
      s = s + e;
    }
    if (a.log) {
      const V c = log_sum(s);
      for (i64 k = 0; k < K; ++k) st(y + k * B, (ld(x + k * B, n) - m) - c, n);
    } else {
      const V c = inv_sum(s);
      for (i64 k = 0; k < K; ++k) st(y + k * B, ld(stage.at(y + k * B, k * N), n) * c, n);
    }
  }
}

template <class X>
void run_tiled(const SoftmaxArgs<X>& a, const Plan& p, i64 r0, i64 r1) {
  using T = Compute<X>;
  const i64 n = r1 - r0, K = p.K;
  Scratch<T> xt(K * n), yt(K * n);
  tile_in(a.x + r0 * K, xt.data(), n, K);
  SoftmaxArgs<T> b{};
  b.x = xt.data();
  b.y = yt.data();
  b.s = a.s;
  b.log = a.log;
  run_cols(b, tile_plan(p, n), 0, 0, n);
  tile_out(yt.data(), a.y + r0 * K, n, K);
}

// The entry contract's shape part (contract.h): non-negative, and A * K * B elements.
#define BNFAST_SM_EXPECT_SHAPE(s)                         \
  BNFAST_EXPECT((s).A >= 0 && (s).C >= 0 && (s).B >= 0 && \
                ((s).C == 0 || (s).A * (s).B <= INT64_MAX / (s).C))

// softmax:     dx = y * (dy - sum(y * dy));  log_softmax: dx = dy - exp(y) * sum(dy)
template <class X>
void run_rows(const SoftmaxBackwardArgs<X>& a, const Plan& p, i64 r0, i64 r1) {
  using T = Compute<X>;
  using V = Vec<T>;
  const i64 K = p.K;
  for (i64 r = r0; r < r1; ++r) {
    const X* y = a.y + r * K;
    const X* dy = a.dy + r * K;
    X* dx = a.dx + r * K;
    V acc = V::zero();
    if (a.log) {
      for_lanes<T>(K, [&](i64 j, int k) { acc = acc + ld(dy + j, k); });
      const V d = V::set1(reduce_add(acc));
      for_lanes<T>(
          K, [&](i64 j, int k) { st(dx + j, fnmadd(vexp(ld(y + j, k)), d, ld(dy + j, k)), k); });
    } else {
      for_lanes<T>(K, [&](i64 j, int k) { acc = fmadd(ld(y + j, k), ld(dy + j, k), acc); });
      const V d = V::set1(reduce_add(acc));
      for_lanes<T>(K, [&](i64 j, int k) { st(dx + j, ld(y + j, k) * (ld(dy + j, k) - d), k); });
    }
  }
}

template <class X>
void run_cols(const SoftmaxBackwardArgs<X>& a, const Plan& p, i64 ai, i64 b0, i64 b1) {
  using T = Compute<X>;
  using V = Vec<T>;
  constexpr int N = V::N;
  const i64 K = p.K, B = p.B;
  for (i64 b = b0; b < b1; b += N) {
    const int n = static_cast<int>(std::min<i64>(N, b1 - b));
    const i64 off = ai * K * B + b;
    const X* y = a.y + off;
    const X* dy = a.dy + off;
    X* dx = a.dx + off;
    V d = V::zero();
    if (a.log) {
      for (i64 k = 0; k < K; ++k) d = d + ld(dy + k * B, n);
      for (i64 k = 0; k < K; ++k) {
        st(dx + k * B, fnmadd(vexp(ld(y + k * B, n)), d, ld(dy + k * B, n)), n);
      }
    } else {
      for (i64 k = 0; k < K; ++k) d = fmadd(ld(y + k * B, n), ld(dy + k * B, n), d);
      for (i64 k = 0; k < K; ++k) st(dx + k * B, ld(y + k * B, n) * (ld(dy + k * B, n) - d), n);
    }
  }
}

template <class X>
void run_tiled(const SoftmaxBackwardArgs<X>& a, const Plan& p, i64 r0, i64 r1) {
  using T = Compute<X>;
  const i64 n = r1 - r0, K = p.K;
  Scratch<T> yt(K * n), dyt(K * n);
  tile_in(a.y + r0 * K, yt.data(), n, K);
  tile_in(a.dy + r0 * K, dyt.data(), n, K);
  SoftmaxBackwardArgs<T> b{};
  b.s = a.s;
  b.log = a.log;
  b.y = yt.data();
  b.dy = dyt.data();
  b.dx = dyt.data();  // in place in the tile
  run_cols(b, tile_plan(p, n), 0, 0, n);
  tile_out(dyt.data(), a.dx + r0 * K, n, K);
}

// Runs a softmax or softmax-backward pass (run_rows, run_cols and run_tiled, overloaded on its
// arguments) over the work units of the shape's plan; `arrays` is the count of arrays it moves.
template <class X, class Args>
void run(const Args& a, int arrays) {
  const Plan p = make_plan<Compute<X>>(a.s);
  if (p.rows == 0 || p.K == 0) return;
  const int nt = threads<X>(p, arrays);
  parallel_for(p.units, nt, [&](i64 u) {
    unit_range(
        p, u,
        [&](i64 r0, i64 r1) {
          if (p.tiled) {
            run_tiled(a, p, r0, r1);
          } else {
            run_rows(a, p, r0, r1);
          }
        },
        [&](i64 ai, i64 b0, i64 b1) { run_cols(a, p, ai, b0, b1); });
  });
}

template <class X>
void softmax(const SoftmaxArgs<X>& a) {
  BNFAST_SM_EXPECT_SHAPE(a.s);
  const i64 n = a.s.A * a.s.C * a.s.B;
  BNFAST_EXPECT(a.x != nullptr && a.y != nullptr);
  BNFAST_EXPECT_FITS(a.x, a.n_x, n);
  BNFAST_EXPECT_FITS(a.y, a.n_y, n);
  run<X>(a, 2);
}

template <class X>
void softmax_backward(const SoftmaxBackwardArgs<X>& a) {
  BNFAST_SM_EXPECT_SHAPE(a.s);
  const i64 n = a.s.A * a.s.C * a.s.B;
  BNFAST_EXPECT(a.y != nullptr && a.dy != nullptr && a.dx != nullptr);
  BNFAST_EXPECT_FITS(a.y, a.n_y, n);
  BNFAST_EXPECT_FITS(a.dy, a.n_dy, n);
  BNFAST_EXPECT_FITS(a.dx, a.n_dx, n);
  run<X>(a, 3);
}

// ---- cross-entropy --------------------------------------------------------------------------

template <class T>
struct SoftmaxCrossEntropyCtx {
  i64 K, B;
  bool smooth, prob;
  T one_eps, eps_k, W;  // 1 - eps, eps / K, sum of the class weights (K without weights)
  T scale;
};

// Per-row statistics of a group of rows, one lane per row.
template <class T>
struct SoftmaxCrossEntropyStats {
  static constexpr int N = Vec<T>::N;
  alignas(64) T m[N];
  alignas(64) T s[N];
  alignas(64) T u[N];  // class: z_y; probabilities: sum w t' z
  alignas(64) T v[N];  // class: sum w z (smoothing); probabilities: sum w t'
  alignas(64) T wy[N];
  alignas(64) T live[N];
  alignas(64) T g[N];
  alignas(64) T loss[N], alpha[N], beta[N], gamma[N];
  i64 y[N];

  void reset() {
    for (int i = 0; i < N; ++i) {
      m[i] = u[i] = v[i] = wy[i] = live[i] = g[i] = T(0);
      s[i] = T(1);
      y[i] = 0;
    }
  }
};

template <class T>
struct SoftmaxCrossEntropyCoef {
  Vec<T> loss, alpha, beta, gamma;
};

// Loss and gradient coefficients of N rows (one per lane) from their statistics (formulas in
// softmax.h): grad_j = alpha e_j - gamma w_j (class; t'_j w_j for probabilities), then
// grad_y -= beta. Rows whose sum s is 0 (all -inf) get loss +inf.
template <class T>
inline SoftmaxCrossEntropyCoef<T> softmax_cross_entropy_coef(const SoftmaxCrossEntropyCtx<T>& c,
                                                             Vec<T> s, Vec<T> u, Vec<T> v, Vec<T> g,
                                                             Vec<T> wy) {
  using V = Vec<T>;
  const V L = vlog(s);
  const V inv = inv_sum(s);
  SoftmaxCrossEntropyCoef<T> r;
  if (c.prob) {
    r.loss = v * L - u;
    r.alpha = g * v * inv;
    r.beta = V::zero();
    r.gamma = g;
  } else {
    const V a = V::set1(c.one_eps) * wy;
    r.loss = a * (L - u);
    V coef = a;
    if (c.smooth) {
      const V ek = V::set1(c.eps_k);
      r.loss = r.loss + ek * (V::set1(c.W) * L - v);
      coef = coef + ek * V::set1(c.W);
    }
    r.alpha = g * coef * inv;
    r.beta = g * a;
    r.gamma = c.smooth ? g * V::set1(c.eps_k) : V::zero();
  }
  r.loss = select(cmp_eq(s, V::zero()), V::set1(kInf<T>), r.loss);
  return r;
}

// The same for rows kept in a SoftmaxCrossEntropyStats (rows traversal); dead rows get all zeros.
template <class T>
inline void softmax_cross_entropy_finalize(const SoftmaxCrossEntropyCtx<T>& c,
                                           SoftmaxCrossEntropyStats<T>& st_) {
  using V = Vec<T>;
  const V s = V::load(st_.s);
  const SoftmaxCrossEntropyCoef<T> r = softmax_cross_entropy_coef(
      c, s, V::load(st_.u), V::load(st_.v), V::load(st_.g), c.prob ? V::zero() : V::load(st_.wy));
  const auto dead = cmp_eq(V::load(st_.live), V::zero());
  select(dead, V::zero(), r.loss).store(st_.loss);
  select(dead, V::zero(), r.alpha).store(st_.alpha);
  select(dead, V::zero(), r.beta).store(st_.beta);
  select(dead, V::zero(), r.gamma).store(st_.gamma);
}

template <class Y>
inline i64 target_at(const void* t, i64 r) {
  return static_cast<i64>(static_cast<const Y*>(t)[r]);
}

// Class index of row r, or -1 for an ignored row (targets are validated by the caller).
template <class X, TargetKind kKind>
inline i64 class_of(const SoftmaxCrossEntropyArgs<X>& a, i64 r) {
  i64 y;
  if constexpr (kKind == TargetKind::i32) {
    y = target_at<std::int32_t>(a.target, r);
  } else {
    y = target_at<std::int64_t>(a.target, r);
  }
  return y == a.ignore_index ? -1 : y;
}

template <class X, TargetKind kKind, class T = Compute<X>>
double softmax_cross_entropy_rows(const SoftmaxCrossEntropyArgs<X>& a,
                                  const SoftmaxCrossEntropyCtx<T>& c, const Plan& p, i64 r0,
                                  i64 r1) {
  using V = Vec<T>;
  constexpr bool kProb = kKind == TargetKind::prob;
  const i64 K = p.K;
  const V ninf = V::set1(-kInf<T>), one = V::set1(T(1));
  const V one_eps = V::set1(c.one_eps), eps_k = V::set1(c.eps_k);
  const X* tgt = kProb ? static_cast<const X*>(a.target) : nullptr;
  SoftmaxCrossEntropyStats<T> st_;
  const Stage<X> stage(p.group * K);
  double acc = 0;
  // One row per group: the next row's max is taken in this row's last pass (two independent
  // streams in one loop instead of a latency-bound max loop of its own); same operations in
  // the same order per lane, so the same m.
  bool have_next = false;
  T m_next = 0;
  for (i64 r = r0; r < r1; r += p.group) {
    const int n = static_cast<int>(std::min<i64>(p.group, r1 - r));
    st_.reset();
    for (int i = 0; i < n; ++i) {
      const i64 row = r + i;
      const X* xr = a.x + row * K;
      X* gr = a.grad + row * K;
      T* er = stage.at(gr, i * K);
      if constexpr (!kProb) {
        const i64 y = class_of<X, kKind>(a, row);
        if (y < 0) continue;
        st_.y[i] = y;
        st_.wy[i] = a.weight ? a.weight[y] : T(1);
      }
      st_.live[i] = T(1);
      st_.g[i] = a.grad_output ? a.grad_output[row] * c.scale : c.scale;
      const T m = have_next ? m_next : row_max(xr, K);
      have_next = false;
      const V vm = V::set1(m);
      // Two accumulation chains each (for_lanes2): a single chain's add latency bounds long rows.
      V sv[2] = {V::zero(), V::zero()}, uv[2] = {V::zero(), V::zero()};
      V vv[2] = {V::zero(), V::zero()};
      const X* tr = kProb ? tgt + row * K : nullptr;
      // Long rows (one per group): while this row is computed from L1, pull the next row's
      // logits and gradient lines (for writing) into the cache, one line per vector.
      const bool pf = p.group == 1 && row + 1 < p.rows;
      for_lanes2<T>(K, [&](i64 j, int k, auto q) {
        if (pf) {
          __builtin_prefetch(xr + K + j, 0, 3);
          __builtin_prefetch(gr + K + j, 1, 3);
        }
        const V z = ld(xr + j, k, ninf) - vm;
        const V e = vexp_nonpos(z);
        st(er + j, e, k);
        sv[q] = sv[q] + e;
        if (kProb) {
          const V w = a.weight ? ld(a.weight + j, k) : one;
          const V wt = keep(w * fmadd(one_eps, ld(tr + j, k), eps_k), k);
          vv[q] = vv[q] + wt;
          uv[q] = uv[q] + select(cmp_eq(wt, V::zero()), V::zero(), wt * z);
        } else if (c.smooth) {
          const V wz = a.weight ? ld(a.weight + j, k) * z : z;
          vv[q] = vv[q] + keep(wz, k);
        }
      });
      st_.m[i] = m;
      st_.s[i] = reduce_add(sv[0] + sv[1]);
      if (kProb || c.smooth) st_.v[i] = reduce_add(vv[0] + vv[1]);
      if constexpr (kProb) {
        st_.u[i] = reduce_add(uv[0] + uv[1]);
      } else {
        st_.u[i] = widened(xr[st_.y[i]]) - m;
      }
    }
    softmax_cross_entropy_finalize(c, st_);
    for (int i = 0; i < n; ++i) {
      const i64 row = r + i;
      X* gr = a.grad + row * K;
      const T* er = stage.at(gr, i * K);
      if (a.row_loss) a.row_loss[row] = st_.loss[i];
      acc += static_cast<double>(st_.loss[i]);
      const bool fuse = p.group == 1 && row + 1 < r1;
      const X* xn = a.x + (row + 1) * K;
      V mv[2] = {ninf, ninf};
      const auto next_max = [&](i64 j, int k, auto q) {
        if (fuse) mv[q] = max(mv[q], ld(xn + j, k, ninf));
      };
      const auto done = [&] {
        if (!fuse) return;
        m_next = reduce_max(max(mv[0], mv[1]));
        if (m_next == -kInf<T>) m_next = T(0);
        have_next = true;
      };
      if (st_.live[i] == T(0)) {
        for_lanes2<T>(K, [&](i64 j, int k, auto q) {
          next_max(j, k, q);
          st(gr + j, V::zero(), k);
        });
        done();
        continue;
      }
      const V al = V::set1(st_.alpha[i]), ga = V::set1(st_.gamma[i]);
      if constexpr (kProb) {
        const X* tr = tgt + row * K;
        for_lanes2<T>(K, [&](i64 j, int k, auto q) {
          const V w = a.weight ? ld(a.weight + j, k) : one;
          const V wt = w * fmadd(one_eps, ld(tr + j, k), eps_k);
          next_max(j, k, q);
          st(gr + j, fnmadd(ga, wt, al * ld(er + j, k)), k);
        });
      } else {
        if (c.smooth) {
          for_lanes2<T>(K, [&](i64 j, int k, auto q) {
            const V w = a.weight ? ld(a.weight + j, k) : one;
            next_max(j, k, q);
            st(gr + j, fnmadd(ga, w, al * ld(er + j, k)), k);
          });
        } else {
          for_lanes2<T>(K, [&](i64 j, int k, auto q) {
            next_max(j, k, q);
            st(gr + j, al * ld(er + j, k), k);
          });
        }
        const i64 y = st_.y[i];
        if constexpr (kWide<X>) {
          // The target entry again from the float32 e, so that -beta is taken before the one
          // rounding (p_y - 1 for p_y near 1 would otherwise lose every bit).
          T g = st_.alpha[i] * er[y];
          if (c.smooth) g = std::fma(-st_.gamma[i], a.weight ? a.weight[y] : T(1), g);
          put(gr + y, g - st_.beta[i]);
        } else {
          gr[y] -= st_.beta[i];
        }
      }
      done();
    }
  }
  return acc;
}

// Lanes run along b, one row per lane. Targets, weights and upstream gradients become lane
// vectors: the class index as a T (-1: ignored or past the end), so z_y and the -beta of the
// target entry are blends on (y == k) inside the k loops rather than per-row scalar work, and
// the losses are summed in one double accumulator per lane (combined in lane order at the end
// of the unit: fixed, so bitwise the same for any thread count).
template <class X, TargetKind kKind, class T = Compute<X>>
double softmax_cross_entropy_cols(const SoftmaxCrossEntropyArgs<X>& a,
                                  const SoftmaxCrossEntropyCtx<T>& c, const Plan& p, i64 ai, i64 b0,
                                  i64 b1) {
  using V = Vec<T>;
  constexpr int N = V::N;
  constexpr bool kProb = kKind == TargetKind::prob;
  const i64 K = p.K, B = p.B;
  const V ninf = V::set1(-kInf<T>), zero = V::zero(), one = V::set1(T(1));
  const V one_eps = V::set1(c.one_eps), eps_k = V::set1(c.eps_k);
  const V scale = V::set1(c.scale);
  // Class indices compare exactly as T up to 2^digits; beyond (K > 2^24 classes in float32)
  // z_y and the target entry of the gradient are handled per lane instead.
  const bool exact = K <= (i64(1) << std::numeric_limits<T>::digits);
  alignas(64) T yf[N], wyf[N], tmp[N], tmp2[N];
  alignas(64) T loss_[N];
  i64 yi[N];
  double acc[N] = {};
  const Stage<X> stage(K * N);
  for (i64 b = b0; b < b1; b += N) {
    const int n = static_cast<int>(std::min<i64>(N, b1 - b));
    const i64 off = ai * K * B + b;  // element (ai, 0, b)
    const i64 row0 = ai * B + b;     // row index of lane 0
    const X* x = a.x + off;
    X* gr = a.grad + off;
    const X* t = kProb ? static_cast<const X*>(a.target) + off : nullptr;
    V yv = V::set1(T(-1)), wy = one;
    typename V::Mask live;
    if constexpr (kProb) {
      live = V::tail_mask(n);
    } else {
      if (n == N && exact) {
        // Branch-free, so it vectorizes: N scalar stores read back as one vector stall store
        // forwarding (12% of (65536, 10)). Valid classes are < 2^digits here, so int32.
        using Y = std::conditional_t<kKind == TargetKind::i32, std::int32_t, std::int64_t>;
        const Y* ty = static_cast<const Y*>(a.target) + row0;
        const i64 ignore = a.ignore_index;
        for (int i = 0; i < N; ++i) {
          const std::int32_t keep = -static_cast<std::int32_t>(static_cast<i64>(ty[i]) != ignore);
          yf[i] = static_cast<T>((static_cast<std::int32_t>(ty[i]) & keep) | ~keep);
        }
      } else {
        for (int i = 0; i < N; ++i) yf[i] = T(-1);
        for (int i = 0; i < n; ++i) {
          const i64 y = class_of<X, kKind>(a, row0 + i);
          yf[i] = y < 0 ? T(-1) : static_cast<T>(y);
        }
      }
      if (a.weight || !exact) {
        for (int i = 0; i < N; ++i) yi[i] = i < n ? class_of<X, kKind>(a, row0 + i) : -1;
      }
      yv = V::load(yf);
      live = cmp_le(zero, yv);
      if (a.weight) {
        for (int i = 0; i < N; ++i) wyf[i] = i < n && yi[i] >= 0 ? a.weight[yi[i]] : T(0);
        wy = V::load(wyf);
      }
    }
    V g = a.grad_output ? ld(a.grad_output + row0, n) * scale : scale;
    g = select(live, g, zero);
    V m = ninf;
    for (i64 k = 0; k < K; ++k) m = max(m, ld(x + k * B, n, ninf));
    m = fix_max(m);
    V s = zero, u = zero, v = zero;
    for (i64 k = 0; k < K; ++k) {
      const V z = ld(x + k * B, n, ninf) - m;
      const V e = vexp_nonpos(z);
      st(stage.at(gr + k * B, k * N), e, n);
      s = s + e;
      const V w = V::set1(a.weight ? a.weight[k] : T(1));
      if (kProb) {
        const V wt = w * fmadd(one_eps, ld(t + k * B, n), eps_k);
        v = v + wt;
        u = u + select(cmp_eq(wt, zero), zero, wt * z);
      } else {
        if (c.smooth) v = fmadd(w, z, v);
        if (exact) u = select(cmp_eq(yv, V::set1(static_cast<T>(k))), z, u);
      }
    }
    if (!kProb && !exact) {
      m.store(tmp);
      for (int i = 0; i < N; ++i) {
        yf[i] = i < n && yi[i] >= 0 ? widened(x[yi[i] * B + i]) - tmp[i] : T(0);
      }
      u = V::load(yf);
    }
    SoftmaxCrossEntropyCoef<T> f = softmax_cross_entropy_coef(c, s, u, v, g, wy);
    const auto dead = cmp_eq(select(live, one, zero), zero);
    f.loss = select(dead, zero, f.loss);
    for (i64 k = 0; k < K; ++k) {
      const V w = V::set1(a.weight ? a.weight[k] : T(1));
      V gk = f.alpha * ld(stage.at(gr + k * B, k * N), n);
      if (kProb) {
        gk = fnmadd(f.gamma, w * fmadd(one_eps, ld(t + k * B, n), eps_k), gk);
      } else {
        if (c.smooth) gk = fnmadd(f.gamma, w, gk);
        if (exact) gk = select(cmp_eq(yv, V::set1(static_cast<T>(k))), gk - f.beta, gk);
      }
      st(gr + k * B, select(dead, zero, gk), n);
    }
    if (!kProb && !exact) {
      f.beta.store(tmp);
      if constexpr (kWide<X>) {
        // As in the rows traversal: the target entry from the float32 e, rounded once.
        f.alpha.store(tmp2);
        f.gamma.store(yf);
        for (int i = 0; i < n; ++i) {
          if (yi[i] < 0) continue;
          T g = tmp2[i] * *stage.at(gr, yi[i] * N + i);
          if (c.smooth) g = std::fma(-yf[i], a.weight ? a.weight[yi[i]] : T(1), g);
          put(gr + yi[i] * B + i, g - tmp[i]);
        }
      } else {
        for (int i = 0; i < n; ++i) {
          if (yi[i] >= 0) gr[yi[i] * B + i] -= tmp[i];
        }
      }
    }
    if (a.row_loss) st(a.row_loss + row0, f.loss, n);
    f.loss.store(loss_);
    for (int i = 0; i < N; ++i) acc[i] += static_cast<double>(loss_[i]);
  }
  double total = 0;
  for (int i = 0; i < N; ++i) total += acc[i];
  return total;
}

template <class X, TargetKind kKind, class T = Compute<X>>
double softmax_cross_entropy_tiled(const SoftmaxCrossEntropyArgs<X>& a,
                                   const SoftmaxCrossEntropyCtx<T>& c, const Plan& p, i64 r0,
                                   i64 r1) {
  constexpr bool kProb = kKind == TargetKind::prob;
  const i64 n = r1 - r0, K = p.K;
  Scratch<T> xt(K * n), gt(K * n), tt(kProb ? K * n : 1);
  tile_in(a.x + r0 * K, xt.data(), n, K);
  SoftmaxCrossEntropyArgs<T> b{};  // the T tiles' arguments; the parameters are already T
  b.s = a.s;
  b.kind = a.kind;
  b.weight = a.weight;
  b.ignore_index = a.ignore_index;
  b.label_smoothing = a.label_smoothing;
  b.row_scale = a.row_scale;
  b.loss_sum = a.loss_sum;
  b.x = xt.data();
  b.grad = gt.data();
  if constexpr (kProb) {
    tile_in(static_cast<const X*>(a.target) + r0 * K, tt.data(), n, K);
    b.target = tt.data();
  } else if constexpr (kKind == TargetKind::i32) {
    b.target = static_cast<const std::int32_t*>(a.target) + r0;
  } else {
    b.target = static_cast<const std::int64_t*>(a.target) + r0;
  }
  if (a.grad_output) b.grad_output = a.grad_output + r0;
  if (a.row_loss) b.row_loss = a.row_loss + r0;
  const double acc = softmax_cross_entropy_cols<T, kKind>(b, c, tile_plan(p, n), 0, 0, n);
  tile_out(gt.data(), a.grad + r0 * K, n, K);
  return acc;
}

template <class X, TargetKind kKind>
void softmax_cross_entropy_impl(const SoftmaxCrossEntropyArgs<X>& a) {
  using T = Compute<X>;
  const Plan p = make_plan<T>(a.s);
  *a.loss_sum = 0;
  if (p.K == 0 && a.row_loss) std::fill(a.row_loss, a.row_loss + p.rows, T(0));
  if (p.rows == 0 || p.K == 0) return;
  SoftmaxCrossEntropyCtx<T> c{};
  c.K = p.K;
  c.B = p.B;
  c.prob = kKind == TargetKind::prob;
  c.smooth = a.label_smoothing != 0;
  c.one_eps = static_cast<T>(1 - a.label_smoothing);
  c.eps_k = static_cast<T>(a.label_smoothing / static_cast<double>(p.K));
  double W = static_cast<double>(p.K);
  if (a.weight) {
    W = 0;
    for (i64 k = 0; k < p.K; ++k) W += a.weight[k];
  }
  c.W = static_cast<T>(W);
  c.scale = static_cast<T>(a.row_scale);
  Scratch<double> usum(p.units);
  const int nt = threads<X>(p, 2);
  parallel_for(p.units, nt, [&](i64 u) {
    unit_range(
        p, u,
        [&](i64 r0, i64 r1) {
          usum[u] = p.tiled ? softmax_cross_entropy_tiled<X, kKind>(a, c, p, r0, r1)
                            : softmax_cross_entropy_rows<X, kKind>(a, c, p, r0, r1);
        },
        [&](i64 ai, i64 b0, i64 b1) {
          usum[u] = softmax_cross_entropy_cols<X, kKind>(a, c, p, ai, b0, b1);
        });
  });
  double total = 0;
  for (i64 u = 0; u < p.units; ++u) total += usum[u];
  *a.loss_sum = total;
}

template <class X>
void softmax_cross_entropy(const SoftmaxCrossEntropyArgs<X>& a) {
  BNFAST_SM_EXPECT_SHAPE(a.s);
  const i64 rows = a.s.A * a.s.B, n = rows * a.s.C;
  BNFAST_EXPECT(a.x != nullptr && a.target != nullptr && a.grad != nullptr && a.loss_sum);
  BNFAST_EXPECT_FITS(a.x, a.n_x, n);
  BNFAST_EXPECT_FITS(a.target, a.n_target, a.kind == TargetKind::prob ? n : rows);
  BNFAST_EXPECT_FITS(a.weight, a.n_weight, a.s.C);
  BNFAST_EXPECT_FITS(a.grad_output, a.n_grad_output, rows);
  BNFAST_EXPECT_FITS(a.grad, a.n_grad, n);
  BNFAST_EXPECT_FITS(a.row_loss, a.n_row_loss, rows);
  switch (a.kind) {
    case TargetKind::i32:
      return softmax_cross_entropy_impl<X, TargetKind::i32>(a);
    case TargetKind::i64:
      return softmax_cross_entropy_impl<X, TargetKind::i64>(a);
    case TargetKind::prob:
      return softmax_cross_entropy_impl<X, TargetKind::prob>(a);
  }
}

// ---- exp / log over arrays (for measuring vmath.h) -------------------------------------------

template <class X>
void exp_array(const X* x, X* y, i64 n) {
  using T = Compute<X>;
  BNFAST_EXPECT(n >= 0);
  const int nt = threads_for(n * static_cast<i64>(sizeof(X)) * 2);
  const i64 chunk = 1 << 14, units = (n + chunk - 1) / chunk;
  parallel_for(units, nt, [&](i64 u) {
    const i64 o = u * chunk;
    for_lanes<T>(std::min(chunk, n - o),
                 [&](i64 j, int k) { st(y + o + j, vexp(ld(x + o + j, k)), k); });
  });
}

template <class X>
void log_array(const X* x, X* y, i64 n) {
  using T = Compute<X>;
  BNFAST_EXPECT(n >= 0);
  const int nt = threads_for(n * static_cast<i64>(sizeof(X)) * 2);
  const i64 chunk = 1 << 14, units = (n + chunk - 1) / chunk;
  parallel_for(units, nt, [&](i64 u) {
    const i64 o = u * chunk;
    for_lanes<T>(std::min(chunk, n - o), [&](i64 j, int k) {
      st(y + o + j, vlog(ld(x + o + j, k, Vec<T>::set1(T(1)))), k);
    });
  });
}

// One branch-free pass, so it vectorizes (in the bindings' baseline ISA it took 8% of a
// (65536, 10) cross-entropy).
template <class Y>
TargetCheck check_targets(const Y* t, i64 rows, i64 K, i64 ignore) {
  BNFAST_EXPECT(rows >= 0 && K >= 0);
  i64 ignored = 0, bad = 0;  // counts: a bool |= reduction does not vectorize
  for (i64 r = 0; r < rows; ++r) {
    const i64 y = static_cast<i64>(t[r]);
    const i64 ign = y == ignore;
    ignored += ign;
    bad += (static_cast<std::uint64_t>(y) >= static_cast<std::uint64_t>(K)) & (ign ^ 1);
  }
  return {ignored, bad != 0};
}

}  // namespace

SoftmaxKernels softmax_kernels() {
  return {{&softmax<float>, &softmax_backward<float>, &softmax_cross_entropy<float>,
           &exp_array<float>, &log_array<float>},
          {&softmax<double>, &softmax_backward<double>, &softmax_cross_entropy<double>,
           &exp_array<double>, &log_array<double>},
          {&softmax<bf16>, &softmax_backward<bf16>, &softmax_cross_entropy<bf16>, &exp_array<bf16>,
           &log_array<bf16>},
          &check_targets<std::int32_t>,
          &check_targets<std::int64_t>};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
