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

// The output's layout: a's sizes with a.size(1) + b.size(1) channels, in `format`.
inline GatherLayout cat_layout(const at::Tensor& a, const at::Tensor& b, at::MemoryFormat format) {
  GatherLayout layout = gather_layout(a, format);
  layout.c += b.size(1);
  return layout;
}

// A device's kernel: writes cat([a, b], 1) gathered through perm into `out`, which is dense in
// the output's format. It checks perm's values as the device can (the CPU on the host, before
// anything is read and also for empty inputs; CUDA the range, on the device).
using CatGatherInto = void (*)(const GatherSource& a, const GatherSource& b,
                               const GatherLayout& layout, const at::Tensor& perm, at::Tensor& out);

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
  const GatherLayout layout = cat_layout(a, b, format);
  // Each input where it lies, or a dense copy (kept alive here while the kernel runs).
  const at::Tensor a_read = readable_source(a, layout, format);
  const at::Tensor b_read = readable_source(b, layout, format);
  kernel(gather_source(a_read, layout), gather_source(b_read, layout), layout, perm, out);
  return out;
}

}  // namespace autoshuffle_ext
