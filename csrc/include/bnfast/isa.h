// ISA selection and threading: the only state the kernels share.
//
// Every kernel family is compiled once per ISA into namespace bnfast::<isa>; each exposes a
// table of function pointers (e.g. BatchNormKernels). The active ISA is chosen once at import
// (best the CPU supports, or BNFAST_ISA) and may be switched at run time for tests.
#pragma once

#include <cstdint>

#include "bnfast/isa_list.h"

namespace bnfast {

// Any contiguous array viewed as (A, C, B) around one axis of length C: the view every kernel
// family that works along an axis uses (batch norm's channels, softmax's classes).
struct Shape3 {
  std::int64_t A, C, B;
};

#define BNFAST_ISA_ENUMERATOR_(isa, ...) isa,
enum class Isa : int { BNFAST_ISAS(BNFAST_ISA_ENUMERATOR_) };
#undef BNFAST_ISA_ENUMERATOR_
#define BNFAST_ISA_ONE_(isa, ...) +1
constexpr int kNumIsas = 0 BNFAST_ISAS(BNFAST_ISA_ONE_);
#undef BNFAST_ISA_ONE_

const char* isa_name(Isa isa);
// Parses an ISA name; returns false for an unknown name.
bool parse_isa(const char* name, Isa* out);
bool isa_compiled(Isa isa);
// Compiled into this build and supported by this CPU (and OS).
bool isa_supported(Isa isa);
Isa best_isa();
Isa active_isa();
// Throws std::runtime_error for an ISA that is not compiled or not supported here.
void set_active_isa(Isa isa);

int num_threads();
void set_num_threads(int n);

// Below this many bytes moved a kernel runs on one thread (default kParallelMinBytes). Between
// kernels (a training step spends most of its time in BLAS) OpenMP's workers fall asleep, and
// waking them costs tens of microseconds, more on a loaded machine; NumPy's OpenBLAS threads
// even spin on the cores for a while after each product (a 2-thread (256, 1024) backward right
// after one took 2.5 ms instead of 0.1): only kernels of ~100 us and up gain from threads.
// Tests lower it to run small inputs threaded.
constexpr std::int64_t kParallelMinBytes = 4 << 20;
std::int64_t parallel_min_bytes();
void set_parallel_min_bytes(std::int64_t bytes);
// Lowers the setting for kernels called from this thread (bytes < 0: back to the process
// setting) and returns the previous override (-1 if none). bnfast.torch uses it: in a PyTorch
// process both libraries share one OpenMP pool, which PyTorch's own ops keep awake.
std::int64_t swap_thread_parallel_min_bytes(std::int64_t bytes);

// The thread count for a parallel region (notes that the OpenMP pool is in use: see fork_safe).
int parallel_threads();

inline int threads_for(std::int64_t bytes) {
  return bytes < parallel_min_bytes() ? 1 : parallel_threads();
}

// Storage that kernels allocate (aligned, uninitialised); defined in dispatch.cpp so no
// allocator template is instantiated inside an ISA-specific translation unit.
void* aligned_malloc(std::int64_t bytes);
void aligned_free(void* p);
// Scratch buffers of one kernel call, freed in reverse order of allocation on the same thread
// (the Scratch class in vec.h).
void* scratch_alloc(std::int64_t bytes);
void scratch_free(void* p);

}  // namespace bnfast

// Declares `Table name()` in every per-ISA namespace and accessors for a given ISA's table and
// the active one (defined by BNFAST_DEFINE_KERNELS in dispatch.cpp).
#define BNFAST_DECLARE_TABLE_FN_(isa, Table, name) \
  namespace isa {                                  \
  Table name();                                    \
  }
#define BNFAST_DECLARE_KERNELS(Table, name)          \
  BNFAST_ISAS(BNFAST_DECLARE_TABLE_FN_, Table, name) \
  const Table& name##_of(::bnfast::Isa isa);         \
  const Table& name##_active();
