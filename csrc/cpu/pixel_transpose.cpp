// Tile transposes for channels-last gathers of 4-byte elements (see pixel_transpose.h). Measured
// on AMD Zen 4, float32, random perm: one thread into a preallocated output, 32x232x14x14 took
// 281 us against 582 us for the 16-lane gathers; two threads, round-robin, 0.71-0.79x the gathers'
// time on 64x480x8x8 and 32x232x14x14. Standalone, one thread, 6 MB: 4-pixel tiles moved 4.5-5.5
// G elements/s, the 8-pixel tiles cat_gather used before (three shuffle levels per transpose and
// masked tails) 2.0-2.5. Each element is stored twice (table, output): on Zen 4 that keeps the
// tiles at about 1.6x a copy even in L2.
#include "pixel_transpose.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace autoshuffle_ext::cpu {
namespace {

constexpr int kBlock = 8;  // channels per 256-bit register

// The unit of channel t of an input, counted from that input's first unit. Transposing 4 rows of 8
// channels leaves in register j, 128-bit lane k, channel 4k + j over the 4 rows; register j is
// stored at units 2j, 2j + 1.
int64_t unit_of(int64_t t) { return kBlock * (t / kBlock) + 2 * (t % 4) + (t % kBlock) / 4; }

int64_t round_up(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// The low (high) 64-bit halves of a and b, interleaved within each 128-bit lane.
__attribute__((target("avx2"), always_inline)) inline __m256 low_pairs(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}
__attribute__((target("avx2"), always_inline)) inline __m256 high_pairs(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}

// 4 x 4 transposes within each 128-bit lane of 4 registers: rows of 8 channels <-> units, both ways.
__attribute__((target("avx2"), always_inline)) inline void transpose(__m256& r0, __m256& r1,
                                                                      __m256& r2, __m256& r3) {
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  r0 = low_pairs(t0, t2);
  r1 = high_pairs(t0, t2);
  r2 = low_pairs(t1, t3);
  r3 = high_pairs(t1, t3);
}

// Two units of the table, at byte offsets offset[0] and offset[1], as one register.
__attribute__((target("avx2"), always_inline)) inline __m256 unit_pair(const char* table,
                                                                       const int32_t* offset) {
  return _mm256_insertf128_ps(
      _mm256_castps128_ps256(_mm_load_ps(reinterpret_cast<const float*>(table + offset[0]))),
      _mm_load_ps(reinterpret_cast<const float*>(table + offset[1])), 1);
}

}  // namespace

TileTranspose::TileTranspose(const int32_t* perm32, int64_t c, int64_t channels_a)
    : c_(c), channels_{channels_a, c - channels_a} {
  first_unit_[0] = 0;
  first_unit_[1] = round_up(channels_a);
  const int64_t units = first_unit_[1] + round_up(channels_[1]);
  storage_.reset(new float[units * 4 + 8]);  // + 8: room to align to 32 bytes
  table_ = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(storage_.get()) + 31) &
                                    ~uintptr_t{31});
  // Output block b's register j takes, in lane k, the unit of output channel 8b + 4k + j: the
  // same transpose then yields the block's 4 rows. Channels past c read unit 0 and are dropped.
  offset_.assign(round_up(c), 0);
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t s = perm32[ch];
    const int input = s < channels_a ? 0 : 1;
    const int64_t unit = first_unit_[input] + unit_of(input ? s - channels_a : s);
    const int64_t b = ch / kBlock, k = (ch % kBlock) / 4, j = ch % 4;
    offset_[kBlock * b + 2 * j + k] = static_cast<int32_t>(unit * 16);
  }
}

