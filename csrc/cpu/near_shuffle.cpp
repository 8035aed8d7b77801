// Channels-last gathers by a perm near a channel shuffle (see near_shuffle.h).
//
// A vector of L = 64 / E output channels starting at channel f takes, from group r, the channels
// k0 + 0, 1, ... with k0 = f / groups: one window of L channels per group covers them. Which lane
// comes from which group, and from where in its window, depends only on the phase f % groups, so
// the permute indices are built once per phase. Each group is read from the source row that holds
// it (a's or b's), so a window never reaches past its own source's row.
#include "near_shuffle.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "row_cursor.h"
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

// Where each group of one pixel lies: group r's channels from base[r], of which `readable[r]` lie
// inside its source's row (the rest of its row: a window may read on into the next groups of the
// same source, never past the row).
template <int kGroups>
struct GroupRows {
  const char* base[kGroups];
  int64_t readable[kGroups];
};

// A window of L channels from `at` of a group: loaded whole where it lies inside its source's row,
// masked at the row's end (masked loads and stores are slower on Zen 4, and the row may be its
// tensor's last).
template <int E>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i window(
    const char* base, int64_t at, int64_t readable) {
  if (at + Lanes<E>::kCount <= readable) return _mm512_loadu_si512(base + at * E);
  return Lanes<E>::load(first_lanes<E>(readable - at), base + at * E);
}

// Output vector f.. of a row from its groups' windows, for phase f % kGroups.
template <int E, int kGroups>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i shuffled_vector(
    const GroupRows<kGroups>& rows, int64_t f, int64_t phase, const __m512i* idx,
    const typename Lanes<E>::Mask* mask) {
  using V = Lanes<E>;
  constexpr int kPairs = (kGroups + 1) / 2;
  const int64_t k0 = f / kGroups;
  __m512i acc;
#pragma GCC unroll 4
  for (int j = 0; j < kPairs; ++j) {
    const int r0 = 2 * j, r1 = std::min(2 * j + 1, kGroups - 1);
    const __m512i w0 = window<E>(rows.base[r0], k0, rows.readable[r0]);
    const __m512i w1 = r1 == r0 ? w0 : window<E>(rows.base[r1], k0, rows.readable[r1]);
    const int64_t t = phase * kPairs + j;
    const __m512i v = V::permute(w0, idx[t], w1);
    acc = j == 0 ? v : V::blend(mask[t], acc, v);
  }
  return acc;
}

// The rows of pixel p's groups: groups 0..a_groups-1 in a's row, the rest in b's; each group of
// s channels.
template <int kGroups>
inline GroupRows<kGroups> group_rows(const char* a_row, const char* b_row, int64_t ca,
                                     int64_t cb, int64_t s, int64_t a_groups,
                                     int64_t element_size) {
  GroupRows<kGroups> rows;
  for (int r = 0; r < kGroups; ++r) {
    const bool in_a = r < a_groups;
    const int64_t first = (in_a ? r : r - a_groups) * s;  // within its source
    rows.base[r] = (in_a ? a_row : b_row) + first * element_size;
    rows.readable[r] = (in_a ? ca : cb) - first;
  }
  return rows;
}

// The patched channels of one output row.
inline void copy_patches(const std::vector<Patch>& patches, const char* a_row, const char* b_row,
                         int64_t ca, char* out, int64_t element_size) {
  for (const Patch& patch : patches) {
    const char* from = patch.source < ca ? a_row + patch.source * element_size
                                         : b_row + (patch.source - ca) * element_size;
    std::memcpy(out + patch.channel * element_size, from, element_size);
  }
}

template <int E, int kGroups>
__attribute__((target("avx512f,avx512bw"))) void shuffle_rows(
    const GatherSource& a, const GatherSource& b, char* dst, int64_t begin, int64_t end,
    int64_t inner, const uint64_t* indices, const uint64_t* lanes,
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
  const int64_t ca = a.channels, cb = b.channels, c = ca + cb;
  const int64_t s = c / kGroups, a_groups = ca / s;
  RowCursor ra(a, E, inner, begin);
  RowCursor rb(b, E, inner, begin);
  for (int64_t p = begin; p < end; ++p, ra.next(), rb.next()) {
    const char* a_row = ra.row();
    const char* b_row = rb.row();
    const GroupRows<kGroups> rows = group_rows<kGroups>(a_row, b_row, ca, cb, s, a_groups, E);
    char* out = dst + p * c * E;
    int64_t f = 0;
    for (; f + kPeriod * L <= c; f += kPeriod * L) {
#pragma GCC unroll 8
      for (int q = 0; q < kPeriod; ++q) {
        const int64_t at = f + q * L;
        _mm512_storeu_si512(out + at * E,
                            shuffled_vector<E, kGroups>(rows, at, (q * L) % kGroups, idx, mask));
      }
    }
    for (; f < c; f += L) {
      const __m512i v = shuffled_vector<E, kGroups>(rows, f, f % kGroups, idx, mask);
      if (f + L <= c) {
        _mm512_storeu_si512(out + f * E, v);
      } else {
        V::store(out + f * E, first_lanes<E>(c - f), v);
      }
    }
    copy_patches(patches, a_row, b_row, ca, out, E);
  }
}

