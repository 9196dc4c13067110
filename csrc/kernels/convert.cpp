// float32 -> bfloat16 over an array (convert.h), one source compiled for every ISA: full vectors,
// then one partial (masked) vector; threaded over fixed chunks past the parallel threshold.
#include <algorithm>

#include "bnfast/contract.h"
#include "bnfast/convert.h"
#include "bnfast/parallel.h"
#include "bnfast/vec.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kChunk = 1 << 15;  // elements per work unit

void round_bf16_array(const float* x, bf16* y, i64 n) {
  BNFAST_EXPECT(n >= 0 && (n == 0 || (x != nullptr && y != nullptr)));
  parallel_for((n + kChunk - 1) / kChunk, threads_for(n * 6), [&](i64 u) {
    const i64 lo = u * kChunk, w = std::min(kChunk, n - lo);
    for_lanes<float>(w, [&](i64 j, int k) { st(y + lo + j, ld(x + lo + j, k), k); });
  });
}

}  // namespace

ConvertKernels convert_kernels() { return {&round_bf16_array}; }

}  // namespace BNFAST_NS
}  // namespace bnfast
