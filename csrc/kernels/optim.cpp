// Optimizer updates (SGD, course momentum, RMSprop, Adam/AdamW) and the sum of squares and
// scaling behind gradient clipping, fused over a list of tensors; one source for every ISA.
//
// Math: see optim.h (and bnfast/reference.py, the spec). Coefficients are computed in double
// (bias corrections 1 - beta^t, lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t), 1 - lr * wd) and
// rounded to T once per call.
// Passes over memory: one. Each element of the parameter, its gradient and its state is read
// once and written once (plain stores: the arrays are updated in place and read again at the
// next step, where non-temporal stores measured slower). The sum of squares reads each
// gradient once; clipping then rescales in a second pass only when it has to.
// Work units: every tensor is cut into blocks of kBlock elements; the units (tensor, block)
// depend only on the sizes, so the reduction combines the same partial sums in the same order
// for any thread count (and the updates are elementwise anyway).
// Options (weight decay, momentum, nesterov, centered, amsgrad...) are template flags, so
// every inner loop holds only the arithmetic its options need.
// Tails use partial (masked) loads and stores; there are no scalar remainder loops.
#include <algorithm>
#include <cmath>

#include "bnfast/contract.h"
#include "bnfast/optim.h"
#include "bnfast/parallel.h"
#include "bnfast/vec.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kBlock = 8192;  // elements per work unit: a few arrays of it stay in L2

// The (tensor, offset) of every unit, in tensor order.
class Units {
 public:
  // Every kernel's lengths come through here: the entry contract (contract.h) is checked once.
  Units(i64 count, const i64* numel) : n_(0), total_(0) {
    BNFAST_EXPECT(count >= 0 && (count == 0 || numel != nullptr));
    for (i64 i = 0; i < count; ++i) {
      BNFAST_EXPECT(numel[i] >= 0);
      n_ += (numel[i] + kBlock - 1) / kBlock;
      total_ += numel[i];
    }
    tensor_ = static_cast<i64*>(aligned_malloc(std::max<i64>(1, n_) * 2 * sizeof(i64)));
    offset_ = tensor_ + n_;
    i64 u = 0;
    for (i64 i = 0; i < count; ++i) {
      for (i64 off = 0; off < numel[i]; off += kBlock) {
        tensor_[u] = i;
        offset_[u] = off;
        ++u;
      }
    }
  }
  ~Units() { aligned_free(tensor_); }
  Units(const Units&) = delete;
  Units& operator=(const Units&) = delete;
  i64 size() const { return n_; }
  i64 total() const { return total_; }
  i64 tensor(i64 u) const { return tensor_[u]; }
  i64 offset(i64 u) const { return offset_[u]; }

 private:
  i64 n_, total_;
  i64* tensor_;
  i64* offset_;
};

// Calls f(tensor, offset, length) for every unit, in parallel when the arrays are large.
template <class T, class F>
void for_units(i64 count, const i64* numel, int arrays, F&& f) {
  const Units units(count, numel);
  const i64 U = units.size();
  const int nt = threads_for(units.total() * static_cast<i64>(sizeof(T)) * arrays);
  parallel_for(U, nt, [&](i64 u) {
    const i64 i = units.tensor(u), off = units.offset(u);
    f(i, off, std::min(kBlock, numel[i] - off));
  });
}

// Runtime options turned into template flags: dispatch(f, Flags<>{}, b1, b2, ...) calls
// f(Flags<b1, b2, ...>{}) with compile-time values.
template <bool... B>
struct Flags {};
template <class F, bool... B>
inline void dispatch(F& f, Flags<B...> flags) {
  f(flags);
}
template <class F, bool... B, class... R>
inline void dispatch(F& f, Flags<B...>, bool b, R... rest) {
  if (b) {
    dispatch(f, Flags<B..., true>{}, rest...);
  } else {
    dispatch(f, Flags<B..., false>{}, rest...);
  }
}

// ---- SGD ----------------------------------------------------------------------------------

