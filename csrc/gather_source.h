// One input of a channel gather as every kernel walks it, CPU and CUDA: channel_gather reads one
// source, cat_gather two (a, then b, their channels concatenated). Plain C++: the CPU and the CUDA
// sources both include it.
#pragma once

#include <cstdint>

namespace autoshuffle_ext {

// Strides in elements: element (n, j, s), image n, channel j, pixel s of the image's flattened
// spatial dims, lies at data + n * batch_stride + j * channel_stride + s * pixel_stride. Plane
// copies read whole planes (pixel_stride 1); pixel-row gathers read whole rows (channel_stride 1).
struct GatherSource {
  const void* data;
  int64_t channels;
  int64_t batch_stride;
  int64_t channel_stride;
  int64_t pixel_stride;
};

}  // namespace autoshuffle_ext
