// Per-pixel channel gather of dense rows, element by element: dst[p, ch] = src[p, perm[ch]].
#pragma once

#include <cstdint>

#include "gather_path.h"

namespace autoshuffle_ext::cpu {

// Gathers rows [begin, end) of the dense [rows, c] array src of `element_size`-byte elements into
// the dense array dst, with `path`: kPixels (a scalar loop, any element size),
// kPixelsGatherAvx2 (4 and 8 bytes) or kPixelsGatherAvx512 (1 to 8 bytes), whose ISA the CPU
// must have. `perm` (int64) and `perm32` (the same entries as int32) must hold entries in
// [0, c): the caller range-checks them. `rows` is the number of rows src holds: the AVX-512
// gathers of 1- and 2-byte elements read a few bytes past each element, so they leave src's last
// row to the scalar loop and never touch memory outside src.
void gather_rows(GatherPath path, const void* src, void* dst, const int64_t* perm,
                 const int32_t* perm32, int64_t begin, int64_t end, int64_t rows, int64_t c,
                 int64_t element_size);

}  // namespace autoshuffle_ext::cpu
