// Channel gathers of contiguous tensors, plane by plane. Two things keep them at copy speed
// (figures: bench/RESULTS.md, "Figures from the CPU kernels' comments"):
// - the source planes come in perm's order, which the hardware prefetcher cannot guess: the first
//   line of the plane about 4 KB ahead is prefetched, and the prefetcher follows from there
//   (whole planes prefetched cost more than they gave);
// - planes whose size is not a multiple of 64 bytes start mid-line, and a plain memcpy then splits
//   every vector store across two lines: the AVX-512 copy stores whole aligned lines (masked head
//   and tail), AVX2 the same with two 32-byte stores per line.
#include "plane_gather.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

namespace autoshuffle_ext::cpu {
namespace {

constexpr int64_t kPrefetchBytes = 4096;

#ifdef AUTOSHUFFLE_X86_SIMD

// Copies n bytes with aligned stores of whole destination lines between a masked head and tail;
// kStream makes the whole-line stores non-temporal.
template <bool kStream>
__attribute__((target("avx512f,avx512bw"))) void copy_lines(const char* src, char* dst,
                                                            int64_t n) {
  const int64_t head = std::min<int64_t>(n, (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64);
  if (head) {
    const __mmask64 m = (__mmask64{1} << head) - 1;
    _mm512_mask_storeu_epi8(dst, m, _mm512_maskz_loadu_epi8(m, src));
  }
  int64_t i = head;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(src + i);
    if constexpr (kStream) {
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), v);
    } else {
      _mm512_store_si512(dst + i, v);
    }
  }
  if (i < n) {
    const __mmask64 m = (__mmask64{1} << (n - i)) - 1;
    _mm512_mask_storeu_epi8(dst + i, m, _mm512_maskz_loadu_epi8(m, src + i));
  }
}

// AVX2: the same, each whole line stored as two aligned 32-byte halves, the head and tail (under
// a line each) by memcpy: a line is never written both by plain and by non-temporal stores (a
// first version's overlapping unaligned head and tail made the streamed copy much slower).
template <bool kStream>
__attribute__((target("avx2"))) void copy_lines_avx2(const char* src, char* dst, int64_t n) {
  const int64_t head = std::min<int64_t>(n, (64 - reinterpret_cast<uintptr_t>(dst) % 64) % 64);
  std::memcpy(dst, src, head);
  int64_t i = head;
  for (; i + 64 <= n; i += 64) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 32));
    if constexpr (kStream) {
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), lo);
      _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 32), hi);
    } else {
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + i), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + i + 32), hi);
    }
  }
  std::memcpy(dst + i, src + i, n - i);
}

#endif  // AUTOSHUFFLE_X86_SIMD

// Output plane i as (image, channel), advanced without division.
struct PlaneCursor {
  PlaneCursor(int64_t i, int64_t c) : image(i / c), channel(i % c), channels(c) {}
  void next() {
    if (++channel == channels) {
      channel = 0;
      ++image;
    }
  }
  int64_t image;
  int64_t channel;
  int64_t channels;
};

template <typename Copy>
void copy_planes(const char* const* first, const int64_t* step, int64_t c, char* dst,
                 int64_t begin, int64_t end, int64_t plane_bytes, Copy copy) {
  const auto source = [&](const PlaneCursor& at) {
    return first[at.channel] + at.image * step[at.channel];
  };
  const int64_t ahead = (kPrefetchBytes + plane_bytes - 1) / plane_bytes;
  PlaneCursor fetch(std::min(begin + ahead, end), c);
  PlaneCursor plane(begin, c);
  for (int64_t i = begin; i < end; ++i, plane.next()) {
    if (i + ahead < end) {
      __builtin_prefetch(source(fetch), 0, 3);
      fetch.next();
    }
    copy(source(plane), dst + i * plane_bytes, plane_bytes);
  }
}

}  // namespace

void gather_planes(const char* const* first, const int64_t* step, int64_t c, char* dst,
                   int64_t begin, int64_t end, int64_t plane_bytes, Isa isa, bool stream) {
#ifdef AUTOSHUFFLE_X86_SIMD
  if (isa != Isa::kScalar) {
    const bool avx512 = isa == Isa::kAvx512;
    using Copy = void (*)(const char*, char*, int64_t);
    const Copy copy = stream ? (avx512 ? copy_lines<true> : copy_lines_avx2<true>)
                             : (avx512 ? copy_lines<false> : copy_lines_avx2<false>);
    copy_planes(first, step, c, dst, begin, end, plane_bytes, copy);
    if (stream) _mm_sfence();  // order the non-temporal stores before whatever reads dst next
    return;
  }
#endif
  (void)isa;
  (void)stream;
  copy_planes(first, step, c, dst, begin, end, plane_bytes,
              [](const char* s, char* d, int64_t n) { std::memcpy(d, s, n); });
}

bool stream_output(int64_t bytes) {
  const int64_t cache = last_level_cache_bytes();
  return cache > 0 && 2 * bytes > cache / 2;
}

}  // namespace autoshuffle_ext::cpu
