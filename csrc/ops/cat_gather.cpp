// Schemas of cat_gather. Its kernels: cpu/cat_gather.cpp, cuda/cat_gather.cu, and
// autograd/cat_gather.cpp (the Autograd key); its fake kernel and batching rule live in Python
// (autoshuffle_ext/ops/cat_gather.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // out[:, c, ...] = cat([a, b], 1)[:, perm[c], ...] in one pass (ShuffleNet v2's concat and
  // shuffle); the output takes the memory format a and b share, contiguous when they differ.
  const std::vector<at::Tag> tags = {at::Tag::needs_fixed_stride_order, at::Tag::pt2_compliant_tag};
  m.def("cat_gather(Tensor a, Tensor b, Tensor perm) -> Tensor", tags);
  // The name of the kernel path cat_gather(a, b, perm) takes (CPU; for tests and bug reports).
  m.def("cat_gather_path(Tensor a, Tensor b, Tensor perm) -> str");
}
