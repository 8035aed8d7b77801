// Autograd of ell_mix: none. It is the kernel under sparse_mix, whose formula (reverse and forward
// mode) is registered from Python; a gradient reaching ell_mix itself raises instead of going
// silently missing.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("ell_mix", torch::autograd::autogradNotImplementedFallback());
  m.impl("ell_index", torch::autograd::autogradNotImplementedFallback());
}
