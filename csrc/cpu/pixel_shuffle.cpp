// Channels-last gathers by a perm near a channel shuffle (see pixel_shuffle.h).
//
// A vector of L = 64 / E output channels starting at channel f takes, from group r, the channels
// k0 + 0, 1, ... with k0 = f / groups: one window of L channels per group covers them. Which lane
// comes from which group, and from where in its window, depends only on the phase f % groups, so
// the permute indices are built once per phase.
#include "pixel_shuffle.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "static_count.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

namespace autoshuffle_ext::cpu {

std::optional<std::vector<Patch>> shuffle_patches(const int32_t* perm32, int64_t c,
                                                  int64_t groups) {
  if (groups < 1 || c % groups) return std::nullopt;
  std::vector<Patch> patches;
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t source = shuffle_source(ch, groups, c);
    if (perm32[ch] == source) continue;
    if (static_cast<int64_t>(patches.size() + 1) * kMaxPatchShare > c) return std::nullopt;
    patches.push_back({ch, perm32[ch]});
  }
  return patches;
}

#ifdef AUTOSHUFFLE_X86_SIMD
namespace {

// The AVX-512 operations on E-byte lanes.
template <int E>
struct Lanes;

template <>
struct Lanes<4> {
  static constexpr int kCount = 16;
  using Mask = __mmask16;
  __attribute__((target("avx512f"), always_inline)) static __m512i load(Mask m, const void* p) {
    return _mm512_maskz_loadu_epi32(m, p);
  }
  __attribute__((target("avx512f"), always_inline)) static __m512i permute(__m512i a, __m512i i,
                                                                           __m512i b) {
    return _mm512_permutex2var_epi32(a, i, b);
  }
  __attribute__((target("avx512f"), always_inline)) static __m512i blend(Mask m, __m512i a,
                                                                         __m512i b) {
    return _mm512_mask_mov_epi32(a, m, b);
  }
  __attribute__((target("avx512f"), always_inline)) static void store(void* p, Mask m,
                                                                      __m512i v) {
    _mm512_mask_storeu_epi32(p, m, v);
  }
};

template <>
struct Lanes<2> {
  static constexpr int kCount = 32;
  using Mask = __mmask32;
  __attribute__((target("avx512f,avx512bw"), always_inline)) static __m512i load(Mask m,
                                                                                 const void* p) {
    return _mm512_maskz_loadu_epi16(m, p);
  }
  __attribute__((target("avx512f,avx512bw"), always_inline)) static __m512i permute(__m512i a,
                                                                                    __m512i i,
                                                                                    __m512i b) {
    return _mm512_permutex2var_epi16(a, i, b);
  }
  __attribute__((target("avx512f,avx512bw"), always_inline)) static __m512i blend(Mask m,
                                                                                  __m512i a,
                                                                                  __m512i b) {
    return _mm512_mask_mov_epi16(a, m, b);
  }
  __attribute__((target("avx512f,avx512bw"), always_inline)) static void store(void* p, Mask m,
                                                                               __m512i v) {
    _mm512_mask_storeu_epi16(p, m, v);
  }
};

// The first n lanes (all of them from kCount on).
template <int E>
typename Lanes<E>::Mask first_lanes(int64_t n) {
  using Mask = typename Lanes<E>::Mask;
  if (n >= Lanes<E>::kCount) return static_cast<Mask>(~Mask{0});
  return n <= 0 ? Mask{0} : static_cast<Mask>((uint64_t{1} << n) - 1);
}

// A window of L channels from `at`: loaded whole where it lies inside the row, masked at its end
// (masked loads and stores are slower on Zen 4, and the row may be the array's last).
template <int E>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i window(const char* in,
                                                                                 int64_t at,
                                                                                 int64_t c) {
  if (at + Lanes<E>::kCount <= c) return _mm512_loadu_si512(in + at * E);
  return Lanes<E>::load(first_lanes<E>(c - at), in + at * E);
}

// Output vector f.. of a row (groups of s channels) from its windows, for phase f % kGroups.
template <int E, int kGroups>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i shuffled_vector(
    const char* in, int64_t f, int64_t phase, int64_t s, int64_t c, const __m512i* idx,
    const typename Lanes<E>::Mask* mask) {
  using V = Lanes<E>;
  constexpr int kPairs = (kGroups + 1) / 2;
  const int64_t k0 = f / kGroups;
  __m512i acc;
#pragma GCC unroll 4
  for (int j = 0; j < kPairs; ++j) {
    const int r0 = 2 * j, r1 = std::min(2 * j + 1, kGroups - 1);
    const __m512i w0 = window<E>(in, r0 * s + k0, c);
    const __m512i w1 = r1 == r0 ? w0 : window<E>(in, r1 * s + k0, c);
    const int64_t t = phase * kPairs + j;
    const __m512i v = V::permute(w0, idx[t], w1);
    acc = j == 0 ? v : V::blend(mask[t], acc, v);
  }
  return acc;
}

template <int E, int kGroups>
__attribute__((target("avx512f,avx512bw"))) void shuffle_rows(const char* src, char* dst,
                                                              int64_t begin, int64_t end, int64_t c,
                                                              const uint64_t* indices,
                                                              const uint64_t* lanes,
                                                              const std::vector<Patch>& patches) {
  using V = Lanes<E>;
  using Mask = typename V::Mask;
  constexpr int L = V::kCount, kPairs = (kGroups + 1) / 2;
  // The phases repeat every kPeriod vectors: each is unrolled with its own indices, which are
  // held in registers (locals: the stores could alias the tables).
  constexpr int kPeriod = kGroups / std::gcd(L, kGroups);
  __m512i idx[kGroups * kPairs];
  Mask mask[kGroups * kPairs];
  for (int t = 0; t < kGroups * kPairs; ++t) {
    idx[t] = _mm512_loadu_si512(indices + 8 * t);
    mask[t] = static_cast<Mask>(lanes[t]);
  }
  const int64_t s = c / kGroups;
  for (int64_t p = begin; p < end; ++p) {
    const char* in = src + p * c * E;
    char* out = dst + p * c * E;
    int64_t f = 0;
    for (; f + kPeriod * L <= c; f += kPeriod * L) {
#pragma GCC unroll 8
      for (int q = 0; q < kPeriod; ++q) {
        const int64_t at = f + q * L;
        _mm512_storeu_si512(out + at * E,
                            shuffled_vector<E, kGroups>(in, at, (q * L) % kGroups, s, c, idx, mask));
      }
    }
    for (; f < c; f += L) {
      const __m512i v = shuffled_vector<E, kGroups>(in, f, f % kGroups, s, c, idx, mask);
      if (f + L <= c) {
        _mm512_storeu_si512(out + f * E, v);
      } else {
        V::store(out + f * E, first_lanes<E>(c - f), v);
      }
    }
    for (const Patch& patch : patches) {
      std::memcpy(out + patch.channel * E, in + patch.source * E, E);
    }
  }
}

}  // namespace

