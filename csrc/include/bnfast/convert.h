// Conversions between float32 and bfloat16 over whole arrays: the rounding every kernel's
// bfloat16 store does (bfloat16.h), on its own. Callers keeping float32 copies of bfloat16
// tensors write them back with it, and the tests hold every ISA's rounding to the same bits.
#pragma once

#include <cstdint>

#include "bnfast/bfloat16.h"
#include "bnfast/isa.h"

namespace bnfast {

struct ConvertKernels {
  // y[i] = x[i] rounded to bfloat16, i < n (n >= 0).
  void (*round_bf16)(const float* x, bf16* y, std::int64_t n);
};

BNFAST_DECLARE_KERNELS(ConvertKernels, convert_kernels)

}  // namespace bnfast
