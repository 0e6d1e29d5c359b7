// Tile-based alpha compositing of projected 2D Gaussians on the CPU, forward and backward.
//
// Plain C ABI (no torch headers): the library compiles in about a second and is called through
// ctypes with raw pointers to contiguous tensors that Python allocated and validated.
//
// Rules (render contract, stage B), identical to the plain-torch reference:
//   - Gaussians are visited front to back in the order given (ascending depth, ties by index);
//     the caller passes only Gaussians with radius > 0.
//   - Gaussian i touches pixel (x, y) only if |x + 0.5 - mx| <= r and |y + 0.5 - my| <= r.
//   - power = -0.5 * (a dx^2 + c dy^2) - b dx dy; skipped unless power <= 0.
//   - alpha = min(0.99, opacity * exp(power)); skipped unless alpha >= 1/255.
//   - if T * (1 - alpha) < 1e-4 the pixel stops (this Gaussian is not composited).
//   - w = alpha * T; C += w f; T *= (1 - alpha).
// Arithmetic is written in the reference's operation order and must be compiled without
// floating-point contraction (-ffp-contract=off), so that each skip/stop decision is the same.
//
// Layout:
//   - Packing: the visible Gaussians are copied in depth order into one array of small structs
//     (plus a feature array), so the tile loops read memory front to back instead of gathering
//     from six arrays at random.
//   - Binning: the image is cut into 16x16 tiles; every tile gets the list of (packed) Gaussians
//     whose conservatively widened 3-sigma box meets it, in depth order.
//   - Tiles: one tile row (16 pixels) is one SIMD value. For each Gaussian the rows of its exact
//     box are visited, minus the rows where no pixel can reach alpha >= 1/255 (ellipse test) and,
//     in the forward pass, rows whose pixels have all stopped.
//   - Threads: a pool of std::threads pulls tile indices from an atomic counter (central tiles are
//     far heavier than border tiles, so static splitting would leave threads idle).
//   - Backward walks each tile's list back to front, reconstructing T by division as 3DGS does,
//     and sums each Gaussian's gradient over the tile in SIMD lanes. The sum is stored in the
//     slot of that (tile, Gaussian) pair (each Gaussian's slots are contiguous, one per tile of
//     its box in row-major order); a second pass adds every Gaussian's slots in that order, so
//     gradients are bitwise reproducible for any thread count. When the pair buffer would exceed
//     the caller's budget (1 GB by default), each thread adds into its own per-Gaussian buffer
//     instead (or, past 512 MB for those, one shared buffer with atomic adds): the summation
//     order then depends on the thread schedule, so the last bits may differ between runs.
//   - Depth sort: a single-threaded radix sort on order-preserving integer keys.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

constexpr int kTile = 16;

template <typename Fn>
void run_parallel(int64_t n_items, int n_threads, Fn&& fn) {
  // fn(item, thread_slot) for every item, dynamically scheduled over up to n_threads threads.
  if (n_items <= 0) return;
  const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_threads, n_items)));
  std::atomic<int64_t> next{0};
  auto worker = [&](int slot) {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_items) break;
      fn(i, slot);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(nt - 1);
  try {
    for (int t = 1; t < nt; ++t) pool.emplace_back(worker, t);
  } catch (...) {
    // Could not start more threads: the ones running (and this one) finish the work.
  }
  worker(0);
  for (auto& th : pool) th.join();
}