NearShuffle::NearShuffle(int64_t c, int64_t groups, int64_t element_size,
                         std::vector<Patch> patches)
    : c_(c), groups_(groups), element_size_(element_size), patches_(std::move(patches)) {
  const int64_t l = 64 / element_size, pairs = (groups + 1) / 2;
  indices_.assign(groups * pairs * 8, 0);
  lanes_.assign(groups * pairs, 0);
  for (int64_t phase = 0; phase < groups; ++phase) {
    for (int64_t t = 0; t < l; ++t) {
      const int64_t r = (phase + t) % groups, k = (phase + t) / groups;  // group, window offset
      const int64_t slot = phase * pairs + r / 2;
      const int64_t index = k + (r % 2 ? l : 0);  // the second source's lanes follow the first's
      char* bytes = reinterpret_cast<char*>(indices_.data() + 8 * slot);
      if (element_size == 4) {
        const int32_t i32 = static_cast<int32_t>(index);
        std::memcpy(bytes + 4 * t, &i32, 4);
      } else {
        const int16_t i16 = static_cast<int16_t>(index);
        std::memcpy(bytes + 2 * t, &i16, 2);
      }
      lanes_[slot] |= uint64_t{1} << t;
    }
  }
}

std::optional<NearShuffle> NearShuffle::find(const int32_t* perm32, int64_t c,
                                             int64_t element_size) {
  if (element_size != 2 && element_size != 4) return std::nullopt;
  std::optional<std::vector<Patch>> best;
  int64_t best_groups = 0;
  for (int64_t groups = 1; groups <= kMaxShuffleGroups; ++groups) {
    auto patches = shuffle_patches(perm32, c, groups);
    if (patches && (!best || patches->size() < best->size())) {
      best = std::move(patches);
      best_groups = groups;
    }
  }
  if (!best) return std::nullopt;
  return NearShuffle(c, best_groups, element_size, std::move(*best));
}

void NearShuffle::run(const void* src, void* dst, int64_t begin, int64_t end) const {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  with_count<kMaxShuffleGroups>(groups_, [&](auto groups) {
    constexpr int kGroups = decltype(groups)::value;
    if (element_size_ == 4) {
      shuffle_rows<4, kGroups>(s, d, begin, end, c_, indices_.data(), lanes_.data(), patches_);
    } else {
      shuffle_rows<2, kGroups>(s, d, begin, end, c_, indices_.data(), lanes_.data(), patches_);
    }
  });
}
#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace autoshuffle_ext::cpu
