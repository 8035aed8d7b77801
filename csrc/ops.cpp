// Schemas of the autoshuffle_ext operators. Implementations: cpu/ and cuda/ (per device) and
// autograd.cpp (the Autograd key); the fake kernels live in Python (autoshuffle_ext/ops/).
#include <torch/library.h>

TORCH_LIBRARY(autoshuffle_ext, m) {
  // out[:, c, ...] = x[:, perm[c], ...]; the output keeps x's memory format, so the compiler must
  // hand the op inputs in eager's stride order (needs_fixed_stride_order).
  const std::vector<at::Tag> tags = {at::Tag::needs_fixed_stride_order, at::Tag::pt2_compliant_tag};
  m.def("channel_gather(Tensor x, Tensor perm) -> Tensor", tags);
  // Writes into `out` and returns nothing: PT2 functionalises a custom op's mutation only when its
  // outputs carry no alias annotation (a `-> Tensor(a!)` return breaks torch.compile).
  m.def("channel_gather.out(Tensor x, Tensor perm, *, Tensor(a!) out) -> ()", tags);
  // out[:, c, ...] = cat([a, b], 1)[:, perm[c], ...] in one pass (ShuffleNet v2's concat and
  // shuffle); the output takes the memory format a and b share, contiguous when they differ.
  m.def("cat_gather(Tensor a, Tensor b, Tensor perm) -> Tensor", tags);
}
