// Bindings of the optimizer kernels: one call per optimizer step for a whole list of tensors.
// Every tensor of every list is checked (type, dtype, shape, contiguity, writability, overlap)
// and every hyperparameter validated before the first write, so a refused call changes nothing.
// Tensors of different dtype combinations (float32, float64, bfloat16 with float32 or bfloat16
// state, float32 master weights with bfloat16 gradients) may be mixed in one list: each
// combination runs as one group, in one call.
#include <algorithm>
#include <cmath>
#include <vector>

#include "bnfast/optim.h"
#include "common.h"

namespace bnfast {

namespace bind {
namespace {

template <class P, class G, class S>
const OptimFns<P, G, S>& fns() {
  const OptimKernels& k = optim_kernels_active();
  if constexpr (std::is_same<P, double>::value) {
    return k.f64;
  } else if constexpr (std::is_same<P, float>::value && std::is_same<G, float>::value) {
    return k.f32;
  } else if constexpr (std::is_same<P, float>::value) {
    return k.f32_bf16grad;
  } else if constexpr (std::is_same<S, float>::value) {
    return k.bf16_f32;
  } else {
    return k.bf16_bf16;
  }
}

template <class X>
const ClipFns<X>& clip_fns() {
  const OptimKernels& k = optim_kernels_active();
  if constexpr (std::is_same<X, double>::value) {
    return k.clip_f64;
  } else if constexpr (std::is_same<X, float>::value) {
    return k.clip_f32;
  } else {
    return k.clip_bf16;
  }
}

// The tensors of one storage combination (parameter P, gradient G, state S), as plain pointer
// lists for the kernel.
template <class P, class G, class S>
struct Group {
  using Param = P;
  std::vector<i64> numel;
  std::vector<i64> index;  // each tensor's position in the caller's list (stochastic rounding)
  std::vector<P*> param;
  std::vector<const G*> grad;
  std::vector<S*> s[3];
  std::vector<bf16*> copy;  // master weights' bfloat16 copies (nullptr where none)

