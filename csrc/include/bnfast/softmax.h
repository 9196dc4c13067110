// Softmax, log-softmax and softmax cross-entropy kernels.
//
// x is any contiguous array viewed as (A, K, B) along the class axis: row (a, b) holds the K
// values x[a, k, b], k = 0..K-1 (stride B). (N, K) is A=N, B=1; (N, K, d1, ...) with the class
// axis 1 is A=N, B=d1*...
//
// Conventions for degenerate rows (all kernels agree):
//  - a row whose entries are all -inf: softmax 0, log-softmax -inf, cross-entropy loss +inf
//    (the target has probability 0) and gradient softmax - target = -target (scaled);
//  - NaN anywhere in a row makes that row's outputs NaN; other rows are unaffected;
//  - probability-target entries equal to 0 contribute nothing (0 * log 0 = 0);
//  - any of A, K, B may be 0; a row with no classes (K == 0) has loss 0 (only ignored class
//    targets are valid there, and a probability row sums over nothing).
//  - bfloat16 (X = bf16): logits, outputs, upstream and probability targets are stored as
//    bfloat16 and computed in float32 (Compute<X>); every bfloat16 output is rounded once, from
//    its float32 value. Maxima, sums and losses are float32, as are the parameters P (class
//    weights, per-row grad_output, row_loss), so losses and weights keep float32 precision.
// Each n_* field is the element count of the array the pointer beside it points into, as the
// caller holds it (contract.h checks every length against them in sanitizer builds).
#pragma once

#include <cstdint>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {

// y = softmax(x) or log_softmax(x) along K.
template <class X>
struct SoftmaxArgs {
  const X* x;
  X* y;  // may equal x
  Shape3 s;
  bool log;
  std::int64_t n_x, n_y;
};

// Backward from the forward output y and upstream dy:
//   softmax:     dx = y * (dy - sum_k y*dy)
//   log_softmax: dx = dy - exp(y) * sum_k dy
template <class X>
struct SoftmaxBackwardArgs {
  const X* y;
  const X* dy;
  X* dx;  // may equal dy or y
  Shape3 s;
  bool log;
  std::int64_t n_y, n_dy, n_dx;
};

enum class TargetKind : int { i32 = 0, i64 = 1, prob = 2 };

// Cross-entropy of softmax(x) against class indices (shape (A, B), already validated: each is
// in [0, K) or equals ignore_index) or probabilities (shape of x), with its gradient, in one
// pass over x. Per row, with p = softmax(x), w the class weights (1 if null), eps the label
// smoothing and L = logsumexp(x):
//   index y: loss = (1-eps) w_y (L - x_y) + eps/K sum_k w_k (L - x_k);
//            dloss/dx_j = p_j ((1-eps) w_y + eps/K sum_k w_k) - (1-eps) w_y [j=y] - eps/K w_j
//   probabilities t, t' = (1-eps) t + eps/K:
//            loss = sum_k w_k t'_k (L - x_k);  dloss/dx_j = p_j sum_k w_k t'_k - w_j t'_j
// Ignored rows have loss 0 and gradient 0. The gradient of row r is multiplied by
// row_scale * (grad_output[r] if given). row_loss (nullable) receives the per-row losses; the
// sum over rows is accumulated in double in a fixed order (bitwise the same for any thread
// count) into *loss_sum.
template <class X>
struct SoftmaxCrossEntropyArgs {
  using P = Compute<X>;  // parameters and losses: float32 beside bfloat16 logits
  const X* x;
  Shape3 s;
  TargetKind kind;
  const void* target;  // int32 / int64 class indices, or X probabilities
  const P* weight;     // nullable, length K
  std::int64_t ignore_index;
  double label_smoothing;
  double row_scale;
  const P* grad_output;  // nullable, length A*B
  X* grad;               // shape of x
  P* row_loss;           // nullable, length A*B
  double* loss_sum;
  std::int64_t n_x, n_target, n_weight, n_grad_output, n_grad, n_row_loss;
};

template <class X>
struct SoftmaxFns {
  void (*softmax)(const SoftmaxArgs<X>&);  // and log_softmax (SoftmaxArgs::log)
  void (*softmax_backward)(const SoftmaxBackwardArgs<X>&);
  void (*softmax_cross_entropy)(const SoftmaxCrossEntropyArgs<X>&);
  // The vectorized exp and log of vmath.h over n values (for measuring their error; bfloat16:
  // the float32 ones on widened values, rounded once).
  void (*exp)(const X* x, X* y, std::int64_t n);
  void (*log)(const X* x, X* y, std::int64_t n);
};

// Class targets of `rows` rows: how many equal `ignore`, and whether any other lies outside
// [0, K) (then the caller looks for the first one).
struct TargetCheck {
  std::int64_t ignored;
  bool any_bad;
};

struct SoftmaxKernels {
  SoftmaxFns<float> f32;
  SoftmaxFns<double> f64;
  SoftmaxFns<bnfast::bf16> bf16;  // qualified: the member's name is the type's
  TargetCheck (*check_i32)(const std::int32_t* t, std::int64_t rows, std::int64_t K,
                           std::int64_t ignore);
  TargetCheck (*check_i64)(const std::int64_t* t, std::int64_t rows, std::int64_t K,
                           std::int64_t ignore);
};

BNFAST_DECLARE_KERNELS(SoftmaxKernels, softmax_kernels)

}  // namespace bnfast
