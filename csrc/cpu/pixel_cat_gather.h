// Per-pixel gather from two inputs, for cat_gather's channels_last (and [N, C]) outputs:
// dst[p, ch] = cat(a[p], b[p])[perm[ch]], each input's pixel rows read where they lie.
#pragma once

#include <cstdint>

#include "pixel_gather.h"
#include "pixel_rows.h"

namespace autoshuffle_ext::cpu {

// Writes pixels [begin, end) of the dense [pixels, a.channels + b.channels] array dst. `perm`
// (int64) and `perm32` (the same entries as int32) must hold entries in [0, a.channels +
// b.channels): the caller range-checks them.
void cat_gather_pixels(const PixelRows& a, const PixelRows& b, void* dst, const int64_t* perm,
                       const int32_t* perm32, int64_t begin, int64_t end, int64_t inner,
                       int64_t element_size, Isa isa);

}  // namespace autoshuffle_ext::cpu
