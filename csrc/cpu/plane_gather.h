// Channel gathers of contiguous tensors, plane by plane: output plane i = (n, ch) (i = n * c + ch)
// is a copy of the plane at first[ch] + n * step[ch]. channel_gather's sources are one tensor's
// planes in perm's order, cat_gather's those of two tensors; both come here.
#pragma once

#include <cstdint>

#include "features.h"

namespace autoshuffle_ext::cpu {

// Copies output planes [begin, end) of `plane_bytes` bytes each into dst (laid out plane after
// plane). With `isa` kAvx512 (which the CPU must support) the copies store whole aligned cache
// lines, and `stream` makes those stores non-temporal.
void gather_planes(const char* const* first, const int64_t* step, int64_t c, char* dst,
                   int64_t begin, int64_t end, int64_t plane_bytes, Isa isa, bool stream);

// Whether a gather writing `bytes` (after reading as many) should stream its output: when input
// and output together fill more than half the last-level cache, the output evicts the input as it
// is written and does not stay cached for its reader anyway; streaming skips the read for
// ownership of every line. Tensors that stay in the cache ran slower streamed.
bool stream_output(int64_t bytes);

}  // namespace autoshuffle_ext::cpu
