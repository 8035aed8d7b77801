// Tile transposes for channels-last gathers (see pixel_transpose.h). Each element is stored twice
// (table, output), which keeps the tiles above a copy's time even in L2 (figures:
// bench/RESULTS.md).
#include "pixel_transpose.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "row_cursor.h"

namespace autoshuffle_ext::cpu {
namespace {

// j's bits reversed over log2(p) bits. The in-lane transpose interleaves register pairs at
// distances 1, 2, 4...: afterwards register j holds what was column reversed(j) of each lane.
constexpr int reversed(int j, int p) {
  int r = 0;
  for (int bit = 1; bit < p; bit <<= 1, j >>= 1) r = (r << 1) | (j & 1);
  return r;
}

int64_t round_up(int64_t n, int64_t block) { return (n + block - 1) / block * block; }

// Interleaves the low (into a) and high (into b) W-byte pieces of each 128-bit lane of a and b.
template <int W>
__attribute__((target("avx2"), always_inline)) inline void interleave(__m256i& a, __m256i& b) {
  __m256i lo, hi;
  if constexpr (W == 2) {
    lo = _mm256_unpacklo_epi16(a, b);
    hi = _mm256_unpackhi_epi16(a, b);
  } else if constexpr (W == 4) {
    lo = _mm256_unpacklo_epi32(a, b);
    hi = _mm256_unpackhi_epi32(a, b);
  } else {
    static_assert(W == 8);
    lo = _mm256_unpacklo_epi64(a, b);
    hi = _mm256_unpackhi_epi64(a, b);
  }
  a = lo;
  b = hi;
}

template <int E, int W>
__attribute__((target("avx2"), always_inline)) inline void transpose_level(__m256i* r) {
  constexpr int kPixels = TileTranspose<E>::kPixels, d = W / E;
  for (int i = 0; i < kPixels; ++i) {
    if (!(i & d)) interleave<W>(r[i], r[i + d]);
  }
}

// P x P transposes of E-byte elements within each 128-bit lane of P registers, rows <-> units both
// ways (register j ending up with column reversed(j)).
template <int E>
__attribute__((target("avx2"), always_inline)) inline void transpose(__m256i* r) {
  if constexpr (E == 2) transpose_level<E, 2>(r);
  transpose_level<E, 4>(r);
  transpose_level<E, 8>(r);
}

// Two units of the table, at byte offsets offset[0] and offset[1], as one register.
__attribute__((target("avx2"), always_inline)) inline __m256i unit_pair(const char* table,
                                                                        const int32_t* offset) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(table + offset[0]))),
      _mm_load_si128(reinterpret_cast<const __m128i*>(table + offset[1])), 1);
}

// A block of kBlock channels transposes into P registers: register j holds, in lane k, channel
// P * k + reversed(j), and is stored at units 2j and 2j + 1 of the block.
template <int E>
int64_t unit_of(int64_t t) {
  constexpr int P = TileTranspose<E>::kPixels, B = TileTranspose<E>::kBlock;
  return B * (t / B) + 2 * reversed(static_cast<int>(t % P), P) + (t % B) / P;
}

}  // namespace

template <int E>
TileTranspose<E>::TileTranspose(const int32_t* perm32, int64_t c, int64_t channels_a)
    : c_(c), channels_{channels_a, c - channels_a} {
  first_unit_[0] = 0;
  first_unit_[1] = round_up(channels_a, kBlock);
  units_ = first_unit_[1] + round_up(channels_[1], kBlock);
  // Pass 2 puts in register j, lane k, the unit of output channel kBlock * b + P * k + j: the
  // same transpose then yields the block of output row reversed(j). Channels past c read unit 0
  // and are dropped.
  offset_.assign(round_up(c, kBlock), 0);
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t s = perm32[ch];
    const int input = s < channels_a ? 0 : 1;
    const int64_t unit = first_unit_[input] + unit_of<E>(input ? s - channels_a : s);
    const int64_t b = ch / kBlock, k = (ch % kBlock) / kPixels, j = ch % kPixels;
    offset_[kBlock * b + 2 * j + k] = static_cast<int32_t>(unit * 16);
  }
}

template <int E>
__attribute__((target("avx2"))) void TileTranspose<E>::load(const char* const rows[kPixels],
                                                            int input, char* table) const {
  // Locals, not members and array entries: the vector stores may alias memory, which would make the
  // compiler reload those after every store.
  const int64_t channels = channels_[input];
  char* const units = table + first_unit_[input] * 16;
  const char* row[kPixels];
  for (int i = 0; i < kPixels; ++i) row[i] = rows[i];
  int64_t k = 0;
  for (; k + kBlock <= channels; k += kBlock) {
    __m256i r[kPixels];
    for (int i = 0; i < kPixels; ++i) {
      r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[i] + k * E));
    }
    transpose<E>(r);
    for (int j = 0; j < kPixels; ++j) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(units + (k + 2 * j) * 16), r[j]);
    }
  }
  // The last channels one by one: AVX2's masked stores are slow on AMD, and this is a few per row.
  for (int64_t t = k; t < channels; ++t) {
    for (int i = 0; i < kPixels; ++i) {
      std::memcpy(units + unit_of<E>(t) * 16 + i * E, row[i] + t * E, E);
    }
  }
}

