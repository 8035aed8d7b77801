// What the CPU and CUDA kernels of channel_gather share: argument checks, the output layout, how a
// dense input is walked, and the op's two entry points over a device's gather.
// The Python fake kernel (autoshuffle_ext/ops/channel_gather.py) mirrors gather_memory_format:
// torch.compile and opcheck compare the real output's strides with the fake one's.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <algorithm>
#include <vector>

#include "gather_source.h"

namespace autoshuffle_ext {

// An empty tensor is "contiguous" in every memory format, so its format is read from its strides:
// channels-last (3d) when they are exactly what at::empty gives its shape in that format and not
// what it gives in the contiguous one (an empty channels_last batch), else contiguous.
inline at::MemoryFormat empty_memory_format(const at::Tensor& x) {
  const std::vector<int64_t> strides = x.strides().vec();
  std::vector<int64_t> contiguous(strides.size());
  int64_t step = 1;
  for (int64_t d = x.dim() - 1; d >= 0; --d) {
    contiguous[d] = step;
    step *= std::max<int64_t>(x.size(d), 1);
  }
  if (strides == contiguous) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && strides == c10::get_channels_last_strides_2d(x.sizes()))
    return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && strides == c10::get_channels_last_strides_3d(x.sizes()))
    return at::MemoryFormat::ChannelsLast3d;
  return at::MemoryFormat::Contiguous;
}

// The memory format of both the dense input the kernels read and the output they write: x's own
// when x is dense in it, else the format x's strides are closest to (as `suggest_memory_format`);
// for an empty x, `empty_memory_format`.
inline at::MemoryFormat gather_memory_format(const at::Tensor& x) {
  if (x.numel() == 0) return empty_memory_format(x);
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d))
    return at::MemoryFormat::ChannelsLast3d;
  return x.suggest_memory_format();
}

// Validates x and perm (everything but perm's values) and returns the memory format to use.
// Errors map to Python ValueError / TypeError and name the argument, the expectation and the value.
// perm's values are checked by each kernel: on the CPU before its loop (in range and each index
// once, i.e. a permutation), on CUDA on the device (in range only; no host synchronisation).
inline at::MemoryFormat check_channel_gather_args(const at::Tensor& x, const at::Tensor& perm) {
  TORCH_CHECK_VALUE(x.dim() >= 2, "channel_gather: x must have at least 2 dims (N, C, ...), got ",
                    x.dim(), " dims with shape ", x.sizes());
  TORCH_CHECK_VALUE(perm.dim() == 1, "channel_gather: perm must be 1-D, got ", perm.dim(),
                    " dims with shape ", perm.sizes());
  TORCH_CHECK_TYPE(perm.scalar_type() == at::kLong,
                   "channel_gather: perm must have dtype int64 (torch.long), got ",
                   perm.scalar_type());
  TORCH_CHECK_VALUE(perm.device() == x.device(), "channel_gather: perm must be on x's device ",
                    x.device(), ", got ", perm.device());
  TORCH_CHECK_VALUE(perm.size(0) == x.size(1),
                    "channel_gather: perm must have length C = x.size(1) = ", x.size(1), ", got ",
                    perm.size(0));
  return gather_memory_format(x);
}

// "TooHard" means one side is not dense; the kernels then work on a dense copy of it, which makes
// sharing harmless, so only a definite overlap is an error (as in ATen's own out= checks).
inline bool shares_no_memory(const at::Tensor& a, const at::Tensor& b) {
  const at::MemOverlapStatus status = at::get_overlap_status(a, b);
  return status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial;
}

