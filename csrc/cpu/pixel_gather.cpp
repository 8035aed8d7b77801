// Per-pixel channel gather of dense rows. A scalar loop moves one element per load of perm;
// hardware gathers (AVX2: 8 x 32-bit, AVX-512: 16 x 32-bit) move a whole vector per instruction
// (fast on Intel, slow on AMD Zen 4: bench/RESULTS.md). The SIMD paths are compiled with
// function-level target attributes and picked at run time (gather_plan.cpp), so the library still
// runs on any x86-64 (and any other) CPU.
#include "pixel_gather.h"

#include <c10/util/Exception.h>

#include "../element.h"
#include "features.h"

#ifdef AUTOSHUFFLE_X86_SIMD
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
// GCC flags _mm512_undefined_*() inside its own gather intrinsics as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace autoshuffle_ext::cpu {
namespace {

template <typename T>
void scalar_pixels(const T* src, T* dst, const int64_t* perm, int64_t begin, int64_t end,
                   int64_t c) {
  for (int64_t p = begin; p < end; ++p) {
    const T* in = src + p * c;
    T* out = dst + p * c;
    for (int64_t ch = 0; ch < c; ++ch) out[ch] = in[perm[ch]];
  }
}

void scalar_dispatch(const void* src, void* dst, const int64_t* perm, int64_t begin, int64_t end,
                     int64_t c, int64_t element_size) {
  switch (element_size) {
#define AS_CASE(B)                                                                         \
  case B:                                                                                  \
    scalar_pixels(static_cast<const Element<B>*>(src), static_cast<Element<B>*>(dst), perm, \
                  begin, end, c);                                                          \
    return;
    AS_CASE(1)
    AS_CASE(2)
    AS_CASE(4)
    AS_CASE(8)
    AS_CASE(16)
#undef AS_CASE
    default:
      TORCH_CHECK(false, "channel_gather: unsupported element size ", element_size);
  }
}

#ifdef AUTOSHUFFLE_X86_SIMD

// AVX-512. 4- and 8-byte elements gather directly; 1- and 2-byte elements gather the 32-bit word
// starting at each element and keep its low bytes (vpmovdb / vpmovdw), which reads up to 3 bytes
// past the element: within the next pixel, hence the caller keeps the array's last pixel scalar.
// Channel tails use masked gathers and stores, which touch no memory in masked-off lanes.
template <int Bytes>
__attribute__((target("avx512f,avx512vl"))) void avx512_pixels(const char* src, char* dst,
                                                                const int32_t* perm32,
                                                                int64_t begin, int64_t end,
                                                                int64_t c) {
  constexpr int kLanes = Bytes == 8 ? 8 : 16;
  const int64_t full = c - c % kLanes;
  const int tail = static_cast<int>(c % kLanes);
  const __mmask16 tail_mask = static_cast<__mmask16>((1u << tail) - 1u);
  const int64_t pixel_bytes = c * Bytes;
  for (int64_t p = begin; p < end; ++p) {
    const char* in = src + p * pixel_bytes;
    char* out = dst + p * pixel_bytes;
    // Gathers touch a pixel's cache lines in perm's order, which defeats the hardware prefetcher;
    // fetching the pixel two ahead line by line keeps every gathered load an L1 hit. (A prefetch
    // never faults, so running past the array is harmless.)
    for (int64_t off = 0; off < pixel_bytes; off += 64) {
      _mm_prefetch(in + 2 * pixel_bytes + off, _MM_HINT_T0);
    }
    if constexpr (Bytes == 8) {
      for (int64_t k = 0; k < full; k += 8) {
        const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm32 + k));
        _mm512_storeu_si512(out + k * 8, _mm512_i32gather_epi64(idx, in, 8));
      }
      if (tail) {
        const __mmask8 m = static_cast<__mmask8>(tail_mask);
        const __m256i idx = _mm256_maskz_loadu_epi32(m, perm32 + full);
        _mm512_mask_storeu_epi64(
            out + full * 8, m,
            _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), m, idx, in, 8));
      }
    } else {
      for (int64_t k = 0; k < full; k += 16) {
        const __m512i idx = _mm512_loadu_si512(perm32 + k);
        const __m512i v = _mm512_i32gather_epi32(idx, in, Bytes);
        if constexpr (Bytes == 4) {
          _mm512_storeu_si512(out + k * 4, v);
        } else if constexpr (Bytes == 2) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 2), _mm512_cvtepi32_epi16(v));
        } else {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k), _mm512_cvtepi32_epi8(v));
        }
      }
      if (tail) {
        const __m512i idx = _mm512_maskz_loadu_epi32(tail_mask, perm32 + full);
        const __m512i v =
            _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), tail_mask, idx, in, Bytes);
        if constexpr (Bytes == 4) {
          _mm512_mask_storeu_epi32(out + full * 4, tail_mask, v);
        } else if constexpr (Bytes == 2) {
          _mm512_mask_cvtepi32_storeu_epi16(out + full * 2, tail_mask, v);
        } else {
          _mm512_mask_cvtepi32_storeu_epi8(out + full, tail_mask, v);
        }
      }
    }
  }
}

