// CUDA kernel of cat_gather: vectorised plane copies (up to 16 bytes per load and store) from a or
// b for contiguous outputs, an element-wise gather from a's or b's pixel row for channels_last.
// Launched on the current stream of a's device. perm's entries are checked on the device: an
// entry outside [0, C) raises a device-side assert and its element is never read, so no launch
// reads out of bounds. Repeated entries are not detected (no host synchronisation): the caller
// guarantees a permutation, as for channel_gather.
// Only c10's CUDA API (stream, guard, error checks) and the CUDA runtime: no ATen/cuda header, so
// the file also compiles against a CPU build of torch (tests/test_cuda_compile.py) and links to
// nothing of libtorch_cuda.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../cat_gather.h"
#include "../element.h"

namespace autoshuffle_ext {
namespace {

constexpr int kThreads = 256;

unsigned int capped_blocks(int64_t work, int64_t cap) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(work, cap)));
}

// SMs of the current device (a cached attribute query in the driver, no device sync).
int64_t multiprocessor_count() {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  return sms;
}

// Contiguous output [planes, plane] of V vectors: out plane (n, c) = plane perm[c] of image n of
// cat([a, b], 1), the sources' strides (GatherSource, gather_source.h) counted in vectors. Blocks
// walk planes along y and the vectors of a plane along x.
template <typename V>
__global__ void cat_planes_kernel(const V* __restrict__ a, const V* __restrict__ b,
                                  V* __restrict__ dst, const int64_t* __restrict__ perm,
                                  int64_t ca, GatherSource pa, GatherSource pb, int64_t c,
                                  int64_t plane, int64_t planes) {
  for (int64_t i = blockIdx.y; i < planes; i += gridDim.y) {
    const int64_t n = i / c;
    const int64_t from = perm[i - n * c];
    if (from < 0 || from >= c) {
      CUDA_KERNEL_ASSERT(false && "cat_gather: perm entry out of range [0, C)");
      return;
    }
    const V* in = from < ca ? a + n * pa.batch_stride + from * pa.channel_stride
                            : b + n * pb.batch_stride + (from - ca) * pb.channel_stride;
    V* out = dst + i * plane;
    for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < plane;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      out[k] = in[k];
    }
  }
}

// Channels-last output [pixels, C]: out[p, ch] = cat(a[p], b[p])[perm[ch]], each source's pixel
// rows at its batch and pixel strides (GatherSource, in elements). Consecutive threads
// write consecutive elements (coalesced stores); the loads stay within one pixel's rows. Index is
// uint32_t where the output allows it, which makes the divisions cheap.
template <typename T, typename Index>
__global__ void cat_pixels_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                  T* __restrict__ dst, const int64_t* __restrict__ perm, Index ca,
                                  GatherSource ra, GatherSource rb, Index c, Index inner,
                                  Index total) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const Index p = i / c;
    const Index ch = i - p * c;
    const int64_t from = perm[ch];
    if (from < 0 || from >= static_cast<int64_t>(c)) {
      CUDA_KERNEL_ASSERT(false && "cat_gather: perm entry out of range [0, C)");
      return;
    }
    // Strided inputs may span more than 2^32 elements even when the output does not.
    const int64_t n = static_cast<int64_t>(p / inner);
    const int64_t s = static_cast<int64_t>(p % inner);
    dst[i] = from < static_cast<int64_t>(ca)
                 ? a[n * ra.batch_stride + s * ra.pixel_stride + from]
                 : b[n * rb.batch_stride + s * rb.pixel_stride + (from - static_cast<int64_t>(ca))];
  }
}

// The widest vector (up to 16 bytes) that divides the plane, both inputs' plane strides and all
// three base addresses: every plane then starts aligned.
int64_t vector_bytes(const GatherSource& a, const GatherSource& b, const void* dst,
                     int64_t plane_bytes, int64_t element_size) {
  for (int64_t v : {16, 8, 4, 2}) {
    bool ok = plane_bytes % v == 0 && reinterpret_cast<uintptr_t>(dst) % v == 0;
    for (const GatherSource* s : {&a, &b}) {
      ok = ok && reinterpret_cast<uintptr_t>(s->data) % v == 0 &&
           (s->batch_stride * element_size) % v == 0 &&
           (s->channel_stride * element_size) % v == 0;
    }
    if (ok) return v;
  }
  return 1;
}

