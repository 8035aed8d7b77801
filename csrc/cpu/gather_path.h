// The CPU gathers' paths: every way channel_gather and cat_gather can move their elements on the
// CPU. gather_plan.h picks one per call (or takes the forced one); the kernels' files implement
// them. The names are the public spelling: AUTOSHUFFLE_GATHER_PATH, the ops' path queries and the
// tests use them.
#pragma once

#include <array>
#include <optional>
#include <string_view>

namespace autoshuffle_ext::cpu {

enum class GatherPath {
  // Contiguous outputs with more than one element per plane: N * C plane copies (plane_gather.h).
  kPlanes,        // memcpy per plane
  kPlanesAvx2,    // whole aligned cache lines, AVX2 (streamed for outputs past the cache)
  kPlanesAvx512,  // the same with AVX-512
  // Channels-last (and [N, C]) outputs: N * H * W rows of C channels.
  kPixels,               // a scalar loop, any element size (pixel_gather.h)
  kPixelsGatherAvx2,     // AVX2 hardware gathers, 4- and 8-byte elements (pixel_gather.h)
  kPixelsGatherAvx512,   // AVX-512 hardware gathers, 1- to 8-byte elements (pixel_gather.h)
  kPixelsTransposeAvx2,  // tile transposes, 2- and 4-byte elements (pixel_transpose.h)
  kPixelsPermuteAvx512,  // a pixel permuted in at most 8 registers, 4-byte (pixel_permute.h)
  kNearShuffleAvx2,      // a 2-group shuffle as a zip, plus a patch, 4-byte (near_shuffle.h)
  kNearShuffleAvx512,    // a 1- to 8-group shuffle plus a patch, 2- and 4-byte (near_shuffle.h)
};

constexpr std::array<GatherPath, 10> kGatherPaths = {
    GatherPath::kPlanes,
    GatherPath::kPlanesAvx2,
    GatherPath::kPlanesAvx512,
    GatherPath::kPixels,
    GatherPath::kPixelsGatherAvx2,
    GatherPath::kPixelsGatherAvx512,
    GatherPath::kPixelsTransposeAvx2,
    GatherPath::kPixelsPermuteAvx512,
    GatherPath::kNearShuffleAvx2,
    GatherPath::kNearShuffleAvx512,
};

constexpr const char* path_name(GatherPath path) {
  switch (path) {
    case GatherPath::kPlanes: return "planes";
    case GatherPath::kPlanesAvx2: return "planes_avx2";
    case GatherPath::kPlanesAvx512: return "planes_avx512";
    case GatherPath::kPixels: return "pixels";
    case GatherPath::kPixelsGatherAvx2: return "pixels_gather_avx2";
    case GatherPath::kPixelsGatherAvx512: return "pixels_gather_avx512";
    case GatherPath::kPixelsTransposeAvx2: return "pixels_transpose_avx2";
    case GatherPath::kPixelsPermuteAvx512: return "pixels_permute_avx512";
    case GatherPath::kNearShuffleAvx2: return "near_shuffle_avx2";
    case GatherPath::kNearShuffleAvx512: return "near_shuffle_avx512";
  }
  return "?";
}

inline std::optional<GatherPath> path_from_name(std::string_view name) {
  for (GatherPath path : kGatherPaths) {
    if (name == path_name(path)) return path;
  }
  return std::nullopt;
}

// Whether the path copies planes (contiguous outputs) rather than gathering pixel rows.
constexpr bool copies_planes(GatherPath path) {
  return path == GatherPath::kPlanes || path == GatherPath::kPlanesAvx2 ||
         path == GatherPath::kPlanesAvx512;
}

}  // namespace autoshuffle_ext::cpu
