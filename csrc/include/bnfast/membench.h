// Memory-bandwidth kernels: the "speed of light" of each access pattern the real kernels have.
//
// Trivial streaming loops over n elements of k input arrays and m output arrays, s[i] being the
// sum of the inputs at i (0 when k = 0):
//   read      m = 0: returns sum_i s[i]                       (reads k arrays)
//   write     out_j[i] = s[i], plain stores                   (reads k, writes m fresh arrays)
//   write_nt  out_j[i] = s[i], non-temporal stores            (same; outputs 64-byte aligned)
//   update    out_j[i] = out_j[i] + s[i]                      (reads k, updates m in place)
//   exp       out_j[i] = exp(s[i]), plain stores, vmath.h's exp (a compute floor, not a
//             memory one: any softmax or cross-entropy computes one exp per logit)
// `bnfast bench` times a real kernel against the one of these that moves the same arrays.
#pragma once

#include <cstdint>

#include "bnfast/isa.h"

namespace bnfast {

enum class MemMode : int { read = 0, write = 1, write_nt = 2, update = 3, exp = 4 };
constexpr int kMemMaxArrays = 4;  // at most this many inputs and this many outputs

template <class T>
struct MemArgs {
  const T* in[kMemMaxArrays];
  int k;
  T* out[kMemMaxArrays];
  int m;
  std::int64_t n;  // elements of every array (0 allowed)
  MemMode mode;
};

template <class T>
struct MembenchFns {
  // Returns the sum for MemMode::read, 0 otherwise.
  double (*run)(const MemArgs<T>&);
};

struct MembenchKernels {
  MembenchFns<float> f32;
  MembenchFns<double> f64;
};

BNFAST_DECLARE_KERNELS(MembenchKernels, membench_kernels)

}  // namespace bnfast
