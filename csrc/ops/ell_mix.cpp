// Schema of ell_mix, the kernel of the sparse channel mixing (autoshuffle_ext/ops/sparse_mix.py):
//
//   y[:, i, ...] = sum_k A[i, index[i, k]] * x[:, index[i, k], ...]      (index[i, k] >= 0)
//
// index is the padded list of the non-zero columns of each row of A (-1 past the last), so the
// kernel costs K multiply-adds per output element instead of C. Its CPU kernel:
// cpu/ell_mix.cpp; the CUDA kernel (Triton), the fake kernel and the reference live in Python. It
// is a kernel, not a differentiable op (autograd/ell_mix.cpp): sparse_mix carries the autograd.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // y is channels-last when x's channel stride is 1, else contiguous: the compiler must hand the
  // op x in eager's stride order.
  const std::vector<at::Tag> tags = {at::Tag::needs_fixed_stride_order, at::Tag::pt2_compliant_tag};
  m.def("ell_mix(Tensor x, Tensor A, Tensor index) -> Tensor", tags);
  // The padded row lists of A's non-zeros, [C, K] int64 with K data-dependent (-1 past a row's
  // last): the index ell_mix reads.
  m.def("ell_index(Tensor A) -> Tensor", {at::Tag::pt2_compliant_tag});
}
