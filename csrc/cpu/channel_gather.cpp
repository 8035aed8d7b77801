// CPU kernel of channel_gather. Contiguous tensors are N*C planes, each a copy of its source plane
// (plane_gather.cpp); channels_last tensors are rows of C channels, each gathered through perm
// (pixel_gather.cpp, SIMD where the CPU has it). Both move bytes only, so one kernel serves every
// dtype.
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <limits>

#include "../channel_gather.h"
#include "gather_common.h"
#include "pixel_gather.h"
#include "pixel_shuffle.h"
#include "plane_gather.h"

namespace autoshuffle_ext {
namespace {

// Contiguous [N, C, inner]: plane (n, c) of out is plane (n, perm[c]) of x.
void gather_planes(const char* src, char* dst, const int64_t* perm, int64_t n, int64_t c,
                   int64_t plane_bytes) {
  c10::SmallVector<const char*, 512> first(c);
  const c10::SmallVector<int64_t, 512> step(c, c * plane_bytes);
  for (int64_t ch = 0; ch < c; ++ch) first[ch] = src + perm[ch] * plane_bytes;
  const cpu::Isa isa = cpu::kernel_isa();
  const bool stream = cpu::stream_output(n * c * plane_bytes);
  at::parallel_for(0, n * c, cpu::grain_for(plane_bytes), [&](int64_t begin, int64_t end) {
    cpu::gather_planes(first.data(), step.data(), c, dst, begin, end, plane_bytes, isa, stream);
  });
}

// Channels-last [pixels, C]: every pixel's channel vector is gathered through perm, as a shuffle
// and a patch when perm is near one (pixel_shuffle.h).
void gather_pixels(const void* src, void* dst, const int64_t* perm, const int32_t* perm32,
                   int64_t pixels, int64_t c, int64_t element_size) {
  const cpu::Isa isa = cpu::kernel_isa();
#ifdef AUTOSHUFFLE_X86_SIMD
  if (isa == cpu::Isa::kAvx512) {
    if (const auto shuffle = cpu::NearShuffle::find(perm32, c, element_size)) {
      at::parallel_for(0, pixels, cpu::grain_for(c * element_size),
                       [&](int64_t begin, int64_t end) { shuffle->run(src, dst, begin, end); });
      return;
    }
  }
#endif
  const bool gathers = cpu::gathers_are_faster(isa, element_size);
  const bool stream = cpu::stream_output(pixels * c * element_size);
  at::parallel_for(0, pixels, cpu::grain_for(c * element_size), [&](int64_t begin, int64_t end) {
    cpu::gather_pixels(src, dst, perm, perm32, begin, end, pixels - 1, c, element_size, isa,
                       gathers, stream);
  });
}

// The CPU kernel (a GatherInto): perm is checked to be a permutation before any copy.
void gather_into(const at::Tensor& x, at::Tensor& out, const at::Tensor& perm,
                 at::MemoryFormat format) {
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(c <= std::numeric_limits<int32_t>::max(),
                    "channel_gather: x.size(1) must be < 2^31 on the CPU, got ", c);
  const at::Tensor perm_c = perm.contiguous();
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const auto perm32 = cpu::checked_perm32(p, c, "channel_gather", "x.size(1)");
  if (x.numel() == 0) return;
  const at::Tensor src = x.contiguous(format);
  const GatherLayout layout = gather_layout(x, format);
  const int64_t element_size = x.element_size();
  if (layout.planes) {
    gather_planes(static_cast<const char*>(src.const_data_ptr()),
                  static_cast<char*>(out.mutable_data_ptr()), p, layout.n, c,
                  layout.inner * element_size);
  } else {
    gather_pixels(src.const_data_ptr(), out.mutable_data_ptr(), p, perm32.data(), layout.pixels(),
                  c, element_size);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("channel_gather", &channel_gather_with<gather_into>);
  m.impl("channel_gather.out", &channel_gather_out_with<gather_into>);
}

}  // namespace autoshuffle_ext