// AVX2: whole vectors of 4- and 8-byte elements; the channel tail is scalar.
template <int Bytes>
__attribute__((target("avx2"))) void avx2_pixels(const char* src, char* dst,
                                                 const int64_t* perm, const int32_t* perm32,
                                                 int64_t begin, int64_t end, int64_t c) {
  constexpr int kLanes = Bytes == 8 ? 4 : 8;
  const int64_t full = c - c % kLanes;
  using T = Element<Bytes>;
  for (int64_t p = begin; p < end; ++p) {
    const char* in = src + p * c * Bytes;
    char* out = dst + p * c * Bytes;
    for (int64_t k = 0; k < full; k += kLanes) {
      if constexpr (Bytes == 8) {
        const __m128i idx = _mm_loadu_si128(reinterpret_cast<const __m128i*>(perm32 + k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 8),
                            _mm256_i32gather_epi64(reinterpret_cast<const long long*>(in), idx, 8));
      } else {
        const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(perm32 + k));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k * 4),
                            _mm256_i32gather_epi32(reinterpret_cast<const int*>(in), idx, 4));
      }
    }
    const T* in_t = reinterpret_cast<const T*>(in);
    T* out_t = reinterpret_cast<T*>(out);
    for (int64_t ch = full; ch < c; ++ch) out_t[ch] = in_t[perm[ch]];
  }
}

#endif  // AUTOSHUFFLE_X86_SIMD

}  // namespace

void gather_rows(GatherPath path, const void* src, void* dst, const int64_t* perm,
                 const int32_t* perm32, int64_t begin, int64_t end, int64_t rows, int64_t c,
                 int64_t element_size) {
#ifdef AUTOSHUFFLE_X86_SIMD
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  if (path == GatherPath::kPixelsGatherAvx512) {
    // Narrow elements over-read: src's last row goes to the scalar loop below.
    const int64_t simd_end = (element_size < 4 && end >= rows) ? rows - 1 : end;
    switch (element_size) {
      case 1: avx512_pixels<1>(s, d, perm32, begin, simd_end, c); break;
      case 2: avx512_pixels<2>(s, d, perm32, begin, simd_end, c); break;
      case 4: avx512_pixels<4>(s, d, perm32, begin, simd_end, c); break;
      case 8: avx512_pixels<8>(s, d, perm32, begin, simd_end, c); break;
      default: TORCH_CHECK(false, "pixels_gather_avx512: unsupported element size ", element_size);
    }
    if (simd_end < end) scalar_dispatch(src, dst, perm, simd_end, end, c, element_size);
    return;
  }
  if (path == GatherPath::kPixelsGatherAvx2) {
    switch (element_size) {
      case 4: avx2_pixels<4>(s, d, perm, perm32, begin, end, c); break;
      case 8: avx2_pixels<8>(s, d, perm, perm32, begin, end, c); break;
      default: TORCH_CHECK(false, "pixels_gather_avx2: unsupported element size ", element_size);
    }
    return;
  }
#endif
  (void)perm32;
  (void)rows;
  TORCH_CHECK(path == GatherPath::kPixels, "gather_rows: not a row gather: ", path_name(path));
  scalar_dispatch(src, dst, perm, begin, end, c, element_size);
}

}  // namespace autoshuffle_ext::cpu
