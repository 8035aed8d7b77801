// Autograd of project_doubly_stochastic_: none (it runs under no_grad, between optimizer steps).
// Its Python caller bumps M's version counter after the in-place write, as ATen's in-place ops
// do (autoshuffle_ext/doubly_stochastic.py).
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("project_doubly_stochastic_", torch::autograd::autogradNotImplementedFallback());
}
