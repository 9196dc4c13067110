// bfloat16: the storage type of mixed-precision tensors (the upper half of a float32). Kernels
// read it into float32 registers, compute in float32 (or double) and round once on the way out.
//
// Rounding float32 -> bfloat16, the same bits on every ISA (avx512_bf16's VCVTNEPS2BF16 does
// exactly this, and the integer code of the other targets and of round_bf16 below follows it):
//  - round to nearest, ties to even; values past the largest finite bfloat16 become +-inf;
//  - NaN stays NaN: its sign and upper payload kept, the quiet bit set;
//  - float32 subnormals (|x| < 2^-126) become a zero of the same sign. The instruction treats
//    them as zero, and every target agrees with it rather than with a subnormal-preserving
//    rounding; such values are below anything a bfloat16 training run resolves.
// Widening bfloat16 -> float32 is exact (bfloat16 subnormals stay subnormal float32s).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace bnfast {

struct bf16 {
  std::uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 is 16 bits");

// Internal linkage: these are compiled into every ISA's kernels, and one linker-merged copy
// built with AVX-512 flags must not serve the scalar ones (see contract.h).
namespace {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float widen(bf16 h) { return bits_float(std::uint32_t(h.bits) << 16); }

// Round-to-nearest-even of the float32 bit pattern u (the rules above).
inline std::uint16_t round_bf16_bits(std::uint32_t u) {
  if ((u & 0x7f800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

inline bf16 round_bf16(float f) { return {round_bf16_bits(float_bits(f))}; }

// Stochastic rounding (the optimizers' option; vectorized in optim.cpp): 16 random bits r are
// added below bfloat16's last place and the sum truncated, u' = (u + r) & 0xffff0000, so the
// result rounds up with probability equal to the discarded fraction (unbiased; small updates are
// not lost). Zeros, subnormals, infinities and NaN round as round_bf16 does; past the largest
// finite value the carry reaches the infinity pattern.
}  // namespace

// The element type a kernel computes in for storage type X: float for bfloat16, else X.
template <class X>
struct ComputeOf {
  using type = X;
};
template <>
struct ComputeOf<bf16> {
  using type = float;
};
template <class X>
using Compute = typename ComputeOf<X>::type;

namespace {
// One counter-based random word: SplitMix64's finalizer of a key, the same sequence on every ISA
// and thread count (stochastic rounding keys each element by seed, step and index).
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

}  // namespace bnfast
