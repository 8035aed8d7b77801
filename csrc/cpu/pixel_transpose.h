// Channels-last gather of 2- and 4-byte elements by tile transposes (AVX2), for CPUs whose
// hardware gathers are slow (measured: bench/RESULTS.md).
// P = 16 / E pixel rows are transposed into units (one channel over the P pixels, 16 bytes) in a
// small table, the units are read back in perm's order and transposed into the P output rows: the
// permutation becomes a choice of addresses, and every load and store moves a whole vector.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "../gather_source.h"
#include "features.h"

#ifdef AUTOSHUFFLE_X86_SIMD
namespace autoshuffle_ext::cpu {

template <int E>  // element bytes, 2 or 4
class TileTranspose {
 public:
  static_assert(E == 2 || E == 4);
  static constexpr int kPixels = 16 / E;  // rows per tile: one 16-byte unit per channel
  static constexpr int kBlock = 32 / E;   // channels per 256-bit register

  // Output channel ch takes channel perm32[ch] of the concatenated input rows: `channels_a` from
  // the first input, then c - channels_a from the second (0 for a single input). perm32 must hold
  // c entries in [0, c): the caller range-checks them. Read-only once built: threads share it,
  // each with its own table (table_bytes(), aligned to 32 bytes).
  TileTranspose(const int32_t* perm32, int64_t c, int64_t channels_a);
  int64_t table_bytes() const { return units_ * 16; }

  // Fetches `bytes` of each of a tile's rows, `ahead` bytes further on (a later tile of the same
  // rows; a prefetch never faults, so a wrong guess costs nothing). Reading P rows a vector at a
  // time jumps around in memory, which the hardware prefetcher does not follow; worth it from
  // kPrefetchBytes of rows per thread, past the L2 cache (below it cost more than it gave).
  static void prefetch(const char* const rows[kPixels], int64_t ahead, int64_t bytes) {
    for (int r = 0; r < kPixels; ++r) {
      for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(rows[r] + ahead + off, 0, 3);
    }
  }
  static constexpr int64_t kPrefetchBytes = int64_t{2} << 20;

  // Pass 1: the rows of the tile's pixels from input `input` (0 or 1) into the table.
  __attribute__((target("avx2"))) void load(const char* const rows[kPixels], int input,
                                            char* table) const;
  // Pass 2: the tile's output rows, c channels each, from the table. With `stream`, whole 32-byte
  // aligned vectors go out as non-temporal stores (for outputs larger than the cache: no read for
  // ownership); the caller then ends with _mm_sfence().
  __attribute__((target("avx2"))) void store(char* const rows[kPixels], bool stream,
                                             const char* table) const;

 private:
  int64_t c_;
  int64_t channels_[2];
  int64_t first_unit_[2];  // where each input's units start in the table
  int64_t units_;          // the table's 16-byte units
  std::vector<int32_t> offset_;  // per output block of kBlock channels, the units' byte offsets
};

// The tile transposes of one perm, built once per call for 2- or 4-byte elements: pixels
// [begin, end) of the dense [pixels, c] array dst, dst[p] = cat(a[p], b[p])[perm32], rows of a
// and b walked with `inner` pixels per image: channel_gather's rows (b empty) and cat_gather's.
// `stream` as for TileTranspose::store.
class TransposePlan {
 public:
  TransposePlan(const int32_t* perm32, int64_t c, int64_t channels_a, int64_t element_size);
  void run(const GatherSource& a, const GatherSource& b, void* dst, int64_t begin, int64_t end,
           int64_t inner, bool stream) const;

 private:
  std::optional<TileTranspose<2>> tiles2_;
  std::optional<TileTranspose<4>> tiles4_;
};

}  // namespace autoshuffle_ext::cpu
#endif  // AUTOSHUFFLE_X86_SIMD
