// What the CPU kernels of channel_gather and cat_gather share: the check that perm is a
// permutation (done in the pass that converts it to int32 anyway) and the parallel grain.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>

namespace autoshuffle_ext::cpu {

// Bytes below which a chunk of work is not worth waking a second thread for: the OpenMP fork and
// join costs a few microseconds, the time to copy about this much.
constexpr int64_t kMinBytesPerThread = int64_t{1} << 18;

inline int64_t grain_for(int64_t item_bytes) {
  return std::max<int64_t>(1, kMinBytesPerThread / std::max<int64_t>(item_bytes, 1));
}

// perm as int32 (the SIMD kernels take 32-bit indices), after checking every entry indexes a
// channel, so that no loop can leave the tensors, and that no entry repeats: the gradient is the
// gather by the inverse permutation (autograd.cpp), which only a permutation has. `op` names the
// op and `c_name` says what C is in the messages ("x.size(1)").
inline c10::SmallVector<int32_t, 1024> checked_perm32(const int64_t* perm, int64_t c,
                                                       const char* op, const char* c_name) {
  c10::SmallVector<int32_t, 1024> perm32(c);
  c10::SmallVector<int32_t, 1024> first_at(c, -1);  // first_at[j]: the i with perm[i] == j
  for (int64_t i = 0; i < c; ++i) {
    const int64_t j = perm[i];
    TORCH_CHECK_INDEX(j >= 0 && j < c, op, ": perm entries must lie in [0, ", c, ") (C = ", c_name,
                      "), got perm[", i, "] = ", j);
    TORCH_CHECK_VALUE(first_at[j] < 0, op, ": perm must be a permutation of 0..", c - 1,
                      " (each index exactly once), got perm[", i, "] = ", j, ", also at perm[",
                      first_at[j], "]");
    first_at[j] = static_cast<int32_t>(i);
    perm32[i] = static_cast<int32_t>(j);
  }
  return perm32;
}

}  // namespace autoshuffle_ext::cpu
