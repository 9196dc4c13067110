// Optimizer updates (SGD, course momentum, RMSprop, Adam/AdamW) and the sum of squares and
// scaling behind gradient clipping, fused over a list of tensors; one source for every ISA and
// every storage combination (optim.h): P parameters, G gradients, S state, computed in
// T = Compute<P> (float for bfloat16, whose loads widen and whose stores round).
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
// for any thread count (and the updates are elementwise anyway). Stochastic rounding keys its
// random bits by element, never by unit or thread, for the same reason.
// Options (weight decay, momentum, nesterov, centered, amsgrad...) are template flags, so
// every inner loop holds only the arithmetic its options need. The parameter's way out
// (ParamOut: rounding mode, master-weight copy) is a per-call runtime choice: one predictable
// branch per vector costs less than doubling every instantiation.
// Tails use partial (masked) loads and stores; there are no scalar remainder loops.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// Calls f(tensor, offset, length) for every unit, in parallel when the arrays are large
// (elem_bytes: the bytes moved per element, reads and writes).
template <class F>
void for_units(i64 count, const i64* numel, i64 elem_bytes, F&& f) {
  const Units units(count, numel);
  const i64 U = units.size();
  const int nt = threads_for(units.total() * elem_bytes);
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

// ---- storage and the parameter's way out --------------------------------------------------

// Bytes moved per element by an update with `states` state arrays (each read and written).
template <class P, class G, class S>
constexpr i64 elem_bytes(int states) {
  return 2 * i64(sizeof(P)) + i64(sizeof(G)) + 2 * states * i64(sizeof(S));
}

// Stochastic rounding's random bits (bnfast.reference.stochastic_bits mirrors them). Keys:
// key = mix64(mix64(seed + G (step + 1)) + G (tensor + 1)) per (seed, step, tensor), and per
// 2^32 elements k32 = low 32 bits of mix64(key + G ((e >> 32) + 1)), with G = SplitMix64's
// golden gamma; element e's 16 bits are the low half of lowbias32(k32 + (e mod 2^32)), a 32-bit
// integer hash (Wellons' "lowbias32": xorshift-multiply, full avalanche) that vectorizes on
// every ISA. Counter-based: an element's bits depend on nothing else, so any split of the work
// into units and threads, and every ISA, rounds identically. A unit never crosses a multiple of
// 2^32 elements (kBlock divides it), so k32 is one per unit.
constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull;
static_assert((std::int64_t{1} << 32) % kBlock == 0, "a unit must not cross 2^32 elements");

inline std::uint64_t tensor_key(const Rounding& r, i64 i) {
  const auto t = static_cast<std::uint64_t>(r.index ? r.index[i] : i);
  const auto step = static_cast<std::uint64_t>(r.step);
  return mix64(mix64(r.seed + kGolden * (step + 1)) + kGolden * (t + 1));
}

inline std::uint32_t unit_key(std::uint64_t key, i64 off) {
  return static_cast<std::uint32_t>(
      mix64(key + kGolden * ((static_cast<std::uint64_t>(off) >> 32) + 1)));
}

// IVec (32-bit integer lanes beside Vec<float>) and select_special come from vec.h.

inline IVec lowbias32(IVec x) {
  x = ixor(x, isrl<16>(x));
  x = imul(x, iset1(0x7feb352du));
  x = ixor(x, isrl<15>(x));
  x = imul(x, iset1(0x846ca68bu));
  return ixor(x, isrl<16>(x));
}

// v rounded stochastically, as a float32 that bfloat16 holds exactly (so that the rounding
// store after it changes nothing): 16 random bits added below bfloat16's last place, the sum
// truncated (the rule in bfloat16.h, lane by lane); e32 = the lanes' element
// numbers mod 2^32.
inline Vec<float> round_stochastic(Vec<float> v, IVec e32, std::uint32_t k32) {
  const IVec r = iand(lowbias32(iadd(e32, iset1(k32))), iset1(0xffffu));
  const IVec t = iand(iadd(ibits(v), r), iset1(0xffff0000u));
  return select_special(v, t);
}

// Where one unit's updated parameters go: P storage (bfloat16: rounded to nearest even, or
// stochastically), and, for float32 master weights, also their bfloat16 copy.
template <class P>
struct ParamOut {
  P* p;        // the unit's first parameter
  bf16* copy;  // the unit's first element of the bfloat16 copy, or nullptr
  bool stochastic;
  std::uint32_t k32;  // the unit's hash key
  std::uint32_t e0;   // the unit's first element number mod 2^32

  void put(i64 j, Vec<Compute<P>> v, int k) const {
    if constexpr (std::is_same<P, bf16>::value) {
      if (stochastic) {
        const IVec e = iadd(iset1(e0 + static_cast<std::uint32_t>(j)), iota());
        v = round_stochastic(v, e, k32);
      }
    }
    if constexpr (std::is_same<P, float>::value) {
      if (copy != nullptr) st(copy + j, v, k);
    }
    st(p + j, v, k);
  }
};

template <class P, class G, class S>
ParamOut<P> param_out(const TensorList<P, G, S>& t, i64 i, i64 off) {
  ParamOut<P> o{t.param[i] + off, nullptr, false, 0, static_cast<std::uint32_t>(off)};
  if constexpr (std::is_same<P, float>::value) {
    if (t.param_bf16 != nullptr && t.param_bf16[i] != nullptr) o.copy = t.param_bf16[i] + off;
  }
  if constexpr (std::is_same<P, bf16>::value) {
    if (t.rounding.stochastic) {
      o.stochastic = true;
      o.k32 = unit_key(tensor_key(t.rounding, i), off);
    }
  }
  return o;
}

// Multiply-adds of the update kernels: fused on every ISA for bfloat16 parameters. The scalar
// target has no FMA instruction and its fmadd rounds twice, which would change the last bit of
// some float32 results and so, now and then, their rounding to bfloat16: a bfloat16 parameter
// must come out the same on every ISA (stochastic rounding's promise above all). There the
// scalar target pays for std::fma (a library call); float32 and float64 keep its fast form.
template <class P, class T>
inline Vec<T> madd(Vec<T> a, Vec<T> b, Vec<T> c) {
#if defined(BNFAST_TARGET_SCALAR)
  if constexpr (std::is_same<P, bf16>::value) return {std::fma(a.v, b.v, c.v)};
#endif
  return fmadd(a, b, c);
}
template <class P, class T>
inline Vec<T> nmadd(Vec<T> a, Vec<T> b, Vec<T> c) {
#if defined(BNFAST_TARGET_SCALAR)
  if constexpr (std::is_same<P, bf16>::value) return {std::fma(-a.v, b.v, c.v)};
#endif
  return fnmadd(a, b, c);
}

// A new state value v stored to s and returned as its storage S keeps it: for bfloat16 state,
// rounded to nearest even (once: a full vector stores the packed result itself) and widened
// back in registers, so the step uses the state as stored, as PyTorch's does.
template <class S, class T>
BNFAST_FLATTEN inline Vec<T> keep_state(S* s, Vec<T> v, int k) {
  if constexpr (std::is_same<S, bf16>::value) {
#if defined(BNFAST_TARGET_SCALAR)
    *s = round_bf16(v.v);
    return {widen(*s)};
#else
    const auto h = round_bf16(v);  // the packed bfloat16 lanes
    if (k == Vec<float>::N) {
      std::memcpy(s, &h, sizeof(h));
    } else {
      st(s, v, k);
    }
    return {widen_bf16(h)};
#endif
  } else {
    st(s, v, k);
    return v;
  }
}

// ---- SGD ----------------------------------------------------------------------------------

template <class P, class G, class S, bool WD, bool MOM, bool NEST, bool FIRST>
void sgd_impl(const SgdArgs<P, G, S>& a, Flags<WD, MOM, NEST, FIRST>) {
  using T = Compute<P>;
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), wd = V::set1(static_cast<T>(a.weight_decay));
  const V mu = V::set1(static_cast<T>(a.momentum));
  const V omd = V::set1(static_cast<T>(1.0 - a.dampening));
  const TensorList<P, G, S>& t = a.t;
  for_units(t.count, t.numel, elem_bytes<P, G, S>(MOM), [&](i64 i, i64 off, i64 len) {
    const ParamOut<P> out = param_out(t, i, off);
    const P* p = out.p;
    const G* g = t.grad[i] + off;
    S* b = MOM ? t.s0[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V pv = ld(p + j, k);
      V d = ld(g + j, k);
      if (WD) d = madd<P>(wd, pv, d);
      if (MOM) {
        const V bv = keep_state(b + j, FIRST ? d : madd<P>(mu, ld(b + j, k), omd * d), k);
        d = NEST ? madd<P>(mu, bv, d) : bv;
      }
      out.put(j, nmadd<P>(lr, d, pv), k);
    });
  });
}

