// The extension module bnfast._core: ISA control, threads, and each kernel family's bindings.
#include <cstring>

#include "bnfast/batch_norm.h"
#include "bnfast/convert.h"
#include "bnfast/membench.h"
#include "bnfast/optim.h"
#include "bnfast/sigmoid_binary_cross_entropy.h"
#include "bnfast/softmax.h"
#include "common.h"

namespace bnfast {
namespace bind {
namespace {

Isa isa_from_name(const std::string& name) {
  Isa isa;
  if (!parse_isa(name.c_str(), &isa)) {
    std::string known;
    for (int i = 0; i < kNumIsas; ++i) known += (i ? ", " : "") + std::string(isa_name(Isa(i)));
    throw py::value_error("unknown ISA '" + name + "'; known: " + known);
  }
  return isa;
}

py::list isa_names(bool (*pred)(Isa)) {
  py::list r;
  for (int i = 0; i < kNumIsas; ++i) {
    if (pred(static_cast<Isa>(i))) r.append(isa_name(static_cast<Isa>(i)));
  }
  return r;
}

// Names of "family/isa" kernel tables with an empty slot, for every supported ISA.
template <class Table>
void find_empty(py::list& r, const char* family, const Table& (*of)(Isa)) {
  using Fn = void (*)();
  static_assert(sizeof(Table) % sizeof(Fn) == 0, "kernel tables hold only function pointers");
  for (int i = 0; i < kNumIsas; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (!isa_supported(isa)) continue;
    Fn slots[sizeof(Table) / sizeof(Fn)];
    std::memcpy(slots, &of(isa), sizeof(Table));
    for (Fn f : slots) {
      if (f == nullptr) {
        r.append(std::string(family) + "/" + isa_name(isa));
        break;
      }
    }
  }
}

}  // namespace
}  // namespace bind
}  // namespace bnfast

PYBIND11_MODULE(_core, m) {
  using namespace bnfast;
  using namespace bnfast::bind;
  m.doc() = "bnfast compiled kernels (private; use the bnfast package)";
  m.attr("__version__") = BNFAST_VERSION;
  m.attr("compiler") = BNFAST_COMPILER;    // CMakeLists.txt: id and version
  m.attr("cxx_flags") = BNFAST_CXX_FLAGS;  // shared by every target; ISA flags per kernel
#ifdef BNFAST_OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("compiled_isas", [] { return isa_names(&isa_compiled); });
  m.def("available_isas", [] { return isa_names(&isa_supported); });
  // set_active_isa's std::runtime_error (not compiled, not supported) becomes RuntimeError.
  m.def(
      "set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); },
      py::arg("name"));
  m.def("get_num_threads", &num_threads);
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw py::value_error("n must be >= 1, got " + std::to_string(n));
        set_num_threads(n);
      },
      py::arg("n"));
  m.def("get_parallel_min_bytes", &parallel_min_bytes);
  m.def("set_parallel_min_bytes", &set_parallel_min_bytes, py::arg("bytes"));
  m.def("swap_thread_parallel_min_bytes", &swap_thread_parallel_min_bytes, py::arg("bytes"));
  m.def("empty_kernel_slots", [] {
    py::list r;
    find_empty(r, "batch_norm", &batch_norm_kernels_of);
    find_empty(r, "convert", &convert_kernels_of);
    find_empty(r, "membench", &membench_kernels_of);
    find_empty(r, "optim", &optim_kernels_of);
    find_empty(r, "sigmoid_binary_cross_entropy", &sigmoid_binary_cross_entropy_kernels_of);
    find_empty(r, "softmax", &softmax_kernels_of);
    return r;
  });
  bind_batch_norm(m);
  bind_convert(m);
  bind_membench(m);
  bind_optim(m);
  bind_sigmoid_binary_cross_entropy(m);
  bind_softmax(m);
}
