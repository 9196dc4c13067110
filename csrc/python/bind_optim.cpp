// Bindings of the optimizer kernels: one call per optimizer step for a whole list of tensors.
// Every tensor of every list is checked (type, dtype, shape, contiguity, writability, overlap)
// and every hyperparameter validated before the first write, so a refused call changes nothing.
// float32 and float64 tensors may be mixed in one list: they run as two groups, in one call.
#include <algorithm>
#include <cmath>
#include <vector>

#include "bnfast/optim.h"
#include "common.h"

namespace bnfast {

namespace bind {
namespace {

template <class T>
const OptimFns<T>& fns() {
  return by_type<T>(optim_kernels_active());
}

// The tensors of one dtype, as plain pointer lists for the kernel.
template <class T>
struct Group {
  std::vector<i64> numel;
  std::vector<T*> param;
  std::vector<const T*> grad;
  std::vector<T*> s[3];

  TensorList<T> list() const {
    return {static_cast<i64>(numel.size()),
            numel.data(),
            param.data(),
            grad.data(),
            s[0].empty() ? nullptr : s[0].data(),
            s[1].empty() ? nullptr : s[1].data(),
            s[2].empty() ? nullptr : s[2].data()};
  }
  bool empty() const { return numel.empty(); }
};

// A named list argument: slot -2 params, -1 grads, 0..2 the kernel's state lists s0..s2.
struct ListArg {
  const char* name;
  bool written;
  py::sequence seq;
  int slot;
};

py::sequence as_list(const py::object& obj, const char* name) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj)) {
    throw py::type_error(std::string(name) + " must be a list of arrays, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  return py::reinterpret_borrow<py::sequence>(obj);
}

std::string item_name(const char* list, py::ssize_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

struct Span {
  const char* begin;
  const char* end;
  bool written;
  int list;
  py::ssize_t index;
};

// Refuses any written array that overlaps another array (read-only arrays may overlap).
// Sorts 16-byte (begin, index) keys rather than the spans themselves: cheaper to move.
void check_overlaps(const std::vector<Span>& spans, const std::vector<ListArg>& lists) {
  struct Key {
    const char* begin;
    size_t span;
  };
  std::vector<Key> keys(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) keys[i] = {spans[i].begin, i};
  std::sort(keys.begin(), keys.end(), [](const Key& x, const Key& y) { return x.begin < y.begin; });
  for (size_t i = 0; i < keys.size(); ++i) {
    const Span& si = spans[keys[i].span];
    for (size_t j = i + 1; j < keys.size() && keys[j].begin < si.end; ++j) {
      const Span& sj = spans[keys[j].span];
      if (si.written || sj.written) {
        const Span& w = si.written ? si : sj;
        const Span& o = si.written ? sj : si;
        throw py::value_error(item_name(lists[w.list].name, w.index) + " overlaps " +
                              item_name(lists[o.list].name, o.index) +
                              " (arrays an optimizer writes must not share memory)");
      }
    }
  }
}

// Checks lists[0] (params: float32/float64, C-contiguous, writable) and every other list
// against it (same length, dtype and shape; written lists writable), then fills the groups.
struct Collected {
  Group<float> f32;
  Group<double> f64;
  // Owns a reference to every array whose pointer is kept: a list subclass's __getitem__ may
  // return a fresh array, and another thread may empty the list while the GIL is released.
  std::vector<py::array> keep;
};

// The checks of one list item, with the messages that name it. Only reached when the fast
// test below fails (or for the parameter's own dtype), so the strings are built only then.
void check_item_slow(const py::array& a, const py::array& p, const ListArg& list, py::ssize_t i,
                     bool is_param, Dtype dt) {
  const std::string name = item_name(list.name, i);
  if (is_param) float_dtype(a, name.c_str());
  if (!is_param) check_shape(a, shape_of(p), name.c_str());
  dispatch_dtype_f32_f64(
      dt, [&](auto t) { check_buffer<typename decltype(t)::type>(a, name.c_str(), list.written); });
}

// The array at seq[i] as a new reference (a list subclass's __getitem__ may create it; the
// caller keeps it while the pointer is used), or TypeError naming it.
py::array item_array(const ListArg& list, py::ssize_t i) {
  PyObject* const seq = list.seq.ptr();
  PyObject* o;
  if (PyList_CheckExact(seq) && i < PyList_GET_SIZE(seq)) {
    o = PyList_GET_ITEM(seq, i);
    Py_INCREF(o);
  } else if (PyTuple_CheckExact(seq)) {
    o = PyTuple_GET_ITEM(seq, i);  // a tuple's length cannot change
    Py_INCREF(o);
  } else {
    o = PySequence_GetItem(seq, i);
    if (o == nullptr) throw py::error_already_set();
  }
  py::object obj = py::reinterpret_steal<py::object>(o);
  if (!py::isinstance<py::array>(obj)) as_array(obj, item_name(list.name, i).c_str());
  return py::reinterpret_steal<py::array>(obj.release());
}

// Same number of dimensions and the same extents.
bool same_shape(const py::detail::PyArray_Proxy* a, const py::detail::PyArray_Proxy* b) {
  if (a->nd != b->nd) return false;
  for (int d = 0; d < a->nd; ++d) {
    if (a->dimensions[d] != b->dimensions[d]) return false;
  }
  return true;
}

Collected collect(std::vector<ListArg>& lists) {
  const py::ssize_t n = static_cast<py::ssize_t>(py::len(lists[0].seq));
  for (size_t l = 1; l < lists.size(); ++l) {
    const py::ssize_t m = static_cast<py::ssize_t>(py::len(lists[l].seq));
    if (m != n) {
      throw py::value_error(std::string(lists[l].name) + " has " + std::to_string(m) +
                            " arrays, expected " + std::to_string(n) + " (one per parameter)");
    }
  }
  // The built-in float descriptors: an array whose descr is one of these is native, 'f' and of
  // the right size, so the fast test needs no dtype attribute lookups.
  static PyObject* const d32 = py::dtype::of<float>().release().ptr();
  static PyObject* const d64 = py::dtype::of<double>().release().ptr();
  constexpr int kLayout =
      py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  constexpr int kWritable = py::detail::npy_api::NPY_ARRAY_WRITEABLE_;

  const size_t nl = lists.size();
  Collected c;
  c.keep.reserve(static_cast<size_t>(n) * nl);
  std::vector<Span> spans;
  spans.reserve(static_cast<size_t>(n) * nl);
  // float32 is the common case: room for every tensor there, so no vector grows in the loop.
  c.f32.numel.reserve(n);
  c.f32.param.reserve(n);
  c.f32.grad.reserve(n);
  for (const ListArg& l : lists) {
    if (l.slot >= 0) c.f32.s[l.slot].reserve(n);
  }
  for (py::ssize_t i = 0; i < n; ++i) {
    const py::array p = item_array(lists[0], i);
    c.keep.push_back(p);
    const auto* pp = py::detail::array_proxy(p.ptr());
    Dtype dt;
    if (pp->descr == d32) {
      dt = Dtype::f32;
    } else if (pp->descr == d64) {
      dt = Dtype::f64;
    } else {
      dt = float_dtype(p, item_name(lists[0].name, i).c_str());
    }
    PyObject* const pdescr = pp->descr;
    for (size_t l = 0; l < nl; ++l) {
      if (l > 0) c.keep.push_back(item_array(lists[l], i));
      const py::array& a = c.keep.back();  // stays put: keep was reserved for every item
      const auto* ap = py::detail::array_proxy(a.ptr());
      const int need = kLayout | (lists[l].written ? kWritable : 0);
      const bool fast = (pdescr == d32 || pdescr == d64) && ap->descr == pdescr &&
                        (ap->flags & need) == need && (l == 0 || same_shape(ap, pp));
      if (!fast) check_item_slow(a, p, lists[l], i, l == 0, dt);
      const py::ssize_t numel = a.size();
      char* b = ap->data;
      const py::ssize_t nbytes = numel * (dt == Dtype::f32 ? 4 : 8);
      if (nbytes > 0) {
        spans.push_back({b, b + nbytes, lists[l].written, static_cast<int>(l), i});
      }
      const int slot = lists[l].slot;
      auto add = [&](auto& g) {
        using T = std::remove_pointer_t<typename std::decay_t<decltype(g.param)>::value_type>;
        T* tp = reinterpret_cast<T*>(b);
        if (slot == -2) {
          g.numel.push_back(static_cast<i64>(numel));
          g.param.push_back(tp);
        } else if (slot == -1) {
          g.grad.push_back(tp);
        } else {
          g.s[slot].push_back(tp);
        }
      };
      dispatch_dtype_f32_f64(dt, [&](auto t) { add(by_type<typename decltype(t)::type>(c)); });
    }
  }
  check_overlaps(spans, lists);
  return c;
}

void check_lr(double lr) {
  if (!std::isfinite(lr)) throw py::value_error("lr must be finite, got " + std::to_string(lr));
  if (lr < 0) throw py::value_error("lr must be >= 0, got " + std::to_string(lr));
}

void check_range(double v, const char* name, double lo, double hi, bool hi_open) {
  check_finite(v, name);
  if (v < lo || (hi_open ? v >= hi : v > hi)) {
    throw py::value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + (hi_open ? ")" : "]") + ", got " +
                          std::to_string(v));
  }
}

void check_nonneg(double v, const char* name) {
  check_finite(v, name);
  if (v < 0) throw py::value_error(std::string(name) + " must be >= 0, got " + std::to_string(v));
}

// Runs f(TensorList<T>) on the float32 group then the float64 group, without the GIL.
template <class F>
void run_groups(const Collected& c, F&& f) {
  py::gil_scoped_release nogil;
  if (!c.f32.empty()) f(c.f32.list());
  if (!c.f64.empty()) f(c.f64.list());
}

// The sum of the squares of every element of both groups (float32's sum first).
double sum_squares(const Collected& c) {
  double s[2] = {0, 0};
  run_groups(c, [&]<class T>(TensorList<T> t) {
    fns<T>().sum_squares(t.count, t.numel, t.param, &s[std::is_same<T, double>::value]);
  });
  return s[0] + s[1];
}

constexpr int kParams = -2, kGrads = -1;
ListArg written(const py::object& o, const char* name, int slot) {
  return {name, true, as_list(o, name), slot};
}
ListArg readonly(const py::object& o, const char* name, int slot) {
  return {name, false, as_list(o, name), slot};
}

void sgd_update(const py::object& params, const py::object& grads, const py::object& bufs,
                double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                bool first) {
  check_lr(lr);
  check_nonneg(momentum, "momentum");
  check_finite(dampening, "dampening");
  check_nonneg(weight_decay, "weight_decay");
  if (nesterov && (momentum <= 0 || dampening != 0)) {
    throw py::value_error("nesterov momentum requires momentum > 0 and dampening == 0");
  }
  std::vector<ListArg> lists{written(params, "params", kParams), readonly(grads, "grads", kGrads)};
  if (momentum != 0) {
    if (is_none(bufs)) throw py::value_error("momentum_buffer is required when momentum != 0");
    lists.push_back(written(bufs, "momentum_buffer", 0));
  }
  const Collected c = collect(lists);
  run_groups(c, [&]<class T>(TensorList<T> t) {
    fns<T>().sgd({t, lr, momentum, dampening, weight_decay, nesterov, first});
  });
}

void momentum_update(const py::object& params, const py::object& grads, const py::object& vel,
                     double lr, double beta) {
  check_lr(lr);
  check_range(beta, "beta", 0.0, 1.0, true);
  std::vector<ListArg> lists{written(params, "params", kParams), readonly(grads, "grads", kGrads),
                             written(vel, "velocity", 0)};
  const Collected c = collect(lists);
  run_groups(c, [&]<class T>(TensorList<T> t) { fns<T>().momentum({t, lr, beta}); });
}

void rmsprop_update(const py::object& params, const py::object& grads, const py::object& sq,
                    const py::object& ga, const py::object& buf, double lr, double alpha,
                    double eps, double weight_decay, double momentum, bool centered) {
  check_lr(lr);
  check_range(alpha, "alpha", 0.0, 1.0, false);
  check_nonneg(eps, "eps");
  check_nonneg(weight_decay, "weight_decay");
  check_nonneg(momentum, "momentum");
  std::vector<ListArg> lists{written(params, "params", kParams), readonly(grads, "grads", kGrads),
                             written(sq, "square_avg", 0)};
  // Unused state lists stay empty; the kernel reads s1 only when centered, s2 only with momentum.
  if (centered) {
    if (is_none(ga)) throw py::value_error("grad_avg is required when centered");
    lists.push_back(written(ga, "grad_avg", 1));
  }
  if (momentum > 0) {
    if (is_none(buf)) throw py::value_error("momentum_buffer is required when momentum > 0");
    lists.push_back(written(buf, "momentum_buffer", 2));
  }
  const Collected c = collect(lists);
  run_groups(c, [&]<class T>(TensorList<T> t) {
    fns<T>().rmsprop({t, lr, alpha, eps, weight_decay, momentum, centered});
  });
}

void adam_update(const py::object& params, const py::object& grads, const py::object& m,
                 const py::object& v, const py::object& vmax, i64 step, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool amsgrad, bool decoupled) {
  check_lr(lr);
  if (step < 1) throw py::value_error("step must be >= 1, got " + std::to_string(step));
  check_range(beta1, "beta1", 0.0, 1.0, true);
  check_range(beta2, "beta2", 0.0, 1.0, true);
  check_nonneg(eps, "eps");
  check_nonneg(weight_decay, "weight_decay");
  std::vector<ListArg> lists{written(params, "params", kParams), readonly(grads, "grads", kGrads),
                             written(m, "exp_avg", 0), written(v, "exp_avg_sq", 1)};
  if (amsgrad) {
    if (is_none(vmax)) throw py::value_error("max_exp_avg_sq is required when amsgrad");
    lists.push_back(written(vmax, "max_exp_avg_sq", 2));
  }
  const Collected c = collect(lists);
  run_groups(c, [&]<class T>(TensorList<T> t) {
    fns<T>().adam({t, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled});
  });
}

// PyTorch's clip_grad_norm_ (norm_type 2): total = sqrt(sum of all squares);
// coef = max_norm / (total + 1e-6); grads *= coef when coef < 1. Returns total.
double clip_grad_norm(const py::object& grads, double max_norm, bool error_if_nonfinite) {
  check_nonneg(max_norm, "max_norm");
  std::vector<ListArg> lists{written(grads, "grads", kParams)};
  const Collected c = collect(lists);
  const double total = std::sqrt(sum_squares(c));
  if (!std::isfinite(total) && error_if_nonfinite) {
    throw std::runtime_error("the total norm of the gradients is non-finite (" +
                             std::to_string(total) + "); nothing was clipped");
  }
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) {
    run_groups(c,
               [&]<class T>(TensorList<T> t) { fns<T>().scale(t.count, t.numel, t.param, coef); });
  }
  return total;
}

// The global 2-norm of a list of arrays (nothing is written).
double global_norm(const py::object& arrays) {
  std::vector<ListArg> lists{{"arrays", false, as_list(arrays, "arrays"), kParams}};
  const Collected c = collect(lists);
  return std::sqrt(sum_squares(c));
}

}  // namespace

