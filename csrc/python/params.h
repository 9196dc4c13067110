// Parameter arrays beside data of storage type X: their element type is P = Compute<X> (float32
// beside bfloat16 data). Shared by the loss bindings.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "common.h"

namespace bnfast {
namespace bind {

// The elements of read-only array `a` (shape checked by the caller) as P: a P array as it is;
// beside bfloat16 data also a bfloat16 one, widened into `holder` (PyTorch takes bfloat16
// weights with bfloat16 logits, and widening is exact). float64 beside bfloat16 data is refused
// rather than narrowed: it would be rounded to float32 without the caller asking.
template <class X>
const Compute<X>* param_array(const py::array& a, const char* name,
                              std::vector<Compute<X>>& holder) {
  if constexpr (std::is_same<X, bf16>::value) {
    if (is_bf16(a.dtype())) {
      const bf16* p = in_ptr<bf16>(a, name);
      holder.resize(static_cast<std::size_t>(a.size()));
      for (i64 i = 0; i < a.size(); ++i) holder[i] = widen(p[i]);
      return holder.data();
    }
    if (!has_dtype<float>(a)) {
      throw py::type_error(std::string(name) +
                           " must be float32 or bfloat16 beside bfloat16 logits, got " +
                           dtype_name(a));
    }
  }
  return in_ptr<Compute<X>>(a, name);
}

}  // namespace bind
}  // namespace bnfast
