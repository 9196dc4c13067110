// Entry contracts of the kernels: every length non-negative and within the extents the caller
// handed over (the sizes of its arrays), zero lengths handled by the kernel itself.
//
// The bindings check every argument once, before the kernel runs; these checks are the net under
// them, so that a future binding that forgets one fails loudly instead of writing past an array.
// They are compiled into sanitizer builds (BNFAST_SANITIZE defines BNFAST_CHECK_CONTRACTS), where
// a broken contract prints the condition and aborts; elsewhere they are nothing. Macros, not
// inline functions: an inline function instantiated in an AVX-512 translation unit may be the
// copy the linker keeps for the scalar one.
#pragma once

namespace bnfast {
[[noreturn]] void contract_failed(const char* cond, const char* file, int line);
}

#ifdef BNFAST_CHECK_CONTRACTS
#define BNFAST_EXPECT(cond) \
  ((cond) ? static_cast<void>(0) : ::bnfast::contract_failed(#cond, __FILE__, __LINE__))
#else
#define BNFAST_EXPECT(cond) static_cast<void>(0)
#endif

// A nullable array of `extent` elements holds the `need` elements a kernel touches.
#define BNFAST_EXPECT_FITS(ptr, extent, need) \
  BNFAST_EXPECT((need) >= 0 && ((ptr) == nullptr || (need) <= (extent)))
