// CPU kernel of channel_gather. Contiguous tensors are N*C planes, each a memcpy from its source
// plane; channels_last tensors are rows of C channels, each gathered through perm (pixel_gather.cpp,
// SIMD where the CPU has it). Both move bytes only, so one kernel serves every dtype.
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <cstring>
#include <limits>

#include "../channel_gather.h"
#include "pixel_gather.h"

namespace autoshuffle_ext {
namespace {

// Bytes below which a chunk of work is not worth waking a second thread for: the OpenMP fork and
// join costs a few microseconds, the time to copy about this much.
constexpr int64_t kMinBytesPerThread = int64_t{1} << 18;

int64_t grain_for(int64_t item_bytes) {
  return std::max<int64_t>(1, kMinBytesPerThread / std::max<int64_t>(item_bytes, 1));
}

// perm as int32 (the SIMD gathers take 32-bit indices), after checking every entry indexes a
// channel, so that no loop can leave x or out, and that no entry repeats: the gradient is the
// gather by the inverse permutation (autograd.cpp), which only a permutation has. Both checks
// ride on the one pass over perm that the conversion makes anyway.
c10::SmallVector<int32_t, 1024> checked_perm32(const int64_t* perm, int64_t c) {
  c10::SmallVector<int32_t, 1024> perm32(c);
  c10::SmallVector<int32_t, 1024> first_at(c, -1);  // first_at[j]: the i with perm[i] == j
  for (int64_t i = 0; i < c; ++i) {
    const int64_t j = perm[i];
    TORCH_CHECK_INDEX(j >= 0 && j < c, "channel_gather: perm entries must lie in [0, ", c,
                      ") (C = x.size(1)), got perm[", i, "] = ", j);
    TORCH_CHECK_VALUE(first_at[j] < 0, "channel_gather: perm must be a permutation of 0..", c - 1,
                      " (each index exactly once), got perm[", i, "] = ", j, ", also at perm[",
                      first_at[j], "]");
    first_at[j] = static_cast<int32_t>(i);
    perm32[i] = static_cast<int32_t>(j);
  }
  return perm32;
}

// Contiguous [N, C, inner]: plane (n, c) of out is plane (n, perm[c]) of x.
void gather_planes(const char* src, char* dst, const int64_t* perm, int64_t n, int64_t c,
                   int64_t plane_bytes) {
  at::parallel_for(0, n * c, grain_for(plane_bytes), [&](int64_t begin, int64_t end) {
    int64_t b = begin / c;
    int64_t ch = begin - b * c;
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(dst + i * plane_bytes, src + (b * c + perm[ch]) * plane_bytes, plane_bytes);
      if (++ch == c) {
        ch = 0;
        ++b;
      }
    }
  });
}

// Channels-last [pixels, C]: every pixel's channel vector is gathered through perm.
void gather_pixels(const void* src, void* dst, const int64_t* perm, const int32_t* perm32,
                   int64_t pixels, int64_t c, int64_t element_size) {
  const cpu::Isa isa = cpu::pixel_gather_isa();
  at::parallel_for(0, pixels, grain_for(c * element_size), [&](int64_t begin, int64_t end) {
    cpu::gather_pixels(src, dst, perm, perm32, begin, end, pixels - 1, c, element_size, isa);
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
  const auto perm32 = checked_perm32(p, c);
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
