// Batch norm forward (training, eval) and backward; one source compiled for every ISA.
//
// x is contiguous (A, C, B). Two traversals, chosen from the shape alone:
//  - rows (B * sizeof(X) < kPlaneMinBytes): A rows of W = C*B values; vector lanes run across
//    the row, one accumulator per "virtual channel" (c, b), folded over b at the end.
//  - planes: A*C planes of B contiguous values, cut into segments of at most kUnitBytes;
//    lanes run along the plane.
// Work units (row chunks grouped into at most kMaxGroups groups, or plane segments) depend only
// on the shape, never on the thread count, and partial results are combined in unit order: the
// results are bitwise the same for any number of threads.
//
// Statistics: each unit's mean and M2 are computed two-pass from cache or registers (a plane
// segment from L1/L2; in the rows traversal, blocks of kBlock rows from registers, merged into
// their chunk), and units are merged with Chan's formula in double. That is one pass over
// memory and no E[x^2] - E[x]^2 cancellation when the data sits far from zero.
// Passes over memory: train fwd reads x twice and writes y; eval fwd reads x and writes y;
// backward reads x, dy twice and writes dx.
// Normalize is (x - mean) * scale + shift (a subtract and an FMA): folding the mean into the
// shift would cost |mean / std| ulps on data far from zero, and the subtract is free here.
// Tails use partial (masked) loads and stores; there are no scalar remainder loops.
//
// Every kernel is templated on the storage type X of x, y, dy, dx and computes in T = Compute<X>
// (float for bfloat16, PyTorch's mixed-type batch norm): bfloat16 data is widened on load and
// rounded once on store, while the parameters, statistics and accumulators are T (merges in
// double as above). Heuristics about memory traffic (traversal, blocks, prefetch, streaming,
// threads) count sizeof(X) bytes per value; per-lane scratch arrays are T.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "bnfast/batch_norm.h"
#include "bnfast/contract.h"
#include "bnfast/parallel.h"
#include "bnfast/vec.h"

namespace bnfast {
namespace BNFAST_NS {
namespace {

constexpr i64 kUnitBytes = 64 * 1024;  // plane segment: two passes from L1/L2
// Row chunk: rows summed in T before a double merge, as many as the T error allows. The merge
// costs O(W) per chunk: 256 KiB chunks (16 rows at W = 4096) spent 30% of train in merges.
constexpr i64 kChunkRows = 64;
constexpr int kBlock = 8;  // rows read together by the statistics passes, at most (16: +12%)
constexpr i64 kBlockMinRowBytes = 1024;  // rows this long are separate memory streams
constexpr i64 kMaxGroups = 48;  // divisible by 1, 2, 3, 4, 6, 8, 12, 16, 24: even thread loads
constexpr i64 kPlaneMinBytes = 256;

// Outputs larger than this that do not overwrite an input are written with non-temporal
// stores: they skip the read-for-ownership and leave the cache to the inputs. Only when every
// row (or plane) starts on a cache line, so no line is written partly streamed and partly not
// (numpy's own large arrays start 16 bytes past a line; the layers' buffers are aligned).
constexpr i64 kStreamMinBytes = 8 << 20;

inline bool use_stream(const void* out, const void* in, i64 bytes, i64 row_bytes) {
  return out != in && bytes >= kStreamMinBytes && row_bytes % 64 == 0 &&
         reinterpret_cast<std::uintptr_t>(out) % 64 == 0;
}

// Streaming loops of the rows traversal also load per-lane constants from L1; those loads fill
// the load queue, so fewer misses of the streamed array are in flight and the loop falls to
// ~85% of the bandwidth. A software prefetch this far ahead (into L2; 2 KiB ahead does not help)
// restores it (measured on Zen 4 with a stand-alone copy of the normalize loop).
constexpr i64 kPrefetchBytes = 8192;

template <class T>
inline void prefetch_ahead(const T* p, i64 bytes = kPrefetchBytes) {
  __builtin_prefetch(reinterpret_cast<const char*>(p) + bytes, 0, 2);
}

// Rows per block of the statistics pass: rows of kBlockMinRowBytes and more are each a memory
// stream, and 4 of them at a time beat 8 ((8192, 1024) train -13%); shorter rows are one
// contiguous stream, where 8 rows per block do better (channels-last C = 64: -3%).
template <class X>
inline int block_rows(i64 W) {
  return W * static_cast<i64>(sizeof(X)) >= kBlockMinRowBytes ? kBlock / 2 : kBlock;
}

// Prefetch distance of the passes that read blocks of `rows` rows: at least the next block.
// Short rows are one contiguous stream, read at full speed only 16 KiB ahead (channels-last
// C = 64 train -15%, at 8 KiB the statistics pass ran at ~70% of a plain read); each wide row
// is a stream of its own, one block ahead (twice that measured no better at (8192, 1024)).
constexpr i64 kShortRowsPrefetchBytes = 16 * 1024;

template <class X>
inline i64 block_prefetch_bytes(i64 W, int rows) {
  const i64 ahead = W * static_cast<i64>(sizeof(X)) < kBlockMinRowBytes ? kShortRowsPrefetchBytes
                                                                        : kPrefetchBytes;
  return std::max<i64>(ahead, rows * W * static_cast<i64>(sizeof(X)));
}

// Rows whose per-lane constants outgrow L1 are normalized (or their dx computed) in strips of
// lanes over groups of kStripRows rows: (1024, 4096) eval read three 16 KiB constant arrays
// from L2 for every row (-25% with strips). Not the statistics passes: strips measured no
// faster there.
constexpr i64 kStripL1Bytes = 16 * 1024;  // a strip's per-lane constants, at most
constexpr i64 kStripRows = 64;

// Lanes per strip for rows of W lanes with `arrays` per-lane arrays (W itself if they fit).
template <class T>
inline i64 strip_lanes(i64 W, int arrays) {
  const i64 S = kStripL1Bytes / (arrays * static_cast<i64>(sizeof(T))) / 16 * 16;
  return W <= S + S / 2 ? W : S;
}

// Like for_lanes over dst[0, w), calling f(j, n, nt); nt marks full vectors that may be streamed.
template <class T, class F>
BNFAST_FLATTEN inline void for_lanes_out(i64 w, bool stream, F&& f) {
  constexpr int N = Vec<T>::N;
  i64 j = 0;
  for (; j + N <= w; j += N) f(j, N, stream);
  if (j < w) f(j, static_cast<int>(w - j), false);
}

template <class X>
inline void st_out(X* p, Vec<Compute<X>> v, int n, bool nt) {
  if (nt) {
    stream_st(p, v);
  } else {
    st(p, v, n);
  }
}

// Chan et al.: merging nb values (mean mb, M2 m2b) into na values (ma, m2a) is
//   ma += d * nb / n,  m2a += m2b + d^2 * na * nb / n,  with d = mb - ma, n = na + nb.
// The weights depend only on the counts: computed once per merged block, not per channel.
struct ChanWeights {
  double wb, wab;
  ChanWeights(double na, double nb) : wb(nb / (na + nb)), wab(na * nb / (na + nb)) {}
};
inline void chan_merge(const ChanWeights& w, double& ma, double& m2a, double mb, double m2b) {
  const double d = mb - ma;
  ma += d * w.wb;
  m2a += m2b + d * d * w.wab;
}

struct Plan {
  bool planes;
  i64 A, C, B, W;
  i64 R, nchunks, G;  // rows: chunk rows, chunks, groups
  i64 S, nseg;        // planes: segment length, segments per plane

