// Batch normalization kernels. x is any contiguous array viewed as (A, C, B): statistics per
// channel c over a and b. (N, C) is A=N, B=1; NCHW is A=N, B=H*W; NHWC is A=N*H*W, B=1.
//
// Any of A, C, B may be 0. With no values per channel (A * B == 0) training writes NaN to
// save_mean and save_invstd (the mean of nothing) and leaves the running statistics as they
// are; backward writes dweight = dbias = 0. Training with exactly one value per channel is
// outside the contract (the unbiased variance divides by 0): callers refuse it.
// Each n_* field is the element count of the array the pointer beside it points into, as the
// caller holds it (contract.h checks every length against them in sanitizer builds).
#pragma once

#include <cstdint>

#include "bnfast/isa.h"

namespace bnfast {

// Training forward: batch mean and biased variance per channel, y = (x - mean) * scale + shift,
// running stats (nullable) updated as new = (1 - momentum) * old + momentum * batch (unbiased
// variance), and save_mean / save_invstd (length C) written for backward.
template <class T>
struct BatchNormTrainArgs {
  const T* x;
  T* y;
  Shape3 s;
  const T* weight;  // nullable: 1
  const T* bias;    // nullable: 0
  T* running_mean;  // nullable
  T* running_var;   // nullable
  double momentum;
  double eps;
  T* save_mean;
  T* save_invstd;
  std::int64_t n_x, n_y, n_weight, n_bias, n_running_mean, n_running_var, n_save_mean,
      n_save_invstd;
};

// Eval forward: y = (x - running_mean) * weight / sqrt(running_var + eps) + bias; save_mean and
// save_invstd receive the running mean and 1 / sqrt(running_var + eps) for backward.
template <class T>
struct BatchNormEvalArgs {
  const T* x;
  T* y;
  Shape3 s;
  const T* weight;  // nullable
  const T* bias;    // nullable
  const T* running_mean;
  const T* running_var;
  double eps;
  T* save_mean;
  T* save_invstd;
  std::int64_t n_x, n_y, n_weight, n_bias, n_running_mean, n_running_var, n_save_mean,
      n_save_invstd;
};

// Backward from the statistics used in the forward (batch statistics when training, running
// statistics otherwise): dweight = sum(dy * (x - mean)) * invstd, dbias = sum(dy), and
//   training: dx = weight * invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x -
//   mean))) eval:     dx = weight * invstd * dy
template <class T>
struct BatchNormBackwardArgs {
  const T* dy;
  const T* x;
  Shape3 s;
  const T* mean;
  const T* invstd;
  const T* weight;  // nullable
  bool training;
  T* dx;       // nullable: skip
  T* dweight;  // nullable: skip
  T* dbias;    // nullable: skip
  std::int64_t n_dy, n_x, n_mean, n_invstd, n_weight, n_dx, n_dweight, n_dbias;
};

template <class T>
struct BatchNormFns {
  void (*batch_norm_train)(const BatchNormTrainArgs<T>&);
  void (*batch_norm_eval)(const BatchNormEvalArgs<T>&);
  void (*batch_norm_backward)(const BatchNormBackwardArgs<T>&);
};

struct BatchNormKernels {
  BatchNormFns<float> f32;
  BatchNormFns<double> f64;
};

BNFAST_DECLARE_KERNELS(BatchNormKernels, batch_norm_kernels)

}  // namespace bnfast
