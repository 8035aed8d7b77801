// Channels-last gather of 4-byte elements whose pixel fits in AVX-512 registers: the channels of
// one or two inputs (cat_gather) are loaded into at most 8 registers per pixel and each output
// vector is permuted out of them, with no gather and no table.
#pragma once

#include <cstdint>

#include "../gather_source.h"
#include "features.h"

namespace autoshuffle_ext::cpu {

constexpr int kMaxPermuteRegs = 8;

// 16-lane registers that hold `channels` 4-byte elements.
inline int64_t registers_for(int64_t channels) { return (channels + 15) / 16; }

// Whether a pixel of a's and b's channels fits in the registers (b.channels may be 0).
inline bool permute_fits(int64_t ca, int64_t cb) {
  return ca + cb > 0 && registers_for(ca) + registers_for(cb) <= kMaxPermuteRegs;
}

// What the permutes of one perm need, built once per call: for each output vector, the permute
// indices and blend masks over the register pairs, and where each register is loaded from.
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

// The plan of perm32 over ca + cb channels. Requires permute_fits(ca, cb); perm32 entries must lie
// in [0, ca + cb) (the caller range-checks them).
void build_permute_plan(const int32_t* perm32, int64_t ca, int64_t cb, PermutePlan& plan);

#ifdef AUTOSHUFFLE_X86_SIMD
// Writes pixels [begin, end) of the dense [pixels, a.channels + b.channels] array dst:
// dst[p] = cat(a[p], b[p])[perm32], 4-byte elements, AVX-512 F, rows of a and b walked with
// `inner` pixels per image. One dense source (b without channels, a.batch_stride 0) skips the
// row cursors.
void permute_pixels(const PermutePlan& plan, const GatherSource& a, const GatherSource& b,
                    void* dst, int64_t begin, int64_t end, int64_t inner);
#endif

}  // namespace autoshuffle_ext::cpu
