// Bindings of the softmax / softmax cross-entropy kernels: checks (targets validated before
// anything is written), output allocation, GIL release, one table call.
//
// bfloat16 logits (X = bf16): softmax outputs, gradients and probability targets are bfloat16
// (the logits' dtype object); losses are float32 (as PyTorch's autocast computes
// cross_entropy), and so are the class weights and a per-row grad_output (P = Compute<X>),
// which may also be given as bfloat16 (widened exactly). float64 ones are a TypeError.
#include <cmath>
#include <limits>
#include <vector>

#include "bnfast/softmax.h"
#include "common.h"

namespace bnfast {

namespace bind {
namespace {

template <class X>
const SoftmaxFns<X>& fns() {
  return by_type<X>(softmax_kernels_active());
}

template <class X>
py::array softmax(const py::array& x, int axis, bool log, const py::object& out) {
  SoftmaxArgs<X> a{};
  a.s = view3(x, axis, "x", nullptr, true);
  a.x = in_ptr<X>(x, "x");
  a.n_x = x.size();
  a.log = log;
  py::array y = output_like<X>(out, x, "out");
  check_no_overlap(y, "out", x, "x", true);
  a.y = static_cast<X*>(y.mutable_data());
  a.n_y = y.size();
  {
    py::gil_scoped_release nogil;
    fns<X>().softmax(a);
  }
  return y;
}

template <class X>
py::array softmax_backward(const py::array& y, const py::array& dy, int axis, bool log,
                           const py::object& out) {
  SoftmaxBackwardArgs<X> a{};
  a.s = view3(y, axis, "y", nullptr, true);
  a.y = in_ptr<X>(y, "y");
  a.n_y = y.size();
  check_shape(dy, shape_of(y), "dy");
  a.dy = in_ptr<X>(dy, "dy");
  a.n_dy = dy.size();
  a.log = log;
  py::array dx = output_like<X>(out, y, "out");
  check_no_overlap(dx, "out", y, "y", true);
  check_no_overlap(dx, "out", dy, "dy", true);
  a.dx = static_cast<X*>(dx.mutable_data());
  a.n_dx = dx.size();
  {
    py::gil_scoped_release nogil;
    fns<X>().softmax_backward(a);
  }
  return dx;
}

std::string index_str(i64 flat, const std::vector<i64>& shape) {
  if (shape.empty()) return "";
  std::vector<i64> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  std::string r = "[";
  for (size_t d = 0; d < idx.size(); ++d) r += (d ? ", " : "") + std::to_string(idx[d]);
  return r + "]";
}

// Validates class targets (each in [0, K) or ignore_index) and returns the mean's divisor: the
// sum of the weights of the rows kept (their count without weights).
template <class P, class Y>
double check_targets(const Y* t, i64 rows, i64 K, i64 ignore, const P* w,
                     const std::vector<i64>& shape) {
  // One vectorized pass in the active ISA; the first bad row is looked for only on error.
  const SoftmaxKernels& ks = softmax_kernels_active();
  TargetCheck c;
  if constexpr (std::is_same<Y, std::int32_t>::value) {
    c = ks.check_i32(t, rows, K, ignore);
  } else {
    c = ks.check_i64(t, rows, K, ignore);
  }
  const i64 ignored = c.ignored;
  if (c.any_bad) {
    i64 bad = 0;
    while (static_cast<i64>(t[bad]) == ignore ||
           static_cast<std::uint64_t>(t[bad]) < static_cast<std::uint64_t>(K)) {
      ++bad;
    }
    throw py::index_error("target" + index_str(bad, shape) + " = " +
                          std::to_string(static_cast<i64>(t[bad])) + " is out of range for " +
                          std::to_string(K) + " classes (row " + std::to_string(bad) +
                          "; valid: 0.." + std::to_string(K - 1) + " or ignore_index " +
                          std::to_string(ignore) + ")");
  }
  if (!w) return static_cast<double>(rows - ignored);
  double d = 0;
  for (i64 r = 0; r < rows; ++r) {
    const i64 y = static_cast<i64>(t[r]);
    if (y != ignore) d += w[y];
  }
  return d;
}

template <class X>
py::tuple softmax_cross_entropy(const py::array& x, const py::array& target, int axis,
                                const py::object& weight, i64 ignore_index, Reduction reduction,
                                double label_smoothing, const py::object& grad_output,
                                const py::object& out) {
  using P = Compute<X>;
  SoftmaxCrossEntropyArgs<X> a{};
  std::vector<i64> rest;
  a.s = view3(x, axis, "logits", &rest);
  a.x = in_ptr<X>(x, "logits");
  a.n_x = x.size();
  const i64 K = a.s.C, rows = a.s.A * a.s.B;
  check_finite(label_smoothing, "label_smoothing");
  if (label_smoothing < 0 || label_smoothing > 1) {
    throw py::value_error("label_smoothing must be in [0, 1], got " +
                          std::to_string(label_smoothing));
  }
  std::vector<P> weight_holder, go_holder;
  if (!is_none(weight)) {
    py::array w = as_array(weight, "weight");
    check_shape(w, {K}, "weight");
    a.weight = param_array<X>(w, "weight", weight_holder);
    a.n_weight = w.size();
  }
  a.n_target = target.size();
  a.ignore_index = ignore_index;
  a.label_smoothing = label_smoothing;
  const char kind = target.dtype().kind();
  double divisor;
  if (kind == 'f' || is_bf16(target.dtype())) {
    if (shape_of(target) != shape_of(x)) {
      throw py::value_error("probability target must have the logits' shape " +
                            shape_str(shape_of(x)) + ", got " + shape_str(shape_of(target)));
    }
    a.target = in_ptr<X>(target, "target");
    a.kind = TargetKind::prob;
    // PyTorch's divisor is numel / K: with no classes, 0 / 0 (a NaN mean, as there).
    divisor = K == 0 ? 0.0 : static_cast<double>(rows);
  } else if (kind == 'i' && native_byteorder(target) &&
             (target.itemsize() == 4 || target.itemsize() == 8)) {
    if (shape_of(target) != rest) {
      throw py::value_error("class target must have shape " + shape_str(rest) +
                            " (the logits' shape without the class axis), got " +
                            shape_str(shape_of(target)));
    }
    if (!(target.flags() & py::array::c_style)) {
      throw py::value_error("target must be C-contiguous");
    }
    a.target = target.data();
    if (target.itemsize() == 4) {
      a.kind = TargetKind::i32;
      divisor = check_targets<P>(static_cast<const std::int32_t*>(a.target), rows, K, ignore_index,
                                 a.weight, rest);
    } else {
      a.kind = TargetKind::i64;
      divisor = check_targets<P>(static_cast<const std::int64_t*>(a.target), rows, K, ignore_index,
                                 a.weight, rest);
    }
  } else {
    throw py::type_error("target must be int32/int64 class indices or float probabilities, got " +
                         dtype_name(target));
  }
  py::array grad = output_like<X>(out, x, "out");
  check_no_overlap(grad, "out", x, "logits", false);
  check_no_overlap(grad, "out", target, "target", false);
  if (!is_none(weight)) check_no_overlap(grad, "out", as_array(weight, "weight"), "weight", false);
  double go_scalar = 1;
  py::array row_loss;
  if (reduction == Reduction::none) {
    if (!is_none(grad_output)) {
      py::array go = as_array(grad_output, "grad_output");
      check_shape(go, rest, "grad_output");
      a.grad_output = param_array<X>(go, "grad_output", go_holder);
      a.n_grad_output = go.size();
      check_no_overlap(grad, "out", go, "grad_output", false);
    }
    row_loss = empty<P>(rest);
    a.row_loss = static_cast<P*>(row_loss.mutable_data());
    a.n_row_loss = row_loss.size();
  } else if (!is_none(grad_output)) {
    go_scalar = grad_output.cast<double>();
  }
  a.row_scale =
      reduction == Reduction::mean ? (divisor != 0 ? go_scalar / divisor : 0.0) : go_scalar;
  a.grad = static_cast<X*>(grad.mutable_data());
  a.n_grad = grad.size();
  double sum = 0;
  a.loss_sum = &sum;
  {
    py::gil_scoped_release nogil;
    fns<X>().softmax_cross_entropy(a);
  }
  if (reduction == Reduction::none) return py::make_tuple(row_loss, grad);
  double loss = sum;
  if (reduction == Reduction::mean)
    loss = divisor != 0 ? sum / divisor : std::numeric_limits<double>::quiet_NaN();
  py::array_t<P> l(std::vector<py::ssize_t>{});
  *l.mutable_data() = static_cast<P>(loss);
  return py::make_tuple(l, grad);
}

template <class X>
py::array vmath(const py::array& x, bool log) {
  const X* px = in_ptr<X>(x, "x");
  py::array y = empty_as(shape_of(x), x);
  X* py_ = static_cast<X*>(y.mutable_data());
  const i64 n = x.size();
  {
    py::gil_scoped_release nogil;
    (log ? fns<X>().log : fns<X>().exp)(px, py_, n);
  }
  return y;
}

}  // namespace

void bind_softmax(py::module_& m) {
  using py::arg;
  for (const bool log : {false, true}) {
    m.def(
        log ? "log_softmax" : "softmax",
        [log](py::object x_, int axis, py::object out) {
          py::array x = as_array(x_, "x");
          return dispatch_dtype(float_dtype(x, "x"), [&](auto t) {
            return softmax<typename decltype(t)::type>(x, axis, log, out);
          });
        },
        arg("x"), arg("axis"), arg("out").none(true));
    m.def(
        log ? "log_softmax_backward" : "softmax_backward",
        [log](py::object y_, py::object dy_, int axis, py::object out) {
          py::array y = as_array(y_, "y");
          py::array dy = as_array(dy_, "dy");
          return dispatch_dtype(float_dtype(y, "y"), [&](auto t) {
            return softmax_backward<typename decltype(t)::type>(y, dy, axis, log, out);
          });
        },
        arg("y"), arg("dy"), arg("axis"), arg("out").none(true));
  }
  m.def(
      "softmax_cross_entropy",
      [](py::object x_, py::object t_, int axis, py::object weight, i64 ignore_index,
         py::object reduction, double label_smoothing, py::object grad_output, py::object out) {
        const Reduction r = parse_reduction(reduction);
        py::array x = as_array(x_, "logits");
        py::array target = as_array(t_, "target");
        return dispatch_dtype(float_dtype(x, "logits"), [&](auto t) {
          return softmax_cross_entropy<typename decltype(t)::type>(
              x, target, axis, weight, ignore_index, r, label_smoothing, grad_output, out);
        });
      },
      arg("logits"), arg("target"), arg("axis"), arg("weight").none(true), arg("ignore_index"),
      arg("reduction"), arg("label_smoothing"), arg("grad_output").none(true),
      arg("out").none(true));
  for (const bool log : {false, true}) {
    m.def(
        log ? "vmath_log" : "vmath_exp",
        [log](py::object x_) {
          py::array x = as_array(x_, "x");
          return dispatch_dtype(float_dtype(x, "x"),
                                [&](auto t) { return vmath<typename decltype(t)::type>(x, log); });
        },
        arg("x"));
  }
}

}  // namespace bind
}  // namespace bnfast
