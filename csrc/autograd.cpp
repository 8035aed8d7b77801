// Autograd of channel_gather and cat_gather in C++: the gradient of a gather by perm is the
// gather by perm's inverse (for cat_gather, split back into a's and b's channels). perm must be a permutation (the op's contract; the CPU kernel checks it, on CUDA the
// caller guarantees it): a repeated entry would need a scatter-add, not a gather. Kept out of
// Python because a Python autograd kernel costs ~4 us on every call, more than the whole op on
// small activations.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace autoshuffle_ext {
namespace {

// The op through the dispatcher, looked up once.
const c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&)>& gather_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::channel_gather", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op;
}

at::Tensor gather_below_autograd(const at::Tensor& x, const at::Tensor& perm) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return gather_op().call(x, perm);
}

class ChannelGather : public torch::autograd::Function<ChannelGather> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& perm) {
    ctx->save_for_backward({perm});
    return gather_below_autograd(x, perm);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor perm = ctx->get_saved_variables()[0];
    // The argsort of a permutation is its inverse (and, unlike a scatter of arange, traces with
    // symbolic sizes).
    const at::Tensor inverse = at::argsort(perm);
    // Through the dispatcher with autograd, so double backward works too.
    return {gather_op().call(grads[0], inverse), at::Tensor()};
  }
};

at::Tensor channel_gather_autograd(const at::Tensor& x, const at::Tensor& perm) {
  // Fast path: nothing to record.
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return gather_below_autograd(x, perm);
  return ChannelGather::apply(x, perm);
}

using CatGatherFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);

at::Tensor cat_gather_below_autograd(const at::Tensor& a, const at::Tensor& b,
                                     const at::Tensor& perm) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::cat_gather", "")
                             .typed<CatGatherFn>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(a, b, perm);
}

class CatGather : public torch::autograd::Function<CatGather> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            const at::Tensor& b, const at::Tensor& perm) {
    ctx->save_for_backward({perm});
    // sym_size, not size: size() on a traced tensor would pin its symbolic batch to a number.
    ctx->saved_data["a_channels"] = a.sym_size(1);
    return cat_gather_below_autograd(a, b, perm);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor perm = ctx->get_saved_variables()[0];
    const c10::SymInt a_channels = ctx->saved_data["a_channels"].toSymInt();
    // The concatenation's gradient, then a's and b's channels of it as views.
    const at::Tensor grad = gather_op().call(grads[0], at::argsort(perm));
    return {grad.narrow_symint(1, 0, a_channels),
            grad.narrow_symint(1, a_channels, grad.sym_size(1) - a_channels), at::Tensor()};
  }
};

at::Tensor cat_gather_autograd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& perm) {
  if (!at::GradMode::is_enabled() || !(a.requires_grad() || b.requires_grad())) {
    return cat_gather_below_autograd(a, b, perm);
  }
  return CatGather::apply(a, b, perm);
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("channel_gather", &channel_gather_autograd);
  m.impl("cat_gather", &cat_gather_autograd);
}

}  // namespace autoshuffle_ext