template <int E>
__attribute__((target("avx2"))) void TileTranspose<E>::store(char* const rows[kPixels],
                                                             bool stream,
                                                             const char* table) const {
  const int32_t* const offsets = offset_.data();
  const int64_t c = c_;
  char* row[kPixels];  // row[j]: where register j goes, pixel reversed(j)
  for (int j = 0; j < kPixels; ++j) {
    row[j] = rows[reversed(j, kPixels)];
    stream = stream && reinterpret_cast<uintptr_t>(row[j]) % 32 == 0;
  }
  stream = stream && c % kBlock == 0;
  for (int64_t k = 0; k < c; k += kBlock) {
    __m256i r[kPixels];
    for (int j = 0; j < kPixels; ++j) r[j] = unit_pair(table, offsets + k + 2 * j);
    transpose<E>(r);
    if (stream) {
      for (int j = 0; j < kPixels; ++j) {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(row[j] + k * E), r[j]);
      }
    } else if (k + kBlock <= c) {
      for (int j = 0; j < kPixels; ++j) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(row[j] + k * E), r[j]);
      }
    } else {
      alignas(32) char block[kPixels][32];
      for (int j = 0; j < kPixels; ++j) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(block[j]), r[j]);
        std::memcpy(row[j] + k * E, block[j], (c - k) * E);
      }
    }
  }
}

template class TileTranspose<2>;
template class TileTranspose<4>;

namespace {

template <int E>
void transpose_range(const TileTranspose<E>& tiles, const GatherSource& a, const GatherSource& b,
                     char* dst, int64_t begin, int64_t end, int64_t inner, bool stream) {
  using Tiles = TileTranspose<E>;
  constexpr int kPixels = Tiles::kPixels;
  const int64_t c = a.channels + b.channels;
  // This range's own table, 32-byte aligned.
  const std::unique_ptr<char[]> storage(new char[tiles.table_bytes() + 32]);
  char* const table = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(storage.get()) + 31) & ~uintptr_t{31});
  const bool prefetch = (end - begin) * c * E >= Tiles::kPrefetchBytes;
  RowCursor ra(a, E, inner, begin);
  RowCursor rb(b, E, inner, begin);
  const char* a_rows[kPixels];
  const char* b_rows[kPixels];
  char* out_rows[kPixels];
  for (int64_t p = begin; p < end; p += kPixels) {
    // A last tile of fewer pixels repeats its last pixel, which is then read and written again
    // with the same values, inside this range.
    for (int64_t i = 0; i < kPixels; ++i) {
      a_rows[i] = ra.row();
      b_rows[i] = rb.row();
      out_rows[i] = dst + std::min(p + i, end - 1) * c * E;
      if (p + i + 1 < end) {  // past the range's last pixel the cursors stay on it
        ra.next();
        rb.next();
      }
    }
    // The tile after next, assuming the same image (it pays past the L3 cache).
    if (prefetch) {
      Tiles::prefetch(a_rows, 2 * kPixels * a.pixel_stride * E, a.channels * E);
      Tiles::prefetch(b_rows, 2 * kPixels * b.pixel_stride * E, b.channels * E);
    }
    tiles.load(a_rows, 0, table);
    tiles.load(b_rows, 1, table);
    tiles.store(out_rows, stream, table);
  }
  if (stream) _mm_sfence();  // order the non-temporal stores before whatever reads dst next
}

}  // namespace

TransposePlan::TransposePlan(const int32_t* perm32, int64_t c, int64_t channels_a,
                             int64_t element_size) {
  if (element_size == 2) {
    tiles2_.emplace(perm32, c, channels_a);
  } else {
    tiles4_.emplace(perm32, c, channels_a);
  }
}

void TransposePlan::run(const GatherSource& a, const GatherSource& b, void* dst, int64_t begin,
                        int64_t end, int64_t inner, bool stream) const {
  if (begin >= end) return;
  char* d = static_cast<char*>(dst);
  if (tiles2_) {
    transpose_range<2>(*tiles2_, a, b, d, begin, end, inner, stream);
  } else {
    transpose_range<4>(*tiles4_, a, b, d, begin, end, inner, stream);
  }
}

}  // namespace autoshuffle_ext::cpu
#endif  // AUTOSHUFFLE_X86_SIMD
