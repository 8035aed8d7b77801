// CPU kernels of spline_activation (schema: ops/spline_activation.cpp): one trainable linear
// spline per channel on a uniform grid of K knots, (k - K / 2) * spacing, extended linearly with
// its end slopes. With u = x / spacing, the left knot j of x's segment and t = u - (j - K / 2):
//
//   y = c[j] + t * (c[j + 1] - c[j])
//
// Forward: one pass over x. Backward: dx = grad * (c[j + 1] - c[j]) / spacing, and
// dcoefficients[c, j] += (1 - t) grad, [c, j + 1] += t grad, summed in per-thread buffers and
// reduced after the parallel loop (no atomics). The fake kernel and the autograd formula live in
// Python (autoshuffle_ext/ops/spline_activation.py), as does the CUDA path (Triton).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace autoshuffle_ext::cpu {

// Raises ValueError / TypeError unless (x, coefficients, spacing) is a valid input of the op (the
// messages of the Python entry point's checks).
void check_spline_args(const at::Tensor& x, const at::Tensor& coefficients, double spacing);

// y with x's shape and dtype: x's strides when x is dense, else contiguous.
at::Tensor spline_activation(const at::Tensor& x, const at::Tensor& coefficients, double spacing);

// (dx, dcoefficients); an output not asked for is an empty [0] tensor of x's dtype. dx has x's
// strides when x is dense (else contiguous); dcoefficients is [C, K] contiguous in the
// coefficients' dtype, accumulated in float32 (float64 for float64).
std::tuple<at::Tensor, at::Tensor> spline_activation_backward(const at::Tensor& grad,
                                                              const at::Tensor& x,
                                                              const at::Tensor& coefficients,
                                                              double spacing, bool need_x,
                                                              bool need_coefficients);

}  // namespace autoshuffle_ext::cpu
