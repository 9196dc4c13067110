// CPU detection, the BNFAST_ISA override and the thread count.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "bnfast/contract.h"
#include "bnfast/isa.h"
#ifdef BNFAST_OPENMP
#include <omp.h>
#include <pthread.h>
#endif

namespace bnfast {
namespace {

std::atomic<int> g_active{-1};
std::atomic<int> g_threads{0};
std::atomic<std::int64_t> g_parallel_min_bytes{kParallelMinBytes};
// libgomp is not fork-safe: a child forked after the parent ran a parallel region inherits a
// thread pool whose threads do not exist, and its next parallel region hangs. Such a child runs
// every kernel on one thread (results are bitwise the same for any thread count).
std::atomic<bool> g_parallel_used{false};
std::atomic<bool> g_single_after_fork{false};

#ifdef BNFAST_OPENMP
void on_fork_child() {
  if (g_parallel_used.load(std::memory_order_relaxed)) {
    g_single_after_fork.store(true, std::memory_order_relaxed);
    g_threads.store(1, std::memory_order_relaxed);
  }
}
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif

bool cpu_has(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == Isa::scalar;
#endif
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "?";
}

bool parse_isa(const char* name, Isa* out) {
  for (int i = 0; i < kNumIsas; ++i) {
    if (std::strcmp(name, isa_name(static_cast<Isa>(i))) == 0) {
      *out = static_cast<Isa>(i);
      return true;
    }
  }
  return false;
}

bool isa_compiled(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::avx2:
#ifdef BNFAST_HAVE_AVX2
      return true;
#else
      return false;
#endif
    case Isa::avx512:
#ifdef BNFAST_HAVE_AVX512
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool isa_supported(Isa isa) { return isa_compiled(isa) && cpu_has(isa); }

Isa best_isa() {
  for (int i = kNumIsas - 1; i > 0; --i) {
    if (isa_supported(static_cast<Isa>(i))) return static_cast<Isa>(i);
  }
  return Isa::scalar;
}

Isa active_isa() {
  int a = g_active.load(std::memory_order_relaxed);
  if (a < 0) {
    a = static_cast<int>(best_isa());
    g_active.store(a, std::memory_order_relaxed);
  }
  return static_cast<Isa>(a);
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) {
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                (isa_compiled(isa) ? "' is not supported by this CPU"
                                                   : "' is not compiled into this build"));
  }
  g_active.store(static_cast<int>(isa), std::memory_order_relaxed);
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0) return n;
#ifdef BNFAST_OPENMP
  n = omp_get_max_threads();
#else
  n = 1;
#endif
  g_threads.store(n, std::memory_order_relaxed);
  return n;
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1");
#ifndef BNFAST_OPENMP
  n = 1;
#endif
  if (g_single_after_fork.load(std::memory_order_relaxed)) n = 1;
  g_threads.store(n, std::memory_order_relaxed);
}

namespace {
thread_local std::int64_t t_parallel_min_bytes = -1;  // -1: the process-wide setting
}  // namespace

std::int64_t parallel_min_bytes() {
  const std::int64_t g = g_parallel_min_bytes.load(std::memory_order_relaxed);
  return t_parallel_min_bytes >= 0 ? std::min(t_parallel_min_bytes, g) : g;
}

std::int64_t swap_thread_parallel_min_bytes(std::int64_t bytes) {
  const std::int64_t old = t_parallel_min_bytes;
  t_parallel_min_bytes = bytes < 0 ? -1 : bytes;
  return old;
}

void set_parallel_min_bytes(std::int64_t bytes) {
  g_parallel_min_bytes.store(bytes < 0 ? 0 : bytes, std::memory_order_relaxed);
}

int parallel_threads() {
  const int n = num_threads();
  if (n > 1 && !g_parallel_used.load(std::memory_order_relaxed)) {
    g_parallel_used.store(true, std::memory_order_relaxed);
  }
  return n;
}

void* aligned_malloc(std::int64_t bytes) {
  if (bytes <= 0) bytes = 64;
  std::size_t rounded = (static_cast<std::size_t>(bytes) + 63) & ~static_cast<std::size_t>(63);
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void aligned_free(void* p) { std::free(p); }

void contract_failed(const char* cond, const char* file, int line) {
  std::fprintf(stderr, "bnfast: kernel contract broken at %s:%d: %s\n", file, line, cond);
  std::abort();
}

namespace {

// Kernel scratch comes from a per-thread LIFO arena: a call allocates about a dozen small
// buffers, and malloc/free of them cost as much as a tiny kernel itself. Larger requests, or
// ones that do not fit what is left, fall back to aligned_malloc.
constexpr std::size_t kArenaBytes = 256 * 1024;

struct Arena {
  char* base = nullptr;
  std::size_t top = 0;
  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { std::free(base); }
};

thread_local Arena t_arena;

}  // namespace

void* scratch_alloc(std::int64_t bytes) {
  const std::size_t rounded =
      (static_cast<std::size_t>(bytes > 0 ? bytes : 64) + 63) & ~static_cast<std::size_t>(63);
#if defined(__SANITIZE_ADDRESS__)
  return aligned_malloc(bytes);  // every buffer its own allocation, so ASan sees overruns
#endif
  Arena& a = t_arena;
  if (rounded <= kArenaBytes - a.top) {
    if (!a.base) {
      a.base = static_cast<char*>(std::aligned_alloc(64, kArenaBytes));
      if (!a.base) throw std::bad_alloc();
    }
    void* p = a.base + a.top;
    a.top += rounded;
    return p;
  }
  return aligned_malloc(bytes);
}

void scratch_free(void* p) {
  Arena& a = t_arena;
  char* c = static_cast<char*>(p);
  if (a.base && c >= a.base && c < a.base + kArenaBytes) {
    a.top = static_cast<std::size_t>(c - a.base);  // LIFO: frees p and anything after it
  } else {
    std::free(p);
  }
}

}  // namespace bnfast
