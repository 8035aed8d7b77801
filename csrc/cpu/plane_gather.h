// Channel gather for contiguous tensors: out is N * C planes, plane (n, ch) a copy of x's plane
// (n, perm[ch]).
#pragma once

#include <cstdint>

#include "features.h"

namespace autoshuffle_ext::cpu {

// Copies output planes [begin, end) (plane i = (n, ch) with i = n * c + ch) of `plane_bytes` bytes
// each. perm's entries must lie in [0, c). With `isa` kAvx512 (which the CPU must support) the
// copies store whole aligned cache lines, and `stream` makes those stores non-temporal.
void gather_planes(const char* src, char* dst, const int64_t* perm, int64_t begin, int64_t end,
                   int64_t c, int64_t plane_bytes, Isa isa, bool stream);

}  // namespace autoshuffle_ext::cpu
