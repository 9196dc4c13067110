// Bindings of the bfloat16 conversion: checks, GIL release, one table call.
#include "bnfast/convert.h"
#include "common.h"

namespace bnfast {
namespace bind {

void bind_convert(py::module_& m) {
  m.def(
      "round_bfloat16",
      [](py::object x_, py::object out_) {
        const py::array x = as_array(x_, "x");
        py::array out = as_array(out_, "out");
        const float* xp = in_ptr<float>(x, "x");
        check_shape(out, shape_of(x), "out");
        bf16* yp = out_ptr<bf16>(out, "out");
        check_no_overlap(out, "out", x, "x", false);
        const i64 n = x.size();
        {
          py::gil_scoped_release nogil;
          convert_kernels_active().round_bf16(xp, yp, n);
        }
        return out;
      },
      py::arg("x"), py::arg("out"));
}

}  // namespace bind
}  // namespace bnfast
