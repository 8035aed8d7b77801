// Channels-last gather of 4-byte elements whose pixel fits in AVX-512 registers: the channels of
// one or two inputs (cat_gather) are loaded into at most 8 registers per pixel and each output
// vector is permuted out of them, with no gather and no table.
#pragma once

#include <cstdint>

#include "features.h"
#include "pixel_rows.h"

namespace autoshuffle_ext::cpu {

constexpr int kMaxPermuteRegs = 8;

// 16-lane registers that hold `channels` 4-byte elements.
inline int64_t registers_for(int64_t channels) { return (channels + 15) / 16; }

// Whether a pixel of a's and b's channels fits in the registers (b.channels may be 0).
inline bool permute_fits(int64_t ca, int64_t cb) {
  return ca + cb > 0 && registers_for(ca) + registers_for(cb) <= kMaxPermuteRegs;
}

#ifdef AUTOSHUFFLE_X86_SIMD
// Writes pixels [begin, end) of the dense [pixels, a.channels + b.channels] array dst:
// dst[p] = cat(a[p], b[p])[perm32], 4-byte elements, AVX-512 F. Requires permute_fits; perm32
// entries must lie in [0, a.channels + b.channels) (the caller range-checks them).
void permute_pixels(const PixelRows& a, const PixelRows& b, void* dst, const int32_t* perm32,
                    int64_t begin, int64_t end, int64_t inner);
#endif

}  // namespace autoshuffle_ext::cpu
