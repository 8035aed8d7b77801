// Schemas of spline_activation (trainable linear-spline activations, one spline per channel). Its
// CPU kernels: cpu/spline_activation.cpp; the backward op refuses to be differentiated
// (autograd/spline_activation.cpp). The fake kernels, the autograd formula of the forward (reverse
// and forward mode) and the CUDA kernels (Triton) live in Python
// (autoshuffle_ext/ops/spline_activation.py), which defines these same schemas itself when this
// library is not loaded.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // y and dx keep x's strides when x is dense: the compiler must hand the ops inputs in eager's
  // stride order (needs_fixed_stride_order).
  const std::vector<at::Tag> tags = {at::Tag::needs_fixed_stride_order, at::Tag::pt2_compliant_tag};
  // y[:, c] = the linear spline through coefficients[c, k] at (k - K // 2) * spacing.
  m.def("spline_activation(Tensor x, Tensor coefficients, float spacing) -> Tensor", tags);
  // (dx, dcoefficients); an output not needed is an empty [0] tensor.
  m.def(
      "spline_activation_backward(Tensor grad, Tensor x, Tensor coefficients, float spacing, "
      "bool need_x, bool need_coefficients) -> (Tensor, Tensor)",
      tags);
}