  TensorList<P, G, S> list(const Rounding& r) const {
    Rounding rr = r;
    rr.index = index.data();
    return {static_cast<i64>(numel.size()),
            numel.data(),
            param.data(),
            grad.data(),
            s[0].empty() ? nullptr : s[0].data(),
            s[1].empty() ? nullptr : s[1].data(),
            s[2].empty() ? nullptr : s[2].data(),
            copy.empty() ? nullptr : copy.data(),
            rr};
  }
  bool empty() const { return numel.empty(); }
};

// A named list argument: slot -2 params, -1 grads, 0..2 the kernel's state lists s0..s2, 3 the
// master weights' bfloat16 copies (items may be None).
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

// Checks lists[0] (params: float32, float64 or bfloat16, C-contiguous, writable) and every
// other list against it (same length and shape, a dtype combination a kernel exists for;
// written lists writable), then fills the groups. The combinations, per tensor:
//   float32 params:  float32 or bfloat16 grads, float32 state, optional bfloat16 copy;
//   float64 params:  float64 grads and state;
//   bfloat16 params: bfloat16 grads, float32 or bfloat16 state (all its state lists alike).
struct Collected {
  Group<float, float, float> f32;
  Group<double, double, double> f64;
  Group<bf16, bf16, float> bf16_f32;
  Group<bf16, bf16, bf16> bf16_bf16;
  Group<float, bf16, float> f32_bf16grad;
  // Owns a reference to every array whose pointer is kept: a list subclass's __getitem__ may
  // return a fresh array, and another thread may empty the list while the GIL is released.
  std::vector<py::array> keep;
};

constexpr int kParams = -2, kGrads = -1, kCopy = 3;

const char* dtype_str(Dtype d) {
  return d == Dtype::f32 ? "float32" : d == Dtype::f64 ? "float64" : "bfloat16";
}

// The checks of one list item (want: the dtype its tensor's combination needs), with the
// messages that name it. Only reached when the fast test below fails.
void check_item_slow(const py::array& a, const py::array& p, const ListArg& list, py::ssize_t i,
                     bool is_param, Dtype want) {
  const std::string name = item_name(list.name, i);
  if (!is_param) check_shape(a, shape_of(p), name.c_str());
  dispatch_dtype(want, [&](auto t) {
    check_buffer<typename decltype(t)::type>(a, name.c_str(), list.written);
  });
}

// The dtype list l's item must have for a tensor whose parameter is pd, gradient gd and first
// state sd; TypeError naming the item when `have` is not it.
Dtype want_dtype(const ListArg& list, py::ssize_t i, Dtype pd, Dtype gd, Dtype sd, Dtype have) {
  Dtype want = pd;
  const char* rule = nullptr;
  if (list.slot == kGrads) {
    want = pd == Dtype::f32 && have == Dtype::bf16 ? Dtype::bf16 : pd;
    rule = pd == Dtype::f32 ? "float32 or bfloat16 for a float32 parameter" : nullptr;
  } else if (list.slot == kCopy) {
    if (pd != Dtype::f32) {
      throw py::type_error(item_name(list.name, i) + ": bfloat16 copies are kept only for " +
                           "float32 (master) parameters, params[" + std::to_string(i) + "] is " +
                           dtype_str(pd));
    }
    want = Dtype::bf16;
  } else if (list.slot >= 0) {
    if (pd == Dtype::bf16) {
      want = sd;
      rule = "float32 or bfloat16 for a bfloat16 parameter, like all its state";
    } else {
      want = pd == Dtype::f32 && gd == Dtype::bf16 ? Dtype::f32 : pd;
    }
  }
  if (have != want) {
    throw py::type_error(
        item_name(list.name, i) + " must be " +
        (rule ? std::string(rule)
              : std::string(dtype_str(want)) + " like params[" + std::to_string(i) + "]") +
        ", got " + dtype_str(have) + " (params[" + std::to_string(i) + "] is " + dtype_str(pd) +
        ")");
  }
  return want;
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
  c.f32.index.reserve(n);
  c.f32.param.reserve(n);
  c.f32.grad.reserve(n);
  for (const ListArg& l : lists) {
    if (l.slot >= 0 && l.slot < kCopy) c.f32.s[l.slot].reserve(n);
  }
  bool copies = false;  // a master-weight copy list was given: every float32 group keeps one
  for (const ListArg& l : lists) copies |= l.slot == kCopy;
  std::vector<Dtype> dts(nl);
  std::vector<const py::array*> items(nl);
  for (py::ssize_t i = 0; i < n; ++i) {
    // Every list's item and dtype first: a tensor's combination needs them all.
    for (size_t l = 0; l < nl; ++l) {
      items[l] = nullptr;
      if (lists[l].slot == kCopy) {
        const py::object o = lists[l].seq[i];
        if (o.is_none()) continue;
      }
      c.keep.push_back(item_array(lists[l], i));
      const py::array& a = c.keep.back();  // stays put: keep was reserved for every item
      items[l] = &a;
      PyObject* const descr = py::detail::array_proxy(a.ptr())->descr;
      const PyObject* const pdescr =
          l > 0 ? py::detail::array_proxy(items[0]->ptr())->descr : nullptr;
      if (descr == d32) {
        dts[l] = Dtype::f32;
      } else if (descr == d64) {
        dts[l] = Dtype::f64;
      } else if (l > 0 && descr == pdescr) {
        dts[l] = dts[0];
      } else {
        dts[l] = float_dtype(a, item_name(lists[l].name, i).c_str());
      }
    }
    const py::array& p = *items[0];
    const auto* pp = py::detail::array_proxy(p.ptr());
    PyObject* const pdescr = pp->descr;
    const Dtype pd = dts[0];
    Dtype gd = pd, sd = pd == Dtype::bf16 ? Dtype::f32 : pd;
    bool have_state = false;
    for (size_t l = 1; l < nl; ++l) {
      if (lists[l].slot == kGrads) gd = dts[l];
      if (lists[l].slot >= 0 && lists[l].slot < kCopy && !have_state) {
        sd = dts[l];
        have_state = true;
      }
    }
    if (pd == Dtype::bf16 && sd == Dtype::f64) sd = Dtype::f32;  // reported by want_dtype
    for (size_t l = 0; l < nl; ++l) {
      if (items[l] == nullptr) continue;
      const py::array& a = *items[l];
      const Dtype want = l == 0 ? pd : want_dtype(lists[l], i, pd, gd, sd, dts[l]);
      const auto* ap = py::detail::array_proxy(a.ptr());
      const int need = kLayout | (lists[l].written ? kWritable : 0);
      const bool fast = (pdescr == d32 || pdescr == d64) && ap->descr == pdescr &&
                        (ap->flags & need) == need && (l == 0 || same_shape(ap, pp));
      if (!fast) check_item_slow(a, p, lists[l], i, l == 0, want);
      const py::ssize_t nbytes = a.nbytes();
      char* b = ap->data;
      if (nbytes > 0) {
        spans.push_back({b, b + nbytes, lists[l].written, static_cast<int>(l), i});
      }
    }
    // The tensor's pointers, into its combination's group.
    auto add = [&](auto& g) {
      using Gp = std::decay_t<decltype(g)>;
      using P = typename Gp::Param;
      g.numel.push_back(static_cast<i64>(p.size()));
      g.index.push_back(static_cast<i64>(i));
      g.param.push_back(reinterpret_cast<P*>(pp->data));
      if (copies) g.copy.push_back(nullptr);
      for (size_t l = 1; l < nl; ++l) {
        char* b = items[l] ? py::detail::array_proxy(items[l]->ptr())->data : nullptr;
        const int slot = lists[l].slot;
        if (slot == kGrads) {
          g.grad.push_back(reinterpret_cast<typename decltype(g.grad)::value_type>(b));
        } else if (slot == kCopy) {
          g.copy.back() = reinterpret_cast<bf16*>(b);
        } else {
          g.s[slot].push_back(
              reinterpret_cast<typename std::remove_reference_t<decltype(g.s[0])>::value_type>(b));
        }
      }
    };
    if (pd == Dtype::f32) {
      if (gd == Dtype::bf16) {
        add(c.f32_bf16grad);
      } else {
        add(c.f32);
      }
    } else if (pd == Dtype::f64) {
      add(c.f64);
    } else if (sd == Dtype::bf16) {
      add(c.bf16_bf16);
    } else {
      add(c.bf16_f32);
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

// Runs f(TensorList<P, G, S>) on each non-empty group in a fixed order, without the GIL.
template <class F>
void run_groups(const Collected& c, const Rounding& r, F&& f) {
  py::gil_scoped_release nogil;
  if (!c.f32.empty()) f(c.f32.list(r));
  if (!c.f64.empty()) f(c.f64.list(r));
  if (!c.bf16_f32.empty()) f(c.bf16_f32.list(r));
  if (!c.bf16_bf16.empty()) f(c.bf16_bf16.list(r));
  if (!c.f32_bf16grad.empty()) f(c.f32_bf16grad.list(r));
}

constexpr Rounding kNearest{false, 0, 0, nullptr};

// The sum of the squares of every element of every group, added in the groups' fixed order.
double sum_squares(const Collected& c) {
  double s[5] = {0, 0, 0, 0, 0};
  int g = 0;
  run_groups(c, kNearest, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
    clip_fns<P>().sum_squares(t.count, t.numel, t.param, &s[g++]);
  });
  return (((s[0] + s[1]) + s[2]) + s[3]) + s[4];
}

ListArg written(const py::object& o, const char* name, int slot) {
  return {name, true, as_list(o, name), slot};
}
ListArg readonly(const py::object& o, const char* name, int slot) {
  return {name, false, as_list(o, name), slot};
}

// The options every update shares: master weights' bfloat16 copies (a list, or None) and the
// rounding of bfloat16 parameters. Adds the copy list to `lists`; returns the rounding.
Rounding bf16_options(std::vector<ListArg>& lists, const py::object& params_bf16,
                      bool stochastic_rounding, std::uint64_t seed, i64 step) {
  if (step < 0) throw py::value_error("step must be >= 0, got " + std::to_string(step));
  if (!is_none(params_bf16)) lists.push_back(written(params_bf16, "params_bf16", kCopy));
  return {stochastic_rounding, seed, step, nullptr};
}

void sgd_update(const py::object& params, const py::object& grads, const py::object& bufs,
                double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                bool first, const py::object& params_bf16, bool stochastic_rounding,
                std::uint64_t seed, i64 step) {
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
  const Rounding r = bf16_options(lists, params_bf16, stochastic_rounding, seed, step);
  const Collected c = collect(lists);
  run_groups(c, r, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
    fns<P, G, S>().sgd({t, lr, momentum, dampening, weight_decay, nesterov, first});
  });
}

void momentum_update(const py::object& params, const py::object& grads, const py::object& vel,
                     double lr, double beta, const py::object& params_bf16,
                     bool stochastic_rounding, std::uint64_t seed, i64 step) {
  check_lr(lr);
  check_range(beta, "beta", 0.0, 1.0, true);
  std::vector<ListArg> lists{written(params, "params", kParams), readonly(grads, "grads", kGrads),
                             written(vel, "velocity", 0)};
  const Rounding r = bf16_options(lists, params_bf16, stochastic_rounding, seed, step);
  const Collected c = collect(lists);
  run_groups(c, r, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
    fns<P, G, S>().momentum({t, lr, beta});
  });
}

void rmsprop_update(const py::object& params, const py::object& grads, const py::object& sq,
                    const py::object& ga, const py::object& buf, double lr, double alpha,
                    double eps, double weight_decay, double momentum, bool centered,
                    const py::object& params_bf16, bool stochastic_rounding, std::uint64_t seed,
                    i64 step) {
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
  const Rounding r = bf16_options(lists, params_bf16, stochastic_rounding, seed, step);
  const Collected c = collect(lists);
  run_groups(c, r, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
    fns<P, G, S>().rmsprop({t, lr, alpha, eps, weight_decay, momentum, centered});
  });
}

void adam_update(const py::object& params, const py::object& grads, const py::object& m,
                 const py::object& v, const py::object& vmax, i64 step, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool amsgrad, bool decoupled,
                 const py::object& params_bf16, bool stochastic_rounding, std::uint64_t seed) {
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
  const Rounding r = bf16_options(lists, params_bf16, stochastic_rounding, seed, step);
  const Collected c = collect(lists);
  run_groups(c, r, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
    fns<P, G, S>().adam({t, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled});
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
    run_groups(c, kNearest, [&]<class P, class G, class S>(TensorList<P, G, S> t) {
      clip_fns<P>().scale(t.count, t.numel, t.param, coef);
    });
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

// The bfloat16 options (keyword-only, after each update's PyTorch-like arguments):
//   params_bf16: None, or one entry per parameter: a bfloat16 array (same shape) that receives
//     the float32 parameter's updated value rounded to nearest even (master weights), or None;
//   stochastic_rounding, seed: bfloat16 parameters are rounded stochastically, with random bits
//     from (seed, step, position in params, element) (optim.h);
//   step: the step count keying those bits (adam_update uses its own step).
// State dtype is the state arrays' own: float32 or bfloat16 beside bfloat16 parameters.
void bind_optim(py::module_& m) {
  using py::arg;
  m.def("sgd_update", &sgd_update, arg("params"), arg("grads"), arg("momentum_buffer").none(true),
        arg("lr"), arg("momentum"), arg("dampening"), arg("weight_decay"), arg("nesterov"),
        arg("first"), py::kw_only(), arg("params_bf16").none(true) = py::none(),
        arg("stochastic_rounding") = false, arg("seed") = 0, arg("step") = 0);
  m.def("momentum_update", &momentum_update, arg("params"), arg("grads"), arg("velocity"),
        arg("lr"), arg("beta"), py::kw_only(), arg("params_bf16").none(true) = py::none(),
        arg("stochastic_rounding") = false, arg("seed") = 0, arg("step") = 0);
  m.def("rmsprop_update", &rmsprop_update, arg("params"), arg("grads"), arg("square_avg"),
        arg("grad_avg").none(true), arg("momentum_buffer").none(true), arg("lr"), arg("alpha"),
        arg("eps"), arg("weight_decay"), arg("momentum"), arg("centered"), py::kw_only(),
        arg("params_bf16").none(true) = py::none(), arg("stochastic_rounding") = false,
        arg("seed") = 0, arg("step") = 0);
  m.def("adam_update", &adam_update, arg("params"), arg("grads"), arg("exp_avg"), arg("exp_avg_sq"),
        arg("max_exp_avg_sq").none(true), arg("step"), arg("lr"), arg("beta1"), arg("beta2"),
        arg("eps"), arg("weight_decay"), arg("amsgrad"), arg("decoupled"), py::kw_only(),
        arg("params_bf16").none(true) = py::none(), arg("stochastic_rounding") = false,
        arg("seed") = 0);
  m.def("clip_grad_norm", &clip_grad_norm, arg("grads"), arg("max_norm"),
        arg("error_if_nonfinite"));
  m.def("global_norm", &global_norm, arg("arrays"));
}

}  // namespace bind
}  // namespace bnfast
