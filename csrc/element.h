// An opaque element of `Bytes` bytes, aligned to its size. The channel_gather kernels only move
// elements, never look at them, so one instantiation per element size serves every dtype of that
// size. Plain C++: the CPU and the CUDA sources both include it.
#pragma once

#include <cstddef>

namespace autoshuffle_ext {

template <size_t Bytes>
struct alignas(Bytes) Element {
  unsigned char data[Bytes];
};

}  // namespace autoshuffle_ext
