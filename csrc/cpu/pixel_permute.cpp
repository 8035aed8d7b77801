// Per-pixel permutation in AVX-512 registers (see pixel_permute.h). Each output vector is built
// with one vpermt2d per register pair plus blends, with no table to go through; with more
// registers the permutes per output vector grow with C and the transposes win (measured:
// bench/RESULTS.md).
#include "pixel_permute.h"

#include <algorithm>
#include <cstring>

#include "row_cursor.h"
#include "static_count.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

namespace autoshuffle_ext::cpu {

void build_permute_plan(const int32_t* perm32, int64_t ca, int64_t cb, PermutePlan& plan) {
  std::memset(&plan, 0, sizeof(plan));
  plan.a_regs = static_cast<int>(registers_for(ca));
  const int regs = plan.a_regs + static_cast<int>(registers_for(cb));
  for (int r = 0; r < regs; ++r) {
    const bool in_a = r < plan.a_regs;
    const int64_t first = 16 * (in_a ? r : r - plan.a_regs);
    const int64_t lanes = std::min<int64_t>(16, (in_a ? ca : cb) - first);
    plan.offset[r] = first;
    plan.load_mask[r] = static_cast<uint16_t>((1u << lanes) - 1u);
  }
  for (int64_t ch = 0; ch < ca + cb; ++ch) {
    const int o = static_cast<int>(ch / 16), lane = static_cast<int>(ch % 16);
    const int64_t s = perm32[ch];
    const int64_t at = s < ca ? s : 16 * plan.a_regs + (s - ca);  // lane among all registers
    plan.idx[o][at / 32][lane] = static_cast<int32_t>(at % 32);
    plan.mask[o][at / 32] |= static_cast<uint16_t>(1u << lane);
  }
}

#ifdef AUTOSHUFFLE_X86_SIMD
namespace {

// B pixels at a time: each index vector and mask is loaded once for all B. V registers and
// Outputs output vectors per pixel, compile-time counts so that the sequence is unrolled, fixed
// and branch-free. kOneInput (channel_gather's dense rows): load offsets known at compile time and
// no row cursor (masked loads through the plan and cursors were slower on one input in cache).
template <int V, int Outputs, bool kOneInput, int B>
__attribute__((target("avx512f"))) inline void permute_block(const int32_t* const a[B],
                                                             const int32_t* const b[B],
                                                             int32_t* out, const PermutePlan& plan,
                                                             int64_t c, __mmask16 out_tail) {
  constexpr int kPairs = (V + 1) / 2;
  __m512i r[B][2 * kPairs];
  for (int p = 0; p < B; ++p) {
    for (int j = 0; j < V; ++j) {
      if constexpr (kOneInput) {  // offsets known at compile time, only the last load masked
        r[p][j] = j + 1 < V ? _mm512_loadu_si512(a[p] + 16 * j)
                            : _mm512_maskz_loadu_epi32(plan.load_mask[j], a[p] + 16 * j);
      } else {
        r[p][j] = _mm512_maskz_loadu_epi32(plan.load_mask[j],
                                           (j < plan.a_regs ? a[p] : b[p]) + plan.offset[j]);
      }
    }
    if constexpr (V % 2) r[p][V] = _mm512_setzero_si512();
  }
  for (int o = 0; o < Outputs; ++o) {
    __m512i acc[B];
    const __m512i idx0 = _mm512_load_si512(plan.idx[o][0]);
    for (int p = 0; p < B; ++p) acc[p] = _mm512_permutex2var_epi32(r[p][0], idx0, r[p][1]);
    for (int j = 1; j < kPairs; ++j) {
      const __m512i idx = _mm512_load_si512(plan.idx[o][j]);
      const __mmask16 m = plan.mask[o][j];
      for (int p = 0; p < B; ++p) {
        acc[p] = _mm512_mask_blend_epi32(
            m, acc[p], _mm512_permutex2var_epi32(r[p][2 * j], idx, r[p][2 * j + 1]));
      }
    }
    for (int p = 0; p < B; ++p) {
      if (o < Outputs - 1) {
        _mm512_storeu_si512(out + p * c + 16 * o, acc[p]);
      } else {
        _mm512_mask_storeu_epi32(out + p * c + 16 * o, out_tail, acc[p]);
      }
    }
  }
}

template <int V, int Outputs, bool kOneInput>
__attribute__((target("avx512f"))) void permute_range(const GatherSource& a, const GatherSource& b,
                                                       char* dst, const PermutePlan& plan,
                                                       int64_t begin, int64_t end,
                                                       int64_t inner) {
  const int64_t c = a.channels + b.channels;
  const int tail = static_cast<int>(c - (c - 1) / 16 * 16);
  const __mmask16 out_tail = static_cast<__mmask16>((1u << tail) - 1u);
  RowCursor ra(a, 4, inner, begin);
  RowCursor rb(b, 4, inner, begin);
  int32_t* out = reinterpret_cast<int32_t*>(dst);
  const int32_t* a_rows[2];
  const int32_t* b_rows[2] = {nullptr, nullptr};
  int64_t p = begin;
  for (; p + 2 <= end; p += 2) {
    for (int i = 0; i < 2; ++i) {
      if constexpr (kOneInput) {  // dense rows: no cursor
        a_rows[i] = static_cast<const int32_t*>(a.data) + (p + i) * a.pixel_stride;
      } else {
        a_rows[i] = reinterpret_cast<const int32_t*>(ra.row());
        b_rows[i] = reinterpret_cast<const int32_t*>(rb.row());
        ra.next();
        rb.next();
      }
    }
    permute_block<V, Outputs, kOneInput, 2>(a_rows, b_rows, out + p * c, plan, c, out_tail);
  }
  if (p < end) {
    a_rows[0] = kOneInput ? static_cast<const int32_t*>(a.data) + p * a.pixel_stride
                          : reinterpret_cast<const int32_t*>(ra.row());
    b_rows[0] = reinterpret_cast<const int32_t*>(rb.row());
    permute_block<V, Outputs, kOneInput, 1>(a_rows, b_rows, out + p * c, plan, c, out_tail);
  }
}

// V input registers hold ceil(C / 16) or one more output vectors' worth (two partial rows).
template <int V>
void permute_outputs(const GatherSource& a, const GatherSource& b, char* dst, const PermutePlan& plan,
                     int64_t begin, int64_t end, int64_t inner) {
  if (b.channels == 0 && a.batch_stride == 0) {
    permute_range<V, V, true>(a, b, dst, plan, begin, end, inner);
  } else if (registers_for(a.channels + b.channels) == V) {
    permute_range<V, V, false>(a, b, dst, plan, begin, end, inner);
  } else if constexpr (V > 1) {
    permute_range<V, V - 1, false>(a, b, dst, plan, begin, end, inner);
  }
}

}  // namespace

void permute_pixels(const PermutePlan& plan, const GatherSource& a, const GatherSource& b,
                    void* dst, int64_t begin, int64_t end, int64_t inner) {
  with_count<kMaxPermuteRegs>(registers_for(a.channels) + registers_for(b.channels), [&](auto v) {
    permute_outputs<decltype(v)::value>(a, b, static_cast<char*>(dst), plan, begin, end, inner);
  });
}

#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace autoshuffle_ext::cpu
