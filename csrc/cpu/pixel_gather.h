// Per-pixel channel gather for channels_last tensors: dst[p, ch] = src[p, perm[ch]].
#pragma once

#include <cstdint>

#include "features.h"

namespace autoshuffle_ext::cpu {

// Gathers pixels [begin, end) of a dense [pixels, c] array of `element_size`-byte elements.
// `perm` (int64) and `perm32` (the same entries as int32) must hold entries in [0, c): the caller
// range-checks them. `last_pixel` is the index of the array's final pixel; the SIMD paths for 1- and
// 2-byte elements read a few bytes past each gathered element, so they leave that pixel to scalar
// code and never touch memory outside the array. With `gathers` false, 2- and 4-byte elements
// (4-byte ones with C above what fits in registers) take tile transposes (pixel_transpose.h)
// instead of hardware gathers; callers pass gathers_are_faster(isa, element_size). `stream`: the transposes write whole vectors
// with non-temporal stores, for outputs larger than the cache (stream_output()).
void gather_pixels(const void* src, void* dst, const int64_t* perm, const int32_t* perm32,
                   int64_t begin, int64_t end, int64_t last_pixel, int64_t c,
                   int64_t element_size, Isa isa, bool gathers, bool stream);

// Whether `isa`'s hardware gathers (or its scalar loop, for AVX2's 2-byte elements) beat the tile
// transposes on this CPU for elements of `element_size` bytes, timed once per ISA and size on a
// small array in cache (about 0.2 ms); false for sizes the transposes do not take. By CPU: Intel's gathers met the targets on a
// Sapphire Rapids Xeon; AMD Zen 4's took twice the transposes' time; microcode (Intel's Gather
// Data Sampling mitigation) slows them on some Intel parts. Hence a measurement, not a vendor
// check; either path gives the same, exact result.
bool gathers_are_faster(Isa isa, int64_t element_size);

}  // namespace autoshuffle_ext::cpu
