// CPU kernel of cat_gather. Contiguous outputs are N*C planes, each a memcpy from its plane of a
// or of b; channels_last outputs are rows of C channels, each gathered from a pixel row of a and
// one of b (pixel_cat_gather.cpp). Both move bytes only, so one kernel serves every dtype.
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "../cat_gather.h"
#include "gather_common.h"
#include "pixel_cat_gather.h"

namespace autoshuffle_ext {
namespace {

// Source planes come from scattered places (perm's order, two tensors), which the hardware
// prefetcher cannot follow from one small plane to the next: the start of the plane a few copies
// ahead is fetched by hand (on [1, 58 + 58, 28, 28] float32 this took the op from about 2.6x to
// about 1.2x torch.cat's time).
constexpr int64_t kPrefetchPlanesAhead = 4;
constexpr int64_t kPrefetchBytes = 1024;

void prefetch(const char* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
}

// Output plane i as (image, channel), advanced without division.
struct PlaneCursor {
  PlaneCursor(int64_t i, int64_t c) : image(i / c), channel(i % c), channels(c) {}
  void next() {
    if (++channel == channels) {
      channel = 0;
      ++image;
    }
  }
  int64_t image;
  int64_t channel;
  int64_t channels;
};

// Copies one plane. Small planes (ShuffleNet's 7x7 and 14x14) are copied inline, 32 bytes at a
// time with an overlapping last piece: a libc memcpy call per plane costs as much as the copy.
inline void copy_plane(char* dst, const char* src, int64_t bytes) {
  if (bytes < 32 || bytes > 1024) {
    std::memcpy(dst, src, bytes);
    return;
  }
  int64_t off = 0;
  for (; off + 32 <= bytes; off += 32) std::memcpy(dst + off, src + off, 32);
  if (off < bytes) std::memcpy(dst + bytes - 32, src + bytes - 32, 32);
}

// Contiguous output [N, C, inner]: plane (n, c) is plane perm[c] of image n of cat([a, b], 1).
void cat_planes(const CatSource& a, const CatSource& b, char* dst, const int64_t* perm,
                int64_t n, int64_t c, int64_t inner, int64_t element_size) {
  const int64_t plane_bytes = inner * element_size;
  const int64_t prefetch_bytes = std::min(plane_bytes, kPrefetchBytes);
  // Output channel ch of image img copies from first[ch] + img * step[ch]: no division per plane.
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
  at::parallel_for(0, n * c, cpu::grain_for(plane_bytes), [&](int64_t begin, int64_t end) {
    PlaneCursor copy(begin, c);
    PlaneCursor fetch(begin, c);
    const auto source = [&](const PlaneCursor& at) {
      return first[at.channel] + at.image * step[at.channel];
    };
    for (int64_t i = begin; i < std::min(end, begin + kPrefetchPlanesAhead); ++i, fetch.next()) {
      prefetch(source(fetch), prefetch_bytes);
    }
    for (int64_t i = begin; i < end; ++i, copy.next()) {
      if (i + kPrefetchPlanesAhead < end) {
        prefetch(source(fetch), prefetch_bytes);
        fetch.next();
      }
      copy_plane(dst + i * plane_bytes, source(copy), plane_bytes);
    }
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
