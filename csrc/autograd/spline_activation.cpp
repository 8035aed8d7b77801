// Autograd of spline_activation_backward: none (no double backward). The kernel below gives its
// outputs a node that raises when a gradient flows through it, instead of the dispatcher's default
// (a warning, then a silently missing gradient). The forward op's formula, reverse and forward
// mode, is registered from Python (autoshuffle_ext/ops/spline_activation.py).
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("spline_activation_backward", torch::autograd::autogradNotImplementedFallback());
}
