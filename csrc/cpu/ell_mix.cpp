// CPU kernel of ell_mix (see ell_mix.h).
//
// The row lists are first compacted into a CSR of the valid entries, their values read from A
// through its strides in the arithmetic type (float32 for float16/bfloat16 and float32, float64
// for float64): C * K entries, built once per call. Then by x's layout:
//
//  * planar (x contiguous, [N, C, P]): a task is an output plane (n, i), written as
//    y[n, i, :] = sum over row i's entries w * x[n, j, :]: whole-plane multiply-adds that the
//    compiler vectorises. float16/bfloat16 planes accumulate in a float32 buffer of the thread.
//  * rows (channel stride 1: channels-last, or [N, C]; x as [R, C], R = N * pixels): a task is a
//    block of 64 rows, transposed into C short planes, mixed as planes, transposed back.
//
// Any other x is first copied into the nearest of the two (channels-last order when the channel
// stride is 1). Nothing is atomic: every output element is written by one task.
#include "ell_mix.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "vectorised.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace autoshuffle_ext::cpu {
namespace {

constexpr int64_t kGrain = 32768;  // multiply-adds per parallel task, at least

template <typename A>
struct Csr {
  std::vector<int64_t> start;  // row i's entries are [start[i], start[i + 1])
  std::vector<int64_t> col;
  std::vector<A> w;
};

template <typename A>
Csr<A> compact(const at::Tensor& A_acc, const at::Tensor& index) {
  const int64_t C = index.size(0);
  const int64_t K = index.size(1);
  const auto a = A_acc.accessor<A, 2>();
  const at::Tensor idx_t = index.contiguous();
  const int64_t* idx = idx_t.data_ptr<int64_t>();
  Csr<A> csr;
  csr.start.reserve(C + 1);
  csr.start.push_back(0);
  for (int64_t i = 0; i < C; ++i) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = idx[i * K + k];
      if (j == -1) continue;
      TORCH_CHECK_VALUE(j >= 0 && j < C, "ell_mix: index must hold columns in [0, ", C,
                        ") or -1, got ", j, " at [", i, ", ", k, "]");
      csr.col.push_back(j);
      csr.w.push_back(a[i][j]);
    }
    csr.start.push_back(static_cast<int64_t>(csr.col.size()));
  }
  return csr;
}

// One output plane: out[p] = sum over row i's entries w * src[col * stride + p], p < length, in
// the arithmetic type; whole-plane multiply-adds that the compiler vectorises.
template <typename S, typename A>
inline void mix_plane(const S* src, int64_t stride, int64_t length, int64_t i, const Csr<A>& csr,
                      A* out) {
  const int64_t first = csr.start[i];
  const int64_t last = csr.start[i + 1];
  if (first == last) {
    std::fill(out, out + length, A(0));
    return;
  }
  const S* in = src + csr.col[first] * stride;
  const A w = csr.w[first];
  for (int64_t p = 0; p < length; ++p) out[p] = w * static_cast<A>(in[p]);
  for (int64_t q = first + 1; q < last; ++q) {
    const S* s = src + csr.col[q] * stride;
    const A v = csr.w[q];
    for (int64_t p = 0; p < length; ++p) out[p] += v * static_cast<A>(s[p]);
  }
}

// y[t * P + p] for t = n * C + i: the planes of a contiguous x. A task is an output plane;
// float16/bfloat16 planes accumulate in a float32 buffer of the thread.
template <typename T, typename A>
void mix_planes(const T* x, T* y, int64_t N, int64_t C, int64_t P, const Csr<A>& csr) {
  const int64_t entries = std::max<int64_t>(static_cast<int64_t>(csr.col.size()) / C, 1);
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(P * entries, 1));
  at::parallel_for(0, N * C, grain, [&](int64_t begin, int64_t end) {
    constexpr bool same = std::is_same_v<T, A>;
    std::vector<A> buffer(same ? 0 : P);
    run_vectorised([&] {
      for (int64_t t = begin; t < end; ++t) {
        T* out = y + t * P;
        A* acc = same ? reinterpret_cast<A*>(out) : buffer.data();
        mix_plane<T, A>(x + (t / C) * C * P, P, P, t % C, csr, acc);
        if constexpr (!same) {
          for (int64_t p = 0; p < P; ++p) out[p] = static_cast<T>(acc[p]);
        }
      }
    });
  });
}

constexpr int64_t kRows = 64;  // rows of a channels-last block, transposed into planes