template <typename T>
inline void atomic_add(T* addr, T value) {
  T expected;
  __atomic_load(addr, &expected, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = expected + value;
  } while (!__atomic_compare_exchange(addr, &expected, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

// One visible Gaussian in depth order. `reach` is the row-pruning threshold on the quadratic form
// q = a dx^2 + 2 b dx dy + c dy^2: a pixel can only pass alpha >= 1/255 where q <= 2 ln(255 op).
// It adds margins that cover the rounding of the kernel's S-typed evaluation of q (each term
// rounded a few times: 1e-6 of the sum of absolute terms over the box), of exp and of the
// threshold itself, and is rounded up to S, so pruning never drops a pixel the exact test keeps.
// +inf: conic not positive definite (no pruning); negative: the Gaussian can never pass.
template <typename S>
struct Splat {
  S mx, my, a, b, c, op, r, reach;
};

template <typename S>
S pruning_reach(S a_, S b_, S c_, S op_, S r_) {
  const double a = a_, b = b_, c = c_, op = op_;
  const double det = a * c - b * b;
  if (!std::isfinite(a) || !std::isfinite(b) || !std::isfinite(c) || !std::isfinite(op) ||
      !(a > 0) || !(det > 0))
    return static_cast<S>(HUGE_VAL);
  if (!(op > 0)) return S(-1);
  const double t = 2.0 * std::log(255.0 * op);
  const double rr = static_cast<double>(r_) + 1.0;
  const double terms = (std::fabs(a) + std::fabs(c) + 2.0 * std::fabs(b)) * rr * rr;
  const double reach = t + 1e-3 * std::fabs(t) + 1e-4 + 1e-6 * terms;
  S out = static_cast<S>(reach);
  if (static_cast<double>(out) < reach) out = std::nextafter(out, static_cast<S>(HUGE_VAL));
  return out;
}

template <typename S>
void pack(const S* means2d, const S* conics, const S* opac, const S* feat, const int64_t* rad,
          const int64_t* order, int64_t n_vis, int64_t C, int n_threads, Splat<S>* sp, S* fp) {
  const int64_t chunk = 2048;
  run_parallel((n_vis + chunk - 1) / chunk, n_threads, [&](int64_t ci, int) {
    const int64_t end = std::min(n_vis, (ci + 1) * chunk);
    for (int64_t s = ci * chunk; s < end; ++s) {
      const int64_t g = order[s];
      Splat<S>& o = sp[s];
      o.mx = means2d[2 * g], o.my = means2d[2 * g + 1];
      o.a = conics[3 * g], o.b = conics[3 * g + 1], o.c = conics[3 * g + 2];
      o.op = opac[g];
      o.r = static_cast<S>(rad[s]);
      o.reach = pruning_reach<S>(o.a, o.b, o.c, o.op, o.r);
      std::memcpy(fp + s * C, feat + g * C, sizeof(S) * C);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Depth order of the visible Gaussians
// ---------------------------------------------------------------------------------------------

// Unsigned key with the order of the float (NaN after +inf, -0.0 == 0.0), as torch sorts.
inline uint32_t order_key(float d) {
  uint32_t u;
  if (std::isnan(d)) {
    u = 0x7FC00000u;
  } else {
    d = d + 0.0f;  // -0.0 -> +0.0
    std::memcpy(&u, &d, sizeof(u));
  }
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t order_key(double d) {
  uint64_t u;
  if (std::isnan(d)) {
    u = 0x7FF8000000000000ull;
  } else {
    d = d + 0.0;
    std::memcpy(&u, &d, sizeof(u));
  }
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// Indices g with radius > 0, stably sorted by depth (ties keep index order), and their radii.
// LSD radix sort, 8 bits per pass, passes where every key has the same byte skipped. Single
// threaded on purpose: ~1 ms at 100k, and no thread pool to wake up.
template <typename D, typename R>
int64_t visible_order(const D* depths, const R* radii, int64_t n, int64_t* order, int64_t* rad) {
  using K = decltype(order_key(D()));
  std::vector<K> keys, keys2;
  std::vector<int64_t> idx2;
  keys.reserve(static_cast<size_t>(n));
  int64_t v = 0;
  for (int64_t g = 0; g < n; ++g) {
    if (radii[g] > 0) {
      order[v++] = g;
      keys.push_back(order_key(depths[g]));
    }
  }
  keys2.resize(static_cast<size_t>(v));
  idx2.resize(static_cast<size_t>(v));
  int64_t* src_i = order;
  int64_t* dst_i = idx2.data();
  K* src_k = keys.data();
  K* dst_k = keys2.data();
  for (int shift = 0; shift < static_cast<int>(8 * sizeof(K)); shift += 8) {
    int64_t count[257] = {0};
    for (int64_t i = 0; i < v; ++i) ++count[((src_k[i] >> shift) & 0xFF) + 1];
    bool trivial = false;
    for (int b = 1; b <= 256; ++b) trivial |= count[b] == v;
    if (trivial) continue;  // all keys share this byte
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (int64_t i = 0; i < v; ++i) {
      const int64_t pos = count[(src_k[i] >> shift) & 0xFF]++;
      dst_k[pos] = src_k[i];
      dst_i[pos] = src_i[i];
    }
    std::swap(src_k, dst_k);
    std::swap(src_i, dst_i);
  }
  if (src_i != order) std::memcpy(order, src_i, sizeof(int64_t) * v);
  for (int64_t s = 0; s < v; ++s) rad[s] = static_cast<int64_t>(radii[order[s]]);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Binning
// ---------------------------------------------------------------------------------------------

// Conservative tile rectangle of one Gaussian, or false when it meets no pixel.
template <typename S>
inline bool tile_rect(S mx, S my, int64_t r, int W, int H, int tiles_x, int tiles_y,
                      int32_t* rect) {
  if (r <= 0 || !std::isfinite(mx) || !std::isfinite(my)) return false;
  const double rd = static_cast<double>(static_cast<S>(r));
  // Widen by more than the rounding of the S-typed per-pixel test (one pixel, or several ulps of
  // the coordinates when they are huge) so that binning never drops a pixel the test accepts.
  const double sx = 1.0 + 1e-6 * (std::fabs(static_cast<double>(mx)) + rd);
  const double sy = 1.0 + 1e-6 * (std::fabs(static_cast<double>(my)) + rd);
  double x0 = std::floor(static_cast<double>(mx) - rd - 0.5 - sx);
  double x1 = std::ceil(static_cast<double>(mx) + rd - 0.5 + sx);
  double y0 = std::floor(static_cast<double>(my) - rd - 0.5 - sy);
  double y1 = std::ceil(static_cast<double>(my) + rd - 0.5 + sy);
  x0 = std::max(x0, 0.0);
  y0 = std::max(y0, 0.0);
  x1 = std::min(x1, static_cast<double>(W - 1));
  y1 = std::min(y1, static_cast<double>(H - 1));
  if (!(x0 <= x1) || !(y0 <= y1)) return false;
  rect[0] = static_cast<int32_t>(x0) / kTile;
  rect[1] = std::min(static_cast<int32_t>(x1) / kTile, tiles_x - 1);
  rect[2] = static_cast<int32_t>(y0) / kTile;
  rect[3] = std::min(static_cast<int32_t>(y1) / kTile, tiles_y - 1);
  return true;
}

// Binning runs in parallel over n_chunks contiguous depth-order chunks: each chunk counts its
// entries per tile (chunk_counts [n_chunks, tiles]); bin_fill turns the counts into per-chunk
// write cursors, so every chunk writes its own slots and each tile list stays in depth order.
inline int64_t chunk_begin(int64_t c, int64_t n_chunks, int64_t n) { return c * n / n_chunks; }

template <typename S>
int64_t bin_count(const S* means2d, const int64_t* rad, const int64_t* order, int64_t n_vis,
                  int W, int H, int64_t n_chunks, int n_threads, int64_t* chunk_counts,
                  int32_t* rects) {
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  const int64_t n_tiles = (int64_t)tiles_x * tiles_y;
  std::vector<int64_t> totals(static_cast<size_t>(n_chunks), 0);
  run_parallel(n_chunks, n_threads, [&](int64_t c, int) {
    int64_t* counts = chunk_counts + c * n_tiles;
    int64_t total = 0;
    const int64_t end = chunk_begin(c + 1, n_chunks, n_vis);
    for (int64_t s = chunk_begin(c, n_chunks, n_vis); s < end; ++s) {
      const int64_t g = order[s];
      int32_t* rect = rects + 4 * s;
      const S mx = means2d[2 * g], my = means2d[2 * g + 1];
      if (!tile_rect<S>(mx, my, rad[s], W, H, tiles_x, tiles_y, rect)) {
        rect[0] = 0, rect[1] = -1, rect[2] = 0, rect[3] = -1;
        continue;
      }
      for (int ty = rect[2]; ty <= rect[3]; ++ty)
        for (int tx = rect[0]; tx <= rect[1]; ++tx) counts[ty * tiles_x + tx] += 1;
      total += static_cast<int64_t>(rect[1] - rect[0] + 1) * (rect[3] - rect[2] + 1);
    }
    totals[c] = total;
  });
  int64_t total = 0;
  for (int64_t t : totals) total += t;
  return total;
}

// Fills offsets [tiles + 1] and the tile lists with packed (depth-order) positions.
void bin_fill(const int32_t* rects, int64_t n_vis, int W, int H, int64_t n_chunks, int n_threads,
              int64_t* chunk_counts, int64_t* offsets, int32_t* tile_ids) {
  const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
  const int64_t n_tiles = (int64_t)tiles_x * tiles_y;
  int64_t pos = 0;
  for (int64_t t = 0; t < n_tiles; ++t) {
    offsets[t] = pos;
    for (int64_t c = 0; c < n_chunks; ++c) {  // counts -> cursors
      const int64_t n = chunk_counts[c * n_tiles + t];
      chunk_counts[c * n_tiles + t] = pos;
      pos += n;
    }
  }
  offsets[n_tiles] = pos;
  run_parallel(n_chunks, n_threads, [&](int64_t c, int) {
    int64_t* cursor = chunk_counts + c * n_tiles;
    const int64_t end = chunk_begin(c + 1, n_chunks, n_vis);
    for (int64_t s = chunk_begin(c, n_chunks, n_vis); s < end; ++s) {
      const int32_t* rect = rects + 4 * s;
      for (int ty = rect[2]; ty <= rect[3]; ++ty)
        for (int tx = rect[0]; tx <= rect[1]; ++tx)
          tile_ids[cursor[ty * tiles_x + tx]++] = static_cast<int32_t>(s);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Per-tile geometry helpers
// ---------------------------------------------------------------------------------------------

struct TileGeom {
  int x0, y0, w, h;
};

inline TileGeom tile_geom(int64_t t, int tiles_x, int W, int H) {
  TileGeom g;
  g.x0 = static_cast<int>(t % tiles_x) * kTile;
  g.y0 = static_cast<int>(t / tiles_x) * kTile;
  g.w = std::min(kTile, W - g.x0);
  g.h = std::min(kTile, H - g.y0);
  return g;
}

// Exact pixel range [lo, hi] (inclusive) inside [start, end) with |p + 0.5 - m| <= r, evaluated
// in S exactly as the per-pixel box test. The passing pixels form an interval: estimate its ends
// in double, then move them to where the S test switches (normally zero or one step).
template <typename S>
inline bool exact_range(S m, S r, int start, int end, int& lo, int& hi) {
  auto pass = [m, r](int p) {
    return std::abs((static_cast<S>(p) + static_cast<S>(0.5)) - m) <= r;
  };
  const double md = static_cast<double>(m), rd = static_cast<double>(r);
  const double flo = std::max(std::ceil(md - rd - 0.5), static_cast<double>(start));
  const double fhi = std::min(std::floor(md + rd - 0.5), static_cast<double>(end - 1));
  if (!(flo <= fhi + 2.0 + 1e-6 * (std::fabs(md) + rd))) return false;  // also false for NaN
  int l = static_cast<int>(std::min(flo, static_cast<double>(end))), h;
  while (l > start && pass(l - 1)) --l;
  while (l < end && !pass(l)) ++l;
  h = std::max(static_cast<int>(std::max(fhi, static_cast<double>(start) - 1.0)), l - 1);
  while (h + 1 < end && pass(h + 1)) ++h;
  while (h >= l && !pass(h)) --h;
  lo = l, hi = h;
  return l <= h;
}

// Row pruning for one (tile, Gaussian): false when no lane of a row (offset dy, lane offsets dx in
// [dx_lo, dx_hi]) can pass. q(dx) = a (dx - centre)^2 + det/a dy^2 with centre = -b dy / a is
// smallest at the lane nearest the centre.
struct RowTest {
  double reach, a, b_over_a, det_over_a, dx_lo, dx_hi;
  bool prune;
  template <typename S>
  RowTest(const Splat<S>& g, double dx_lo_, double dx_hi_)
      : reach(g.reach), a(g.a), b_over_a(0), det_over_a(0), dx_lo(dx_lo_), dx_hi(dx_hi_),
        prune(std::isfinite(static_cast<double>(g.reach))) {
    if (prune) {
      const double ad = g.a, bd = g.b, cd = g.c;
      b_over_a = bd / ad;
      det_over_a = (ad * cd - bd * bd) / ad;
    }
  }
  bool may_pass(double dy) const {
    if (!prune) return true;
    const double centre = -b_over_a * dy;
    const double x = std::min(std::max(centre, dx_lo), dx_hi);
    return a * (x - centre) * (x - centre) + det_over_a * dy * dy <= reach;
  }
};

// ---------------------------------------------------------------------------------------------
// SIMD lanes: GCC/clang vector extensions make the lane-parallel code explicit instead of relying
// on auto-vectorisation, which gives up on the masked logic below; without AVX the compiler
// lowers each 16-lane operation to several narrower ones.
// ---------------------------------------------------------------------------------------------

template <typename S>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(kTile * sizeof(float))));
  typedef int32_t I __attribute__((vector_size(kTile * sizeof(int32_t))));  // masks / ints
};
template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(kTile * sizeof(double))));
  typedef int64_t I __attribute__((vector_size(kTile * sizeof(int64_t))));
};

template <typename Vec>
using lane_t = std::remove_reference_t<decltype(std::declval<Vec>()[0])>;

template <typename Vec, typename X>
inline Vec splat(X value) {
  return Vec{} + static_cast<lane_t<Vec>>(value);
}

// Masks hold 0 or -1 (all bits set) per lane. OR-ing 64-bit words compiles to a few
// instructions, where a lane-by-lane test becomes dozens of lane extractions.
template <typename Vec>
inline bool any_lane(Vec m) {
  constexpr int kWords = sizeof(Vec) / sizeof(uint64_t);
  uint64_t w[kWords];
  std::memcpy(w, &m, sizeof(Vec));
  uint64_t acc = 0;
  for (int i = 0; i < kWords; ++i) acc |= w[i];
  return acc != 0;
}

template <typename Vec>
inline bool all_lanes(Vec m) {
  return !any_lane(~m);
}

template <typename V>
inline lane_t<V> lane_sum(V v) {
  lane_t<V> s = 0;
  for (int i = 0; i < kTile; ++i) s += v[i];
  return s;
}

template <typename V>
inline V vabs(V v) {
  return v < 0 ? -v : v;
}

// exp(x) for x <= 0 on 16 float lanes, branch-free (Cephes' single-precision scheme:
// exp(x) = 2^n exp(r), |r| <= ln2/2, degree-6 polynomial; about 1 ulp from the correctly rounded
// value on [-87, 0]; inputs below -87, NaN included, are treated as -87, giving ~1.6e-38).
// Callers reject NaN and positive powers through their own masks.
inline Lanes<float>::V exp_nonpos(Lanes<float>::V x) {
  using V = Lanes<float>::V;
  using I = Lanes<float>::I;
  x = x > -87.0f ? x : splat<V>(-87.0f);
  x = x < 0.0f ? x : splat<V>(0.0f);
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick (exact for |v| < 2^22).
  const V n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const V r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V e = p * (r * r) + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}
inline Lanes<double>::V exp_nonpos(Lanes<double>::V x) {
  Lanes<double>::V y;
  for (int i = 0; i < kTile; ++i) y[i] = std::exp(x[i]);
  return y;
}

template <typename S>
struct Ctx {
  const Splat<S>* sp;           // [V] packed Gaussians, depth order
  const S* fp;                  // [V, C] packed features
  int64_t C;
  int W, H;
  const int64_t* tile_offsets;  // [tiles + 1]
  const int32_t* tile_ids;      // [M] packed positions
};

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <typename S>
void forward_tile(const Ctx<S>& P, int64_t t, const int64_t* order, S* image, S* alpha_out,
                  S* T_out, int32_t* last_out, int64_t* top_out,
                  std::vector<typename Lanes<S>::V>& scratch) {
  using V = typename Lanes<S>::V;
  using I = typename Lanes<S>::I;
  const int tiles_x = (P.W + kTile - 1) / kTile;
  const TileGeom tg = tile_geom(t, tiles_x, P.W, P.H);
  const int64_t C = P.C;
  scratch.assign(static_cast<size_t>(kTile * C), V{});
  V* acc = scratch.data();  // [C, 16 rows] accumulated features
  V T[kTile], topw[kTile];
  I last[kTile], topid[kTile], done[kTile];
  bool full[kTile];  // every lane of the row has stopped
  int n_full = 0;
  V px;  // pixel-centre x of the 16 lanes
  I lane;
  for (int i = 0; i < kTile; ++i) {
    px[i] = static_cast<S>(tg.x0 + i) + S(0.5);
    lane[i] = i;
  }
  for (int row = 0; row < kTile; ++row) {
    T[row] = splat<V>(S(1));
    topw[row] = splat<V>(S(-1));
    last[row] = splat<I>(-1);
    topid[row] = splat<I>(-1);
    done[row] = (row >= tg.h) ? splat<I>(-1) : (lane >= tg.w);  // lanes outside the image
    full[row] = row >= tg.h;
    n_full += full[row];
  }
  const S min_alpha = S(1.0 / 255.0), max_alpha = S(0.99), min_T = S(1e-4), half = S(0.5);
  const int64_t k0 = P.tile_offsets[t], k1 = P.tile_offsets[t + 1];
  for (int64_t k = k0; k < k1 && n_full < kTile; ++k) {
    const int32_t s = P.tile_ids[k];
    const Splat<S> g = P.sp[s];
    if (g.reach < 0) continue;
    int xa, xb, ya, yb;
    if (!exact_range<S>(g.mx, g.r, tg.x0, tg.x0 + tg.w, xa, xb)) continue;
    if (!exact_range<S>(g.my, g.r, tg.y0, tg.y0 + tg.h, ya, yb)) continue;
    const S a = g.a, b = g.b, c = g.c, op = g.op, r = g.r, my = g.my;
    const S* f = P.fp + s * C;
    const I kl = splat<I>(k - k0), sid = splat<I>(s);
    const V dx = px - g.mx;
    const I inbox = vabs(dx) <= r;
    const RowTest rows(g, dx[0], dx[tg.w - 1]);
    for (int y = ya; y <= yb; ++y) {
      const int row = y - tg.y0;
      if (full[row]) continue;
      const S dy = (static_cast<S>(y) + half) - my;
      if (!rows.may_pass(dy)) continue;
      // Same operation order as the reference: -0.5 * (a dx dx + c dy dy) - b dx dy.
      const V power = -half * (a * dx * dx + c * dy * dy) - b * dx * dy;
      const V raw = op * exp_nonpos(power);
      const V al = raw > max_alpha ? splat<V>(max_alpha) : raw;  // NaN stays NaN, fails below
      const I ok = ~done[row] & inbox & (power <= S(0)) & (al >= min_alpha);
      const V test_T = T[row] * (S(1) - al);
      const I stop = ok & (test_T < min_T);
      const I comp = ok & ~stop;
      const V w = comp ? al * T[row] : splat<V>(S(0));
      T[row] = comp ? test_T : T[row];
      last[row] = comp ? kl : last[row];
      const I better = comp & (w > topw[row]);  // first maximum wins ties
      topw[row] = better ? w : topw[row];
      topid[row] = better ? sid : topid[row];
      for (int64_t ch = 0; ch < C; ++ch) acc[ch * kTile + row] += w * f[ch];
      if (any_lane(stop)) {
        done[row] |= stop;
        if (all_lanes(done[row])) full[row] = true, ++n_full;
      }
    }
  }
  for (int ly = 0; ly < tg.h; ++ly) {
    for (int lx = 0; lx < tg.w; ++lx) {
      const int64_t o = (int64_t)(tg.y0 + ly) * P.W + tg.x0 + lx;
      T_out[o] = T[ly][lx];
      alpha_out[o] = S(1) - T[ly][lx];
      last_out[o] = static_cast<int32_t>(last[ly][lx]);
      if (top_out) top_out[o] = topid[ly][lx] >= 0 ? order[topid[ly][lx]] : -1;
      S* pix = image + o * C;
      for (int64_t ch = 0; ch < C; ++ch) pix[ch] = acc[ch * kTile + ly][lx];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// Where backward_tile puts a Gaussian's tile sum: its pair slot (store), its thread's buffer
// (add), or one buffer shared by all threads (atomic add).
enum class GradSink { kPair, kOwn, kShared };

// Pair slots of the deterministic backward: Gaussian s owns slots [start[s], start[s + 1]), one
// per tile of its box `rects[4 s ..]` (x0, x1, y0, y1, as binned) in row-major order.
struct PairSlots {
  const int32_t* rects;
  const int64_t* start;
  int tiles_x;
  int64_t slot(int32_t s, int64_t t) const {
    const int32_t* r = rects + 4 * static_cast<int64_t>(s);
    const int64_t tx = t % tiles_x, ty = t / tiles_x;
    return start[s] + (ty - r[2]) * (r[1] - r[0] + 1) + (tx - r[0]);
  }
};

template <typename S>
void backward_tile(const Ctx<S>& P, int64_t t, const S* T_final, const int32_t* last_in,
                   const S* grad_image, const S* grad_alpha, S* gpack, GradSink sink,
                   const PairSlots* pairs, std::vector<typename Lanes<S>::V>& scratch) {
  using V = typename Lanes<S>::V;
  using I = typename Lanes<S>::I;
  const int tiles_x = (P.W + kTile - 1) / kTile;
  const TileGeom tg = tile_geom(t, tiles_x, P.W, P.H);
  const int64_t C = P.C, K = 6 + C;
  scratch.assign(static_cast<size_t>(2 * kTile * C + C), V{});
  V* acc = scratch.data();   // [C, 16 rows] features behind each pixel, normalised by T
  V* dC = acc + kTile * C;   // [C, 16 rows] dL/dimage
  V* lgf = dC + kTile * C;   // [C] per-lane feature gradient of the current Gaussian
  V T[kTile], Tf[kTile], dA[kTile];
  I last[kTile];
  int64_t row_last[kTile];  // largest list slot composited in the row
  V px;
  for (int i = 0; i < kTile; ++i) px[i] = static_cast<S>(tg.x0 + i) + S(0.5);
  int64_t kmax = -1;
  for (int row = 0; row < kTile; ++row) {
    T[row] = Tf[row] = splat<V>(S(1));
    dA[row] = splat<V>(S(0));
    last[row] = splat<I>(-1);
    row_last[row] = -1;
  }
  for (int ly = 0; ly < tg.h; ++ly) {
    for (int lx = 0; lx < tg.w; ++lx) {
      const int64_t o = (int64_t)(tg.y0 + ly) * P.W + tg.x0 + lx;
      T[ly][lx] = Tf[ly][lx] = T_final[o];
      dA[ly][lx] = grad_alpha[o];
      last[ly][lx] = last_in[o];
      row_last[ly] = std::max<int64_t>(row_last[ly], last_in[o]);
      for (int64_t ch = 0; ch < C; ++ch) dC[ch * kTile + ly][lx] = grad_image[o * C + ch];
    }
    kmax = std::max(kmax, row_last[ly]);
  }
  const S min_alpha = S(1.0 / 255.0), max_alpha = S(0.99), half = S(0.5);
  const int64_t k0 = P.tile_offsets[t];
  for (int64_t k = kmax; k >= 0; --k) {
    const int32_t s = P.tile_ids[k0 + k];
    const Splat<S> g = P.sp[s];
    if (g.reach < 0) continue;
    int xa, xb, ya, yb;
    if (!exact_range<S>(g.mx, g.r, tg.x0, tg.x0 + tg.w, xa, xb)) continue;
    if (!exact_range<S>(g.my, g.r, tg.y0, tg.y0 + tg.h, ya, yb)) continue;
    const S a = g.a, b = g.b, c = g.c, op = g.op, r = g.r, my = g.my;
    const S* f = P.fp + s * C;
    const I kl = splat<I>(k);
    const V dx = px - g.mx;
    const I inbox = vabs(dx) <= r;
    const RowTest rows(g, dx[0], dx[tg.w - 1]);
    V lmx{}, lmy{}, la{}, lb{}, lc{}, lo{};
    for (int64_t ch = 0; ch < C; ++ch) lgf[ch] = V{};
    I used = splat<I>(0);
    for (int y = ya; y <= yb; ++y) {
      const int row = y - tg.y0;
      if (k > row_last[row]) continue;
      const S dy = (static_cast<S>(y) + half) - my;
      if (!rows.may_pass(dy)) continue;
      const V power = -half * (a * dx * dx + c * dy * dy) - b * dx * dy;
      const V G = exp_nonpos(power);
      const V raw = op * G;
      const V al = raw > max_alpha ? splat<V>(max_alpha) : raw;
      const I ok = (last[row] >= kl) & inbox & (power <= S(0)) & (al >= min_alpha);
      if (!any_lane(ok)) continue;
      const V au = ok ? al : splat<V>(S(0));  // lanes not composited act as alpha 0: no change
      const V om = S(1) - au;
      const V Ti = T[row] / om;  // transmittance in front of this Gaussian
      T[row] = Ti;
      const V w = au * Ti;
      V dl{};
      for (int64_t ch = 0; ch < C; ++ch) {
        V& ac = acc[ch * kTile + row];
        const V d = dC[ch * kTile + row];
        lgf[ch] += w * d;
        dl += (f[ch] - ac) * d;
        ac = au * f[ch] + om * ac;
      }
      // A clamped alpha has zero gradient w.r.t. opacity, mean and conic.
      const I live = ok & (raw <= max_alpha);
      const V d_al = live ? dl * Ti + dA[row] * (Tf[row] / om) : splat<V>(S(0));
      const V dpow = d_al * raw;
      lo += G * d_al;
      lmx += dpow * (a * dx + b * dy);
      lmy += dpow * (b * dx + c * dy);
      la += dpow * (-half * dx * dx);
      lb += dpow * (-dx * dy);
      lc += dpow * (-half * dy * dy);
      used |= ok;
    }
    if (!any_lane(used)) continue;
    const S sums[6] = {lane_sum(lmx), lane_sum(lmy), lane_sum(la), lane_sum(lb), lane_sum(lc),
                       lane_sum(lo)};
    if (sink == GradSink::kPair) {  // the slot of this (tile, Gaussian) pair: written once
      S* gs = gpack + pairs->slot(s, t) * K;
      for (int i = 0; i < 6; ++i) gs[i] = sums[i];
      for (int64_t ch = 0; ch < C; ++ch) gs[6 + ch] = lane_sum(lgf[ch]);
    } else if (sink == GradSink::kShared) {
      S* gs = gpack + s * K;
      for (int i = 0; i < 6; ++i) atomic_add(gs + i, sums[i]);
      for (int64_t ch = 0; ch < C; ++ch) atomic_add(gs + 6 + ch, lane_sum(lgf[ch]));
    } else {
      S* gs = gpack + s * K;
      for (int i = 0; i < 6; ++i) gs[i] += sums[i];
      for (int64_t ch = 0; ch < C; ++ch) gs[6 + ch] += lane_sum(lgf[ch]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

template <typename S>
int forward_impl(const S* means2d, const S* conics, const S* opac, const S* feat,
                 const int64_t* rad, const int64_t* order, int64_t n_vis, int64_t C, int W, int H,
                 const int64_t* tile_offsets, const int32_t* tile_ids, int n_threads, S* image,
                 S* alpha, S* T_final, int32_t* last, int64_t* top_id) {
  try {
    const int nt = std::max(1, n_threads);
    std::vector<Splat<S>> sp(static_cast<size_t>(n_vis));
    std::vector<S> fp(static_cast<size_t>(n_vis * C));
    pack<S>(means2d, conics, opac, feat, rad, order, n_vis, C, nt, sp.data(), fp.data());
    const Ctx<S> P{sp.data(), fp.data(), C, W, H, tile_offsets, tile_ids};
    const int64_t n_tiles = (int64_t)((W + kTile - 1) / kTile) * ((H + kTile - 1) / kTile);
    std::vector<std::vector<typename Lanes<S>::V>> scratch(nt);
    run_parallel(n_tiles, nt, [&](int64_t t, int slot) {
      forward_tile<S>(P, t, order, image, alpha, T_final, last, top_id, scratch[slot]);
    });
    return 0;
  } catch (...) {
    return 1;  // allocation failure; reported by the caller
  }
}

template <typename S>
int backward_impl(const S* means2d, const S* conics, const S* opac, const S* feat,
                  const int64_t* rad, const int64_t* order, int64_t n_vis, int64_t C, int W,
                  int H, const int64_t* tile_offsets, const int32_t* tile_ids, int n_threads,
                  const S* T_final, const int32_t* last, const S* grad_image, const S* grad_alpha,
                  int64_t n, S* g_means2d, S* g_conics, S* g_opac, S* g_feat,
                  int64_t pair_budget) {
  try {
    const int nt = std::max(1, n_threads);
    const int64_t K = 6 + C;
    std::fill(g_means2d, g_means2d + 2 * n, S(0));  // culled Gaussians get zero gradients
    std::fill(g_conics, g_conics + 3 * n, S(0));
    std::fill(g_opac, g_opac + n, S(0));
    std::fill(g_feat, g_feat + C * n, S(0));
    std::vector<Splat<S>> sp(static_cast<size_t>(n_vis));
    std::vector<S> fp(static_cast<size_t>(n_vis * C));
    pack<S>(means2d, conics, opac, feat, rad, order, n_vis, C, nt, sp.data(), fp.data());
    const Ctx<S> P{sp.data(), fp.data(), C, W, H, tile_offsets, tile_ids};
    const int tiles_x = (W + kTile - 1) / kTile, tiles_y = (H + kTile - 1) / kTile;
    const int64_t n_tiles = (int64_t)tiles_x * tiles_y;
    std::vector<std::vector<typename Lanes<S>::V>> scratch(nt);
    const int64_t chunk = 4096;
    auto scatter = [&](int64_t g, const S* total) {  // depth-order sums -> input order
      g_means2d[2 * g] = total[0], g_means2d[2 * g + 1] = total[1];
      g_conics[3 * g] = total[2], g_conics[3 * g + 1] = total[3], g_conics[3 * g + 2] = total[4];
      g_opac[g] = total[5];
      std::memcpy(g_feat + g * C, total + 6, sizeof(S) * C);
    };

    // Deterministic path: one slot per (tile, Gaussian) pair, summed per Gaussian in tile order.
    const int64_t n_pairs = tile_offsets[n_tiles];
    bool slots_fit =
        static_cast<double>(n_pairs) * K * sizeof(S) <= static_cast<double>(pair_budget);
    std::vector<int32_t> rects;
    std::vector<int64_t> start;
    std::vector<S> pbuf;
    if (slots_fit) {
      try {  // an allocation failure here falls back to the smaller per-thread buffers
        rects.assign(static_cast<size_t>(4 * n_vis), 0);
        start.assign(static_cast<size_t>(n_vis + 1), 0);
        pbuf.assign(static_cast<size_t>(n_pairs * K), S(0));
      } catch (const std::bad_alloc&) {
        std::vector<int32_t>().swap(rects);
        std::vector<int64_t>().swap(start);
        std::vector<S>().swap(pbuf);
        slots_fit = false;
      }
    }
    if (slots_fit) {
      // the boxes binning gave each Gaussian (same rule, same inputs) and their slot offsets
      run_parallel((n_vis + chunk - 1) / chunk, nt, [&](int64_t ci, int) {
        const int64_t end = std::min(n_vis, (ci + 1) * chunk);
        for (int64_t s = ci * chunk; s < end; ++s) {
          const int64_t g = order[s];
          int32_t* r = rects.data() + 4 * s;
          start[s + 1] = tile_rect<S>(means2d[2 * g], means2d[2 * g + 1], rad[s], W, H,
                                      tiles_x, tiles_y, r)
                             ? static_cast<int64_t>(r[1] - r[0] + 1) * (r[3] - r[2] + 1)
                             : 0;
        }
      });
      for (int64_t s = 0; s < n_vis; ++s) start[s + 1] += start[s];
      if (start[n_vis] != n_pairs) return 2;  // boxes differ from the binning: caller reports
      const PairSlots slots{rects.data(), start.data(), tiles_x};
      run_parallel(n_tiles, nt, [&](int64_t t, int slot) {
        backward_tile<S>(P, t, T_final, last, grad_image, grad_alpha, pbuf.data(),
                         GradSink::kPair, &slots, scratch[slot]);
      });
      run_parallel((n_vis + chunk - 1) / chunk, nt, [&](int64_t ci, int) {
        const int64_t end = std::min(n_vis, (ci + 1) * chunk);
        std::vector<S> total(static_cast<size_t>(K));
        for (int64_t s = ci * chunk; s < end; ++s) {
          if (start[s + 1] == start[s]) continue;  // off-screen: zero gradients
          std::fill(total.begin(), total.end(), S(0));
          for (int64_t q = start[s]; q < start[s + 1]; ++q) {
            const S* gs = pbuf.data() + q * K;
            for (int64_t i = 0; i < K; ++i) total[i] += gs[i];
          }
          scatter(order[s], total.data());
        }
      });
      return 0;
    }

    // Fallback (returns 3: correct, but the summation order follows the thread schedule):
    // gradient sums in depth order, [V, 6 + C] per buffer. One buffer per thread when they fit
    // in kPrivateBudget bytes: plain adds, no cache-line ping-pong between threads on
    // neighbouring tiles (which share most Gaussians); else one buffer with atomic adds.
    constexpr double kPrivateBudget = 512.0 * (1 << 20);
    const int64_t per = n_vis * K;
    const bool priv = nt == 1 || static_cast<double>(nt) * per * sizeof(S) <= kPrivateBudget;
    const int n_buf = priv ? nt : 1;
    std::vector<S> gbuf(static_cast<size_t>(n_buf * per), S(0));
    run_parallel(n_tiles, nt, [&](int64_t t, int slot) {
      S* own = gbuf.data() + (priv ? slot * per : 0);
      backward_tile<S>(P, t, T_final, last, grad_image, grad_alpha, own,
                       priv ? GradSink::kOwn : GradSink::kShared, nullptr, scratch[slot]);
    });
    // Sum the buffers and scatter to input order (each visible Gaussian appears once in `order`).
    run_parallel((n_vis + chunk - 1) / chunk, nt, [&](int64_t ci, int) {
      const int64_t end = std::min(n_vis, (ci + 1) * chunk);
      std::vector<S> total(static_cast<size_t>(K));
      for (int64_t s = ci * chunk; s < end; ++s) {
        const S* gs = gbuf.data() + s * K;
        for (int64_t i = 0; i < K; ++i) total[i] = gs[i];
        for (int b = 1; b < n_buf; ++b)
          for (int64_t i = 0; i < K; ++i) total[i] += gs[b * per + i];
        scatter(order[s], total.data());
      }
    });
    return nt > 1 ? 3 : 0;  // one thread: the order is fixed
  } catch (...) {
    return 1;
  }
}

}  // namespace

extern "C" {

int oig_abi_version() { return 7; }

// radii_bytes: 4 (int32) or 8 (int64). Returns the number of visible Gaussians.
int64_t oig_visible_order_f32(const float* depths, const void* radii, int radii_bytes, int64_t n,
                              int64_t* order, int64_t* rad) {
  if (radii_bytes == 4)
    return visible_order(depths, static_cast<const int32_t*>(radii), n, order, rad);
  return visible_order(depths, static_cast<const int64_t*>(radii), n, order, rad);
}
int64_t oig_visible_order_f64(const double* depths, const void* radii, int radii_bytes, int64_t n,
                              int64_t* order, int64_t* rad) {
  if (radii_bytes == 4)
    return visible_order(depths, static_cast<const int32_t*>(radii), n, order, rad);
  return visible_order(depths, static_cast<const int64_t*>(radii), n, order, rad);
}

int64_t oig_bin_count_f32(const float* means2d, const int64_t* rad, const int64_t* order,
                          int64_t n_vis, int W, int H, int64_t n_chunks, int n_threads,
                          int64_t* chunk_counts, int32_t* rects) {
  return bin_count<float>(means2d, rad, order, n_vis, W, H, n_chunks, n_threads, chunk_counts,
                          rects);
}
int64_t oig_bin_count_f64(const double* means2d, const int64_t* rad, const int64_t* order,
                          int64_t n_vis, int W, int H, int64_t n_chunks, int n_threads,
                          int64_t* chunk_counts, int32_t* rects) {
  return bin_count<double>(means2d, rad, order, n_vis, W, H, n_chunks, n_threads, chunk_counts,
                           rects);
}
void oig_bin_fill(const int32_t* rects, int64_t n_vis, int W, int H, int64_t n_chunks,
                  int n_threads, int64_t* chunk_counts, int64_t* offsets, int32_t* tile_ids) {
  bin_fill(rects, n_vis, W, H, n_chunks, n_threads, chunk_counts, offsets, tile_ids);
}

int oig_forward_f32(const float* means2d, const float* conics, const float* opac, const float* feat,
                    const int64_t* rad, const int64_t* order, int64_t n_vis, int64_t C, int W,
                    int H, const int64_t* tile_offsets, const int32_t* tile_ids, int n_threads,
                    float* image, float* alpha, float* T_final, int32_t* last, int64_t* top_id) {
  return forward_impl<float>(means2d, conics, opac, feat, rad, order, n_vis, C, W, H,
                             tile_offsets, tile_ids, n_threads, image, alpha, T_final, last,
                             top_id);
}
int oig_forward_f64(const double* means2d, const double* conics, const double* opac,
                    const double* feat, const int64_t* rad, const int64_t* order, int64_t n_vis,
                    int64_t C, int W, int H, const int64_t* tile_offsets, const int32_t* tile_ids,
                    int n_threads, double* image, double* alpha, double* T_final, int32_t* last,
                    int64_t* top_id) {
  return forward_impl<double>(means2d, conics, opac, feat, rad, order, n_vis, C, W, H,
                              tile_offsets, tile_ids, n_threads, image, alpha, T_final, last,
                              top_id);
}

int oig_backward_f32(const float* means2d, const float* conics, const float* opac,
                     const float* feat, const int64_t* rad, const int64_t* order, int64_t n_vis,
                     int64_t C, int W, int H, const int64_t* tile_offsets, const int32_t* tile_ids,
                     int n_threads, const float* T_final, const int32_t* last,
                     const float* grad_image, const float* grad_alpha, int64_t n, float* g_means2d,
                     float* g_conics, float* g_opac, float* g_feat, int64_t pair_budget) {
  return backward_impl<float>(means2d, conics, opac, feat, rad, order, n_vis, C, W, H,
                              tile_offsets, tile_ids, n_threads, T_final, last, grad_image,
                              grad_alpha, n, g_means2d, g_conics, g_opac, g_feat, pair_budget);
}
int oig_backward_f64(const double* means2d, const double* conics, const double* opac,
                     const double* feat, const int64_t* rad, const int64_t* order, int64_t n_vis,
                     int64_t C, int W, int H, const int64_t* tile_offsets, const int32_t* tile_ids,
                     int n_threads, const double* T_final, const int32_t* last,
                     const double* grad_image, const double* grad_alpha, int64_t n,
                     double* g_means2d,
                     double* g_conics, double* g_opac, double* g_feat, int64_t pair_budget) {
  return backward_impl<double>(means2d, conics, opac, feat, rad, order, n_vis, C, W, H,
                               tile_offsets, tile_ids, n_threads, T_final, last, grad_image,
                               grad_alpha, n, g_means2d, g_conics, g_opac, g_feat, pair_budget);
}

}  // extern "C"