template <class T, bool WD, bool MOM, bool NEST, bool FIRST>
void sgd_impl(const SgdArgs<T>& a, Flags<WD, MOM, NEST, FIRST>) {
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), wd = V::set1(static_cast<T>(a.weight_decay));
  const V mu = V::set1(static_cast<T>(a.momentum));
  const V omd = V::set1(static_cast<T>(1.0 - a.dampening));
  const TensorList<T>& t = a.t;
  for_units<T>(t.count, t.numel, MOM ? 4 : 3, [&](i64 i, i64 off, i64 len) {
    T* p = t.param[i] + off;
    const T* g = t.grad[i] + off;
    T* b = MOM ? t.s0[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V pv = ld(p + j, k);
      V d = ld(g + j, k);
      if (WD) d = fmadd(wd, pv, d);
      if (MOM) {
        const V bv = FIRST ? d : fmadd(mu, ld(b + j, k), omd * d);
        st(b + j, bv, k);
        d = NEST ? fmadd(mu, bv, d) : bv;
      }
      st(p + j, fnmadd(lr, d, pv), k);
    });
  });
}

template <class T>
void sgd(const SgdArgs<T>& a) {
  const bool mom = a.momentum != 0;
  auto f = [&](auto flags) { sgd_impl(a, flags); };
  dispatch(f, Flags<>{}, a.weight_decay != 0, mom, mom && a.nesterov, mom && a.first);
}

// ---- momentum (course form) ---------------------------------------------------------------

template <class T>
void momentum(const MomentumArgs<T>& a) {
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), beta = V::set1(static_cast<T>(a.beta));
  const V omb = V::set1(static_cast<T>(1.0 - a.beta));
  const TensorList<T>& t = a.t;
  for_units<T>(t.count, t.numel, 4, [&](i64 i, i64 off, i64 len) {
    T* p = t.param[i] + off;
    const T* g = t.grad[i] + off;
    T* v = t.s0[i] + off;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V vv = fmadd(beta, ld(v + j, k), omb * ld(g + j, k));
      st(v + j, vv, k);
      st(p + j, fnmadd(lr, vv, ld(p + j, k)), k);
    });
  });
}

// ---- RMSprop ------------------------------------------------------------------------------

template <class T, bool WD, bool CENT, bool MOM>
void rmsprop_impl(const RmspropArgs<T>& a, Flags<WD, CENT, MOM>) {
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), wd = V::set1(static_cast<T>(a.weight_decay));
  const V alpha = V::set1(static_cast<T>(a.alpha));
  const V oma = V::set1(static_cast<T>(1.0 - a.alpha));
  const V eps = V::set1(static_cast<T>(a.eps)), mu = V::set1(static_cast<T>(a.momentum));
  const TensorList<T>& t = a.t;
  for_units<T>(t.count, t.numel, 4 + 2 * CENT + 2 * MOM, [&](i64 i, i64 off, i64 len) {
    T* p = t.param[i] + off;
    const T* g = t.grad[i] + off;
    T* sq = t.s0[i] + off;
    T* ga = CENT ? t.s1[i] + off : nullptr;
    T* buf = MOM ? t.s2[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V pv = ld(p + j, k);
      V d = ld(g + j, k);
      if (WD) d = fmadd(wd, pv, d);
      const V s = fmadd(alpha, ld(sq + j, k), oma * (d * d));
      st(sq + j, s, k);
      V avg;
      if (CENT) {
        const V m = fmadd(alpha, ld(ga + j, k), oma * d);
        st(ga + j, m, k);
        avg = sqrt(fnmadd(m, m, s)) + eps;
      } else {
        avg = sqrt(s) + eps;
      }
      V u = d / avg;
      if (MOM) {
        u = fmadd(mu, ld(buf + j, k), u);
        st(buf + j, u, k);
      }
      st(p + j, fnmadd(lr, u, pv), k);
    });
  });
}

template <class T>
void rmsprop(const RmspropArgs<T>& a) {
  auto f = [&](auto flags) { rmsprop_impl(a, flags); };
  dispatch(f, Flags<>{}, a.weight_decay != 0, a.centered, a.momentum > 0);
}

// ---- Adam / AdamW -------------------------------------------------------------------------

