// Bindings of the speed-of-light kernels: checks, GIL release, one table call.
#include <cstdint>

#include "bnfast/membench.h"
#include "common.h"

namespace bnfast {

namespace bind {
namespace {

MemMode parse_mode(const std::string& mode) {
  if (mode == "read") return MemMode::read;
  if (mode == "write") return MemMode::write;
  if (mode == "write_nt") return MemMode::write_nt;
  if (mode == "update") return MemMode::update;
  if (mode == "exp") return MemMode::exp;
  throw py::value_error("mode must be 'read', 'write', 'write_nt', 'update' or 'exp', got '" +
                        mode + "'");
}

constexpr const char* kReadNames[kMemMaxArrays] = {"reads[0]", "reads[1]", "reads[2]", "reads[3]"};
constexpr const char* kWriteNames[kMemMaxArrays] = {"writes[0]", "writes[1]", "writes[2]",
                                                    "writes[3]"};

// The arrays of a sequence (at most kMemMaxArrays), without allocating: this binding's own
// overhead is part of the speed of light of small inputs.
int arrays_of(const py::sequence& seq, const char* name, const char* const* names,
              py::object* out) {
  const size_t n = seq.size();
  if (n > static_cast<size_t>(kMemMaxArrays)) {
    throw py::value_error(std::string(name) + " holds at most " + std::to_string(kMemMaxArrays) +
                          " arrays, got " + std::to_string(n));
  }
  for (size_t i = 0; i < n; ++i) out[i] = as_array(seq[i], names[i]);
  return static_cast<int>(n);
}

void check_size(const py::array& a, i64 n, const char* name) {
  if (a.size() != n) {
    throw py::value_error(std::string(name) + " must have " + std::to_string(n) +
                          " elements, got " + std::to_string(a.size()));
  }
}

// in[] and out[] hold arrays (checked by arrays_of); py::array values are made only here, as
// borrowed references: a default-constructed py::array would allocate an empty ndarray.
template <class T>
py::object run(const py::object* in_, int k, const py::object* out_, int m, MemMode mode, i64 n) {
  MemArgs<T> a{};
  a.k = k;
  a.m = m;
  a.n = n;
  a.mode = mode;
  for (int i = 0; i < k; ++i) {
    const auto in = py::reinterpret_borrow<py::array>(in_[i]);
    a.in[i] = in_ptr<T>(in, kReadNames[i]);
    check_size(in, n, kReadNames[i]);
  }
  for (int j = 0; j < m; ++j) {
    auto out = py::reinterpret_borrow<py::array>(out_[j]);
    a.out[j] = out_ptr<T>(out, kWriteNames[j]);
    check_size(out, n, kWriteNames[j]);
    if (mode == MemMode::write_nt && n > 0 &&
        reinterpret_cast<std::uintptr_t>(a.out[j]) % 64 != 0) {
      throw py::value_error(std::string(kWriteNames[j]) +
                            " must start on a 64-byte boundary for non-temporal stores");
    }
    for (int i = 0; i < k; ++i) {
      check_no_overlap(out, kWriteNames[j], py::reinterpret_borrow<py::array>(in_[i]),
                       kReadNames[i], false);
    }
    for (int i = 0; i < j; ++i) {
      check_no_overlap(out, kWriteNames[j], py::reinterpret_borrow<py::array>(out_[i]),
                       kWriteNames[i], false);
    }
  }
  double s;
  {
    py::gil_scoped_release nogil;
    s = by_type<T>(membench_kernels_active()).run(a);
  }
  if (mode == MemMode::read) return py::float_(s);
  return py::none();
}

}  // namespace

void bind_membench(py::module_& m) {
  m.def(
      "membench",
      [](const py::sequence& reads, const py::sequence& writes, const std::string& mode_) {
        const MemMode mode = parse_mode(mode_);
        py::object in[kMemMaxArrays], out[kMemMaxArrays];
        const int k = arrays_of(reads, "reads", kReadNames, in);
        const int m = arrays_of(writes, "writes", kWriteNames, out);
        if (mode == MemMode::read && (k == 0 || m != 0)) {
          throw py::value_error("mode 'read' takes at least one array in reads and none in writes");
        }
        if (mode != MemMode::read && m == 0) {
          throw py::value_error("mode '" + mode_ + "' needs at least one array in writes");
        }
        const auto first = py::reinterpret_borrow<py::array>(k == 0 ? out[0] : in[0]);
        const i64 n = first.size();
        const char* name = k == 0 ? kWriteNames[0] : kReadNames[0];
        const Dtype dt = float_dtype(first, name);
        // Moving bytes is what membench measures: bfloat16 data moves the bytes of float32
        // arrays half as long (bnfast.bench times it so).
        if (dt == Dtype::bf16)
          throw py::type_error(std::string(name) + " must be float32 or float64");
        return dt == Dtype::f32 ? run<float>(in, k, out, m, mode, n)
                                : run<double>(in, k, out, m, mode, n);
      },
      py::arg("reads"), py::arg("writes"), py::arg("mode"));
}

}  // namespace bind
}  // namespace bnfast
