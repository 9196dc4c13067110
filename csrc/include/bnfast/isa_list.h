// The ISAs bnfast knows, lowest first (best_isa takes the last one the CPU supports): the one
// list that the Isa enum, the names, the kernel tables and CMakeLists.txt (which reads this
// line) are made from. X(isa, ...) is called once per ISA, with the extra arguments after it.
// Adding one needs its vec.h target, its CPU check (cpu_has_<isa> in dispatch.cpp) and its
// flags in CMakeLists.txt (BNFAST_FLAGS_<isa>; configuring fails without them).
#pragma once

// avx512_bf16 is avx512 with AVX512_BF16's float32 -> bfloat16 converts.
// clang-format off
#define BNFAST_ISAS(X, ...) X(scalar, __VA_ARGS__) X(avx2, __VA_ARGS__) X(avx512, __VA_ARGS__) X(avx512_bf16, __VA_ARGS__)
// clang-format on
