// Batch normalization kernels. x is any contiguous array viewed as (A, C, B): statistics per
// channel c over a and b. (N, C) is A=N, B=1; NCHW is A=N, B=H*W; NHWC is A=N*H*W, B=1.
//
// Any of A, C, B may be 0. With no values per channel (A * B == 0) training writes NaN to
// save_mean and save_invstd (the mean of nothing) and leaves the running statistics as they
// are; backward writes dweight = dbias = 0. Training with exactly one value per channel is
// outside the contract (the unbiased variance divides by 0): callers refuse it.
// Data (x, y, dy, dx) is of storage type X: float, double or bf16. Parameters, statistics and
// parameter gradients are P = Compute<X> (float32 beside bfloat16 data, as in PyTorch's
// mixed-type batch norm), and so is the arithmetic.
// Each n_* field is the element count of the array the pointer beside it points into, as the
// caller holds it (contract.h checks every length against them in sanitizer builds).
#pragma once

#include <cstdint>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {

// Training forward: batch mean and biased variance per channel, y = (x - mean) * scale + shift,
// running stats (nullable) updated as new = (1 - momentum) * old + momentum * batch (unbiased
// variance), and save_mean / save_invstd (length C) written for backward.
template <class X>
struct BatchNormTrainArgs {
  using P = Compute<X>;
  const X* x;
  X* y;
  Shape3 s;
  const P* weight;  // nullable: 1
  const P* bias;    // nullable: 0
  P* running_mean;  // nullable
  P* running_var;   // nullable
  double momentum;
  double eps;
  P* save_mean;
  P* save_invstd;
  std::int64_t n_x, n_y, n_weight, n_bias, n_running_mean, n_running_var, n_save_mean,
      n_save_invstd;
};

// Eval forward: y = (x - running_mean) * weight / sqrt(running_var + eps) + bias; save_mean and
// save_invstd receive the running mean and 1 / sqrt(running_var + eps) for backward.
template <class X>
struct BatchNormEvalArgs {
  using P = Compute<X>;
  const X* x;
  X* y;
  Shape3 s;
  const P* weight;  // nullable
  const P* bias;    // nullable
  const P* running_mean;
  const P* running_var;
  double eps;
  P* save_mean;
  P* save_invstd;
  std::int64_t n_x, n_y, n_weight, n_bias, n_running_mean, n_running_var, n_save_mean,
      n_save_invstd;
};

// Backward from the statistics used in the forward (batch statistics when training, running
// statistics otherwise): dweight = sum(dy * (x - mean)) * invstd, dbias = sum(dy), and
//   training: dx = weight * invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x -
//   mean))) eval:     dx = weight * invstd * dy
template <class X>
struct BatchNormBackwardArgs {
  using P = Compute<X>;
  const X* dy;
  const X* x;
  Shape3 s;
  const P* mean;
  const P* invstd;
  const P* weight;  // nullable
  bool training;
  X* dx;       // nullable: skip
  P* dweight;  // nullable: skip
  P* dbias;    // nullable: skip
  std::int64_t n_dy, n_x, n_mean, n_invstd, n_weight, n_dx, n_dweight, n_dbias;
};

template <class X>
struct BatchNormFns {
  void (*batch_norm_train)(const BatchNormTrainArgs<X>&);
  void (*batch_norm_eval)(const BatchNormEvalArgs<X>&);
  void (*batch_norm_backward)(const BatchNormBackwardArgs<X>&);
};

struct BatchNormKernels {
  BatchNormFns<float> f32;
  BatchNormFns<double> f64;
  BatchNormFns<bnfast::bf16> bf16;  // qualified: the member hides the type
};

BNFAST_DECLARE_KERNELS(BatchNormKernels, batch_norm_kernels)

}  // namespace bnfast
