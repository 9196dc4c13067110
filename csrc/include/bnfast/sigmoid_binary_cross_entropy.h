// Sigmoid binary cross-entropy: one independent binary classifier per element (labels that are
// not mutually exclusive), the loss and its gradient w.r.t. the logits in one pass.
// Each n_* field is the element count of the array the pointer beside it points into, as the
// caller holds it (contract.h checks every length against them in sanitizer builds).
#pragma once

#include <cstdint>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {

// Sigmoid binary cross-entropy per element, with c = 1 + (pos_weight - 1) y:
//   loss = w * ((1 - y) x + c * (log1p(exp(-|x|)) + max(-x, 0)))
//   dloss/dx = w * (c * sigmoid(x) - pos_weight * y)
// weight and pos_weight are null, length n (full shape) or length C (the last axis, index i % C).
// bfloat16 (X = bf16): logits x, targets y and the gradient are bfloat16 (targets of the logits'
// dtype, as PyTorch requires), computed in float32 and rounded once; the parameters P (weight,
// pos_weight, grad_output) and the losses are float32.
template <class X>
struct SigmoidBinaryCrossEntropyArgs {
  using P = Compute<X>;
  const X* x;
  const X* y;
  std::int64_t n;
  std::int64_t C;  // length of the last axis (1 for a 0-d x; 0 only when n == 0)
  const P* weight;
  bool weight_full;
  const P* pos_weight;
  bool pos_weight_full;
  double elem_scale;     // gradient factor for every element (1/n for mean)
  const P* grad_output;  // nullable, length n
  X* grad;
  P* elem_loss;  // nullable, length n
  double* loss_sum;
  std::int64_t n_x, n_y, n_weight, n_pos_weight, n_grad_output, n_grad, n_elem_loss;
};

template <class X>
struct SigmoidBinaryCrossEntropyFns {
  void (*sigmoid_binary_cross_entropy)(const SigmoidBinaryCrossEntropyArgs<X>&);
};

struct SigmoidBinaryCrossEntropyKernels {
  SigmoidBinaryCrossEntropyFns<float> f32;
  SigmoidBinaryCrossEntropyFns<double> f64;
  SigmoidBinaryCrossEntropyFns<bnfast::bf16> bf16;  // qualified: the member's name is the type's
};

BNFAST_DECLARE_KERNELS(SigmoidBinaryCrossEntropyKernels, sigmoid_binary_cross_entropy_kernels)

}  // namespace bnfast