  i64 group_begin(i64 g) const { return std::min(A, (g * nchunks / G) * R); }
  i64 units() const { return A * C * nseg; }
};

template <class X>
Plan make_plan(Shape3 s) {
  Plan p{};
  p.A = s.A;
  p.C = s.C;
  p.B = s.B;
  p.W = s.C * s.B;
  p.planes = s.B * static_cast<i64>(sizeof(X)) >= kPlaneMinBytes;
  if (p.planes) {
    p.S = kUnitBytes / static_cast<i64>(sizeof(X));
    p.nseg = (s.B + p.S - 1) / p.S;
  } else {
    p.R = kChunkRows;
    p.nchunks = (s.A + p.R - 1) / p.R;
    // Group partials (2 doubles per lane) stay under 1/8 of the input.
    const i64 cap = std::max<i64>(1, s.A * static_cast<i64>(sizeof(X)) / 128);
    p.G = std::max<i64>(1, std::min({p.nchunks, kMaxGroups, cap}));
  }
  return p;
}

// Per-lane copy of a per-channel array for the rows traversal: lane c * B + b gets v[c].
template <class T>
inline void expand(const Plan& p, const T* v, T* lanes) {
  // (N, C) rows are the common case: a copy (a fill of one value per channel ran at ~6 ns a
  // channel, 60% of a small eval call).
  if (p.B == 1) {
    std::copy(v, v + p.C, lanes);
    return;
  }
  for (i64 c = 0; c < p.C; ++c) {
    for (i64 b = 0; b < p.B; ++b) lanes[c * p.B + b] = v[c];
  }
}

template <class X>
inline int threads(const Plan& p, int arrays) {
  return threads_for(p.A * p.W * static_cast<i64>(sizeof(X)) * arrays);
}

// Strips of lanes [j0, j0 + w) over groups of kStripRows rows, for rows whose per-lane arrays
// do not fit L1 (S < W): f(r, j0, w) for each row and strip, groups on nt threads, then end().
template <class F, class End>
inline void for_row_strips(const Plan& p, i64 S, int nt, F&& f, End&& end) {
  parallel_for((p.A + kStripRows - 1) / kStripRows, nt,
               [&](i64 g) {
                 const i64 r1 = std::min(p.A, (g + 1) * kStripRows);
                 for (i64 j0 = 0; j0 < p.W; j0 += S) {
                   for (i64 r = g * kStripRows; r < r1; ++r) f(r, j0, std::min(S, p.W - j0));
                 }
               },
               end);
}

// ---- statistics -------------------------------------------------------------------------

// Merges the moments of rows x[0, nb) (nb <= block_rows, rows W apart) into the float chunk
// accumulators cm/cm2, which already hold na rows. The block's mean and M2 are computed
// two-pass from registers, so the rows are read from memory once; Chan's formula merges it.
template <class X, class T = Compute<X>>
inline void merge_block(const X* x, i64 W, int nb, i64 na, T* cm, T* cm2) {
  using V = Vec<T>;
  const i64 pf = block_prefetch_bytes<X>(W, block_rows<X>(W));
  const V inv = V::set1(T(1) / static_cast<T>(nb));
  const V wb = V::set1(static_cast<T>(static_cast<double>(nb) / static_cast<double>(na + nb)));
  const V wab =
      V::set1(static_cast<T>(static_cast<double>(na) * nb / static_cast<double>(na + nb)));
  // R: a full block of R rows (compile-time, so the loops unroll and v stays in registers), or
  // 0: `rows` rows.
  auto body = [&](auto full, i64 j, int k, int rows) {
    constexpr int R = decltype(full)::value;
    if constexpr (R > 0) rows = R;
    V v[kBlock];
    for (int i = 0; i < rows; ++i) {
      prefetch_ahead(x + i * W + j, pf);
      v[i] = ld(x + i * W + j, k);
    }
    V m, q;
    if constexpr (R > 0) {
      // A pairwise tree (short dependency chains keep many rows' loads in flight).
      V t[R];
      for (int i = 0; i < R; ++i) t[i] = v[i];
      for (int w = R / 2; w >= 1; w /= 2) {
        for (int i = 0; i < w; ++i) t[i] = t[2 * i] + t[2 * i + 1];
      }
      m = t[0] * inv;
      V q0 = (v[0] - m) * (v[0] - m), q1 = (v[1] - m) * (v[1] - m);
      for (int i = 2; i < R; i += 2) {
        q0 = fmadd(v[i] - m, v[i] - m, q0);
        q1 = fmadd(v[i + 1] - m, v[i + 1] - m, q1);
      }
      q = q0 + q1;
    } else {
      V s = v[0];
      for (int i = 1; i < rows; ++i) s = s + v[i];
      m = s * inv;
      q = V::zero();
      for (int i = 0; i < rows; ++i) q = fmadd(v[i] - m, v[i] - m, q);
    }
    if (na == 0) {
      st(cm + j, m, k);
      st(cm2 + j, q, k);
    } else {
      const V ma = ld(cm + j, k), d = m - ma;
      st(cm + j, fmadd(d, wb, ma), k);
      st(cm2 + j, ld(cm2 + j, k) + fmadd(d * d, wab, q), k);
    }
  };
  using Full8 = std::integral_constant<int, kBlock>;
  using Full4 = std::integral_constant<int, kBlock / 2>;
  if (nb == kBlock) {
    for_lanes<T>(W, [&](i64 j, int k) { body(Full8{}, j, k, nb); });
  } else if (nb == kBlock / 2) {
    for_lanes<T>(W, [&](i64 j, int k) { body(Full4{}, j, k, nb); });
  } else {
    for_lanes<T>(W, [&](i64 j, int k) { body(std::integral_constant<int, 0>{}, j, k, nb); });
  }
}

// Moments of rows [r0, r1) per lane, merged chunk by chunk into gmean/gm2 (W doubles each).
// Rows stream in blocks (block_rows): several rows in flight keep the memory system busy (one
// row at a time runs at half the read bandwidth), and the block is summed in registers.
template <class X>
void rows_moments(const X* x, const Plan& p, i64 r0, i64 r1, double* gmean, double* gm2) {
  using T = Compute<X>;
  const i64 W = p.W;
  const int rows = block_rows<X>(W);
  Scratch<T> cm(W, x), cm2(W, x, 3072);
  double ng = 0;
  for (i64 c0 = r0; c0 < r1; c0 += p.R) {
    const i64 c1 = std::min(c0 + p.R, r1);
    const double n = static_cast<double>(c1 - c0);
    for (i64 r = c0; r < c1; r += rows) {
      merge_block(x + r * W, W, static_cast<int>(std::min<i64>(rows, c1 - r)), r - c0, cm.data(),
                  cm2.data());
    }
    if (ng == 0) {
      for (i64 j = 0; j < W; ++j) {
        gmean[j] = cm[j];
        gm2[j] = cm2[j];
      }
    } else {
      const ChanWeights w(ng, n);
      for (i64 j = 0; j < W; ++j) chan_merge(w, gmean[j], gm2[j], cm[j], cm2[j]);
    }
    ng += n;
  }
}

template <class X, class T = Compute<X>>
inline T sum(const X* x, i64 n) {
  using V = Vec<T>;
  constexpr int N = V::N;
  V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  i64 i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    a0 = a0 + ld(x + i, N);
    a1 = a1 + ld(x + i + N, N);
    a2 = a2 + ld(x + i + 2 * N, N);
    a3 = a3 + ld(x + i + 3 * N, N);
  }
  for (; i < n; i += N) a0 = a0 + ld(x + i, static_cast<int>(std::min<i64>(N, n - i)));
  return reduce_add((a0 + a1) + (a2 + a3));
}

template <class X, class T = Compute<X>>
inline T sum_sq_dev(const X* x, i64 n, T m) {
  using V = Vec<T>;
  constexpr int N = V::N;
  const V vm = V::set1(m);
  V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  i64 i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    const V d0 = ld(x + i, N) - vm, d1 = ld(x + i + N, N) - vm;
    const V d2 = ld(x + i + 2 * N, N) - vm, d3 = ld(x + i + 3 * N, N) - vm;
    a0 = fmadd(d0, d0, a0);
    a1 = fmadd(d1, d1, a1);
    a2 = fmadd(d2, d2, a2);
    a3 = fmadd(d3, d3, a3);
  }
  for (; i < n; i += N) {
    // Masked-off lanes read the mean, so their deviation is 0.
    const V d = ld(x + i, static_cast<int>(std::min<i64>(N, n - i)), vm) - vm;
    a0 = fmadd(d, d, a0);
  }
  return reduce_add((a0 + a1) + (a2 + a3));
}

// Mean and M2 of plane segment u (planes traversal), two passes from cache.
template <class X>
inline void unit_moments(const X* x, const Plan& p, i64 u, double& mean, double& m2) {
  using T = Compute<X>;
  const i64 plane = u / p.nseg, k = u % p.nseg;
  const i64 b0 = k * p.S, n = std::min(p.S, p.B - b0);
  const X* seg = x + plane * p.B + b0;
  const T m = sum(seg, n) / static_cast<T>(n);
  mean = m;
  m2 = sum_sq_dev(seg, n, m);
}

// Merges the segments of channel c in (a, segment) order: unit(u, m, m2) gives each one's
// moments. Every path merges in this order, so fused and unfused runs agree bitwise.
template <class F>
inline void merge_channel_units(const Plan& p, i64 c, F&& unit, double& mean, double& var) {
  double n = 0, m = 0, m2 = 0;
  for (i64 a = 0; a < p.A; ++a) {
    for (i64 k = 0; k < p.nseg; ++k) {
      const i64 u = (a * p.C + c) * p.nseg + k;
      const double nu = static_cast<double>(std::min(p.S, p.B - k * p.S));
      double um, um2;
      unit(u, um, um2);
      if (n == 0) {
        m = um;
        m2 = um2;
      } else {
        chan_merge(ChanWeights(n, nu), m, m2, um, um2);
      }
      n += nu;
    }
  }
  mean = m;
  var = m2 / n;
}

// Per-channel mean and biased variance (double) of x.
template <class X>
void moments(const X* x, const Plan& p, double* mean, double* var) {
  const int nt = threads<X>(p, 1);
  if (!p.planes) {
    const i64 W = p.W;
    Scratch<double> gmean(p.G * W), gm2(p.G * W);
    parallel_for(p.G, nt, [&](i64 g) {
      rows_moments(x, p, p.group_begin(g), p.group_begin(g + 1), &gmean[g * W], &gm2[g * W]);
    });
    // Every channel merges the same counts in the same order: weights once per (group, b).
    const i64 GB = p.G * p.B;
    Scratch<double> wb(GB), wab(GB);
    double n = 0;
    for (i64 g = 0; g < p.G; ++g) {
      const double ng = static_cast<double>(p.group_begin(g + 1) - p.group_begin(g));
      for (i64 b = 0; b < p.B; ++b, n += ng) {
        const ChanWeights w(n, ng);
        wb[g * p.B + b] = w.wb;
        wab[g * p.B + b] = w.wab;
      }
    }
    // Channels innermost: independent lanes the compiler vectorizes (a channel-outer loop is
    // one long dependency chain per channel).
    for (i64 c = 0; c < p.C; ++c) {
      mean[c] = gmean[c * p.B];
      var[c] = gm2[c * p.B];
    }
    for (i64 g = 0; g < p.G; ++g) {
      for (i64 b = (g == 0 ? 1 : 0); b < p.B; ++b) {
        const double wbg = wb[g * p.B + b], wabg = wab[g * p.B + b];
        const double* gmj = &gmean[g * W + b];
        const double* gm2j = &gm2[g * W + b];
        for (i64 c = 0; c < p.C; ++c) {
          const double d = gmj[c * p.B] - mean[c];
          mean[c] += d * wbg;
          var[c] += gm2j[c * p.B] + d * d * wabg;
        }
      }
    }
    for (i64 c = 0; c < p.C; ++c) var[c] /= n;
    return;
  }
  const i64 U = p.units();
  Scratch<double> umean(U), um2(U);
  parallel_for(U, nt, [&](i64 u) { unit_moments(x, p, u, umean[u], um2[u]); });
  for (i64 c = 0; c < p.C; ++c) {
    merge_channel_units(
        p, c,
        [&](i64 u, double& m, double& m2) {
          m = umean[u];
          m2 = um2[u];
        },
        mean[c], var[c]);
  }
}

// ---- normalize --------------------------------------------------------------------------

// Normalizes plane segment u (planes traversal) with its channel's constants. With `prefetch`
// it also pulls the same segment of the next plane (the next channel) into L2, so the channel
// pipeline's statistics pass does not start every plane cold.
template <class X, class T>
inline void normalize_unit(const X* x, X* y, const Plan& p, i64 u, T mean, T scale, T shift,
                           bool stream, bool prefetch = false) {
  using V = Vec<T>;
  const i64 plane = u / p.nseg, k0 = u % p.nseg;
  const i64 b0 = k0 * p.S, n = std::min(p.S, p.B - b0);
  const X* xs = x + plane * p.B + b0;
  X* ys = y + plane * p.B + b0;
  const V m = V::set1(mean), s = V::set1(scale), b = V::set1(shift);
  const X* next = prefetch ? xs + p.B : nullptr;
  for_lanes_out<T>(n, stream, [&](i64 j, int k, bool nt) {
    if (next) __builtin_prefetch(next + j, 0, 2);  // interleaved with the stores
    st_out(ys + j, fmadd(ld(xs + j, k) - m, s, b), k, nt);
  });
}

// Rows of NV full vectors (channels-last with few channels: NHWC C = 64 is 4 vectors of
// float32 on AVX-512): the per-lane constants stay in registers for a whole work unit.
constexpr int kRegRowVectors = 4;
constexpr i64 kRegRowsPerUnit = 256;

template <int NV, class X, class T>
void normalize_short(const X* x, X* y, i64 A, const T* cm, const T* cs, const T* cb, bool stream,
                     int nt) {
  using V = Vec<T>;
  constexpr int N = V::N;
  constexpr i64 W = NV * N;
  parallel_for((A + kRegRowsPerUnit - 1) / kRegRowsPerUnit, nt,
               [&](i64 g) {
                 V m[NV], sc[NV], sh[NV];
                 for (int v = 0; v < NV; ++v) {
                   m[v] = V::load(cm + v * N);
                   sc[v] = V::load(cs + v * N);
                   sh[v] = V::load(cb + v * N);
                 }
                 const i64 r1 = std::min(A, (g + 1) * kRegRowsPerUnit);
                 for (i64 r = g * kRegRowsPerUnit; r < r1; ++r) {
                   for (int v = 0; v < NV; ++v) {
                     const i64 o = r * W + v * N;
                     st_out(y + o, fmadd(ld(x + o, N) - m[v], sc[v], sh[v]), N, stream);
                   }
                 }
               },
               [&] {
                 if (stream) stream_fence();
               });
}

// y = (x - mean[c]) * scale[c] + shift[c]; per-channel constants given in T.
template <class X, class T = Compute<X>>
void normalize(const X* x, X* y, const Plan& p, const T* mean, const T* scale, const T* shift) {
  using V = Vec<T>;
  const int nt = threads<X>(p, 2);
  const bool stream = stream_output(p, y, x);
  if (!p.planes) {
    const i64 W = p.W;
    Scratch<T> cm(W), cs(W), cb(W);
    expand(p, mean, cm.data());
    expand(p, scale, cs.data());
    expand(p, shift, cb.data());
    if (W % V::N == 0 && W <= kRegRowVectors * V::N) {
      switch (W / V::N) {
        case 1:
          return normalize_short<1>(x, y, p.A, cm.data(), cs.data(), cb.data(), stream, nt);
        case 2:
          return normalize_short<2>(x, y, p.A, cm.data(), cs.data(), cb.data(), stream, nt);
        case 3:
          return normalize_short<3>(x, y, p.A, cm.data(), cs.data(), cb.data(), stream, nt);
        default:
          return normalize_short<4>(x, y, p.A, cm.data(), cs.data(), cb.data(), stream, nt);
      }
    }
    auto end = [&] {
      if (stream) stream_fence();
    };
    if (const i64 S = strip_lanes<T>(W, 3); S < W) {
      const i64 pf = W * static_cast<i64>(sizeof(X));  // the next row's strip
      for_row_strips(
          p, S, nt,
          [&](i64 r, i64 j0, i64 w) {
            const X* xr = x + r * W + j0;
            X* yr = y + r * W + j0;
            const T *m = &cm[j0], *sc = &cs[j0], *sh = &cb[j0];
            for_lanes_out<T>(w, stream, [&](i64 j, int k, bool s) {
              prefetch_ahead(xr + j, pf);
              st_out(yr + j, fmadd(ld(xr + j, k) - ld(m + j, k), ld(sc + j, k), ld(sh + j, k)), k,
                     s);
            });
          },
          end);
      return;
    }
    parallel_for(
        p.A, nt,
        [&](i64 r) {
          const X* xr = x + r * W;
          X* yr = y + r * W;
          // Local pointers: a vector store may alias anything, so the compiler reloads the
          // Scratch members after every store (-9% on a cache-resident (256, 1024) eval).
          const T *m = cm.data(), *sc = cs.data(), *sh = cb.data();
          for_lanes_out<T>(W, stream, [&](i64 j, int k, bool s) {
            prefetch_ahead(xr + j);
            st_out(yr + j, fmadd(ld(xr + j, k) - ld(m + j, k), ld(sc + j, k), ld(sh + j, k)), k, s);
          });
        },
        end);
    return;
  }
  parallel_for(
      p.units(), nt,
      [&](i64 u) {
        const i64 c = (u / p.nseg) % p.C;
        normalize_unit(x, y, p, u, mean[c], scale[c], shift[c], stream);
      },
      [&] {
        if (stream) stream_fence();
      });
}

template <class X>
inline bool stream_output(const Plan& p, const X* out, const X* in) {
  return use_stream(out, in, p.A * p.W * i64(sizeof(X)), (p.planes ? p.B : p.W) * i64(sizeof(X)));
}

// Planes traversal with each channel's data small enough for L2: statistics, then the
// normalize (or dx) pass while the channel's planes are still in cache — one pass over memory.
// Channels are independent, so this is also bitwise independent of the thread count.
// The limit is this machine's L2 (1 MiB per core): NCHW (32, 64, 56, 56) backward, x and dy of a
// channel 802 KB, measured no slower fused than in two passes over memory, and up to 16%
// faster (2 threads).
constexpr i64 kChannelCacheBytes = 1024 * 1024;

template <class X>
inline bool channel_fused(const Plan& p, int arrays) {
  return p.planes && p.A * p.B * i64(sizeof(X)) * arrays <= kChannelCacheBytes;
}

// Normalize constants of channel c from its double mean/invstd and the optional affine
// parameters.
template <class T>
inline void affine_constants(i64 c, double mean, double invstd, const T* weight, const T* bias,
                             T* cm, T* cs, T* cb) {
  cm[c] = static_cast<T>(mean);
  cs[c] = static_cast<T>((weight ? static_cast<double>(weight[c]) : 1.0) * invstd);
  cb[c] = bias ? bias[c] : T(0);
}

// The part of the entry contract (contract.h) the three kernels share: the shape and x.
#define BNFAST_BN_EXPECT_SHAPE(a)                                          \
  BNFAST_EXPECT((a).s.A >= 0 && (a).s.C >= 0 && (a).s.B >= 0);             \
  BNFAST_EXPECT((a).s.C == 0 || (a).s.A * (a).s.B <= INT64_MAX / (a).s.C); \
  BNFAST_EXPECT((a).x != nullptr && (a).n_x >= (a).s.A * (a).s.C * (a).s.B)

template <class X>
void batch_norm_train(const BatchNormTrainArgs<X>& a) {
  using T = Compute<X>;
  BNFAST_BN_EXPECT_SHAPE(a);
  const i64 n = a.s.A * a.s.C * a.s.B, C = a.s.C;
  BNFAST_EXPECT(a.y != nullptr && a.save_mean != nullptr && a.save_invstd != nullptr);
  BNFAST_EXPECT_FITS(a.y, a.n_y, n);
  BNFAST_EXPECT_FITS(a.weight, a.n_weight, C);
  BNFAST_EXPECT_FITS(a.bias, a.n_bias, C);
  BNFAST_EXPECT_FITS(a.running_mean, a.n_running_mean, C);
  BNFAST_EXPECT_FITS(a.running_var, a.n_running_var, C);
  BNFAST_EXPECT_FITS(a.save_mean, a.n_save_mean, C);
  BNFAST_EXPECT_FITS(a.save_invstd, a.n_save_invstd, C);
  BNFAST_EXPECT(a.s.A * a.s.B != 1);
  if (a.s.A * a.s.B == 0) {  // no values: statistics of nothing, the running ones untouched
    std::fill(a.save_mean, a.save_mean + C, std::numeric_limits<T>::quiet_NaN());
    std::fill(a.save_invstd, a.save_invstd + C, std::numeric_limits<T>::quiet_NaN());
    return;
  }
  if (C == 0) return;
  const Plan p = make_plan<X>(a.s);
  const double M = static_cast<double>(p.A * p.B);
  Scratch<T> cm(C), cs(C), cb(C);
  // From channel c's batch statistics: saved stats, running stats, normalize constants.
  auto finish = [&](i64 c, double mean, double var, double invstd) {
    a.save_mean[c] = static_cast<T>(mean);
    a.save_invstd[c] = static_cast<T>(invstd);
    const double m = a.momentum;
    if (a.running_mean) {
      a.running_mean[c] = static_cast<T>((1 - m) * a.running_mean[c] + m * mean);
    }
    if (a.running_var) {
      a.running_var[c] = static_cast<T>((1 - m) * a.running_var[c] + m * var * M / (M - 1));
    }
    affine_constants(c, mean, invstd, a.weight, a.bias, cm.data(), cs.data(), cb.data());
  };
  if (channel_fused<X>(p, 1)) {
    const bool stream = stream_output(p, a.y, a.x);
    parallel_for(
        C, threads<X>(p, 2),
        [&](i64 c) {
          double mean, var;
          merge_channel_units(
              p, c, [&](i64 u, double& m, double& m2) { unit_moments(a.x, p, u, m, m2); }, mean,
              var);
          finish(c, mean, var, 1.0 / std::sqrt(var + a.eps));
          for (i64 aa = 0; aa < p.A; ++aa) {
            for (i64 k = 0; k < p.nseg; ++k) {
              normalize_unit(a.x, a.y, p, (aa * C + c) * p.nseg + k, cm[c], cs[c], cb[c], stream,
                             c + 1 < C);
            }
          }
        },
        [&] {
          if (stream) stream_fence();
        });
    return;
  }
  Scratch<double> mean(C), var(C), inv(C);
  moments(a.x, p, mean.data(), var.data());
  // A loop of its own vectorizes the square roots and divisions (the same values as scalar).
  for (i64 c = 0; c < C; ++c) inv[c] = 1.0 / std::sqrt(var[c] + a.eps);
  for (i64 c = 0; c < C; ++c) finish(c, mean[c], var[c], inv[c]);
  normalize(a.x, a.y, p, cm.data(), cs.data(), cb.data());
}

template <class X>
void batch_norm_eval(const BatchNormEvalArgs<X>& a) {
  using T = Compute<X>;
  BNFAST_BN_EXPECT_SHAPE(a);
  const i64 n = a.s.A * a.s.C * a.s.B, C = a.s.C;
  BNFAST_EXPECT(a.y != nullptr && a.save_mean != nullptr && a.save_invstd != nullptr);
  BNFAST_EXPECT(a.running_mean != nullptr && a.running_var != nullptr);
  BNFAST_EXPECT_FITS(a.y, a.n_y, n);
  BNFAST_EXPECT_FITS(a.weight, a.n_weight, C);
  BNFAST_EXPECT_FITS(a.bias, a.n_bias, C);
  BNFAST_EXPECT_FITS(a.running_mean, a.n_running_mean, C);
  BNFAST_EXPECT_FITS(a.running_var, a.n_running_var, C);
  BNFAST_EXPECT_FITS(a.save_mean, a.n_save_mean, C);
  BNFAST_EXPECT_FITS(a.save_invstd, a.n_save_invstd, C);
  const Plan p = make_plan<X>(a.s);
  Scratch<T> cm(C), cs(C), cb(C);
  Scratch<double> inv(C);
  for (i64 c = 0; c < C; ++c)
    inv[c] = 1.0 / std::sqrt(static_cast<double>(a.running_var[c]) + a.eps);
  for (i64 c = 0; c < C; ++c) {
    a.save_mean[c] = a.running_mean[c];
    a.save_invstd[c] = static_cast<T>(inv[c]);
    affine_constants(c, double(a.running_mean[c]), inv[c], a.weight, a.bias, cm.data(), cs.data(),
                     cb.data());
  }
  if (n == 0) return;  // the normalize's row-width dispatch assumes rows of at least one value
  normalize(a.x, a.y, p, cm.data(), cs.data(), cb.data());
}

// ---- backward ---------------------------------------------------------------------------

// sum(dy) and sum(dy * (x - mean)) over plane segment u (planes traversal).
template <class X, class T = Compute<X>>
inline void unit_grad_sums(const X* dy, const X* x, const Plan& p, i64 u, const T* mean, double& s1,
                           double& s2) {
  using V = Vec<T>;
  constexpr int N = V::N;
  const i64 plane = u / p.nseg, k0 = u % p.nseg;
  const i64 b0 = k0 * p.S, n = std::min(p.S, p.B - b0);
  const X* xs = x + plane * p.B + b0;
  const X* ds = dy + plane * p.B + b0;
  const V m = V::set1(mean[plane % p.C]);
  V a0 = V::zero(), a1 = V::zero(), b0v = V::zero(), b1v = V::zero();
  i64 i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const V d0 = ld(ds + i, N), d1 = ld(ds + i + N, N);
    a0 = a0 + d0;
    a1 = a1 + d1;
    b0v = fmadd(d0, ld(xs + i, N) - m, b0v);
    b1v = fmadd(d1, ld(xs + i + N, N) - m, b1v);
  }
  for (; i < n; i += N) {
    const int k = static_cast<int>(std::min<i64>(N, n - i));
    const V d = ld(ds + i, k);  // zero in masked-off lanes, so their products vanish
    a0 = a0 + d;
    b0v = fmadd(d, ld(xs + i, k) - m, b0v);
  }
  s1 = reduce_add(a0 + a1);
  s2 = reduce_add(b0v + b1v);
}