template <class P, class G, class S>
void sgd(const SgdArgs<P, G, S>& a) {
  const bool mom = a.momentum != 0;
  auto f = [&](auto flags) { sgd_impl(a, flags); };
  dispatch(f, Flags<>{}, a.weight_decay != 0, mom, mom && a.nesterov, mom && a.first);
}

// ---- momentum (course form) ---------------------------------------------------------------

template <class P, class G, class S>
void momentum(const MomentumArgs<P, G, S>& a) {
  using T = Compute<P>;
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), beta = V::set1(static_cast<T>(a.beta));
  const V omb = V::set1(static_cast<T>(1.0 - a.beta));
  const TensorList<P, G, S>& t = a.t;
  for_units(t.count, t.numel, elem_bytes<P, G, S>(1), [&](i64 i, i64 off, i64 len) {
    const ParamOut<P> out = param_out(t, i, off);
    const P* p = out.p;
    const G* g = t.grad[i] + off;
    S* v = t.s0[i] + off;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V pv = ld(p + j, k);  // every load before the first store (see adam_impl)
      const V vv = keep_state(v + j, madd<P>(beta, ld(v + j, k), omb * ld(g + j, k)), k);
      out.put(j, nmadd<P>(lr, vv, pv), k);
    });
  });
}

// ---- RMSprop ------------------------------------------------------------------------------

