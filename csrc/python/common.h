// Argument checking shared by the bindings. Every array a kernel touches is checked here
// (type, dtype, C-contiguity, shape, writability, overlap) before the GIL is released; each
// failure is a Python exception that names the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {
namespace bind {

namespace py = pybind11;
using i64 = std::int64_t;

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The argument as an ndarray, or TypeError (the Python layer converts array-likes first).
inline py::array as_array(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  return py::reinterpret_borrow<py::array>(obj);
}

inline bool is_none(const py::handle& obj) { return obj.is_none(); }

enum class Dtype { f32, f64, bf16 };

// bfloat16 arrays come in two dtypes: ml_dtypes.bfloat16 (the NumPy extension dtype JAX and
// TensorFlow use), and bnfast's own bits-only view [("bfloat16", "<u2")] that bnfast.torch puts
// over a torch.bfloat16 tensor's memory when ml_dtypes is not installed. Outputs take the dtype
// of the input they are like.
inline bool is_bf16(const py::dtype& d) {
  if (d.kind() != 'V' || d.itemsize() != 2) return false;
  // The last dtype objects recognised, held: comparing names builds strings (~1 us a call, three
  // checks per kernel call), where arrays of one dtype share its object.
  static PyObject* seen[2] = {nullptr, nullptr};
  if (d.ptr() == seen[0] || d.ptr() == seen[1]) return true;
  const py::object names = d.attr("names");
  const bool bits = !names.is_none() && py::len(names) == 1 &&
                    py::str(py::tuple(names)[0]).cast<std::string>() == "bfloat16";
  if (!bits && py::str(d).cast<std::string>() != "bfloat16") return false;
  PyObject*& slot = seen[bits ? 1 : 0];
  Py_XDECREF(slot);
  slot = d.inc_ref().ptr();
  return true;
}

// float32, float64 or bfloat16, else TypeError.
inline Dtype float_dtype(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return Dtype::f32;
  if (a.dtype().is(py::dtype::of<double>())) return Dtype::f64;
  const char kind = a.dtype().kind();
  if (kind == 'f' && a.itemsize() == 4) return Dtype::f32;
  if (kind == 'f' && a.itemsize() == 8) return Dtype::f64;
  if (is_bf16(a.dtype())) return Dtype::bf16;
  throw py::type_error(std::string(name) + " must be float32, float64 or bfloat16, got " +
                       dtype_name(a));
}

// Calls f(TypeTag<float>{}), f(TypeTag<double>{}) or f(TypeTag<bf16>{}): the one place a Dtype
// becomes a C++ type.
//   dispatch_dtype(float_dtype(x, "x"), [&](auto tag) { using T = typename decltype(tag)::type; });
template <class T>
struct TypeTag {
  using type = T;
};
template <class F>
inline decltype(auto) dispatch_dtype(Dtype dt, F&& f) {
  if (dt == Dtype::f32) return f(TypeTag<float>{});
  if (dt == Dtype::bf16) return f(TypeTag<bf16>{});
  return f(TypeTag<double>{});
}

// The member of element type T of a {f32, f64, bf16} triple (a kernel table, groups of tensors).
template <class T, class Group>
inline auto& by_type(Group& g) {
  if constexpr (std::is_same<T, float>::value) {
    return g.f32;
  } else if constexpr (std::is_same<T, double>::value) {
    return g.f64;
  } else {
    return g.bf16;
  }
}

template <class T>
inline const char* type_name() {
  if constexpr (std::is_same<T, float>::value) return "float32";
  if constexpr (std::is_same<T, double>::value) return "float64";
  return "bfloat16";
}

inline bool native_byteorder(const py::array& a) {
  const char bo = a.dtype().byteorder();
  return bo == '=' || bo == '|' ||
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
         bo == '>';
#else
         bo == '<';
#endif
}

// Checks dtype T, native byte order, C-contiguity, alignment and (if asked) writability.
template <class T>
inline bool has_dtype(const py::array& a) {
  if constexpr (std::is_same<T, bf16>::value) {
    return is_bf16(a.dtype());
  } else {
    return a.dtype().kind() == 'f' && a.itemsize() == static_cast<py::ssize_t>(sizeof(T)) &&
           native_byteorder(a);
  }
}

template <class T>
inline void check_buffer(const py::array& a, const char* name, bool writable) {
  if (!has_dtype<T>(a)) {
    throw py::type_error(std::string(name) + " must be " + type_name<T>() + ", got " +
                         dtype_name(a));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " must be C-contiguous");
  }
  // A misaligned T* (a view at an odd byte offset) is undefined behaviour in C++.
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
    throw py::value_error(std::string(name) + " is not aligned to its dtype (copy it first)");
  }
  if (writable && !a.writeable()) {
    throw py::value_error(std::string(name) + " is read-only");
  }
}

