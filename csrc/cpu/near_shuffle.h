// Channels-last gathers by a permutation at or near ShuffleNet's channel shuffle. A learned
// permutation trained from the fixed shuffle mostly stays there (bench/RESULTS.md), and the fixed
// shuffle itself reaches the gathers when a network is converted: such perms run as the shuffle,
// plus a patch of the channels where they differ, instead of as an arbitrary gather. Each group
// of the shuffle is read from the source that holds it: channel_gather's one input, or a or b of
// cat_gather (ShuffleNet v2's concat and shuffle is the 2-group shuffle of cat([a, b], 1)).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "../gather_source.h"
#include "features.h"

namespace autoshuffle_ext::cpu {

// One output channel written apart from the shuffle: dst[p, channel] = cat(a[p], b[p])[source].
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

// A perm as the nearest shuffle of cat([a, b], 1) and its patches.
class NearShuffle {
 public:
  static constexpr int64_t kMaxGroups = 8;

  // The shuffle nearest perm32 (fewest patches) among those of min_groups to max_groups (at most
  // kMaxGroups) groups whose every group lies within a (ca channels) or within b (cb, 0 for one
  // source), or nullopt when none is near enough. element_size (2 or 4) sizes the AVX-512 tables.
  static std::optional<NearShuffle> find(const int32_t* perm32, int64_t ca, int64_t cb,
                                         int64_t element_size, int64_t min_groups,
                                         int64_t max_groups);

  int64_t groups() const { return groups_; }
  const std::vector<Patch>& patches() const { return patches_; }

#ifdef AUTOSHUFFLE_X86_SIMD
  // Writes pixels [begin, end) of the dense [pixels, ca + cb] array dst; rows of a and b walked
  // with `inner` pixels per image (row_cursor.h). Reads only inside the rows it gathers.
  // AVX-512 (F, BW), the element size given to find: every vector of output channels is permuted
  // out of one window of each group's channels (groups loads and (groups + 1) / 2 two-source
  // permutes per vector), then the patches are copied.
  void run_avx512(const GatherSource& a, const GatherSource& b, void* dst, int64_t begin,
                  int64_t end, int64_t inner) const;
  // AVX2, 4-byte elements, 2 groups: the two groups zipped channel by channel (unpacks), then the
  // patches.
  void run_avx2(const GatherSource& a, const GatherSource& b, void* dst, int64_t begin,
                int64_t end, int64_t inner) const;
#endif

 private:
  NearShuffle(int64_t ca, int64_t cb, int64_t groups, int64_t element_size,
              std::vector<Patch> patches);

  int64_t ca_;
  int64_t cb_;
  int64_t groups_;
  int64_t element_size_;
  std::vector<Patch> patches_;
  // For each phase (first channel of a vector mod groups) and each pair of groups (2j, 2j + 1):
  // the two-source permute's indices (64 bytes) and the lanes it fills (AVX-512).
  std::vector<uint64_t> indices_;
  std::vector<uint64_t> lanes_;
};

}  // namespace autoshuffle_ext::cpu
