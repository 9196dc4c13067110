// The C++ library without Python: softmax of one row on every ISA this CPU supports.
// Built with -DBNFAST_BUILD_TESTS=ON and run by ctest.
#include <cmath>
#include <cstdio>

#include "bnfast/isa.h"
#include "bnfast/softmax.h"

int main() {
  using namespace bnfast;
  int failures = 0;
  for (int i = 0; i < kNumIsas; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (!isa_supported(isa)) continue;
    float x[19], y[19];
    for (int k = 0; k < 19; ++k) x[k] = 0.25f * static_cast<float>(k) - 2.0f;
    SoftmaxArgs<float> a{};
    a.x = x;
    a.y = y;
    a.s = {1, 19, 1};
    a.n_x = a.n_y = 19;
    softmax_kernels_of(isa).f32.softmax(a);
    double sum = 0;
    for (float v : y) sum += v;
    const bool ok = std::fabs(sum - 1.0) < 1e-5 && y[18] > y[0];
    std::printf("%s softmax: sum %.7f %s\n", isa_name(isa), sum, ok ? "ok" : "FAILED");
    failures += !ok;
  }
  return failures != 0;
}