void bind_optim(py::module_& m) {
  using py::arg;
  m.def("sgd_update", &sgd_update, arg("params"), arg("grads"), arg("momentum_buffer").none(true),
        arg("lr"), arg("momentum"), arg("dampening"), arg("weight_decay"), arg("nesterov"),
        arg("first"));
  m.def("momentum_update", &momentum_update, arg("params"), arg("grads"), arg("velocity"),
        arg("lr"), arg("beta"));
  m.def("rmsprop_update", &rmsprop_update, arg("params"), arg("grads"), arg("square_avg"),
        arg("grad_avg").none(true), arg("momentum_buffer").none(true), arg("lr"), arg("alpha"),
        arg("eps"), arg("weight_decay"), arg("momentum"), arg("centered"));
  m.def("adam_update", &adam_update, arg("params"), arg("grads"), arg("exp_avg"), arg("exp_avg_sq"),
        arg("max_exp_avg_sq").none(true), arg("step"), arg("lr"), arg("beta1"), arg("beta2"),
        arg("eps"), arg("weight_decay"), arg("amsgrad"), arg("decoupled"));
  m.def("clip_grad_norm", &clip_grad_norm, arg("grads"), arg("max_norm"),
        arg("error_if_nonfinite"));
  m.def("global_norm", &global_norm, arg("arrays"));
}

}  // namespace bind
}  // namespace bnfast
