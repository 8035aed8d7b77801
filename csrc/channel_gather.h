// Shared argument checks and output layout of channel_gather, used by the CPU and CUDA kernels.
// The Python fake kernel (autoshuffle_ext/ops/channel_gather.py) mirrors gather_memory_format:
// torch.compile and opcheck compare the real output's strides with the fake one's.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

namespace autoshuffle_ext {

// The memory format of both the dense input the kernels read and the output they write: x's own
// when x is dense in it, else the format x's strides are closest to (as `suggest_memory_format`).
inline at::MemoryFormat gather_memory_format(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return at::MemoryFormat::ChannelsLast;
  if (x.dim() == 5 && x.is_contiguous(at::MemoryFormat::ChannelsLast3d))
    return at::MemoryFormat::ChannelsLast3d;
  return x.suggest_memory_format();
}

// Validates x and perm (everything but perm's values) and returns the memory format to use.
// Errors map to Python ValueError / TypeError and name the argument, the expectation and the value.
// perm's entries are range-checked by each kernel: on the CPU before its loop, on CUDA on the device
// (no host synchronisation).
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

}  // namespace autoshuffle_ext