// Sums the segments of channel c in (a, segment) order, as merge_channel_units does.
template <class F>
inline void sum_channel_units(const Plan& p, i64 c, F&& unit, double& s1, double& s2) {
  double t1 = 0, t2 = 0;
  for (i64 a = 0; a < p.A; ++a) {
    for (i64 k = 0; k < p.nseg; ++k) {
      double u1, u2;
      unit((a * p.C + c) * p.nseg + k, u1, u2);
      t1 += u1;
      t2 += u2;
    }
  }
  s1 = t1;
  s2 = t2;
}

// dx of plane segment u: dy * k + (x - mean) * c1 + c0 with its channel's coefficients; with
// `prefetch`, pulls the next plane's segment of x and dy into L2 (see normalize_unit).
template <class X, class T>
inline void dx_unit(const BatchNormBackwardArgs<X>& a, const Plan& p, i64 u, T k, T c1, T c0,
                    bool stream, bool prefetch = false) {
  using V = Vec<T>;
  const i64 plane = u / p.nseg, k0 = u % p.nseg;
  const i64 b0 = k0 * p.S, n = std::min(p.S, p.B - b0);
  const i64 off = plane * p.B + b0;
  const V m = V::set1(a.mean[plane % p.C]), vk = V::set1(k), v1 = V::set1(c1), v0 = V::set1(c0);
  const X* dy = a.dy + off;
  const X* x = a.x + off;
  X* dx = a.dx + off;
  for_lanes_out<T>(n, stream, [&](i64 j, int w, bool s) {
    if (prefetch) {
      __builtin_prefetch(x + p.B + j, 0, 2);
      __builtin_prefetch(dy + p.B + j, 0, 2);
    }
    const V t = fmadd(ld(dy + j, w), vk, v0);
    st_out(dx + j, fmadd(ld(x + j, w) - m, v1, t), w, s);
  });
}

