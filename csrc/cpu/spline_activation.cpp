// CPU kernels of spline_activation and spline_activation_backward (see spline_activation.h).
//
// x is walked in its memory order as a flat array of runs: a contiguous x ([N, C, P], P > 1) as
// runs of one channel's P pixels ("planar"), a channels-last x (and a contiguous [N, C]) as runs of
// consecutive channels of one pixel ("channels inner"). Any other x is first copied contiguous.
// at::parallel_for splits the flat range into chunks of whole or partial runs, so a task is a
// (channel, chunk of pixels) in the planar order and a (pixel, chunk of channels) in the other.
//
// Backward: each thread adds its coefficient gradient into a buffer of its own (C x K, float32 or
// float64, allocated by the thread on its first chunk), summed after the loop in thread order. In
// the planar order every element of a run hits the same channel's K bins, often the same few:
// there the buffer holds kLanes interleaved copies of each channel's bins, so that consecutive
// elements add to different addresses instead of waiting on each other's stores.
//
// The inner loops are plain loops over blocks of kBlock elements: first each element's segment
// (no floor() call, no branch, no load by index: the compiler vectorises it), then the loads of
// the knots by index and the arithmetic on them (scalar loads by index). Each task runs compiled
// for the CPU's widest ISA (vectorised.h): the first loop and dx's arithmetic widen with it.
#include "spline_activation.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "vectorised.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace autoshuffle_ext::cpu {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task, at least
constexpr int64_t kBlock = 256;    // elements whose segments are computed before their scatter
constexpr int64_t kLanes = 4;      // interleaved copies of a channel's bins (planar backward)
// The most bytes of lanes per thread; beyond, one copy (a run then rarely repeats a bin soon).
constexpr int64_t kMaxLaneBytes = int64_t{1} << 20;

// The grid in the arithmetic type A.
template <typename A>
struct Grid {
  A spacing;
  A lo_min;  // -(K / 2): the lowest left knot, relative to the middle one
  A lo_max;  // K - 2 - K / 2: the highest
  int32_t half;
  int64_t K;
};

// The segment of u = x / spacing: writes its left knot j (0..K-2) and returns t = u - (j - K / 2).
// clamp(floor(u)) equals floor(clamp(u)) for integer bounds; clamping first keeps the conversion
// to int32 in range, and the truncation is corrected downwards for negative values, so the loop
// needs no floor() call (none in SSE2) and vectorises. A NaN u takes the segment of 0 (as the
// reference) and gives t = NaN; +-inf take the end segments and t = +-inf.
template <typename A>
inline A segment(A u, const Grid<A>& g, int32_t& j) {
  A v = u == u ? u : A(0);
  v = v > g.lo_min ? v : g.lo_min;
  v = v < g.lo_max ? v : g.lo_max;
  const int32_t i = static_cast<int32_t>(v);
  const int32_t lo = i - (static_cast<A>(i) > v ? 1 : 0);
  j = lo + g.half;
  return u - static_cast<A>(lo);
}

// The order in which the kernels walk x: runs of one channel, or runs of consecutive channels.
struct Walk {
  bool planar;
  int64_t C;
  int64_t run;  // P (planar) or C
};

// Calls fn(offset, length, channel) for each run piece of the flat range [begin, end): in the
// planar order `channel` is the run's channel, else the piece's first channel.
template <typename F>
inline void for_each_piece(const Walk& w, int64_t begin, int64_t end, F&& fn) {
  int64_t e = begin;
  while (e < end) {
    const int64_t row = e / w.run;
    const int64_t off = e - row * w.run;
    const int64_t len = std::min(w.run - off, end - e);
    fn(e, len, w.planar ? row % w.C : off);
    e += len;
  }
}

// The segments of a block of at most kBlock elements: a loop without loads by index, which the
// compiler vectorises.
template <typename T, typename A>
inline void block_segments(const T* x, int64_t n, const Grid<A>& g, int32_t* jb, A* tb) {
  for (int64_t i = 0; i < n; ++i) {
    int32_t j;
    tb[i] = segment(static_cast<A>(x[i]) / g.spacing, g, j);
    jb[i] = j;
  }
}

// ---- forward ----

// A run piece of one channel (its K knots at c) or of consecutive channels (the first's at c,
// rows of K): the segments of a block, then the knots' loads and the interpolation.
template <bool kPlanar, typename T, typename A>
void forward_piece(const T* x, T* y, int64_t n, const A* c, const Grid<A>& g) {
  int32_t jb[kBlock];
  A tb[kBlock];
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t m = std::min(kBlock, n - s);
    block_segments(x + s, m, g, jb, tb);
    const A* row = kPlanar ? c : c + s * g.K;
    for (int64_t i = 0; i < m; ++i) {
      const int64_t k = kPlanar ? jb[i] : i * g.K + jb[i];
      const A l = row[k];
      const A r = row[k + 1];
      y[s + i] = static_cast<T>(l + tb[i] * (r - l));
    }
  }
}

