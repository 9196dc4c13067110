// Optimizer update kernels, fused over a list of tensors: one call updates every parameter and
// its state in place, in one sweep over memory. Scalar coefficients arrive in double and are
// rounded to the compute type once per call (bias corrections are computed in double by the
// caller's side of the kernel, never in float).
//
// Storage types: each kernel is built for a (parameter P, gradient G, state S) combination and
// computes in Compute<P> (float for bfloat16). The combinations (OptimKernels below):
//  - float/float/float and double/double/double: the classic ones;
//  - bf16/bf16/float: bfloat16 parameters with float32 state (the NumPy API's default);
//  - bf16/bf16/bf16: bfloat16 state as well (what PyTorch keeps for bfloat16 parameters);
//  - float/bf16/float: float32 master weights stepped with bfloat16 gradients.
// A bfloat16 parameter or state is widened on load and rounded to nearest even on store, once
// per step; the parameter may instead be rounded stochastically (Rounding below).
#pragma once

#include <cstdint>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {

// How an updated bfloat16 parameter is rounded. Stochastic rounding draws 16 random bits per
// element from a counter-based hash of (seed, step, index[i], element): reproducible, and the
// same bits for any thread count and every ISA (the hash: optim.cpp, above round_stochastic;
// bnfast.reference.stochastic_bits mirrors it). Ignored unless P is bf16.
struct Rounding {
  bool stochastic;
  std::uint64_t seed;
  std::int64_t step;
  // Tensor i's number in the hash: index[i] (the position in the caller's list, so that a
  // tensor's bits do not depend on how a mixed list is grouped); nullptr means i.
  const std::int64_t* index;
};

// count tensors; tensor i has numel[i] elements at param[i], grad[i] and each state list's [i].
// State lists an optimizer does not use are nullptr. numel[i] is the extent of every array of
// tensor i (the caller checks that they all have one shape); 0 is allowed. The caller
// guarantees that no written array overlaps any other array.
template <class P, class G = P, class S = P>
struct TensorList {
  std::int64_t count;
  const std::int64_t* numel;
  P* const* param;
  const G* const* grad;
  S* const* s0;
  S* const* s1;
  S* const* s2;
  // Master weights (P = float only): where param_bf16 (a list) and param_bf16[i] are not null,
  // the updated parameter is also written there, rounded to nearest even; nullptr: none.
  bf16* const* param_bf16;
  Rounding rounding;
};

// PyTorch SGD: g = grad + wd * p; with momentum, buf = g on the first step, else
// buf = momentum * buf + (1 - dampening) * g; g = nesterov ? g + momentum * buf : buf;
// p -= lr * g. s0 = momentum buffer (nullptr when momentum == 0).
template <class P, class G = P, class S = P>
struct SgdArgs {
  TensorList<P, G, S> t;
  double lr, momentum, dampening, weight_decay;
  bool nesterov, first;
};

// The course's momentum: v = beta * v + (1 - beta) * g; p -= lr * v. s0 = v.
template <class P, class G = P, class S = P>
struct MomentumArgs {
  TensorList<P, G, S> t;
  double lr, beta;
};

// PyTorch RMSprop: g = grad + wd * p; sq = alpha * sq + (1 - alpha) * g^2;
// centered: ga = alpha * ga + (1 - alpha) * g, avg = sqrt(sq - ga^2) + eps, else
// avg = sqrt(sq) + eps; momentum > 0: buf = momentum * buf + g / avg, p -= lr * buf;
// else p -= lr * g / avg. s0 = sq, s1 = ga (centered), s2 = buf (momentum > 0).
// The course's form (s = beta2 * s + (1 - beta2) * g^2, p -= lr * g / (sqrt(s) + eps)) is
// alpha = beta2 with no weight decay, centering or momentum.
template <class P, class G = P, class S = P>
struct RmspropArgs {
  TensorList<P, G, S> t;
  double lr, alpha, eps, weight_decay, momentum;
  bool centered;
};

// Adam / AdamW at step `step` (>= 1): decoupled: p *= 1 - lr * wd, else g = grad + wd * p;
// m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
// amsgrad: vmax = max(vmax, v), else vmax = v;
// p -= (lr / (1 - beta1^step)) * m / (sqrt(vmax) / sqrt(1 - beta2^step) + eps).
// s0 = m, s1 = v, s2 = vmax (amsgrad).
template <class P, class G = P, class S = P>
struct AdamArgs {
  TensorList<P, G, S> t;
  std::int64_t step;
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, decoupled;
};

template <class P, class G = P, class S = P>
struct OptimFns {
  void (*sgd)(const SgdArgs<P, G, S>&);
  void (*momentum)(const MomentumArgs<P, G, S>&);
  void (*rmsprop)(const RmspropArgs<P, G, S>&);
  void (*adam)(const AdamArgs<P, G, S>&);
};

// Gradient clipping over arrays of storage type X (bfloat16 is widened to float32).
template <class X>
struct ClipFns {
  // Sum of squares of every element of the count arrays x[i] (numel[i] each), in double,
  // blocked and combined in a fixed order (deterministic for any thread count).
  void (*sum_squares)(std::int64_t count, const std::int64_t* numel, const X* const* x,
                      double* out);
  // x[i] *= coef for every array (bfloat16: computed in float32, rounded to nearest even).
  void (*scale)(std::int64_t count, const std::int64_t* numel, X* const* x, double coef);
};

struct OptimKernels {
  OptimFns<float> f32;
  OptimFns<double> f64;
  OptimFns<bf16, bf16, float> bf16_f32;       // bfloat16 parameters, float32 state
  OptimFns<bf16, bf16, bf16> bf16_bf16;       // bfloat16 parameters and state
  OptimFns<float, bf16, float> f32_bf16grad;  // float32 (master) parameters, bfloat16 gradients
  ClipFns<float> clip_f32;
  ClipFns<double> clip_f64;
  ClipFns<bf16> clip_bf16;
};

BNFAST_DECLARE_KERNELS(OptimKernels, optim_kernels)

}  // namespace bnfast