__attribute__((target("avx2"))) void TileTranspose::load(const float* const rows[kPixels],
                                                         int input) {
  // Locals, not members and array entries: the vector stores may alias memory, which would make the
  // compiler reload those after every store.
  const int64_t channels = channels_[input];
  float* const units = table_ + first_unit_[input] * 4;
  const float *const row0 = rows[0], *const row1 = rows[1], *const row2 = rows[2],
                     *const row3 = rows[3];
  int64_t k = 0;
  for (; k + kBlock <= channels; k += kBlock) {
    __m256 r0 = _mm256_loadu_ps(row0 + k), r1 = _mm256_loadu_ps(row1 + k);
    __m256 r2 = _mm256_loadu_ps(row2 + k), r3 = _mm256_loadu_ps(row3 + k);
    transpose(r0, r1, r2, r3);
    _mm256_store_ps(units + k * 4, r0);
    _mm256_store_ps(units + k * 4 + 8, r1);
    _mm256_store_ps(units + k * 4 + 16, r2);
    _mm256_store_ps(units + k * 4 + 24, r3);
  }
  // The last channels one by one: AVX2's masked stores are slow on AMD, and this is a few per row.
  for (int64_t t = k; t < channels; ++t) {
    for (int r = 0; r < kPixels; ++r) units[unit_of(t) * 4 + r] = rows[r][t];
  }
}

__attribute__((target("avx2"))) void TileTranspose::store(float* const rows[kPixels],
                                                          bool stream) const {
  const char* const table = reinterpret_cast<const char*>(table_);
  const int32_t* const offsets = offset_.data();
  const int64_t c = c_;
  float *const row0 = rows[0], *const row1 = rows[1], *const row2 = rows[2], *const row3 = rows[3];
  stream = stream && c % kBlock == 0 && reinterpret_cast<uintptr_t>(row0) % 32 == 0 &&
           reinterpret_cast<uintptr_t>(row1) % 32 == 0 &&
           reinterpret_cast<uintptr_t>(row2) % 32 == 0 &&
           reinterpret_cast<uintptr_t>(row3) % 32 == 0;
  for (int64_t k = 0; k < c; k += kBlock) {
    const int32_t* offset = offsets + k;
    __m256 r0 = unit_pair(table, offset), r1 = unit_pair(table, offset + 2);
    __m256 r2 = unit_pair(table, offset + 4), r3 = unit_pair(table, offset + 6);
    transpose(r0, r1, r2, r3);
    if (stream) {
      _mm256_stream_ps(row0 + k, r0);
      _mm256_stream_ps(row1 + k, r1);
      _mm256_stream_ps(row2 + k, r2);
      _mm256_stream_ps(row3 + k, r3);
    } else if (k + kBlock <= c) {
      _mm256_storeu_ps(row0 + k, r0);
      _mm256_storeu_ps(row1 + k, r1);
      _mm256_storeu_ps(row2 + k, r2);
      _mm256_storeu_ps(row3 + k, r3);
    } else {
      alignas(32) float block[kPixels][kBlock];
      _mm256_store_ps(block[0], r0);
      _mm256_store_ps(block[1], r1);
      _mm256_store_ps(block[2], r2);
      _mm256_store_ps(block[3], r3);
      for (int r = 0; r < kPixels; ++r) std::memcpy(rows[r] + k, block[r], (c - k) * 4);
    }
  }
}

void transpose_pixels(const float* src, float* dst, const int32_t* perm32, int64_t begin,
                      int64_t end, int64_t c, bool stream) {
  if (begin >= end) return;
  TileTranspose tiles(perm32, c, c);
  const bool prefetch = (end - begin) * c * 4 >= TileTranspose::kPrefetchBytes;
  const float* in[TileTranspose::kPixels];
  float* out[TileTranspose::kPixels];
  for (int64_t p = begin; p < end; p += TileTranspose::kPixels) {
    // A last tile of fewer pixels repeats its last pixel, which is then read and written again
    // with the same values, inside this range.
    for (int64_t r = 0; r < TileTranspose::kPixels; ++r) {
      const int64_t q = std::min(p + r, end - 1);
      in[r] = src + q * c;
      out[r] = dst + q * c;
    }
    // The tile after next (without it 64x240x16x16, past the L3 cache, ran about 1.15x slower).
    if (prefetch) TileTranspose::prefetch(in, 2 * TileTranspose::kPixels * c * 4, c * 4);
    tiles.load(in, 0);
    tiles.store(out, stream);
  }
  if (stream) _mm_sfence();  // order the non-temporal stores before whatever reads dst next
}

}  // namespace autoshuffle_ext::cpu
#endif  // AUTOSHUFFLE_X86_SIMD
