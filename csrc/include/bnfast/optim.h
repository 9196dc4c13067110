// Optimizer update kernels, fused over a list of tensors: one call updates every parameter and
// its state in place, in one sweep over memory. Scalar coefficients arrive in double and are
// rounded to T once per call (bias corrections are computed in double by the caller's side of
// the kernel, never in T).
#pragma once

#include <cstdint>

#include "bnfast/isa.h"

namespace bnfast {

// count tensors; tensor i has numel[i] elements at param[i], grad[i] and each state list's [i].
// State lists an optimizer does not use are nullptr. numel[i] is the extent of every array of
// tensor i (the caller checks that they all have one shape); 0 is allowed. The caller
// guarantees that no written array overlaps any other array.
template <class T>
struct TensorList {
  std::int64_t count;
  const std::int64_t* numel;
  T* const* param;
  const T* const* grad;
  T* const* s0;
  T* const* s1;
  T* const* s2;
};

// PyTorch SGD: g = grad + wd * p; with momentum, buf = g on the first step, else
// buf = momentum * buf + (1 - dampening) * g; g = nesterov ? g + momentum * buf : buf;
// p -= lr * g. s0 = momentum buffer (nullptr when momentum == 0).
template <class T>
struct SgdArgs {
  TensorList<T> t;
  double lr, momentum, dampening, weight_decay;
  bool nesterov, first;
};

// The course's momentum: v = beta * v + (1 - beta) * g; p -= lr * v. s0 = v.
template <class T>
struct MomentumArgs {
  TensorList<T> t;
  double lr, beta;
};

// PyTorch RMSprop: g = grad + wd * p; sq = alpha * sq + (1 - alpha) * g^2;
// centered: ga = alpha * ga + (1 - alpha) * g, avg = sqrt(sq - ga^2) + eps, else
// avg = sqrt(sq) + eps; momentum > 0: buf = momentum * buf + g / avg, p -= lr * buf;
// else p -= lr * g / avg. s0 = sq, s1 = ga (centered), s2 = buf (momentum > 0).
// The course's form (s = beta2 * s + (1 - beta2) * g^2, p -= lr * g / (sqrt(s) + eps)) is
// alpha = beta2 with no weight decay, centering or momentum.
template <class T>
struct RmspropArgs {
  TensorList<T> t;
  double lr, alpha, eps, weight_decay, momentum;
  bool centered;
};

// Adam / AdamW at step `step` (>= 1): decoupled: p *= 1 - lr * wd, else g = grad + wd * p;
// m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
// amsgrad: vmax = max(vmax, v), else vmax = v;
// p -= (lr / (1 - beta1^step)) * m / (sqrt(vmax) / sqrt(1 - beta2^step) + eps).
// s0 = m, s1 = v, s2 = vmax (amsgrad).
template <class T>
struct AdamArgs {
  TensorList<T> t;
  std::int64_t step;
  double lr, beta1, beta2, eps, weight_decay;
  bool amsgrad, decoupled;
};

template <class T>
struct OptimFns {
  void (*sgd)(const SgdArgs<T>&);
  void (*momentum)(const MomentumArgs<T>&);
  void (*rmsprop)(const RmspropArgs<T>&);
  void (*adam)(const AdamArgs<T>&);
  // Sum of squares of every element of the count arrays x[i] (numel[i] each), in double,
  // blocked and combined in a fixed order (deterministic for any thread count).
  void (*sum_squares)(std::int64_t count, const std::int64_t* numel, const T* const* x,
                      double* out);
  // x[i] *= coef for every array.
  void (*scale)(std::int64_t count, const std::int64_t* numel, T* const* x, double coef);
};

struct OptimKernels {
  OptimFns<float> f32;
  OptimFns<double> f64;
};

BNFAST_DECLARE_KERNELS(OptimKernels, optim_kernels)

}  // namespace bnfast
