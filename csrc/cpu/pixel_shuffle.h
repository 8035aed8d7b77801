// Channels-last gather by a permutation at or near ShuffleNet's channel shuffle. A learned
// permutation trained from the fixed shuffle mostly stays there (0 to 3 of 1,080 slots moved in the
// runs of bench/RESULTS.md), and the fixed shuffle itself reaches channel_gather when a network is
// converted: such perms run as the shuffle, in registers, plus a patch of the channels where they
// differ, instead of as an arbitrary gather.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "features.h"

namespace autoshuffle_ext::cpu {

// One output channel written apart from the shuffle: dst[p, channel] = src[p, source].
struct Patch {
  int64_t channel;
  int64_t source;
};

// A perm no further than 1 / kMaxPatchShare of its channels from a shuffle.
constexpr int64_t kMaxPatchShare = 8;

// The shuffle of C = groups * S channels: output channel k * groups + r is input channel r * S + k
// (F.channel_shuffle's order; groups 1 is the identity).
inline int64_t shuffle_source(int64_t ch, int64_t groups, int64_t c) {
  return (ch % groups) * (c / groups) + ch / groups;
}

// The channels where perm32 differs from the shuffle of `groups` groups of c channels, or nullopt
// when groups does not divide c or more than 1 / kMaxPatchShare of the channels differ.
std::optional<std::vector<Patch>> shuffle_patches(const int32_t* perm32, int64_t c,
                                                  int64_t groups);

#ifdef AUTOSHUFFLE_X86_SIMD
// The gather of 2- or 4-byte elements by a perm near a shuffle of at most kMaxShuffleGroups groups,
// with AVX-512 (F, BW): every vector of output channels is permuted out of one window of each
// group's channels (groups loads and (groups + 1) / 2 two-source permutes per vector), then the
// patches are copied; a tile transpose stores every element twice.
class NearShuffle {
 public:
  static constexpr int64_t kMaxShuffleGroups = 8;

  // The shuffle nearest perm32 (fewest patches) of 1 to kMaxShuffleGroups groups, or nullopt when
  // none is near enough or the element size is not 2 or 4.
  static std::optional<NearShuffle> find(const int32_t* perm32, int64_t c, int64_t element_size);

  // Writes pixels [begin, end) of the dense [pixels, c] array dst from the one of src. Reads only
  // inside the pixels it gathers.
  void run(const void* src, void* dst, int64_t begin, int64_t end) const;

  int64_t groups() const { return groups_; }
  const std::vector<Patch>& patches() const { return patches_; }

 private:
  NearShuffle(int64_t c, int64_t groups, int64_t element_size, std::vector<Patch> patches);

  int64_t c_;
  int64_t groups_;
  int64_t element_size_;
  std::vector<Patch> patches_;
  // For each phase (first channel of a vector mod groups) and each pair of groups (2j, 2j + 1):
  // the two-source permute's indices (64 bytes) and the lanes it fills.
  std::vector<uint64_t> indices_;
  std::vector<uint64_t> lanes_;
};
#endif

}  // namespace autoshuffle_ext::cpu