// y[r * C + i]: the rows of a channels-last x, kRows at a time: the block is transposed into C
// planes of kRows (in the arithmetic type), mixed plane by plane as in the planar order, and
// transposed back. Gathering each output's few inputs row by row instead costs a load by index
// per multiply-add, which made a width of 8 five times slower than the dense GEMM.
template <typename T, typename A>
void mix_rows(const T* x, T* y, int64_t R, int64_t C, const Csr<A>& csr) {
  const int64_t entries = std::max<int64_t>(static_cast<int64_t>(csr.col.size()), C);
  const int64_t blocks = (R + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, kGrain / (kRows * entries));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> planes(C * kRows);
    std::vector<A> mixed(C * kRows);
    run_vectorised([&] {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t r0 = b * kRows;
        const int64_t rows = std::min(kRows, R - r0);
        const T* in = x + r0 * C;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < C; ++j) planes[j * kRows + r] = static_cast<A>(in[r * C + j]);
        }
        for (int64_t i = 0; i < C; ++i) {
          mix_plane<A, A>(planes.data(), kRows, rows, i, csr, mixed.data() + i * kRows);
        }
        T* out = y + r0 * C;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t i = 0; i < C; ++i) out[r * C + i] = static_cast<T>(mixed[i * kRows + r]);
        }
      }
    });
  });
}

bool channels_inner(const at::Tensor& x) { return x.size(1) > 1 && x.stride(1) == 1; }

// x with its channels moved last, as a contiguous [..., C] (a view when x is dense that way).
at::Tensor channels_last_rows(const at::Tensor& x) { return x.movedim(1, -1).contiguous(); }

}  // namespace

void check_ell_mix_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& index) {
  TORCH_CHECK_VALUE(x.dim() >= 2, "ell_mix: x must have shape [N, C, ...] (>= 2 dims), got ",
                    x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == C && A.size(1) == C,
                    "ell_mix: A must have shape [C, C] with C = x.shape[1] = ", C, ", got ",
                    A.sizes());
  TORCH_CHECK_VALUE(index.dim() == 2 && index.size(0) == C && index.size(1) >= 1,
                    "ell_mix: index must have shape [C, K] with C = x.shape[1] = ", C,
                    " and K >= 1, got ", index.sizes());
  TORCH_CHECK_TYPE(index.scalar_type() == at::kLong, "ell_mix: index must be int64, got ",
                   index.scalar_type());
  const at::ScalarType xt = x.scalar_type();
  const bool half = xt == at::kHalf || xt == at::kBFloat16;
  TORCH_CHECK_TYPE(half || xt == at::kFloat || xt == at::kDouble,
                   "ell_mix: x must be float16, bfloat16, float32 or float64, got ", xt);
  const at::ScalarType at_ = A.scalar_type();
  TORCH_CHECK_TYPE(at_ == xt || (half && at_ == at::kFloat),
                   "ell_mix: A must have x's dtype ", xt,
                   " (or float32 when x is float16/bfloat16), got ", at_);
  TORCH_CHECK_VALUE(A.device() == x.device() && index.device() == x.device(),
                    "ell_mix: A and index must be on x's device ", x.device(), ", got ", A.device(),
                    " and ", index.device());
}

at::Tensor ell_mix(const at::Tensor& x, const at::Tensor& A, const at::Tensor& index) {
  check_ell_mix_args(x, A, index);
  const int64_t N = x.size(0);
  const int64_t C = x.size(1);
  const bool inner = channels_inner(x);
  at::Tensor y = inner ? at::empty(x.movedim(1, -1).sizes(), x.options()).movedim(-1, 1)
                       : at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ell_mix", [&] {
    using Acc = at::opmath_type<scalar_t>;
    const at::Tensor A_acc = A.to(c10::CppTypeToScalarType<Acc>::value);
    const Csr<Acc> csr = compact<Acc>(A_acc, index);  // checks the index values, even when empty
    if (x.numel() == 0) return;
    if (inner) {
      const at::Tensor src = channels_last_rows(x);
      const int64_t R = src.numel() / C;
      mix_rows<scalar_t, Acc>(src.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), R,
                              C, csr);
    } else {
      const at::Tensor src = x.contiguous();
      const int64_t P = src.numel() / std::max<int64_t>(N * C, 1);
      mix_planes<scalar_t, Acc>(src.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), N,
                                C, P, csr);
    }
  });
  return y;
}

at::Tensor ell_index(const at::Tensor& A) {
  TORCH_CHECK_VALUE(A.dim() == 2 && A.size(0) == A.size(1), "ell_index: A must be a square [C, C] ",
                    "matrix, got ", A.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(A.scalar_type()), "ell_index: A must be floating point, got ",
                   A.scalar_type());
  const int64_t C = A.size(0);
  at::Tensor index;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A.scalar_type(), "ell_index", [&] {
    const auto a = A.accessor<scalar_t, 2>();
    int64_t width = 1;
    for (int64_t i = 0; i < C; ++i) {
      int64_t count = 0;
      for (int64_t j = 0; j < C; ++j) count += a[i][j] != scalar_t(0);
      width = std::max(width, count);
    }
    index = at::full({C, width}, -1, A.options().dtype(at::kLong));
    int64_t* out = index.mutable_data_ptr<int64_t>();
    for (int64_t i = 0; i < C; ++i) {
      int64_t k = 0;
      for (int64_t j = 0; j < C; ++j) {
        if (a[i][j] != scalar_t(0)) out[i * width + k++] = j;
      }
    }
  });
  return index;
}

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("ell_mix", &ell_mix);
  m.impl("ell_index", &ell_index);
}

}  // namespace autoshuffle_ext::cpu