template <size_t Bytes>
void launch_planes(const GatherSource& a, const GatherSource& b, void* dst, const int64_t* perm,
                   int64_t c, int64_t plane_bytes, int64_t planes, int64_t element_size,
                   cudaStream_t stream) {
  const int64_t plane = plane_bytes / Bytes;
  // Strides in vectors: vector_bytes made them whole.
  const auto in_vectors = [&](const GatherSource& s) {
    GatherSource v = s;
    v.batch_stride = s.batch_stride * element_size / static_cast<int64_t>(Bytes);
    v.channel_stride = s.channel_stride * element_size / static_cast<int64_t>(Bytes);
    return v;
  };
  const dim3 grid(capped_blocks((plane + kThreads - 1) / kThreads, 64),
                  capped_blocks(planes, 65535));
  cat_planes_kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const Element<Bytes>*>(a.data), static_cast<const Element<Bytes>*>(b.data),
      static_cast<Element<Bytes>*>(dst), perm, a.channels, in_vectors(a), in_vectors(b), c,
      plane, planes);
}

template <size_t Bytes>
void launch_pixels(const GatherSource& a, const GatherSource& b, void* dst, const int64_t* perm,
                   int64_t c, int64_t inner, int64_t pixels, cudaStream_t stream) {
  const int64_t total = pixels * c;
  const int64_t sms = multiprocessor_count();
  const unsigned int blocks = capped_blocks((total + kThreads - 1) / kThreads, sms * 32);
  const auto* pa = static_cast<const Element<Bytes>*>(a.data);
  const auto* pb = static_cast<const Element<Bytes>*>(b.data);
  auto* d = static_cast<Element<Bytes>*>(dst);
  if (total <= std::numeric_limits<uint32_t>::max() - static_cast<int64_t>(blocks) * kThreads) {
    cat_pixels_kernel<<<blocks, kThreads, 0, stream>>>(
        pa, pb, d, perm, static_cast<uint32_t>(a.channels), a, b, static_cast<uint32_t>(c),
        static_cast<uint32_t>(inner), static_cast<uint32_t>(total));
  } else {
    cat_pixels_kernel<<<blocks, kThreads, 0, stream>>>(pa, pb, d, perm, a.channels, a, b, c,
                                                       inner, total);
  }
}

// The CUDA kernel (a CatGatherInto), launched on the current stream of the output's device.
void cat_gather_into(const GatherSource& a, const GatherSource& b, const GatherLayout& layout,
                     const at::Tensor& perm, at::Tensor& out) {
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor perm_c = perm.contiguous();
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const int64_t c = layout.c;
  const int64_t element_size = out.element_size();
  void* d = out.mutable_data_ptr();
  if (layout.planes) {
    const int64_t plane_bytes = layout.inner * element_size;
    const int64_t planes = layout.n * c;
    switch (vector_bytes(a, b, d, plane_bytes, element_size)) {
      case 16: launch_planes<16>(a, b, d, p, c, plane_bytes, planes, element_size, stream); break;
      case 8: launch_planes<8>(a, b, d, p, c, plane_bytes, planes, element_size, stream); break;
      case 4: launch_planes<4>(a, b, d, p, c, plane_bytes, planes, element_size, stream); break;
      case 2: launch_planes<2>(a, b, d, p, c, plane_bytes, planes, element_size, stream); break;
      default: launch_planes<1>(a, b, d, p, c, plane_bytes, planes, element_size, stream); break;
    }
  } else {
    const int64_t pixels = layout.pixels();
    const int64_t inner = layout.inner;
    switch (element_size) {
      case 1: launch_pixels<1>(a, b, d, p, c, inner, pixels, stream); break;
      case 2: launch_pixels<2>(a, b, d, p, c, inner, pixels, stream); break;
      case 4: launch_pixels<4>(a, b, d, p, c, inner, pixels, stream); break;
      case 8: launch_pixels<8>(a, b, d, p, c, inner, pixels, stream); break;
      case 16: launch_pixels<16>(a, b, d, p, c, inner, pixels, stream); break;
      default: TORCH_CHECK(false, "cat_gather: unsupported element size ", element_size);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CUDA, m) {
  m.impl("cat_gather", &cat_gather_with<cat_gather_into>);
}

}  // namespace autoshuffle_ext
