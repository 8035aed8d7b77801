// Per-pixel channel gather for channels_last tensors. A scalar loop moves one element per load of
// perm, about 3x slower than a copy; hardware gathers (AVX2: 8 x 32-bit, AVX-512: 16 x 32-bit)
// move a whole vector per instruction and bring the gather close to memory speed on Intel. Where
// they are slower than tile transposes (pixel_transpose.cpp; AMD, timed once per process), 2- and
// 4-byte elements take those, and 4-byte rows that fit in AVX-512 registers are permuted there
// (pixel_permute.cpp). The SIMD paths are compiled with function-level target attributes and
// picked at run time, so the library still runs on any x86-64 (and any other) CPU.
#include "pixel_gather.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "../element.h"
#include "pixel_permute.h"
#include "pixel_transpose.h"

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

void gather_pixels(const void* src, void* dst, const int64_t* perm, const int32_t* perm32,
                   int64_t begin, int64_t end, int64_t last_pixel, int64_t c,
                   int64_t element_size, Isa isa, bool gathers, bool stream) {
#ifdef AUTOSHUFFLE_X86_SIMD
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  // One input of dense rows, all in one "image" (batch stride 0).
  const PixelRows rows{src, c, 0, c}, none{nullptr, 0, 0, 0};
  if (isa == Isa::kAvx512 && element_size == 4 && permute_fits(c, 0)) {
    permute_pixels(rows, none, dst, perm32, begin, end, last_pixel + 1);
    return;
  }
  if (isa != Isa::kScalar && (element_size == 2 || element_size == 4) && !gathers) {
    transpose_pixels(rows, none, dst, perm32, begin, end, last_pixel + 1, element_size, stream);
    return;
  }
  if (isa == Isa::kAvx512 && element_size <= 8) {
    // Narrow elements over-read: the array's last pixel goes to the scalar loop below.
    const int64_t simd_end = (element_size < 4 && end > last_pixel) ? last_pixel : end;
    switch (element_size) {
      case 1: avx512_pixels<1>(s, d, perm32, begin, simd_end, c); break;
      case 2: avx512_pixels<2>(s, d, perm32, begin, simd_end, c); break;
      case 4: avx512_pixels<4>(s, d, perm32, begin, simd_end, c); break;
      case 8: avx512_pixels<8>(s, d, perm32, begin, simd_end, c); break;
    }
    if (simd_end < end) scalar_dispatch(src, dst, perm, simd_end, end, c, element_size);
    return;
  }
  if (isa != Isa::kScalar && (element_size == 4 || element_size == 8)) {
    if (element_size == 4) {
      avx2_pixels<4>(s, d, perm, perm32, begin, end, c);
    } else {
      avx2_pixels<8>(s, d, perm, perm32, begin, end, c);
    }
    return;
  }
#endif
  (void)perm32;
  (void)last_pixel;
  (void)isa;
  (void)gathers;
  (void)stream;
  scalar_dispatch(src, dst, perm, begin, end, c, element_size);
}

namespace {

// The faster path's answer for `isa` and elements of E bytes: 64 pixels of 240 channels (in L2),
// each path run 9 times alternately, the best time of each compared (the minimum shrugs off a
// noisy neighbour's interruptions).
template <int E>
bool time_gathers_against_transposes(Isa isa) {
  constexpr int64_t kPixels = 64, kChannels = 240;
  // + 4 bytes: the 2-byte gathers read a little past each element (pixel_gather.h).
  std::vector<char> src(kPixels * kChannels * E + 4), dst(kPixels * kChannels * E);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 7);
  std::vector<int64_t> perm(kChannels);
  std::vector<int32_t> perm32(kChannels);
  for (int64_t ch = 0; ch < kChannels; ++ch) {
    perm[ch] = (ch * 7 + 3) % kChannels;  // 7 is coprime to 240: a permutation
    perm32[ch] = static_cast<int32_t>(perm[ch]);
  }
  double best[2] = {1e30, 1e30};
  for (int round = 0; round < 9; ++round) {
    for (int gathers = 0; gathers < 2; ++gathers) {
      const auto start = std::chrono::steady_clock::now();
      gather_pixels(src.data(), dst.data(), perm.data(), perm32.data(), 0, kPixels, kPixels,
                    kChannels, E, isa, gathers == 1, false);
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      best[gathers] = std::min(best[gathers], took.count());
    }
  }
  return best[1] < best[0];
}

}  // namespace

bool gathers_are_faster(Isa isa, int64_t element_size) {
  if (!isa_supported(isa) || (element_size != 2 && element_size != 4)) return false;
#define AS_CASE(ISA, E)                                                    \
  if (isa == ISA && element_size == E) {                                   \
    static const bool faster = time_gathers_against_transposes<E>(ISA); \
    return faster;                                                         \
  }
  AS_CASE(Isa::kAvx512, 4)
  AS_CASE(Isa::kAvx512, 2)
  AS_CASE(Isa::kAvx2, 4)
  AS_CASE(Isa::kAvx2, 2)
#undef AS_CASE
  return false;  // no SIMD: no transposes
}

}  // namespace autoshuffle_ext::cpu