// ---- backward ----

// One block of at most kBlock elements: dx (kDx), and for the scatter (kDc) the left knot of each
// element within its channel's row (jb) and its two weights.
template <bool kDx, bool kDc, typename T, typename A>
inline void backward_block(const T* grad, const T* x, T* dx, int64_t n, const A* slope,
                           int64_t slope_step, const Grid<A>& g, int32_t* jb, A* wl, A* wr) {
  block_segments(x, n, g, jb, wr);  // t in wr
  if constexpr (kDx) {
    for (int64_t i = 0; i < n; ++i) {
      dx[i] = static_cast<T>(static_cast<A>(grad[i]) * slope[i * slope_step + jb[i]]);
    }
  }
  if constexpr (kDc) {
    for (int64_t i = 0; i < n; ++i) {
      const A gi = static_cast<A>(grad[i]);
      const A right = wr[i] * gi;
      wl[i] = gi - right;
      wr[i] = right;
    }
  }
}

// A run piece of one channel: bins is the channel's kLanes x K lanes (lanes == kLanes) or its K
// bins (lanes == 1).
template <bool kDx, bool kDc, typename T, typename A>
void backward_one_channel(const T* grad, const T* x, T* dx, int64_t n, const A* slope, A* bins,
                          int64_t lanes, const Grid<A>& g) {
  int32_t jb[kBlock];
  A wl[kBlock];
  A wr[kBlock];
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t m = std::min(kBlock, n - s);
    backward_block<kDx, kDc>(grad + s, x + s, kDx ? dx + s : nullptr, m, slope, 0, g, jb, wl, wr);
    if constexpr (kDc) {
      int64_t i = 0;
      if (lanes == kLanes) {
        A* b1 = bins + g.K;
        A* b2 = bins + 2 * g.K;
        A* b3 = bins + 3 * g.K;
        for (; i + 4 <= m; i += 4) {
          bins[jb[i]] += wl[i];
          bins[jb[i] + 1] += wr[i];
          b1[jb[i + 1]] += wl[i + 1];
          b1[jb[i + 1] + 1] += wr[i + 1];
          b2[jb[i + 2]] += wl[i + 2];
          b2[jb[i + 2] + 1] += wr[i + 2];
          b3[jb[i + 3]] += wl[i + 3];
          b3[jb[i + 3] + 1] += wr[i + 3];
        }
      }
      for (; i < m; ++i) {
        bins[jb[i]] += wl[i];
        bins[jb[i] + 1] += wr[i];
      }
    }
  }
}

// A run piece of consecutive channels, the first at `slope` / `bins` (rows of K; lanes apart in
// bins).
template <bool kDx, bool kDc, typename T, typename A>
void backward_channels(const T* grad, const T* x, T* dx, int64_t n, const A* slope, A* bins,
                       int64_t lanes, const Grid<A>& g) {
  int32_t jb[kBlock];
  A wl[kBlock];
  A wr[kBlock];
  const int64_t bin_step = lanes * g.K;
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t m = std::min(kBlock, n - s);
    backward_block<kDx, kDc>(grad + s, x + s, kDx ? dx + s : nullptr, m, slope + s * g.K, g.K, g,
                             jb, wl, wr);
    if constexpr (kDc) {
      A* row = bins + s * bin_step;
      for (int64_t i = 0; i < m; ++i, row += bin_step) {
        row[jb[i]] += wl[i];
        row[jb[i] + 1] += wr[i];
      }
    }
  }
}

// ---- layout ----

bool is_dense(const at::Tensor& x) {
  return x.is_contiguous() || x.is_non_overlapping_and_dense();
}

// The output for x (y, dx): x's strides when x is dense, else contiguous (the fake kernel's
// `spline_output_like`).
at::Tensor output_like(const at::Tensor& x) {
  return is_dense(x) ? at::empty_like(x) : at::empty(x.sizes(), x.options());
}

// x as the kernels walk it (x itself when contiguous or channels-inner, else a contiguous copy).
std::pair<at::Tensor, Walk> walk_of(const at::Tensor& x) {
  const int64_t C = x.size(1);
  const int64_t rows = x.size(0) * C;
  const int64_t P = rows == 0 ? 0 : x.numel() / rows;
  if (!x.is_contiguous() && x.movedim(1, -1).is_contiguous()) {
    return {x, Walk{false, C, C}};
  }
  const at::Tensor src = x.contiguous();
  return {src, P == 1 ? Walk{false, C, C} : Walk{true, C, P}};
}