template <class T, bool WD, bool DECOUPLED, bool AMS>
void adam_impl(const AdamArgs<T>& a, Flags<WD, DECOUPLED, AMS>) {
  using V = Vec<T>;
  const double t = static_cast<double>(a.step);
  const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
  const V step_size = V::set1(static_cast<T>(a.lr / bc1));
  const V inv_bc2_sqrt = V::set1(static_cast<T>(1.0 / std::sqrt(bc2)));
  const V decay = V::set1(static_cast<T>(1.0 - a.lr * a.weight_decay));
  const V wd = V::set1(static_cast<T>(a.weight_decay));
  const V b1 = V::set1(static_cast<T>(a.beta1)), omb1 = V::set1(static_cast<T>(1.0 - a.beta1));
  const V b2 = V::set1(static_cast<T>(a.beta2)), omb2 = V::set1(static_cast<T>(1.0 - a.beta2));
  const V eps = V::set1(static_cast<T>(a.eps));
  const TensorList<T>& tl = a.t;
  for_units<T>(tl.count, tl.numel, AMS ? 8 : 6, [&](i64 i, i64 off, i64 len) {
    T* p = tl.param[i] + off;
    const T* g = tl.grad[i] + off;
    T* m = tl.s0[i] + off;
    T* v = tl.s1[i] + off;
    T* vmax = AMS ? tl.s2[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      V pv = ld(p + j, k);
      V d = ld(g + j, k);
      if (DECOUPLED) {
        pv = pv * decay;
      } else if (WD) {
        d = fmadd(wd, pv, d);
      }
      const V mv = fmadd(b1, ld(m + j, k), omb1 * d);
      V vv = fmadd(b2, ld(v + j, k), omb2 * (d * d));
      st(m + j, mv, k);
      st(v + j, vv, k);
      if (AMS) {
        vv = max(ld(vmax + j, k), vv);  // the second operand wins on NaN: v's NaN propagates
        st(vmax + j, vv, k);
      }
      const V denom = fmadd(sqrt(vv), inv_bc2_sqrt, eps);
      st(p + j, fnmadd(step_size, mv / denom, pv), k);
    });
  });
}

template <class T>
void adam(const AdamArgs<T>& a) {
  auto f = [&](auto flags) { adam_impl(a, flags); };
  const bool wd = a.weight_decay != 0;
  dispatch(f, Flags<>{}, wd && !a.decoupled, wd && a.decoupled, a.amsgrad);
}

// ---- clipping: sum of squares and scaling -------------------------------------------------

// Sum of x[i]^2 over one unit: T accumulators over 16 vectors at a time, then a double.
template <class T>
double unit_sum_squares(const T* x, i64 n) {
  using V = Vec<T>;
  constexpr int N = V::N;
  constexpr i64 kSub = 16 * N;
  double total = 0;
  for (i64 s = 0; s < n; s += kSub) {
    const i64 e = std::min(n, s + kSub);
    V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
    i64 i = s;
    for (; i + 4 * N <= e; i += 4 * N) {
      const V x0 = V::load(x + i), x1 = V::load(x + i + N);
      const V x2 = V::load(x + i + 2 * N), x3 = V::load(x + i + 3 * N);
      a0 = fmadd(x0, x0, a0);
      a1 = fmadd(x1, x1, a1);
      a2 = fmadd(x2, x2, a2);
      a3 = fmadd(x3, x3, a3);
    }
    for (; i < e; i += N) {
      const V xv = ld(x + i, static_cast<int>(std::min<i64>(N, e - i)));  // zero past the end
      a0 = fmadd(xv, xv, a0);
    }
    total += static_cast<double>(reduce_add((a0 + a1) + (a2 + a3)));
  }
  return total;
}

template <class T>
void sum_squares(i64 count, const i64* numel, const T* const* x, double* out) {
  const Units units(count, numel);
  const i64 U = units.size();
  Scratch<double> part(std::max<i64>(1, U));
  const int nt = threads_for(units.total() * static_cast<i64>(sizeof(T)));
  parallel_for(U, nt, [&](i64 u) {
    const i64 i = units.tensor(u), off = units.offset(u);
    part[u] = unit_sum_squares(x[i] + off, std::min(kBlock, numel[i] - off));
  });
  double s = 0;
  for (i64 u = 0; u < U; ++u) s += part[u];
  *out = s;
}

template <class T>
void scale(i64 count, const i64* numel, T* const* x, double coef) {
  using V = Vec<T>;
  const V c = V::set1(static_cast<T>(coef));
  for_units<T>(count, numel, 2, [&](i64 i, i64 off, i64 len) {
    T* p = x[i] + off;
    for_lanes<T>(len, [&](i64 j, int k) { st(p + j, ld(p + j, k) * c, k); });
  });
}

template <class T>
OptimFns<T> fns() {
  return {&sgd<T>, &momentum<T>, &rmsprop<T>, &adam<T>, &sum_squares<T>, &scale<T>};
}

}  // namespace

OptimKernels optim_kernels() { return {fns<float>(), fns<double>()}; }

}  // namespace BNFAST_NS
}  // namespace bnfast