// Per-channel sum(dy) and sum(dy * (x - mean)) in double, rows traversal.
template <class X, class T>
void grad_sums_rows(const X* dy, const X* x, const Plan& p, const T* mean, double* sdy,
                    double* sdyx, int nt) {
  using V = Vec<T>;
  const i64 W = p.W;
  Scratch<T> cm(W);
  expand(p, mean, cm.data());
  Scratch<double> g1(p.G * W), g2(p.G * W);
  parallel_for(p.G, nt, [&](i64 g) {
    Scratch<T> a1(W, x, 1344), a2(W, x, 2752);
    double* s1 = &g1[g * W];
    double* s2 = &g2[g * W];
    std::fill(s1, s1 + W, 0.0);
    std::fill(s2, s2 + W, 0.0);
    const i64 r1 = p.group_begin(g + 1);
    for (i64 c0 = p.group_begin(g); c0 < r1; c0 += p.R) {
      // Row-major streaming with accumulators in L1 (strided walks defeat the prefetcher),
      // kBlock rows at a time (see rows_moments).
      std::fill(a1.data(), a1.data() + W, T(0));
      std::fill(a2.data(), a2.data() + W, T(0));
      const i64 c1 = std::min(c0 + p.R, r1);
      const bool wide = W * static_cast<i64>(sizeof(X)) >= kBlockMinRowBytes;
      const i64 pf = wide ? block_prefetch_bytes<X>(W, kBlock) : 0;  // short: measured slower
      // `rows` is a compile-time count, so the loop over rows unrolls into registers.
      auto block = [&](i64 r, auto rows_c) {
        constexpr int rows = decltype(rows_c)::value;
        const X* xr = x + r * W;
        const X* dr = dy + r * W;
        for_lanes<T>(W, [&](i64 j, int k) {
          const V m = ld(&cm[j], k);
          // Two chains each: short dependency chains keep many rows' loads in flight.
          V t1[2] = {V::zero(), V::zero()}, t2[2] = {V::zero(), V::zero()};
          for (int i = 0; i < rows; ++i) {
            if (pf) {
              prefetch_ahead(dr + i * W + j, pf);
              prefetch_ahead(xr + i * W + j, pf);
            }
            const V d = ld(dr + i * W + j, k);
            t1[i & 1] = t1[i & 1] + d;
            t2[i & 1] = fmadd(d, ld(xr + i * W + j, k) - m, t2[i & 1]);
          }
          st(&a1[j], ld(&a1[j], k) + (t1[0] + t1[1]), k);
          st(&a2[j], ld(&a2[j], k) + (t2[0] + t2[1]), k);
        });
      };
      using Wide = std::integral_constant<int, kBlock>;
      using Short = std::integral_constant<int, 2>;
      i64 r = c0;
      if (wide) {
        for (; r + Wide::value <= c1; r += Wide::value) block(r, Wide{});
      } else {
        for (; r + Short::value <= c1; r += Short::value) block(r, Short{});
      }
      for (; r < c1; ++r) block(r, std::integral_constant<int, 1>{});
      for (i64 j = 0; j < W; ++j) {
        s1[j] += a1[j];
        s2[j] += a2[j];
      }
    }
  });
  // Channels innermost, as in moments.
  std::fill(sdy, sdy + p.C, 0.0);
  std::fill(sdyx, sdyx + p.C, 0.0);
  for (i64 g = 0; g < p.G; ++g) {
    for (i64 b = 0; b < p.B; ++b) {
      for (i64 c = 0; c < p.C; ++c) {
        sdy[c] += g1[g * W + c * p.B + b];
        sdyx[c] += g2[g * W + c * p.B + b];
      }
    }
  }
}

