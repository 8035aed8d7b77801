// Per-pixel gather from two inputs (cat_gather, channels_last): dst[p] = cat(a[p], b[p])[perm].
// Hardware gathers, channel_gather's way for wide rows, reach only about 1/4 of copy speed on
// AMD Zen 4; 4-byte elements, the common case, avoid them:
// - ShuffleNet's own shuffle (a and b interleaved): a zip, at about the concat's cost;
// - AVX-512, a pixel's channels in at most 8 registers (ShuffleNet v2's 58 + 58): registers are
//   loaded from both rows and each output vector is built from them by permutes, as
//   pixel_gather.cpp does for one row;
// - AVX2, any channel count: tile transposes (pixel_transpose.h), the two inputs being two ranges
//   of a tile's units.
// Other element sizes and CPUs copy each pixel's two rows into one dense row of a small buffer
// and gather that with pixel_gather.cpp.
#include "pixel_cat_gather.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "pixel_transpose.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

namespace autoshuffle_ext::cpu {
namespace {

// Walks the pixel rows of one input from a given pixel, keeping (n, s) by increments: no
// division per pixel.
class RowCursor {
 public:
  RowCursor(const PixelRows& rows, int64_t element_size, int64_t inner, int64_t pixel)
      : data_(static_cast<const char*>(rows.data)),
        batch_bytes_(rows.batch_stride * element_size),
        pixel_bytes_(rows.pixel_stride * element_size),
        inner_(inner),
        n_(pixel / inner),
        s_(pixel % inner) {}

  const char* row() const { return data_ + n_ * batch_bytes_ + s_ * pixel_bytes_; }

  void next() {
    if (++s_ == inner_) {
      s_ = 0;
      ++n_;
    }
  }

 private:
  const char* data_;
  int64_t batch_bytes_;
  int64_t pixel_bytes_;
  int64_t inner_;
  int64_t n_;
  int64_t s_;
};

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
  for (int64_t p = begin; p < end; p += block) {
    const int64_t count = std::min(block, end - p);
    for (int64_t i = 0; i < count; ++i, ra.next(), rb.next()) {
      std::memcpy(buffer.data() + i * row_bytes, ra.row(), a_bytes);
      std::memcpy(buffer.data() + i * row_bytes + a_bytes, rb.row(), b_bytes);
    }
    // The padding lets every pixel of the buffer take the SIMD path: its "last pixel" lies past
    // the block.
    gather_pixels(buffer.data(), dst + p * row_bytes, perm, perm32, 0, count, count, c,
                  element_size, isa, gathers_are_fast(), false);
  }
}

#ifdef AUTOSHUFFLE_X86_SIMD

// 4-byte elements, any channel count: tile transposes (pixel_transpose.h), 4 pixels at a time, the
// two inputs being two ranges of the tile's units. A last tile of fewer pixels repeats its last
// pixel, which is then read and written again with the same values, inside this range.
void transposed_pixels(const PixelRows& a, const PixelRows& b, char* dst, const int32_t* perm32,
                       int64_t begin, int64_t end, int64_t inner) {
  constexpr int kPixels = TileTranspose::kPixels;
  const int64_t c = a.channels + b.channels;
  TileTranspose tiles(perm32, c, a.channels);
  RowCursor ra(a, 4, inner, begin);
  RowCursor rb(b, 4, inner, begin);
  float* out = reinterpret_cast<float*>(dst);
  const float* a_rows[kPixels];
  const float* b_rows[kPixels];
  float* out_rows[kPixels];
  for (int64_t p = begin; p < end; p += kPixels) {
    for (int64_t i = 0; i < kPixels; ++i) {
      a_rows[i] = reinterpret_cast<const float*>(ra.row());
      b_rows[i] = reinterpret_cast<const float*>(rb.row());
      out_rows[i] = out + std::min(p + i, end - 1) * c;
      if (p + i + 1 < end) {  // past the range's last pixel the cursors stay on it
        ra.next();
        rb.next();
      }
    }
    tiles.load(a_rows, 0);
    tiles.load(b_rows, 1);
    tiles.store(out_rows);
  }
}

// Whether perm is ShuffleNet's own 2-group shuffle of cat([a, b], 1) with equal halves:
// 0, Ca, 1, Ca + 1, ..., i.e. a and b interleaved channel by channel.
bool is_zip(const int32_t* perm32, int64_t ca, int64_t cb) {
  if (ca != cb) return false;
  for (int64_t i = 0; i < ca; ++i) {
    if (perm32[2 * i] != i || perm32[2 * i + 1] != ca + i) return false;
  }
  return true;
}

// AVX2, 4-byte elements, ShuffleNet's own shuffle (is_zip): 8 channels of a and 8 of b zip into
// 16 output channels with three shuffles, at about the concat's own cost.
__attribute__((target("avx2"))) void zipped_pixels(const PixelRows& a, const PixelRows& b,
                                                   char* dst, int64_t begin, int64_t end,
                                                   int64_t inner) {
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
  }
}