template <class T>
inline const T* in_ptr(const py::array& a, const char* name) {
  check_buffer<T>(a, name, false);
  return static_cast<const T*>(a.data());
}

template <class T>
inline T* out_ptr(py::array& a, const char* name) {
  check_buffer<T>(a, name, true);
  return static_cast<T*>(a.mutable_data());
}

inline std::string shape_str(const std::vector<i64>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) {
    r += std::to_string(s[i]);
    if (s.size() == 1 || i + 1 < s.size()) r += s.size() == 1 ? "," : ", ";
  }
  return r + ")";
}

inline std::vector<i64> shape_of(const py::array& a) {
  std::vector<i64> s(a.ndim());
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s[i] = a.shape(i);
  return s;
}

inline void check_shape(const py::array& a, const std::vector<i64>& shape, const char* name) {
  if (shape_of(a) != shape) {
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + ", got " +
                          shape_str(shape_of(a)));
  }
}

// Byte ranges of two arrays intersect.
inline bool overlaps(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  const i64 na = a.nbytes(), nb = b.nbytes();
  return na > 0 && nb > 0 && pa < pb + nb && pb < pa + na;
}

// `out` must not overlap `in`, except being exactly the same memory when `exact_ok`
// (elementwise outputs written after their inputs are read at the same index).
inline void check_no_overlap(const py::array& out, const char* out_name, const py::array& in,
                             const char* in_name, bool exact_ok) {
  if (!overlaps(out, in)) return;
  if (exact_ok && out.data() == in.data() && out.nbytes() == in.nbytes()) return;
  throw py::value_error(std::string(out_name) + " overlaps " + in_name +
                        (exact_ok ? " (only exact in-place use is allowed)" : ""));
}