// `t` with `like`'s strides and dtype (a copy unless it has them).
at::Tensor matching(const at::Tensor& t, const at::Tensor& like) {
  if (t.scalar_type() == like.scalar_type() && t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

template <typename A>
Grid<A> grid_of(double spacing, int64_t K) {
  const int32_t half = static_cast<int32_t>(K / 2);
  return Grid<A>{static_cast<A>(spacing), static_cast<A>(-half), static_cast<A>(K - 2 - half),
                 half, K};
}

constexpr at::ScalarType acc_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

void check_spline_args(const at::Tensor& x, const at::Tensor& coefficients, double spacing) {
  TORCH_CHECK_VALUE(x.dim() >= 2, "spline_activation: x must have shape [N, C, ...] (>= 2 dims), ",
                    "got ", x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(coefficients.dim() == 2 && coefficients.size(0) == C &&
                        coefficients.size(1) >= 2,
                    "spline_activation: coefficients must have shape [C, K] with C = x.shape[1] = ",
                    C, " and K >= 2 knots, got ", coefficients.sizes());
  const at::ScalarType xt = x.scalar_type();
  const bool half = xt == at::kHalf || xt == at::kBFloat16;
  TORCH_CHECK_TYPE(half || xt == at::kFloat || xt == at::kDouble,
                   "spline_activation: x must be float16, bfloat16, float32 or float64, got ", xt);
  const at::ScalarType ct = coefficients.scalar_type();
  TORCH_CHECK_TYPE(ct == xt || (ct == at::kFloat && half), "spline_activation: coefficients must ",
                   "have x's dtype ", xt, " (or float32 when x is float16/bfloat16), got ", ct);
  TORCH_CHECK_VALUE(coefficients.device() == x.device(),
                    "spline_activation: coefficients must be on x's device ", x.device(), ", got ",
                    coefficients.device());
  TORCH_CHECK_VALUE(std::isfinite(spacing) && spacing > 0,
                    "spline_activation: spacing must be a finite float > 0, got ", spacing);
  TORCH_CHECK_VALUE(coefficients.size(1) < std::numeric_limits<int32_t>::max(),
                    "spline_activation: at most 2^31 - 2 knots on the CPU, got ",
                    coefficients.size(1));
}

at::Tensor spline_activation(const at::Tensor& x, const at::Tensor& coefficients, double spacing) {
  check_spline_args(x, coefficients, spacing);
  at::Tensor y = output_like(x);
  if (x.numel() == 0) return y;
  const auto walked = walk_of(x);
  const at::Tensor& src = walked.first;
  const Walk walk = walked.second;
  at::Tensor out = y.strides() == src.strides() ? y : at::empty_like(src);
  const int64_t K = coefficients.size(1);
  const at::Tensor table = coefficients.to(acc_type(x.scalar_type())).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "spline_activation",
                                  [&] {
    using A = at::opmath_type<scalar_t>;
    const Grid<A> g = grid_of<A>(spacing, K);
    const scalar_t* xp = src.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    const A* c = table.const_data_ptr<A>();
    at::parallel_for(0, src.numel(), kGrain, [&](int64_t begin, int64_t end) {
      run_vectorised([&] {
        for_each_piece(walk, begin, end, [&](int64_t e, int64_t n, int64_t ch) {
          if (walk.planar) {
            forward_piece<true>(xp + e, yp + e, n, c + ch * K, g);
          } else {
            forward_piece<false>(xp + e, yp + e, n, c + ch * K, g);
          }
        });
      });
    });
  });
  if (!out.is_same(y)) y.copy_(out);
  return y;
}

namespace {

template <typename T, bool kDx, bool kDc>
void backward_loop(const at::Tensor& grad, const at::Tensor& src, at::Tensor* dx_out,
                   const at::Tensor& slope_table, at::Tensor* dc_acc, const Walk& walk,
                   double spacing) {
  using A = at::opmath_type<T>;
  const int64_t C = walk.C;
  const int64_t K = slope_table.size(1);
  const Grid<A> g = grid_of<A>(spacing, K);
  const int64_t lanes =
      walk.planar && C * kLanes * K * static_cast<int64_t>(sizeof(A)) <= kMaxLaneBytes ? kLanes
                                                                                         : 1;
  const T* gp = grad.const_data_ptr<T>();
  const T* xp = src.const_data_ptr<T>();
  T* dxp = kDx ? dx_out->mutable_data_ptr<T>() : nullptr;
  const A* slope = slope_table.const_data_ptr<A>();
  // One buffer per thread (at::get_thread_num() is below at::get_num_threads() in a parallel
  // region, 0 outside one), each allocated and zeroed by its thread.
  std::vector<std::vector<A>> buffers(kDc ? std::max(at::get_num_threads(), 1) : 0);
  at::parallel_for(0, src.numel(), kGrain, [&](int64_t begin, int64_t end) {
    A* bins = nullptr;
    if constexpr (kDc) {
      const auto tid = static_cast<size_t>(at::get_thread_num());
      TORCH_INTERNAL_ASSERT(tid < buffers.size(), "spline_activation_backward: thread ", tid,
                            " of ", buffers.size());
      auto& buffer = buffers[tid];
      if (buffer.empty()) buffer.assign(static_cast<size_t>(C * lanes * K), A(0));
      bins = buffer.data();
    }
    run_vectorised([&] {
      for_each_piece(walk, begin, end, [&](int64_t e, int64_t n, int64_t ch) {
        T* d = kDx ? dxp + e : nullptr;
        A* b = kDc ? bins + ch * lanes * K : nullptr;
        if (walk.planar) {
          backward_one_channel<kDx, kDc>(gp + e, xp + e, d, n, slope + ch * K, b, lanes, g);
        } else {
          backward_channels<kDx, kDc>(gp + e, xp + e, d, n, slope + ch * K, b, lanes, g);
        }
      });
    });
  });
  if constexpr (kDc) {
    // Sum the threads' buffers (in thread order) and each channel's lanes into [C, K].
    A* out = dc_acc->mutable_data_ptr<A>();
    for (const auto& buffer : buffers) {
      if (buffer.empty()) continue;
      at::parallel_for(0, C, std::max<int64_t>(1, 4096 / (lanes * K)), [&](int64_t c0,
                                                                             int64_t c1) {
        for (int64_t ch = c0; ch < c1; ++ch) {
          for (int64_t l = 0; l < lanes; ++l) {
            const A* src_bins = buffer.data() + (ch * lanes + l) * K;
            A* dst = out + ch * K;
            for (int64_t k = 0; k < K; ++k) dst[k] += src_bins[k];
          }
        }
      });
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> spline_activation_backward(const at::Tensor& grad,
                                                              const at::Tensor& x,
                                                              const at::Tensor& coefficients,
                                                              double spacing, bool need_x,
                                                              bool need_coefficients) {
  check_spline_args(x, coefficients, spacing);
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), "spline_activation_backward: grad must have x's ",
                    "shape ", x.sizes(), ", got ", grad.sizes());
  TORCH_CHECK_VALUE(grad.device() == x.device(), "spline_activation_backward: grad must be on ",
                    "x's device ", x.device(), ", got ", grad.device());
  at::Tensor dx = need_x ? output_like(x) : at::empty({0}, x.options());
  at::Tensor dc = need_coefficients ? at::zeros(coefficients.sizes(), coefficients.options())
                                    : at::empty({0}, x.options());
  if (x.numel() == 0 || !(need_x || need_coefficients)) return {dx, dc};
  const auto walked = walk_of(x);
  const at::Tensor& src = walked.first;
  const Walk walk = walked.second;
  const at::Tensor g = matching(grad, src);
  at::Tensor dx_out = need_x && dx.strides() != src.strides() ? at::empty_like(src) : dx;
  const at::ScalarType acc = acc_type(x.scalar_type());
  // slope[c, j] = (c[j + 1] - c[j]) / spacing (the last column unused), computed once.
  const at::Tensor table = coefficients.to(acc).contiguous();
  const int64_t K = table.size(1);
  at::Tensor slope = at::zeros_like(table);
  slope.narrow(1, 0, K - 1).copy_((table.narrow(1, 1, K - 1) - table.narrow(1, 0, K - 1)) / spacing);
  at::Tensor dc_acc = need_coefficients ? at::zeros(table.sizes(), table.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "spline_activation_backward", [&] {
    if (need_x && need_coefficients) {
      backward_loop<scalar_t, true, true>(g, src, &dx_out, slope, &dc_acc, walk, spacing);
    } else if (need_x) {
      backward_loop<scalar_t, true, false>(g, src, &dx_out, slope, nullptr, walk, spacing);
    } else {
      backward_loop<scalar_t, false, true>(g, src, nullptr, slope, &dc_acc, walk, spacing);
    }
  });
  if (need_x && !dx_out.is_same(dx)) dx.copy_(dx_out);
  if (need_coefficients) dc.copy_(dc_acc);
  return {dx, dc};
}

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("spline_activation", &spline_activation);
  m.impl("spline_activation_backward", &spline_activation_backward);
}

}  // namespace autoshuffle_ext::cpu