// Checks an out= tensor: x's shape, dtype and device, and no memory shared with x or perm (the
// kernels read both while writing out).
inline void check_channel_gather_out(const at::Tensor& x, const at::Tensor& perm,
                                     const at::Tensor& out) {
  TORCH_CHECK_VALUE(out.sizes() == x.sizes(), "channel_gather: out must have x's shape ",
                    x.sizes(), ", got ", out.sizes());
  TORCH_CHECK_TYPE(out.scalar_type() == x.scalar_type(), "channel_gather: out must have x's dtype ",
                   x.scalar_type(), ", got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.device() == x.device(), "channel_gather: out must be on x's device ",
                    x.device(), ", got ", out.device());
  TORCH_CHECK_VALUE(at::has_internal_overlap(out) != at::MemOverlap::Yes,
                    "channel_gather: out must not have elements that share memory (e.g. an expanded "
                    "tensor), got strides ", out.strides());
  TORCH_CHECK_VALUE(shares_no_memory(out, x),
                    "channel_gather: out must not share memory with x; pass a separate tensor");
  TORCH_CHECK_VALUE(shares_no_memory(out, perm),
                    "channel_gather: out must not share memory with perm; pass a separate tensor");
}

// How the kernels walk a non-empty output (channel_gather's, which has x's layout, or
// cat_gather's): as N * C planes of `inner` elements, plane (n, c) copied from the plane of
// channel perm[c] (contiguous with inner > 1), else as N * inner pixel rows of C channels, each
// gathered through perm (channels-last, or contiguous with inner == 1: the same layout).
struct GatherLayout {
  int64_t n;
  int64_t c;
  int64_t inner;
  bool planes;
  int64_t pixels() const { return n * inner; }
};

inline GatherLayout gather_layout(const at::Tensor& x, at::MemoryFormat format) {
  const int64_t n = x.size(0);
  const int64_t c = x.size(1);
  int64_t inner = 1;
  for (int64_t d = 2; d < x.dim(); ++d) inner *= x.size(d);
  return {n, c, inner, format == at::MemoryFormat::Contiguous && inner > 1};
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

// Whether the kernels can read `t` where it lies for an output walked as `layout`: contiguous
// planes (pixel stride 1) for plane copies, consecutive channels and one pixel stride for rows.
inline bool readable_in_place(const at::Tensor& t, const GatherLayout& layout) {
  const int64_t step = flat_pixel_stride(t);
  return layout.planes ? step == 1 : step >= 0 && (t.size(1) == 1 || t.stride(1) == 1);
}

// `t` as the kernels read it for an output walked as `layout` in `format`: itself when
// readable_in_place (a channel slice of a tensor, ShuffleNet v2's split), else a dense copy in
// `format`. The caller keeps the result alive while the kernels run.
inline at::Tensor readable_source(const at::Tensor& t, const GatherLayout& layout,
                                  at::MemoryFormat format) {
  return readable_in_place(t, layout) ? t : t.contiguous(format);
}

// A tensor returned by readable_source, as a GatherSource.
inline GatherSource gather_source(const at::Tensor& t, const GatherLayout& layout) {
  return {t.const_data_ptr(), t.size(1), t.stride(0), layout.planes ? t.stride(1) : 1,
          flat_pixel_stride(t)};
}

// A device's kernel: writes the gather of x into `out`, which has x's shape and is dense in
// `format`.
using GatherInto = void (*)(const at::Tensor& x, at::Tensor& out, const at::Tensor& perm,
                            at::MemoryFormat format);

// channel_gather on a device whose kernel is `kernel`.
template <GatherInto kernel>
at::Tensor channel_gather_with(const at::Tensor& x, const at::Tensor& perm) {
  const at::MemoryFormat format = check_channel_gather_args(x, perm);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(format));
  kernel(x, out, perm, format);
  return out;
}

// channel_gather.out on a device whose kernel is `kernel`.
template <GatherInto kernel>
void channel_gather_out_with(const at::Tensor& x, const at::Tensor& perm, at::Tensor& out) {
  const at::MemoryFormat format = check_channel_gather_args(x, perm);
  check_channel_gather_out(x, perm, out);
  if (out.is_contiguous(format)) {
    kernel(x, out, perm, format);
  } else {
    // out has another layout (or is not dense): gather densely, then let copy_ restride.
    out.copy_(channel_gather_with<kernel>(x, perm));
  }
}

}  // namespace autoshuffle_ext