// A new C-contiguous array of T with the given shape (float32 or float64).
template <class T>
inline py::array_t<T> empty(const std::vector<i64>& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

// A new C-contiguous array with the given shape and like's dtype.
inline py::array empty_as(const std::vector<i64>& shape, const py::array& like) {
  return py::array(like.dtype(), std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

// Normalises axis to [0, ndim), else ValueError.
inline int normalize_axis(int axis, i64 ndim, const char* array_name) {
  if (axis < -ndim || axis >= ndim) {
    throw py::value_error("axis " + std::to_string(axis) + " is out of bounds for " + array_name +
                          " of dimension " + std::to_string(ndim));
  }
  return axis < 0 ? static_cast<int>(axis + ndim) : axis;
}

inline void check_finite(double v, const char* name) {
  if (!(v - v == 0)) throw py::value_error(std::string(name) + " must be finite");
}

// (A, C, B) view of x around `axis`; `rest` (optional) receives the shape without the axis.
// With `scalar_ok`, a 0-d x is one row of one value (axis 0 or -1, as PyTorch's softmax allows).
inline Shape3 view3(const py::array& x, int axis, const char* name,
                    std::vector<i64>* rest = nullptr, bool scalar_ok = false) {
  if (scalar_ok && x.ndim() == 0) {
    normalize_axis(axis, 1, name);
    if (rest) rest->clear();
    return {1, 1, 1};
  }
  if (x.ndim() < 1) throw py::value_error(std::string(name) + " must have at least 1 dimension");
  const int ax = normalize_axis(axis, x.ndim(), name);
  Shape3 s{1, x.shape(ax), 1};
  for (int i = 0; i < ax; ++i) s.A *= x.shape(i);
  for (py::ssize_t i = ax + 1; i < x.ndim(); ++i) s.B *= x.shape(i);
  if (rest) {
    rest->clear();
    for (py::ssize_t i = 0; i < x.ndim(); ++i) {
      if (i != ax) rest->push_back(x.shape(i));
    }
  }
  return s;
}

// `out` if given (checked against like's shape and dtype T), else a new array.
template <class T>
py::array output_like(const py::object& out, const py::array& like, const char* name) {
  if (is_none(out)) return empty_as(shape_of(like), like);
  py::array a = as_array(out, name);
  check_shape(a, shape_of(like), name);
  out_ptr<T>(a, name);
  return a;
}

// A read-only vector of length n (a per-channel or per-class parameter), or nullptr for None;
// *extent (if given) receives its element count, for the kernel's entry contract.
template <class T>
const T* channel_in(const py::object& obj, i64 n, const char* name, i64* extent = nullptr) {
  if (is_none(obj)) return nullptr;
  py::array a = as_array(obj, name);
  check_shape(a, {n}, name);
  if (extent) *extent = a.size();
  return in_ptr<T>(a, name);
}

// Parameter arrays beside data of storage type X have element type P = Compute<X>: float32
// beside bfloat16 data, where a bfloat16 parameter is also taken (PyTorch accepts both; widening
// is exact). float64 beside bfloat16 data is refused rather than narrowed without being asked.
template <class X>
inline void check_param_dtype(const py::array& a, const char* name) {
  if constexpr (std::is_same<X, bf16>::value) {
    if (!has_dtype<float>(a) && !is_bf16(a.dtype())) {
      throw py::type_error(std::string(name) +
                           " must be float32 or bfloat16 beside bfloat16 data, got " +
                           dtype_name(a));
    }
  }
}

// The elements of read-only parameter array `a` (shape checked by the caller) as P: a P array as
// it is, a bfloat16 one (beside bfloat16 data) widened into `holder`.
template <class X>
const Compute<X>* param_array(const py::array& a, const char* name,
                              std::vector<Compute<X>>& holder) {
  check_param_dtype<X>(a, name);
  if constexpr (std::is_same<X, bf16>::value) {
    if (is_bf16(a.dtype())) {
      const bf16* p = in_ptr<bf16>(a, name);
      holder.resize(static_cast<std::size_t>(a.size()));
      for (i64 i = 0; i < a.size(); ++i) holder[i] = widen(p[i]);
      return holder.data();
    }
  }
  return in_ptr<Compute<X>>(a, name);
}

// A nullable read-only parameter vector of length n (per channel, per class) as P; *extent (if
// given) receives its element count, for the kernel's entry contract.
template <class X>
const Compute<X>* param_vector(const py::object& obj, i64 n, const char* name,
                               std::vector<Compute<X>>& holder, i64* extent = nullptr) {
  if (is_none(obj)) return nullptr;
  const py::array a = as_array(obj, name);
  check_shape(a, {n}, name);
  if (extent) *extent = a.size();
  return param_array<X>(a, name, holder);
}

// How a loss is reduced over its elements (rows): crosses from Python as its name.
enum class Reduction : int { none, mean, sum };

inline Reduction parse_reduction(const py::object& obj) {
  if (py::isinstance<py::str>(obj)) {
    const std::string s = obj.cast<std::string>();
    if (s == "none") return Reduction::none;
    if (s == "mean") return Reduction::mean;
    if (s == "sum") return Reduction::sum;
  }
  throw py::value_error("reduction must be 'none', 'mean' or 'sum', got " +
                        py::repr(obj).cast<std::string>());
}

// Registration of each kernel family's bindings (one file each).
void bind_batch_norm(py::module_& m);
void bind_convert(py::module_& m);
void bind_membench(py::module_& m);
void bind_optim(py::module_& m);
void bind_sigmoid_binary_cross_entropy(py::module_& m);
void bind_softmax(py::module_& m);

}  // namespace bind
}  // namespace bnfast
