// Sigmoid binary cross-entropy (formulas in sigmoid_binary_cross_entropy.h), elementwise; one
// source compiled for every ISA.
//
// Per element, with e = exp(-|x|) in (0, 1]: softplus(-x) = log1p(e) + max(-x, 0) and
// sigmoid(x) = 1 / (1 + e) (times e for x < 0), so neither overflows for any x.
// One pass over memory: read x, y (and the optional weights), write the gradient (and the
// per-element loss). The n elements are viewed as rows of the last axis C (so a length-C weight
// is indexed by the lane); work units are fixed runs of rows (about kUnitBytes of logits),
// each summing its losses in double in order, the units added in unit order: the loss is
// bitwise the same for any thread count. Tails use partial (masked) loads and stores.
// bfloat16 logits and targets are widened on load and the gradient rounded once on store; the
// loss and the parameters stay float32 (sigmoid_binary_cross_entropy.h).
#include <algorithm>

#include "bnfast/contract.h"
#include "bnfast/parallel.h"
#include "bnfast/sigmoid_binary_cross_entropy.h"
#include "bnfast/vec.h"
#include "bnfast/vmath.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kUnitBytes = 32 * 1024;

template <class X>
void sigmoid_binary_cross_entropy(const SigmoidBinaryCrossEntropyArgs<X>& a) {
  using T = Compute<X>;
  using V = Vec<T>;
  BNFAST_EXPECT(a.n >= 0 && a.C >= 0 && (a.n == 0 || (a.C >= 1 && a.n % a.C == 0)));
  BNFAST_EXPECT(a.x != nullptr && a.y != nullptr && a.grad != nullptr && a.loss_sum);
  BNFAST_EXPECT_FITS(a.x, a.n_x, a.n);
  BNFAST_EXPECT_FITS(a.y, a.n_y, a.n);
  BNFAST_EXPECT_FITS(a.weight, a.n_weight, a.weight_full ? a.n : a.C);
  BNFAST_EXPECT_FITS(a.pos_weight, a.n_pos_weight, a.pos_weight_full ? a.n : a.C);
  BNFAST_EXPECT_FITS(a.grad_output, a.n_grad_output, a.n);
  BNFAST_EXPECT_FITS(a.grad, a.n_grad, a.n);
  BNFAST_EXPECT_FITS(a.elem_loss, a.n_elem_loss, a.n);
  *a.loss_sum = 0;
  if (a.n == 0) return;
  const i64 C = a.C;
  const i64 rows = a.n / C;
  const i64 R = std::max<i64>(1, kUnitBytes / (C * static_cast<i64>(sizeof(T))));
  const i64 units = (rows + R - 1) / R;
  Scratch<double> usum(units);
  const T scale = static_cast<T>(a.elem_scale);
  const int nt = threads_for(a.n * static_cast<i64>(sizeof(T)) * 3);  // exp-bound: see softmax
  parallel_for(units, nt, [&](i64 u) {
    const V one = V::set1(T(1)), zero = V::zero();
    double acc = 0;
    for (i64 r = u * R; r < std::min(rows, (u + 1) * R); ++r) {
      V lacc = zero;
      for_lanes<T>(C, [&](i64 j, int k) {
        const i64 i = r * C + j;
        const V x = ld(a.x + i, k), y = ld(a.y + i, k);
        const V e = vexp_nonpos(zero - abs(x));            // exp(-|x|) in (0, 1]
        const V sp = vlog1p_pos(e) + max(zero - x, zero);  // softplus(-x)
        const V q = one / (one + e);
        const V sig = select(cmp_lt(x, zero), e * q, q);
        V loss, g;
        if (a.pos_weight) {
          const V pw = ld(a.pos_weight + (a.pos_weight_full ? i : j), k);
          const V c = fmadd(pw - one, y, one);
          loss = fmadd(one - y, x, c * sp);
          g = fnmadd(pw, y, c * sig);
        } else {
          loss = fmadd(one - y, x, sp);
          g = sig - y;
        }
        if (a.weight) {
          const V w = ld(a.weight + (a.weight_full ? i : j), k);
          loss = loss * w;
          g = g * w;
        }
        g = g * V::set1(scale);
        if (a.grad_output) g = g * ld(a.grad_output + i, k);
        st(a.grad + i, g, k);
        if (a.elem_loss) st(a.elem_loss + i, loss, k);
        lacc = lacc + keep(loss, k);
      });
      acc += static_cast<double>(reduce_add(lacc));
    }
    usum[u] = acc;
  });
  double total = 0;
  for (i64 u = 0; u < units; ++u) total += usum[u];
  *a.loss_sum = total;
}

}  // namespace

SigmoidBinaryCrossEntropyKernels sigmoid_binary_cross_entropy_kernels() {
  return {{&sigmoid_binary_cross_entropy<float>},
          {&sigmoid_binary_cross_entropy<double>},
          {&sigmoid_binary_cross_entropy<bf16>}};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
