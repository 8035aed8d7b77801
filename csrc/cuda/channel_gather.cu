// CUDA kernel of channel_gather: vectorised plane copies (up to 16 bytes per load and store) for
// contiguous tensors, an element-wise gather through perm for channels_last. Launched on the
// current stream of x's device. perm's entries are checked on the device: an entry outside [0, C)
// raises a device-side assert and its element is never read, so no launch reads out of bounds.
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

#include "../channel_gather.h"
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

// Contiguous [planes, plane] of V vectors: out plane (n, c) = x plane (n, perm[c]). Blocks walk
// planes along y and the vectors of a plane along x: no division per element.
template <typename V>
__global__ void gather_planes_kernel(const V* __restrict__ src, V* __restrict__ dst,
                                     const int64_t* __restrict__ perm, int64_t c, int64_t plane,
                                     int64_t planes) {
  for (int64_t i = blockIdx.y; i < planes; i += gridDim.y) {
    const int64_t b = i / c;
    const int64_t from = perm[i - b * c];
    if (from < 0 || from >= c) {
      CUDA_KERNEL_ASSERT(false && "channel_gather: perm entry out of range [0, C)");
      return;
    }
    const V* in = src + (b * c + from) * plane;
    V* out = dst + i * plane;
    for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < plane;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      out[k] = in[k];
    }
  }
}

// Channels-last [pixels, C]: out[p, ch] = x[p, perm[ch]]. Consecutive threads write consecutive
// elements (coalesced stores); the loads stay within one pixel's cache lines. Index is uint32_t
// where the tensor allows it, which makes the division by C cheap.
template <typename T, typename Index>
__global__ void gather_pixels_kernel(const T* __restrict__ src, T* __restrict__ dst,
                                     const int64_t* __restrict__ perm, Index c, Index total) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const Index p = i / c;
    const Index ch = i - p * c;
    const int64_t from = perm[ch];
    if (from < 0 || from >= static_cast<int64_t>(c)) {
      CUDA_KERNEL_ASSERT(false && "channel_gather: perm entry out of range [0, C)");
      return;
    }
    dst[i] = src[p * c + static_cast<Index>(from)];
  }
}

template <size_t Bytes>
void launch_planes(const void* src, void* dst, const int64_t* perm, int64_t c, int64_t plane_bytes,
                   int64_t planes, cudaStream_t stream) {
  const int64_t plane = plane_bytes / Bytes;
  const dim3 grid(capped_blocks((plane + kThreads - 1) / kThreads, 64),
                  capped_blocks(planes, 65535));
  gather_planes_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const Element<Bytes>*>(src),
                                                      static_cast<Element<Bytes>*>(dst), perm, c,
                                                      plane, planes);
}

template <size_t Bytes>
void launch_pixels(const void* src, void* dst, const int64_t* perm, int64_t c, int64_t pixels,
                   cudaStream_t stream) {
  const int64_t total = pixels * c;
  const int64_t sms = multiprocessor_count();
  const unsigned int blocks = capped_blocks((total + kThreads - 1) / kThreads, sms * 32);
  const auto* s = static_cast<const Element<Bytes>*>(src);
  auto* d = static_cast<Element<Bytes>*>(dst);
  if (total <= std::numeric_limits<uint32_t>::max() - static_cast<int64_t>(blocks) * kThreads) {
    gather_pixels_kernel<<<blocks, kThreads, 0, stream>>>(s, d, perm, static_cast<uint32_t>(c),
                                                          static_cast<uint32_t>(total));
  } else {
    gather_pixels_kernel<<<blocks, kThreads, 0, stream>>>(s, d, perm, c, total);
  }
}

// The widest vector (up to 16 bytes) that divides the plane and both base addresses: every plane
// then starts aligned too.
int64_t vector_bytes(const void* src, const void* dst, int64_t plane_bytes) {
  for (int64_t v : {16, 8, 4, 2}) {
    if (plane_bytes % v == 0 && reinterpret_cast<uintptr_t>(src) % v == 0 &&
        reinterpret_cast<uintptr_t>(dst) % v == 0)
      return v;
  }
  return 1;
}

// The CUDA kernel (a GatherInto), launched on the current stream of x's device.
void gather_into(const at::Tensor& x, at::Tensor& out, const at::Tensor& perm,
                 at::MemoryFormat format) {
  if (x.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor src = x.contiguous(format);
  const at::Tensor perm_c = perm.contiguous();
  const GatherLayout layout = gather_layout(x, format);
  const int64_t c = layout.c;
  const int64_t planes = layout.n * c;
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const void* s = src.const_data_ptr();
  void* d = out.mutable_data_ptr();
  if (layout.planes) {
    const int64_t plane_bytes = layout.inner * x.element_size();
    switch (vector_bytes(s, d, plane_bytes)) {
      case 16: launch_planes<16>(s, d, p, c, plane_bytes, planes, stream); break;
      case 8: launch_planes<8>(s, d, p, c, plane_bytes, planes, stream); break;
      case 4: launch_planes<4>(s, d, p, c, plane_bytes, planes, stream); break;
      case 2: launch_planes<2>(s, d, p, c, plane_bytes, planes, stream); break;
      default: launch_planes<1>(s, d, p, c, plane_bytes, planes, stream); break;
    }
  } else {
    const int64_t pixels = layout.pixels();
    switch (x.element_size()) {
      case 1: launch_pixels<1>(s, d, p, c, pixels, stream); break;
      case 2: launch_pixels<2>(s, d, p, c, pixels, stream); break;
      case 4: launch_pixels<4>(s, d, p, c, pixels, stream); break;
      case 8: launch_pixels<8>(s, d, p, c, pixels, stream); break;
      case 16: launch_pixels<16>(s, d, p, c, pixels, stream); break;
      default: TORCH_CHECK(false, "channel_gather: unsupported element size ", x.element_size());
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CUDA, m) {
  m.impl("channel_gather", &channel_gather_with<gather_into>);
  m.impl("channel_gather.out", &channel_gather_out_with<gather_into>);
}

}  // namespace autoshuffle_ext