// AVX-512, 4-byte elements, a pixel's channels in at most 8 registers (ceil(Ca / 16) +
// ceil(Cb / 16) <= 8): the registers are loaded from both rows and each output vector is built
// from them with one vpermt2d per register pair plus blends, as pixel_gather.cpp does for one
// row. With no table to go through it ran 1.4x (in L2) to 2.3x (in memory) faster than the
// transpose on 58 + 58 channels (AMD Zen 4); with more registers the permutes per output vector
// grow with C and the transpose wins (16 registers: 1.2x slower).
constexpr int kMaxPermuteRegs = 8;

struct PermutePlan {
  // idx[o][j]: for output vector o, the lane (0..31) of register pair j each output lane takes;
  // mask[o][j]: the output lanes whose source lies in pair j.
  alignas(64) int32_t idx[kMaxPermuteRegs][kMaxPermuteRegs / 2][16];
  uint16_t mask[kMaxPermuteRegs][kMaxPermuteRegs / 2];
  // Register r holds the 16 channels from `offset[r]` of a's row (r < a_regs) or of b's, the lanes
  // of `load_mask[r]` (a row's last register is partial: masked loads touch no memory outside).
  int64_t offset[kMaxPermuteRegs];
  uint16_t load_mask[kMaxPermuteRegs];
  int a_regs;
};

int64_t registers_for(int64_t channels) { return (channels + 15) / 16; }

void build_permute_plan(const int32_t* perm32, int64_t ca, int64_t cb, PermutePlan& plan) {
  std::memset(&plan, 0, sizeof(plan));
  plan.a_regs = static_cast<int>(registers_for(ca));
  const int regs = plan.a_regs + static_cast<int>(registers_for(cb));
  for (int r = 0; r < regs; ++r) {
    const bool in_a = r < plan.a_regs;
    const int64_t first = 16 * (in_a ? r : r - plan.a_regs);
    const int64_t lanes = std::min<int64_t>(16, (in_a ? ca : cb) - first);
    plan.offset[r] = first;
    plan.load_mask[r] = static_cast<uint16_t>((1u << lanes) - 1u);
  }
  for (int64_t ch = 0; ch < ca + cb; ++ch) {
    const int o = static_cast<int>(ch / 16), lane = static_cast<int>(ch % 16);
    const int64_t s = perm32[ch];
    const int64_t at = s < ca ? s : 16 * plan.a_regs + (s - ca);  // lane among all registers
    plan.idx[o][at / 32][lane] = static_cast<int32_t>(at % 32);
    plan.mask[o][at / 32] |= static_cast<uint16_t>(1u << lane);
  }
}

// B pixels at a time: each index vector and mask is loaded once for all B. V registers per
// pixel, a compile-time count so that the sequence is fixed and branch-free.
template <int V, int B>
__attribute__((target("avx512f"))) inline void permute_block(const int32_t* const a[B],
                                                             const int32_t* const b[B],
                                                             int32_t* out, const PermutePlan& plan,
                                                             int64_t c, __mmask16 out_tail) {
  constexpr int kPairs = (V + 1) / 2;
  __m512i r[B][2 * kPairs];
  for (int p = 0; p < B; ++p) {
    for (int j = 0; j < V; ++j) {
      const int32_t* row = j < plan.a_regs ? a[p] : b[p];
      r[p][j] = _mm512_maskz_loadu_epi32(plan.load_mask[j], row + plan.offset[j]);
    }
    if constexpr (V % 2) r[p][V] = _mm512_setzero_si512();
  }
  const int64_t outputs = (c + 15) / 16;
  for (int64_t o = 0; o < outputs; ++o) {
    __m512i acc[B];
    const __m512i idx0 = _mm512_load_si512(plan.idx[o][0]);
    for (int p = 0; p < B; ++p) acc[p] = _mm512_permutex2var_epi32(r[p][0], idx0, r[p][1]);
    for (int j = 1; j < kPairs; ++j) {
      const __m512i idx = _mm512_load_si512(plan.idx[o][j]);
      const __mmask16 m = plan.mask[o][j];
      for (int p = 0; p < B; ++p) {
        acc[p] = _mm512_mask_blend_epi32(
            m, acc[p], _mm512_permutex2var_epi32(r[p][2 * j], idx, r[p][2 * j + 1]));
      }
    }
    for (int p = 0; p < B; ++p) {
      if (o < outputs - 1) {
        _mm512_storeu_si512(out + p * c + 16 * o, acc[p]);
      } else {
        _mm512_mask_storeu_epi32(out + p * c + 16 * o, out_tail, acc[p]);
      }
    }
  }
}