// The same, planes traversal.
template <class X, class T>
void grad_sums_planes(const X* dy, const X* x, const Plan& p, const T* mean, double* sdy,
                      double* sdyx, int nt) {
  const i64 U = p.units();
  Scratch<double> u1(U), u2(U);
  parallel_for(U, nt, [&](i64 u) { unit_grad_sums(dy, x, p, u, mean, u1[u], u2[u]); });
  for (i64 c = 0; c < p.C; ++c) {
    sum_channel_units(
        p, c,
        [&](i64 u, double& t1, double& t2) {
          t1 = u1[u];
          t2 = u2[u];
        },
        sdy[c], sdyx[c]);
  }
}

// Per-channel sum(dy) and sum(dy * (x - mean)) in double.
template <class X, class T>
void grad_sums(const X* dy, const X* x, const Plan& p, const T* mean, double* sdy, double* sdyx) {
  const int nt = threads<X>(p, 2);
  if (p.planes) {
    grad_sums_planes(dy, x, p, mean, sdy, sdyx, nt);
  } else {
    grad_sums_rows(dy, x, p, mean, sdy, sdyx, nt);
  }
}

// Backward with each channel's sums and dx in one task while its planes are in cache
// (channel_fused): finish(c, sdy, sdyx) turns the sums into dx's coefficients k, c1, c0.
template <class X, class Finish, class T>
void backward_fused(const BatchNormBackwardArgs<X>& a, const Plan& p, bool need_sums,
                    Finish&& finish, const T* k, const T* c1, const T* c0, bool stream, int nt) {
  const i64 C = p.C;
  parallel_for(
      C, nt,
      [&](i64 c) {
        double sdy = 0, sdyx = 0;
        if (need_sums) {
          sum_channel_units(
              p, c,
              [&](i64 u, double& t1, double& t2) {
                unit_grad_sums(a.dy, a.x, p, u, a.mean, t1, t2);
              },
              sdy, sdyx);
        }
        finish(c, sdy, sdyx);
        for (i64 aa = 0; aa < p.A; ++aa) {
          for (i64 s = 0; s < p.nseg; ++s) {
            dx_unit(a, p, (aa * C + c) * p.nseg + s, k[c], c1[c], c0[c], stream, c + 1 < C);
          }
        }
      },
      [&] {
        if (stream) stream_fence();
      });
}

