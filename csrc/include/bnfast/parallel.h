// parallel.h — the one way kernels use threads (compiled per ISA, like vec.h).
#pragma once

#ifndef BNFAST_NS
#error "parallel.h is only for kernel sources compiled per ISA (BNFAST_NS undefined)"
#endif

#include <cstdint>

namespace bnfast {
namespace BNFAST_NS {

// Runs body(i) for i in [0, n) on nt threads, statically scheduled, then end() once on every
// thread (e.g. a fence after non-temporal stores). With nt == 1 no parallel region is entered:
// even one whose if-clause is false costs libgomp about 2 us per call.
template <class Body, class End>
inline void parallel_for(std::int64_t n, int nt, Body&& body, End&& end) {
  if (nt <= 1 || n <= 1) {
    for (std::int64_t i = 0; i < n; ++i) body(i);
    end();
    return;
  }
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static) nowait
    for (std::int64_t i = 0; i < n; ++i) body(i);
    end();
  }
}

template <class Body>
inline void parallel_for(std::int64_t n, int nt, Body&& body) {
  parallel_for(n, nt, body, [] {});
}

}  // namespace BNFAST_NS
}  // namespace bnfast
