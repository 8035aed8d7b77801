// CPU kernel of cat_gather. Contiguous outputs are N*C planes, each a copy of its plane of a or of
// b (plane_gather.cpp); channels_last outputs are rows of C channels, each gathered from a pixel
// row of a and one of b (pixel_cat_gather.cpp). Both move bytes only, so one kernel serves every
// dtype.
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <limits>

#include "../cat_gather.h"
#include "gather_common.h"
#include "pixel_cat_gather.h"
#include "plane_gather.h"

namespace autoshuffle_ext {
namespace {

// Contiguous output [N, C, inner]: plane (n, c) is plane perm[c] of image n of cat([a, b], 1).
void cat_planes(const CatSource& a, const CatSource& b, char* dst, const int64_t* perm,
                int64_t n, int64_t c, int64_t inner, int64_t element_size) {
  const int64_t plane_bytes = inner * element_size;
  // Output channel ch of image img copies from first[ch] + img * step[ch].
  c10::SmallVector<const char*, 512> first(c);
  c10::SmallVector<int64_t, 512> step(c);
  const char* a_data = static_cast<const char*>(a.tensor.const_data_ptr());
  const char* b_data = static_cast<const char*>(b.tensor.const_data_ptr());
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t j = perm[ch];
    const bool in_a = j < a.channels;
    first[ch] = in_a ? a_data + j * a.channel_stride * element_size
                     : b_data + (j - a.channels) * b.channel_stride * element_size;
    step[ch] = (in_a ? a.batch_stride : b.batch_stride) * element_size;
  }
  const cpu::Isa isa = cpu::kernel_isa();
  const bool stream = cpu::stream_output(n * c * plane_bytes);
  at::parallel_for(0, n * c, cpu::grain_for(plane_bytes), [&](int64_t begin, int64_t end) {
    cpu::gather_planes(first.data(), step.data(), c, dst, begin, end, plane_bytes, isa, stream);
  });
}

cpu::PixelRows pixel_rows(const CatSource& s) {
  return {s.tensor.const_data_ptr(), s.channels, s.batch_stride, s.pixel_stride};
}

// Channels-last output [pixels, C]: every pixel's row is gathered from its rows in a and b.
void cat_pixels(const CatSource& a, const CatSource& b, void* dst, const int64_t* perm,
                const int32_t* perm32, int64_t pixels, int64_t inner, int64_t c,
                int64_t element_size) {
  const cpu::Isa isa = cpu::kernel_isa();
  const cpu::PixelRows rows_a = pixel_rows(a);
  const cpu::PixelRows rows_b = pixel_rows(b);
  at::parallel_for(0, pixels, cpu::grain_for(c * element_size), [&](int64_t begin, int64_t end) {
    cpu::cat_gather_pixels(rows_a, rows_b, dst, perm, perm32, begin, end, inner, element_size,
                           isa);
  });
}

// The CPU kernel (a CatGatherInto): perm is checked to be a permutation before any copy.
void cat_gather_into(const CatSource& a, const CatSource& b, const CatLayout& layout,
                     const at::Tensor& perm, at::Tensor& out) {
  const int64_t c = layout.c;
  TORCH_CHECK_VALUE(c <= std::numeric_limits<int32_t>::max(),
                    "cat_gather: a.size(1) + b.size(1) must be < 2^31 on the CPU, got ", c);
  const at::Tensor perm_c = perm.contiguous();
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const auto perm32 = cpu::checked_perm32(p, c, "cat_gather", "a.size(1) + b.size(1)");
  if (out.numel() == 0) return;
  const int64_t element_size = out.element_size();
  if (layout.planes) {
    cat_planes(a, b, static_cast<char*>(out.mutable_data_ptr()), p, layout.n, c, layout.inner,
               element_size);
  } else {
    cat_pixels(a, b, out.mutable_data_ptr(), p, perm32.data(), layout.pixels(), layout.inner, c,
               element_size);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("cat_gather", &cat_gather_with<cat_gather_into>);
}

}  // namespace autoshuffle_ext