// dx = dy * k + (x - mean) * c1 + c0 with per-channel coefficients, rows traversal.
template <class X, class T>
void dx_rows(const BatchNormBackwardArgs<X>& a, const Plan& p, const T* k, const T* c1, const T* c0,
             bool stream, int nt) {
  using V = Vec<T>;
  const i64 W = p.W;
  Scratch<T> wm(W), wk(W), w1(W), w0(W);
  expand(p, a.mean, wm.data());
  expand(p, k, wk.data());
  expand(p, c1, w1.data());
  expand(p, c0, w0.data());
  auto end = [&] {
    if (stream) stream_fence();
  };
  if (const i64 S = strip_lanes<T>(W, 4); S < W) {
    const i64 pf = W * static_cast<i64>(sizeof(X));  // the next row's strip
    for_row_strips(
        p, S, nt,
        [&](i64 r, i64 j0, i64 w) {
          const X* xr = a.x + r * W + j0;
          const X* dr = a.dy + r * W + j0;
          X* out = a.dx + r * W + j0;
          const T *m = &wm[j0], *ck = &wk[j0], *cc1 = &w1[j0], *cc0 = &w0[j0];
          for_lanes_out<T>(w, stream, [&](i64 j, int n, bool s) {
            prefetch_ahead(xr + j, pf);
            prefetch_ahead(dr + j, pf);
            const V t = fmadd(ld(dr + j, n), ld(ck + j, n), ld(cc0 + j, n));
            st_out(out + j, fmadd(ld(xr + j, n) - ld(m + j, n), ld(cc1 + j, n), t), n, s);
          });
        },
        end);
    return;
  }
  parallel_for(
      p.A, nt,
      [&](i64 r) {
        const X* xr = a.x + r * W;
        const X* dr = a.dy + r * W;
        X* out = a.dx + r * W;
        for_lanes_out<T>(W, stream, [&](i64 j, int n, bool s) {
          prefetch_ahead(xr + j);
          prefetch_ahead(dr + j);
          const V t = fmadd(ld(dr + j, n), ld(&wk[j], n), ld(&w0[j], n));
          st_out(out + j, fmadd(ld(xr + j, n) - ld(&wm[j], n), ld(&w1[j], n), t), n, s);
        });
      },
      end);
}

