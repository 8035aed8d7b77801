// CPU kernel of ell_mix (schema: ops/ell_mix.cpp): the sparse channel mixing
// y[:, i] = sum_k A[i, index[i, k]] x[:, index[i, k]], index -1 skipped.
#pragma once

#include <ATen/core/Tensor.h>

namespace autoshuffle_ext::cpu {

// Raises ValueError / TypeError unless (x, A, index) is a valid input of ell_mix (shapes, dtypes,
// devices; the index values are checked by the kernel as it reads them).
void check_ell_mix_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& index);

// y with x's shape and dtype: channels-last when x's channel stride is 1, else contiguous.
at::Tensor ell_mix(const at::Tensor& x, const at::Tensor& A, const at::Tensor& index);

// The padded row lists of A's non-zeros: int64 [C, K], K the most non-zeros of a row (>= 1), each
// row's columns in increasing order, then -1. One pass over A, no sort.
at::Tensor ell_index(const at::Tensor& A);

}  // namespace autoshuffle_ext::cpu