// AVX2, 4-byte elements, 2 groups of s channels: 8 channels of each group zip into 16 output
// channels with three shuffles; then the patches, while the row is in L1.
__attribute__((target("avx2"))) void zip_rows(const GatherSource& a, const GatherSource& b,
                                              char* dst, int64_t begin, int64_t end, int64_t inner,
                                              const std::vector<Patch>& patches) {
  const int64_t ca = a.channels, cb = b.channels, c = ca + cb, s = c / 2;
  RowCursor ra(a, 4, inner, begin);
  RowCursor rb(b, 4, inner, begin);
  for (int64_t p = begin; p < end; ++p, ra.next(), rb.next()) {
    const char* a_row = ra.row();
    const char* b_row = rb.row();
    const GroupRows<2> rows = group_rows<2>(a_row, b_row, ca, cb, s, ca / s, 4);
    const float* x = reinterpret_cast<const float*>(rows.base[0]);
    const float* y = reinterpret_cast<const float*>(rows.base[1]);
    float* out = reinterpret_cast<float*>(dst) + p * c;
    int64_t k = 0;
    for (; k + 8 <= s; k += 8) {
      const __m256 va = _mm256_loadu_ps(x + k);
      const __m256 vb = _mm256_loadu_ps(y + k);
      const __m256 lo = _mm256_unpacklo_ps(va, vb);  // a0 b0 a1 b1 | a4 b4 a5 b5
      const __m256 hi = _mm256_unpackhi_ps(va, vb);  // a2 b2 a3 b3 | a6 b6 a7 b7
      _mm256_storeu_ps(out + 2 * k, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(out + 2 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (; k < s; ++k) {
      std::memcpy(out + 2 * k, x + k, 4);
      std::memcpy(out + 2 * k + 1, y + k, 4);
    }
    copy_patches(patches, a_row, b_row, ca, reinterpret_cast<char*>(out), 4);
  }
}

}  // namespace
#endif  // AUTOSHUFFLE_X86_SIMD

NearShuffle::NearShuffle(int64_t ca, int64_t cb, int64_t groups, int64_t element_size,
                         std::vector<Patch> patches)
    : ca_(ca),
      cb_(cb),
      groups_(groups),
      element_size_(element_size),
      patches_(std::move(patches)) {
  if (element_size != 2 && element_size != 4) return;  // no AVX-512 tables
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

std::optional<NearShuffle> NearShuffle::find(const int32_t* perm32, int64_t ca, int64_t cb,
                                             int64_t element_size, int64_t min_groups,
                                             int64_t max_groups) {
  const int64_t c = ca + cb;
  std::optional<std::vector<Patch>> best;
  int64_t best_groups = 0;
  for (int64_t groups = std::max<int64_t>(min_groups, 1);
       groups <= std::min(max_groups, kMaxGroups); ++groups) {
    // Every group within one source: the group size divides a's channel count.
    if (c == 0 || c % groups || ca % (c / groups)) continue;
    auto patches = shuffle_patches(perm32, c, groups);
    if (patches && (!best || patches->size() < best->size())) {
      best = std::move(patches);
      best_groups = groups;
    }
  }
  if (!best) return std::nullopt;
  return NearShuffle(ca, cb, best_groups, element_size, std::move(*best));
}

#ifdef AUTOSHUFFLE_X86_SIMD
void NearShuffle::run_avx512(const GatherSource& a, const GatherSource& b, void* dst,
                             int64_t begin, int64_t end, int64_t inner) const {
  char* d = static_cast<char*>(dst);
  with_count<kMaxGroups>(groups_, [&](auto groups) {
    constexpr int kGroups = decltype(groups)::value;
    if (element_size_ == 4) {
      shuffle_rows<4, kGroups>(a, b, d, begin, end, inner, indices_.data(), lanes_.data(),
                               patches_);
    } else {
      shuffle_rows<2, kGroups>(a, b, d, begin, end, inner, indices_.data(), lanes_.data(),
                               patches_);
    }
  });
}

void NearShuffle::run_avx2(const GatherSource& a, const GatherSource& b, void* dst,
                           int64_t begin, int64_t end, int64_t inner) const {
  zip_rows(a, b, static_cast<char*>(dst), begin, end, inner, patches_);
}
#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace autoshuffle_ext::cpu