// The same, planes traversal.
template <class X, class T>
void dx_planes(const BatchNormBackwardArgs<X>& a, const Plan& p, const T* k, const T* c1,
               const T* c0, bool stream, int nt) {
  const i64 C = p.C;
  parallel_for(
      p.units(), nt,
      [&](i64 u) {
        const i64 c = (u / p.nseg) % C;
        dx_unit(a, p, u, k[c], c1[c], c0[c], stream);
      },
      [&] {
        if (stream) stream_fence();
      });
}

template <class X>
void batch_norm_backward(const BatchNormBackwardArgs<X>& a) {
  using T = Compute<X>;
  BNFAST_BN_EXPECT_SHAPE(a);
  const i64 n = a.s.A * a.s.C * a.s.B, C = a.s.C;
  BNFAST_EXPECT(a.dy != nullptr && a.mean != nullptr && a.invstd != nullptr);
  BNFAST_EXPECT_FITS(a.dy, a.n_dy, n);
  BNFAST_EXPECT_FITS(a.dx, a.n_dx, n);
  BNFAST_EXPECT_FITS(a.mean, a.n_mean, C);
  BNFAST_EXPECT_FITS(a.invstd, a.n_invstd, C);
  BNFAST_EXPECT_FITS(a.weight, a.n_weight, C);
  BNFAST_EXPECT_FITS(a.dweight, a.n_dweight, C);
  BNFAST_EXPECT_FITS(a.dbias, a.n_dbias, C);
  BNFAST_EXPECT(!a.training || a.s.A * a.s.B != 1);
  if (n == 0) {  // sums over no values
    if (a.dweight) std::fill(a.dweight, a.dweight + C, T(0));
    if (a.dbias) std::fill(a.dbias, a.dbias + C, T(0));
    return;
  }
  const Plan p = make_plan<X>(a.s);
  const bool need_sums = a.training || a.dweight || a.dbias;
  const double M = static_cast<double>(p.A * p.B);
  const bool stream = a.dx && stream_output(p, a.dx, a.x) && a.dx != a.dy;
  const int nt = threads<X>(p, 3);
  Scratch<T> k(C), c1(C), c0(C);
  // From channel c's sums: dweight, dbias and the coefficients of
  // dx = dy * k + (x - mean) * c1 + c0.
  auto finish = [&](i64 c, double sdy, double sdyx) {
    if (a.dweight) a.dweight[c] = static_cast<T>(sdyx * a.invstd[c]);
    if (a.dbias) a.dbias[c] = static_cast<T>(sdy);
    const double is = a.invstd[c];
    const double kc = (a.weight ? static_cast<double>(a.weight[c]) : 1.0) * is;
    k[c] = static_cast<T>(kc);
    c1[c] = a.training ? static_cast<T>(-kc * is * is * sdyx / M) : T(0);
    c0[c] = a.training ? static_cast<T>(-kc * sdy / M) : T(0);
  };
  if (a.dx && channel_fused<X>(p, 2)) {
    backward_fused(a, p, need_sums, finish, k.data(), c1.data(), c0.data(), stream, nt);
    return;
  }
  Scratch<double> sdy(C), sdyx(C);
  if (need_sums) {
    grad_sums(a.dy, a.x, p, a.mean, sdy.data(), sdyx.data());
  } else {
    std::fill(sdy.data(), sdy.data() + C, 0.0);
    std::fill(sdyx.data(), sdyx.data() + C, 0.0);
  }
  for (i64 c = 0; c < C; ++c) finish(c, sdy[c], sdyx[c]);
  if (!a.dx) return;
  if (p.planes) {
    dx_planes(a, p, k.data(), c1.data(), c0.data(), stream, nt);
  } else {
    dx_rows(a, p, k.data(), c1.data(), c0.data(), stream, nt);
  }
}

}  // namespace

BatchNormKernels batch_norm_kernels() {
  return {{&batch_norm_train<float>, &batch_norm_eval<float>, &batch_norm_backward<float>},
          {&batch_norm_train<double>, &batch_norm_eval<double>, &batch_norm_backward<double>},
          {&batch_norm_train<bf16>, &batch_norm_eval<bf16>, &batch_norm_backward<bf16>}};
}

}  // namespace BNFAST_NS
}  // namespace bnfast