template <class P, class G, class S, bool WD, bool CENT, bool MOM>
void rmsprop_impl(const RmspropArgs<P, G, S>& a, Flags<WD, CENT, MOM>) {
  using T = Compute<P>;
  using V = Vec<T>;
  const V lr = V::set1(static_cast<T>(a.lr)), wd = V::set1(static_cast<T>(a.weight_decay));
  const V alpha = V::set1(static_cast<T>(a.alpha));
  const V oma = V::set1(static_cast<T>(1.0 - a.alpha));
  const V eps = V::set1(static_cast<T>(a.eps)), mu = V::set1(static_cast<T>(a.momentum));
  const TensorList<P, G, S>& t = a.t;
  for_units(t.count, t.numel, elem_bytes<P, G, S>(1 + CENT + MOM), [&](i64 i, i64 off, i64 len) {
    const ParamOut<P> out = param_out(t, i, off);
    const P* p = out.p;
    const G* g = t.grad[i] + off;
    S* sq = t.s0[i] + off;
    S* ga = CENT ? t.s1[i] + off : nullptr;
    S* buf = MOM ? t.s2[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      const V pv = ld(p + j, k);
      V d = ld(g + j, k);
      const V sq0 = ld(sq + j, k);  // every load before the first store (see adam_impl)
      const V ga0 = CENT ? ld(ga + j, k) : sq0;
      const V buf0 = MOM ? ld(buf + j, k) : sq0;
      if (WD) d = madd<P>(wd, pv, d);
      const V s = keep_state(sq + j, madd<P>(alpha, sq0, oma * (d * d)), k);
      V avg;
      if (CENT) {
        const V m = keep_state(ga + j, madd<P>(alpha, ga0, oma * d), k);
        avg = sqrt(nmadd<P>(m, m, s)) + eps;
      } else {
        avg = sqrt(s) + eps;
      }
      V u = d / avg;
      if (MOM) {
        u = keep_state(buf + j, madd<P>(mu, buf0, u), k);
      }
      out.put(j, nmadd<P>(lr, u, pv), k);
    });
  });
}

template <class P, class G, class S>
void rmsprop(const RmspropArgs<P, G, S>& a) {
  auto f = [&](auto flags) { rmsprop_impl(a, flags); };
  dispatch(f, Flags<>{}, a.weight_decay != 0, a.centered, a.momentum > 0);
}

// ---- Adam / AdamW -------------------------------------------------------------------------

