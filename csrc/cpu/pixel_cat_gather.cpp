// Per-pixel gather from two inputs (cat_gather, channels_last): dst[p] = cat(a[p], b[p])[perm].
// Hardware gathers reach only about 1/4 of copy speed on AMD Zen 4; 2- and 4-byte elements, the
// common cases, avoid them:
// - ShuffleNet's own shuffle (a and b interleaved), or a permutation a few channels from it: a
//   zip, at about the concat's cost, and a patch of those channels;
// - AVX-512, a pixel's channels in at most 8 registers (ShuffleNet v2's 58 + 58): permutes in
//   registers (pixel_permute.h), as channel_gather's rows of up to 128 channels;
// - AVX2, any channel count, 2- or 4-byte elements: tile transposes (pixel_transpose.h), the two
//   inputs being two ranges of a tile's units.
// Other element sizes and CPUs copy each pixel's two rows into one dense row of a small buffer
// and gather that with pixel_gather.cpp.
#include "pixel_cat_gather.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "pixel_permute.h"
#include "pixel_shuffle.h"
#include "pixel_transpose.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

namespace autoshuffle_ext::cpu {
namespace {

// Bytes of pixel rows that the packing path gathers at a time: well inside L1.
constexpr int64_t kPackBytes = 16 * 1024;
// The pixel gather of 1- and 2-byte elements reads up to 3 bytes past an element.
constexpr int64_t kPackPadding = 64;

// Any element size, any CPU: each pixel's two rows copied into one dense row of a buffer, then
// gathered by pixel_gather.cpp (its SIMD paths included).
void packed_pixels(const PixelRows& a, const PixelRows& b, char* dst, const int64_t* perm,
                   const int32_t* perm32, int64_t begin, int64_t end, int64_t inner,
                   int64_t element_size, Isa isa) {
  const int64_t c = a.channels + b.channels;
  const int64_t row_bytes = c * element_size;
  const int64_t a_bytes = a.channels * element_size;
  const int64_t b_bytes = b.channels * element_size;
  const int64_t block = std::max<int64_t>(1, kPackBytes / row_bytes);
  std::vector<char> buffer(std::min(block, end - begin) * row_bytes + kPackPadding);
  RowCursor ra(a, element_size, inner, begin);
  RowCursor rb(b, element_size, inner, begin);
  const bool gathers = gathers_are_faster(isa, element_size);
  for (int64_t p = begin; p < end; p += block) {
    const int64_t count = std::min(block, end - p);
    for (int64_t i = 0; i < count; ++i, ra.next(), rb.next()) {
      std::memcpy(buffer.data() + i * row_bytes, ra.row(), a_bytes);
      std::memcpy(buffer.data() + i * row_bytes + a_bytes, rb.row(), b_bytes);
    }
    // The padding lets every pixel of the buffer take the SIMD path: its "last pixel" lies past
    // the block.
    gather_pixels(buffer.data(), dst + p * row_bytes, perm, perm32, 0, count, count, c,
                  element_size, isa, gathers, false);
  }
}

#ifdef AUTOSHUFFLE_X86_SIMD

// ShuffleNet's own 2-group shuffle of cat([a, b], 1) with equal halves is a zip: 0, Ca, 1, Ca + 1,
// ..., a and b interleaved channel by channel. A perm at or near it (pixel_shuffle.h) is run as
// the zip plus a patch of the output channels where it differs; nullopt when a and b differ in
// size or perm is too far from the zip (beyond that the transposes win).
std::optional<std::vector<Patch>> zip_patches(const int32_t* perm32, int64_t ca, int64_t cb) {
  if (ca != cb) return std::nullopt;
  return shuffle_patches(perm32, 2 * ca, 2);
}

// AVX2, 4-byte elements: 8 channels of a and 8 of b zip into 16 output channels with three
// shuffles, at about the concat's own cost; then the patches, while the row is in L1.
__attribute__((target("avx2"))) void zipped_pixels(const PixelRows& a, const PixelRows& b,
                                                   char* dst, int64_t begin, int64_t end,
                                                   int64_t inner,
                                                   const std::vector<Patch>& patches) {
  const int64_t half = a.channels;
  RowCursor ra(a, 4, inner, begin);
  RowCursor rb(b, 4, inner, begin);
  for (int64_t p = begin; p < end; ++p, ra.next(), rb.next()) {
    const float* x = reinterpret_cast<const float*>(ra.row());
    const float* y = reinterpret_cast<const float*>(rb.row());
    float* out = reinterpret_cast<float*>(dst) + p * 2 * half;
    int64_t k = 0;
    for (; k + 8 <= half; k += 8) {
      const __m256 va = _mm256_loadu_ps(x + k);
      const __m256 vb = _mm256_loadu_ps(y + k);
      const __m256 lo = _mm256_unpacklo_ps(va, vb);  // a0 b0 a1 b1 | a4 b4 a5 b5
      const __m256 hi = _mm256_unpackhi_ps(va, vb);  // a2 b2 a3 b3 | a6 b6 a7 b7
      _mm256_storeu_ps(out + 2 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(out + 2 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (; k < half; ++k) {
      std::memcpy(out + 2 * k, x + k, 4);
      std::memcpy(out + 2 * k + 1, y + k, 4);
    }
    for (const Patch& patch : patches) {
      const float* from = patch.source < half ? x + patch.source : y + (patch.source - half);
      std::memcpy(out + patch.channel, from, 4);
    }
  }
}

#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace

void cat_gather_pixels(const PixelRows& a, const PixelRows& b, void* dst, const int64_t* perm,
                       const int32_t* perm32, int64_t begin, int64_t end, int64_t inner,
                       int64_t element_size, Isa isa) {
  char* d = static_cast<char*>(dst);
#ifdef AUTOSHUFFLE_X86_SIMD
  if (element_size == 4 && isa != Isa::kScalar) {
    if (const auto patches = zip_patches(perm32, a.channels, b.channels)) {
      zipped_pixels(a, b, d, begin, end, inner, *patches);
      return;
    }
  }
  if (element_size == 4 && isa == Isa::kAvx512 && permute_fits(a.channels, b.channels)) {
    permute_pixels(a, b, d, perm32, begin, end, inner);
    return;
  }
  if (isa != Isa::kScalar && (element_size == 2 || element_size == 4)) {
    transpose_pixels(a, b, d, perm32, begin, end, inner, element_size, false);
    return;
  }
#endif
  packed_pixels(a, b, d, perm, perm32, begin, end, inner, element_size, isa);
}

}  // namespace autoshuffle_ext::cpu
