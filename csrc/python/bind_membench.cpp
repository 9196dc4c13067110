// Bindings of the speed-of-light kernels: checks, GIL release, one table call.
#include <cstdint>

#include "bnfast/membench.h"
#include "common.h"

namespace bnfast {

BNFAST_DEFINE_KERNELS_ACTIVE(MembenchKernels, membench_kernels)

namespace bind {
namespace {

MemMode parse_mode(const std::string& mode) {
  if (mode == "read") return MemMode::read;
  if (mode == "write") return MemMode::write;
  if (mode == "write_nt") return MemMode::write_nt;
  if (mode == "update") return MemMode::update;
  throw py::value_error("mode must be 'read', 'write', 'write_nt' or 'update', got '" + mode + "'");
}

std::vector<py::array> arrays_of(const py::sequence& seq, const char* name) {
  if (seq.size() > static_cast<size_t>(kMemMaxArrays)) {
    throw py::value_error(std::string(name) + " holds at most " + std::to_string(kMemMaxArrays) +
                          " arrays, got " + std::to_string(seq.size()));
  }
  std::vector<py::array> r;
  for (size_t i = 0; i < seq.size(); ++i) {
    r.push_back(as_array(seq[i], (std::string(name) + "[" + std::to_string(i) + "]").c_str()));
  }
  return r;
}

template <class T>
const MembenchFns<T>& fns() {
  if constexpr (std::is_same<T, float>::value) {
    return membench_kernels_active().f32;
  } else {
    return membench_kernels_active().f64;
  }
}

template <class T>
py::object run(const std::vector<py::array>& in, const std::vector<py::array>& out, MemMode mode,
               i64 n) {
  MemArgs<T> a{};
  a.k = static_cast<int>(in.size());
  a.m = static_cast<int>(out.size());
  a.n = n;
  a.mode = mode;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string name = "reads[" + std::to_string(i) + "]";
    a.in[i] = in_ptr<T>(in[i], name.c_str());
    if (in[i].size() != n) {
      throw py::value_error(name + " must have " + std::to_string(n) + " elements, got " +
                            std::to_string(in[i].size()));
    }
  }
  for (size_t j = 0; j < out.size(); ++j) {
    const std::string name = "writes[" + std::to_string(j) + "]";
    py::array o = out[j];
    a.out[j] = out_ptr<T>(o, name.c_str());
    if (o.size() != n) {
      throw py::value_error(name + " must have " + std::to_string(n) + " elements, got " +
                            std::to_string(o.size()));
    }
    if (mode == MemMode::write_nt && n > 0 &&
        reinterpret_cast<std::uintptr_t>(a.out[j]) % 64 != 0) {
      throw py::value_error(name + " must start on a 64-byte boundary for non-temporal stores");
    }
    for (size_t i = 0; i < in.size(); ++i) {
      check_no_overlap(o, name.c_str(), in[i], ("reads[" + std::to_string(i) + "]").c_str(), false);
    }
    for (size_t i = 0; i < j; ++i) {
      check_no_overlap(o, name.c_str(), out[i], ("writes[" + std::to_string(i) + "]").c_str(),
                       false);
    }
  }
  double s;
  {
    py::gil_scoped_release nogil;
    s = fns<T>().run(a);
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
        const std::vector<py::array> in = arrays_of(reads, "reads");
        const std::vector<py::array> out = arrays_of(writes, "writes");
        if (mode == MemMode::read && (in.empty() || !out.empty())) {
          throw py::value_error("mode 'read' takes at least one array in reads and none in writes");
        }
        if (mode != MemMode::read && out.empty()) {
          throw py::value_error("mode '" + mode_ + "' needs at least one array in writes");
        }
        const py::array& first = in.empty() ? out[0] : in[0];
        const i64 n = first.size();
        return float_dtype(first, in.empty() ? "writes[0]" : "reads[0]") == Dtype::f32
                   ? run<float>(in, out, mode, n)
                   : run<double>(in, out, mode, n);
      },
      py::arg("reads"), py::arg("writes"), py::arg("mode"));
}

}  // namespace bind
}  // namespace bnfast
