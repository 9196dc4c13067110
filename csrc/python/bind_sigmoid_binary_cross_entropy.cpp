// Bindings of the sigmoid binary cross-entropy kernels: checks, output allocation, GIL release,
// one table call.
//
// bfloat16 logits (X = bf16): targets must be bfloat16 too (the Python layer converts them) and
// the gradient is bfloat16; losses are float32, and so are weight, pos_weight and a per-element
// grad_output (P = Compute<X>), which may also be bfloat16 (widened exactly); float64 ones are
// a TypeError.
#include <vector>

#include "bnfast/sigmoid_binary_cross_entropy.h"
#include "common.h"

namespace bnfast {
namespace bind {
namespace {

// A broadcast parameter (weight, pos_weight): length n (full) or C (the last axis).
template <class X>
const Compute<X>* broadcast_param(const py::object& obj, i64 n, i64 C, const char* name, bool* full,
                                  i64* extent, std::vector<Compute<X>>& holder) {
  *full = false;
  if (is_none(obj)) return nullptr;
  py::array a = as_array(obj, name);
  const Compute<X>* p = param_array<X>(a, name, holder);
  *extent = a.size();
  if (a.size() == n && a.ndim() != 1) {
    *full = true;
  } else if (a.ndim() == 1 && a.size() == C) {
    *full = false;
  } else if (a.size() == n) {
    *full = true;
  } else {
    throw py::value_error(std::string(name) + " must have " + std::to_string(n) + " or " +
                          std::to_string(C) + " elements, got shape " + shape_str(shape_of(a)));
  }
  return p;
}

template <class X>
py::tuple sigmoid_binary_cross_entropy(const py::array& x, const py::array& y,
                                       const py::object& weight, const py::object& pos_weight,
                                       Reduction reduction, const py::object& grad_output,
                                       const py::object& out) {
  using P = Compute<X>;
  SigmoidBinaryCrossEntropyArgs<X> a{};
  a.x = in_ptr<X>(x, "logits");
  a.n_x = x.size();
  check_shape(y, shape_of(x), "targets");
  a.y = in_ptr<X>(y, "targets");
  a.n_y = y.size();
  a.n = x.size();
  a.C = x.ndim() == 0 ? 1 : x.shape(x.ndim() - 1);
  std::vector<P> w_holder, pw_holder, go_holder;
  a.weight = broadcast_param<X>(weight, a.n, a.C, "weight", &a.weight_full, &a.n_weight, w_holder);
  a.pos_weight = broadcast_param<X>(pos_weight, a.n, a.C, "pos_weight", &a.pos_weight_full,
                                    &a.n_pos_weight, pw_holder);
  py::array grad = output_like<X>(out, x, "out");
  check_no_overlap(grad, "out", x, "logits", true);
  check_no_overlap(grad, "out", y, "targets", true);
  for (const py::object* o : {&weight, &pos_weight}) {
    if (!is_none(*o))
      check_no_overlap(grad, "out", as_array(*o, "parameter"), "a parameter", false);
  }
  double go_scalar = 1;
  py::array loss_arr;
  if (reduction == Reduction::none) {
    if (!is_none(grad_output)) {
      py::array go = as_array(grad_output, "grad_output");
      check_shape(go, shape_of(x), "grad_output");
      a.grad_output = param_array<X>(go, "grad_output", go_holder);
      a.n_grad_output = go.size();
      check_no_overlap(grad, "out", go, "grad_output", true);
    }
    loss_arr = empty<P>(shape_of(x));
    a.elem_loss = static_cast<P*>(loss_arr.mutable_data());
    a.n_elem_loss = loss_arr.size();
  } else if (!is_none(grad_output)) {
    go_scalar = grad_output.cast<double>();
  }
  const double n = static_cast<double>(a.n);
  a.elem_scale = reduction == Reduction::mean ? go_scalar / n : go_scalar;
  a.grad = static_cast<X*>(grad.mutable_data());
  a.n_grad = grad.size();
  double sum = 0;
  a.loss_sum = &sum;
  {
    py::gil_scoped_release nogil;
    by_type<X>(sigmoid_binary_cross_entropy_kernels_active()).sigmoid_binary_cross_entropy(a);
  }
  if (reduction == Reduction::none) return py::make_tuple(loss_arr, grad);
  py::array_t<P> l(std::vector<py::ssize_t>{});
  *l.mutable_data() = static_cast<P>(reduction == Reduction::mean ? sum / n : sum);
  return py::make_tuple(l, grad);
}

}  // namespace

void bind_sigmoid_binary_cross_entropy(py::module_& m) {
  using py::arg;
  m.def(
      "sigmoid_binary_cross_entropy",
      [](py::object x_, py::object y_, py::object weight, py::object pos_weight,
         py::object reduction, py::object grad_output, py::object out) {
        const Reduction r = parse_reduction(reduction);
        py::array x = as_array(x_, "logits");
        py::array y = as_array(y_, "targets");
        return dispatch_dtype(float_dtype(x, "logits"), [&](auto t) {
          return sigmoid_binary_cross_entropy<typename decltype(t)::type>(x, y, weight, pos_weight,
                                                                          r, grad_output, out);
        });
      },
      arg("logits"), arg("targets"), arg("weight").none(true), arg("pos_weight").none(true),
      arg("reduction"), arg("grad_output").none(true), arg("out").none(true));
}

}  // namespace bind
}  // namespace bnfast
