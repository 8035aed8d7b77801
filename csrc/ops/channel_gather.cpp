// Schemas of channel_gather. Its kernels: cpu/channel_gather.cpp, cuda/channel_gather.cu, and
// autograd/channel_gather.cpp (the Autograd key); its fake kernel and batching rule live in Python
// (autoshuffle_ext/ops/channel_gather.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // out[:, c, ...] = x[:, perm[c], ...]; the output keeps x's memory format, so the compiler must
  // hand the op inputs in eager's stride order (needs_fixed_stride_order).
  const std::vector<at::Tag> tags = {at::Tag::needs_fixed_stride_order, at::Tag::pt2_compliant_tag};
  m.def("channel_gather(Tensor x, Tensor perm) -> Tensor", tags);
  // Writes into `out` and returns nothing: PT2 functionalises a custom op's mutation only when its
  // outputs carry no alias annotation (a `-> Tensor(a!)` return breaks torch.compile).
  m.def("channel_gather.out(Tensor x, Tensor perm, *, Tensor(a!) out) -> ()", tags);
  // The name of the kernel path channel_gather(x, perm) takes (CPU; for tests and bug reports).
  m.def("channel_gather_path(Tensor x, Tensor perm) -> str");
}