template <class P, class G, class S, bool WD, bool DECOUPLED, bool AMS>
void adam_impl(const AdamArgs<P, G, S>& a, Flags<WD, DECOUPLED, AMS>) {
  using T = Compute<P>;
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
  const TensorList<P, G, S>& tl = a.t;
  for_units(tl.count, tl.numel, elem_bytes<P, G, S>(AMS ? 3 : 2), [&](i64 i, i64 off, i64 len) {
    const ParamOut<P> out = param_out(tl, i, off);
    const P* p = out.p;
    const G* g = tl.grad[i] + off;
    S* m = tl.s0[i] + off;
    S* v = tl.s1[i] + off;
    S* vmax = AMS ? tl.s2[i] + off : nullptr;
    for_lanes<T>(len, [&](i64 j, int k) {
      // Every load before the first store: the arrays' equal offsets within a page would
      // otherwise make a load look dependent on the store before it (4K aliasing).
      V pv = ld(p + j, k);
      V d = ld(g + j, k);
      const V m0 = ld(m + j, k), v0 = ld(v + j, k);
      const V vmax0 = AMS ? ld(vmax + j, k) : v0;
      if (DECOUPLED) {
        pv = pv * decay;
      } else if (WD) {
        d = madd<P>(wd, pv, d);
      }
      const V mv = keep_state(m + j, madd<P>(b1, m0, omb1 * d), k);
      V vv = keep_state(v + j, madd<P>(b2, v0, omb2 * (d * d)), k);
      if (AMS) {
        vv = max(vmax0, vv);  // the second operand wins on NaN: v's NaN propagates
        st(vmax + j, vv, k);
      }
      const V denom = madd<P>(sqrt(vv), inv_bc2_sqrt, eps);
      out.put(j, nmadd<P>(step_size, mv / denom, pv), k);
    });
  });
}

template <class P, class G, class S>
void adam(const AdamArgs<P, G, S>& a) {
  auto f = [&](auto flags) { adam_impl(a, flags); };
  const bool wd = a.weight_decay != 0;
  dispatch(f, Flags<>{}, wd && !a.decoupled, wd && a.decoupled, a.amsgrad);
}

// ---- clipping: sum of squares and scaling -------------------------------------------------

// Sum of x[i]^2 over one unit: T accumulators over 16 vectors at a time, then a double.
template <class X>
double unit_sum_squares(const X* x, i64 n) {
  using T = Compute<X>;
  using V = Vec<T>;
  constexpr int N = V::N;
  constexpr i64 kSub = 16 * N;
  double total = 0;
  for (i64 s = 0; s < n; s += kSub) {
    const i64 e = std::min(n, s + kSub);
    V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
    i64 i = s;
    for (; i + 4 * N <= e; i += 4 * N) {
      const V x0 = ld(x + i, N), x1 = ld(x + i + N, N);
      const V x2 = ld(x + i + 2 * N, N), x3 = ld(x + i + 3 * N, N);
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

template <class X>
void sum_squares(i64 count, const i64* numel, const X* const* x, double* out) {
  const Units units(count, numel);
  const i64 U = units.size();
  Scratch<double> part(std::max<i64>(1, U));
  const int nt = threads_for(units.total() * static_cast<i64>(sizeof(X)));
  parallel_for(U, nt, [&](i64 u) {
    const i64 i = units.tensor(u), off = units.offset(u);
    part[u] = unit_sum_squares(x[i] + off, std::min(kBlock, numel[i] - off));
  });
  double s = 0;
  for (i64 u = 0; u < U; ++u) s += part[u];
  *out = s;
}

template <class X>
void scale(i64 count, const i64* numel, X* const* x, double coef) {
  using T = Compute<X>;
  using V = Vec<T>;
  const V c = V::set1(static_cast<T>(coef));
  for_units(count, numel, 2 * i64(sizeof(X)), [&](i64 i, i64 off, i64 len) {
    X* p = x[i] + off;
    for_lanes<T>(len, [&](i64 j, int k) { st(p + j, ld(p + j, k) * c, k); });
  });
}

template <class P, class G, class S>
OptimFns<P, G, S> fns() {
  return {&sgd<P, G, S>, &momentum<P, G, S>, &rmsprop<P, G, S>, &adam<P, G, S>};
}

template <class X>
ClipFns<X> clip_fns() {
  return {&sum_squares<X>, &scale<X>};
}

}  // namespace

OptimKernels optim_kernels() {
  return {fns<float, float, float>(), fns<double, double, double>(),
          fns<bf16, bf16, float>(),   fns<bf16, bf16, bf16>(),
          fns<float, bf16, float>(),  clip_fns<float>(),
          clip_fns<double>(),         clip_fns<bf16>()};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
