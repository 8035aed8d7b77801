// What the CPU and CUDA kernels of cat_gather share: argument checks, the output layout, how each
// input is walked in place, and the op's entry point over a device's kernel.
// out[:, c] = cat([a, b], 1)[:, perm[c]]: a ShuffleNet v2 unit's concat and shuffle in one pass.
// The Python fake kernel (autoshuffle_ext/ops/cat_gather.py) mirrors cat_gather_memory_format.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "channel_gather.h"

namespace autoshuffle_ext {

// The output's memory format: the one a and b share, each read as channel_gather reads its input
// (gather_memory_format: its own format when dense in it, else the one its strides are closest
// to), and contiguous when they differ, as torch.cat decides.
inline at::MemoryFormat cat_gather_memory_format(const at::Tensor& a, const at::Tensor& b) {
  const at::MemoryFormat format = gather_memory_format(a);
  return format == gather_memory_format(b) ? format : at::MemoryFormat::Contiguous;
}

// Validates a, b and perm (everything but perm's values) and returns the output's memory format.
// Errors map to Python ValueError / TypeError and name the argument, the expectation and the
// value. perm's values are checked by each kernel, as for channel_gather.
inline at::MemoryFormat check_cat_gather_args(const at::Tensor& a, const at::Tensor& b,
                                              const at::Tensor& perm) {
  TORCH_CHECK_VALUE(a.dim() >= 2, "cat_gather: a must have at least 2 dims (N, C, ...), got ",
                    a.dim(), " dims with shape ", a.sizes());
  TORCH_CHECK_VALUE(b.dim() == a.dim(), "cat_gather: b must have a's number of dims ", a.dim(),
                    ", got ", b.dim(), " dims with shape ", b.sizes());
  for (int64_t d = 0; d < a.dim(); ++d) {
    TORCH_CHECK_VALUE(d == 1 || b.size(d) == a.size(d),
                      "cat_gather: b must have a's size in every dim but 1 (a.shape = ", a.sizes(),
                      "), got b.shape = ", b.sizes());
  }
  TORCH_CHECK_TYPE(b.scalar_type() == a.scalar_type(), "cat_gather: b must have a's dtype ",
                   a.scalar_type(), ", got ", b.scalar_type());
  TORCH_CHECK_VALUE(b.device() == a.device(), "cat_gather: b must be on a's device ", a.device(),
                    ", got ", b.device());
  TORCH_CHECK_VALUE(perm.dim() == 1, "cat_gather: perm must be 1-D, got ", perm.dim(),
                    " dims with shape ", perm.sizes());
  TORCH_CHECK_TYPE(perm.scalar_type() == at::kLong,
                   "cat_gather: perm must have dtype int64 (torch.long), got ", perm.scalar_type());
  TORCH_CHECK_VALUE(perm.device() == a.device(), "cat_gather: perm must be on a's device ",
                    a.device(), ", got ", perm.device());
  TORCH_CHECK_VALUE(perm.size(0) == a.size(1) + b.size(1),
                    "cat_gather: perm must have length a.size(1) + b.size(1) = ", a.size(1), " + ",
                    b.size(1), " = ", a.size(1) + b.size(1), ", got ", perm.size(0));
  return cat_gather_memory_format(a, b);
}

// The step between consecutive pixels when dims 2.. of t flatten into one dim (each dim of size
// > 1 steps by the step times the number of pixels inside it), else -1. 1 when there is at most
// one pixel.
inline int64_t flat_pixel_stride(const at::Tensor& t) {
  int64_t step = -1;
  int64_t span = 1;
  for (int64_t d = t.dim() - 1; d >= 2; --d) {
    if (t.size(d) == 1) continue;
    if (step < 0) {
      step = t.stride(d);
    } else if (t.stride(d) != step * span) {
      return -1;
    }
    span *= t.size(d);
  }
  return step < 0 ? 1 : step;
}

// One input as the kernels walk it, strides in elements: pixel (n, s) of channel j at
// data + n * batch_stride + j * channel_stride + s * pixel_stride. The output's layout decides
// what is needed: contiguous planes (pixel_stride 1) for plane copies, consecutive channels
// (channel_stride 1) for per-pixel gathers. An input laid out otherwise is read from a dense copy
// in the output's format; a channel slice of a tensor (ShuffleNet v2's split) is read in place.
struct CatSource {
  at::Tensor tensor;  // the input itself, or its dense copy
  int64_t channels;
  int64_t batch_stride;
  int64_t channel_stride;
  int64_t pixel_stride;
};

// How the kernels walk a non-empty output of `format`: as N * C planes of `inner` elements, plane
// (n, c) being plane perm[c] of the concatenation (contiguous with inner > 1), else as N * inner
// pixels, each a row of C channels gathered through perm.
struct CatLayout {
  int64_t n;
  int64_t c;
  int64_t inner;
  bool planes;
  int64_t pixels() const { return n * inner; }
};

inline CatLayout cat_layout(const at::Tensor& a, const at::Tensor& b, at::MemoryFormat format) {
  int64_t inner = 1;
  for (int64_t d = 2; d < a.dim(); ++d) inner *= a.size(d);
  return {a.size(0), a.size(1) + b.size(1), inner,
          format == at::MemoryFormat::Contiguous && inner > 1};
}

// `t` as a CatSource for an output walked as `layout` in `format`.
inline CatSource cat_source(const at::Tensor& t, const CatLayout& layout,
                            at::MemoryFormat format) {
  const int64_t channels = t.size(1);
  const int64_t step = flat_pixel_stride(t);
  const bool in_place =
      layout.planes ? step == 1 : step >= 0 && (channels == 1 || t.stride(1) == 1);
  const at::Tensor src = in_place ? t : t.contiguous(format);
  const int64_t pixel_stride = in_place ? step : (layout.planes ? 1 : channels);
  const int64_t channel_stride = layout.planes ? src.stride(1) : 1;
  return {src, channels, src.stride(0), channel_stride, pixel_stride};
}

// A device's kernel: writes cat([a, b], 1) gathered through perm into `out`, which is dense in
// the output's format. It checks perm's values as the device can (the CPU on the host, before
// anything is read and also for empty inputs; CUDA the range, on the device).
using CatGatherInto = void (*)(const CatSource& a, const CatSource& b, const CatLayout& layout,
                               const at::Tensor& perm, at::Tensor& out);

// The output's shape: a's, with a.size(1) + b.size(1) channels.
inline std::vector<int64_t> cat_gather_shape(const at::Tensor& a, const at::Tensor& b) {
  std::vector<int64_t> shape = a.sizes().vec();
  shape[1] += b.size(1);
  return shape;
}

// cat_gather on a device whose kernel is `kernel`.
template <CatGatherInto kernel>
at::Tensor cat_gather_with(const at::Tensor& a, const at::Tensor& b, const at::Tensor& perm) {
  const at::MemoryFormat format = check_cat_gather_args(a, b, perm);
  at::Tensor out = at::empty(cat_gather_shape(a, b), a.options().memory_format(format));
  const CatLayout layout = cat_layout(a, b, format);
  kernel(cat_source(a, layout, format), cat_source(b, layout, format), layout, perm, out);
  return out;
}

}  // namespace autoshuffle_ext
