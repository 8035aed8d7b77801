// Schema of the fused CPU projection onto the doubly stochastic matrices (the algorithm and its
// plain ATen form: autoshuffle_ext/doubly_stochastic.py, `project_doubly_stochastic_`). Its CPU
// kernel: cpu/projection.cpp. It runs after each optimizer step under no_grad: not differentiable
// (autograd/projection.cpp).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // M: a contiguous [B, n, n] stack, projected in place (threshold, peak normalisation, reset of
  // dead lines, `iters` scaling rounds, `polish` rounds of the projection's dual).
  m.def("project_doubly_stochastic_(Tensor(a!) M, int iters, int polish) -> ()",
        {at::Tag::pt2_compliant_tag});
}
