// Bindings of the batch-norm kernels: checks, output allocation, GIL release, one table call.
//
// bfloat16 x follows PyTorch's mixed-type batch norm on CPU: y and dx are bfloat16 (x's dtype),
// the saved statistics and dweight / dbias float32. Parameters and running statistics may be
// float32 or bfloat16 (each widened to float32 for the kernel); bfloat16 running statistics are
// updated through a float32 copy and written back rounded once, after the kernel.
#include <type_traits>
#include <vector>

#include "bnfast/batch_norm.h"
#include "common.h"

namespace bnfast {

namespace bind {
namespace {

template <class T>
const BatchNormFns<T>& fns() {
  return by_type<T>(batch_norm_kernels_active());
}

// A per-channel array updated in place (running statistics). A bfloat16 one (beside bfloat16
// x) is updated through the float32 copy in `wide`, which write_back() rounds into it.
template <class X>
struct ChannelOut {
  using P = Compute<X>;
  py::array array;
  bf16* narrow = nullptr;
  std::vector<P> wide;

  P* get(const py::object& obj, i64 C, const char* name, const py::array& x, i64* extent) {
    if (is_none(obj)) return nullptr;
    array = as_array(obj, name);
    check_param_dtype<X>(array, name);
    check_shape(array, {C}, name);
    P* p = nullptr;
    if constexpr (std::is_same<X, bf16>::value) {
      if (is_bf16(array.dtype())) narrow = out_ptr<bf16>(array, name);
    }
    if (!narrow) p = out_ptr<P>(array, name);
    check_no_overlap(array, name, x, "x", false);
    *extent = array.size();
    if (narrow) {
      wide.resize(static_cast<std::size_t>(C));
      for (i64 c = 0; c < C; ++c) wide[c] = widen(narrow[c]);
      p = wide.data();
    }
    return p;
  }
  void write_back() const {
    for (std::size_t c = 0; narrow && c < wide.size(); ++c) narrow[c] = round_bf16(wide[c]);
  }
};

// PyTorch's rule: training needs more than one value per channel (none is allowed: an empty
// output and statistics of nothing).
inline void check_values_per_channel(const Shape3& s, const py::array& x) {
  if (s.A * s.B == 1) {
    throw py::value_error(
        "expected more than 1 value per channel when training, got input of shape " +
        shape_str(shape_of(x)));
  }
}

template <class X>
py::tuple batch_norm_train(const py::array& x, int axis, const py::object& weight,
                           const py::object& bias, const py::object& running_mean,
                           const py::object& running_var, double momentum, double eps,
                           const py::object& out) {
  using P = Compute<X>;
  BatchNormTrainArgs<X> a{};
  a.s = view3(x, axis, "x");
  a.x = in_ptr<X>(x, "x");
  a.n_x = x.size();
  check_values_per_channel(a.s, x);
  check_finite(momentum, "momentum");
  check_finite(eps, "eps");
  if (eps < 0) throw py::value_error("eps must be >= 0");
  const i64 C = a.s.C;
  std::vector<P> hw, hb;
  a.weight = param_vector<X>(weight, C, "weight", hw, &a.n_weight);
  a.bias = param_vector<X>(bias, C, "bias", hb, &a.n_bias);
  ChannelOut<X> rm, rv;
  a.running_mean = rm.get(running_mean, C, "running_mean", x, &a.n_running_mean);
  a.running_var = rv.get(running_var, C, "running_var", x, &a.n_running_var);
  if (a.running_mean && a.running_var && rm.array.data() == rv.array.data()) {
    throw py::value_error("running_mean and running_var must be different arrays");
  }
  a.momentum = momentum;
  a.eps = eps;
  py::array y = output_like<X>(out, x, "out");
  check_no_overlap(y, "out", x, "x", true);
  for (const py::object* o : {&weight, &bias, &running_mean, &running_var}) {
    if (!is_none(*o)) check_no_overlap(y, "out", as_array(*o, "parameter"), "a parameter", false);
  }
  a.y = static_cast<X*>(y.mutable_data());
  a.n_y = y.size();
  py::array_t<P> save_mean(C), save_invstd(C);
  a.save_mean = save_mean.mutable_data();
  a.save_invstd = save_invstd.mutable_data();
  a.n_save_mean = a.n_save_invstd = C;
  {
    py::gil_scoped_release nogil;
    fns<X>().batch_norm_train(a);
  }
  if (a.s.A * a.s.B > 0) {  // else the kernel leaves them as they are: no rounding either
    rm.write_back();
    rv.write_back();
  }
  return py::make_tuple(y, save_mean, save_invstd);
}

template <class X>
py::tuple batch_norm_eval(const py::array& x, int axis, const py::object& weight,
                          const py::object& bias, const py::object& running_mean,
                          const py::object& running_var, double eps, const py::object& out) {
  using P = Compute<X>;
  BatchNormEvalArgs<X> a{};
  a.s = view3(x, axis, "x");
  a.x = in_ptr<X>(x, "x");
  a.n_x = x.size();
  check_finite(eps, "eps");
  if (eps < 0) throw py::value_error("eps must be >= 0");
  const i64 C = a.s.C;
  std::vector<P> hw, hb, hm, hv;
  a.weight = param_vector<X>(weight, C, "weight", hw, &a.n_weight);
  a.bias = param_vector<X>(bias, C, "bias", hb, &a.n_bias);
  a.running_mean = param_vector<X>(running_mean, C, "running_mean", hm, &a.n_running_mean);
  a.running_var = param_vector<X>(running_var, C, "running_var", hv, &a.n_running_var);
  if (!a.running_mean || !a.running_var) {
    throw py::value_error("running_mean and running_var are required in evaluation mode");
  }
  a.eps = eps;
  py::array y = output_like<X>(out, x, "out");
  check_no_overlap(y, "out", x, "x", true);
  for (const py::object* o : {&weight, &bias, &running_mean, &running_var}) {
    if (!is_none(*o)) check_no_overlap(y, "out", as_array(*o, "parameter"), "a parameter", false);
  }
  a.y = static_cast<X*>(y.mutable_data());
  a.n_y = y.size();
  py::array_t<P> save_mean(C), save_invstd(C);
  a.save_mean = save_mean.mutable_data();
  a.save_invstd = save_invstd.mutable_data();
  a.n_save_mean = a.n_save_invstd = C;
  {
    py::gil_scoped_release nogil;
    fns<X>().batch_norm_eval(a);
  }
  return py::make_tuple(y, save_mean, save_invstd);
}

template <class X>
py::tuple batch_norm_backward(const py::array& dy, const py::array& x, int axis,
                              const py::object& mean, const py::object& invstd,
                              const py::object& weight, bool training, const py::object& out) {
  using P = Compute<X>;
  BatchNormBackwardArgs<X> a{};
  a.s = view3(x, axis, "x");
  a.x = in_ptr<X>(x, "x");
  a.n_x = x.size();
  check_shape(dy, shape_of(x), "dy");
  a.dy = in_ptr<X>(dy, "dy");
  a.n_dy = dy.size();
  const i64 C = a.s.C;
  std::vector<P> hm, hs, hw;
  a.mean = param_vector<X>(mean, C, "mean", hm, &a.n_mean);
  a.invstd = param_vector<X>(invstd, C, "invstd", hs, &a.n_invstd);
  if (!a.mean || !a.invstd) throw py::value_error("mean and invstd are required");
  a.weight = param_vector<X>(weight, C, "weight", hw, &a.n_weight);
  a.training = training;
  if (training) check_values_per_channel(a.s, x);
  py::array dx = output_like<X>(out, x, "out");
  check_no_overlap(dx, "out", x, "x", true);
  check_no_overlap(dx, "out", dy, "dy", true);
  for (const py::object* o : {&mean, &invstd, &weight}) {
    if (!is_none(*o)) check_no_overlap(dx, "out", as_array(*o, "parameter"), "a parameter", false);
  }
  a.dx = static_cast<X*>(dx.mutable_data());
  a.n_dx = dx.size();
  py::array_t<P> dweight(C), dbias(C);
  a.dweight = dweight.mutable_data();
  a.dbias = dbias.mutable_data();
  a.n_dweight = a.n_dbias = C;
  {
    py::gil_scoped_release nogil;
    fns<X>().batch_norm_backward(a);
  }
  return py::make_tuple(dx, dweight, dbias);
}

}  // namespace

void bind_batch_norm(py::module_& m) {
  using py::arg;
  m.def(
      "batch_norm_train",
      [](py::object x_, int axis, py::object weight, py::object bias, py::object running_mean,
         py::object running_var, double momentum, double eps, py::object out) {
        py::array x = as_array(x_, "x");
        return dispatch_dtype(float_dtype(x, "x"), [&](auto t) {
          return batch_norm_train<typename decltype(t)::type>(x, axis, weight, bias, running_mean,
                                                              running_var, momentum, eps, out);
        });
      },
      arg("x"), arg("axis"), arg("weight").none(true), arg("bias").none(true),
      arg("running_mean").none(true), arg("running_var").none(true), arg("momentum"), arg("eps"),
      arg("out").none(true));
  m.def(
      "batch_norm_eval",
      [](py::object x_, int axis, py::object weight, py::object bias, py::object running_mean,
         py::object running_var, double eps, py::object out) {
        py::array x = as_array(x_, "x");
        return dispatch_dtype(float_dtype(x, "x"), [&](auto t) {
          return batch_norm_eval<typename decltype(t)::type>(x, axis, weight, bias, running_mean,
                                                             running_var, eps, out);
        });
      },
      arg("x"), arg("axis"), arg("weight").none(true), arg("bias").none(true),
      arg("running_mean").none(true), arg("running_var").none(true), arg("eps"),
      arg("out").none(true));
  m.def(
      "batch_norm_backward",
      [](py::object dy_, py::object x_, int axis, py::object mean, py::object invstd,
         py::object weight, bool training, py::object out) {
        py::array x = as_array(x_, "x");
        py::array dy = as_array(dy_, "dy");
        return dispatch_dtype(float_dtype(x, "x"), [&](auto t) {
          return batch_norm_backward<typename decltype(t)::type>(dy, x, axis, mean, invstd, weight,
                                                                 training, out);
        });
      },
      arg("dy"), arg("x"), arg("axis"), arg("mean").none(true), arg("invstd").none(true),
      arg("weight").none(true), arg("training"), arg("out").none(true));
}

}  // namespace bind
}  // namespace bnfast