template <int V>
__attribute__((target("avx512f"))) void permute_pixels(const PixelRows& a, const PixelRows& b,
                                                       char* dst, const PermutePlan& plan,
                                                       int64_t begin, int64_t end,
                                                       int64_t inner) {
  const int64_t c = a.channels + b.channels;
  const int tail = static_cast<int>(c - (c - 1) / 16 * 16);
  const __mmask16 out_tail = static_cast<__mmask16>((1u << tail) - 1u);
  RowCursor ra(a, 4, inner, begin);
  RowCursor rb(b, 4, inner, begin);
  int32_t* out = reinterpret_cast<int32_t*>(dst);
  const int32_t* a_rows[2];
  const int32_t* b_rows[2];
  int64_t p = begin;
  for (; p + 2 <= end; p += 2) {
    for (int i = 0; i < 2; ++i, ra.next(), rb.next()) {
      a_rows[i] = reinterpret_cast<const int32_t*>(ra.row());
      b_rows[i] = reinterpret_cast<const int32_t*>(rb.row());
    }
    permute_block<V, 2>(a_rows, b_rows, out + p * c, plan, c, out_tail);
  }
  if (p < end) {
    a_rows[0] = reinterpret_cast<const int32_t*>(ra.row());
    b_rows[0] = reinterpret_cast<const int32_t*>(rb.row());
    permute_block<V, 1>(a_rows, b_rows, out + p * c, plan, c, out_tail);
  }
}

void permuted_pixels(const PixelRows& a, const PixelRows& b, char* dst, const int32_t* perm32,
                     int64_t begin, int64_t end, int64_t inner) {
  PermutePlan plan;
  build_permute_plan(perm32, a.channels, b.channels, plan);
  switch (registers_for(a.channels) + registers_for(b.channels)) {
#define AS_CASE(V)                                         \
  case V:                                                  \
    permute_pixels<V>(a, b, dst, plan, begin, end, inner); \
    return;
    AS_CASE(2)
    AS_CASE(3)
    AS_CASE(4)
    AS_CASE(5)
    AS_CASE(6)
    AS_CASE(7)
    AS_CASE(8)
#undef AS_CASE
  }
}

#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace

void cat_gather_pixels(const PixelRows& a, const PixelRows& b, void* dst, const int64_t* perm,
                       const int32_t* perm32, int64_t begin, int64_t end, int64_t inner,
                       int64_t element_size, Isa isa) {
  char* d = static_cast<char*>(dst);
#ifdef AUTOSHUFFLE_X86_SIMD
  if (element_size == 4 && isa != Isa::kScalar && is_zip(perm32, a.channels, b.channels)) {
    zipped_pixels(a, b, d, begin, end, inner);
    return;
  }
  if (element_size == 4 && isa == Isa::kAvx512 && a.channels > 0 && b.channels > 0 &&
      registers_for(a.channels) + registers_for(b.channels) <= kMaxPermuteRegs) {
    permuted_pixels(a, b, d, perm32, begin, end, inner);
    return;
  }
  if (element_size == 4 && isa != Isa::kScalar) {
    transposed_pixels(a, b, d, perm32, begin, end, inner);
    return;
  }
#endif
  packed_pixels(a, b, d, perm, perm32, begin, end, inner, element_size, isa);
}

}  // namespace autoshuffle_ext::cpu
