// Autograd of channel_gather in C++, reverse and forward mode (see node_support.h for how).
//
// Reverse: the gradient of a gather by perm is the gather by perm's inverse. perm must be a
// permutation (the op's contract; the CPU kernel checks it, on CUDA the caller guarantees it): a
// repeated entry would need a scatter-add, not a gather. Forward: the tangent of a gather is the
// same gather of the input's tangent.
#include "node_support.h"

namespace autoshuffle_ext::autograd {
namespace {

struct ChannelGatherBackward : public torch::autograd::TraceableFunction {
  torch::autograd::SavedVariable perm_;

  std::string name() const override { return "ChannelGatherBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    perm_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined() || !should_compute_output(0)) return {at::Tensor()};
    // The argsort of a permutation is its inverse (and, unlike a scatter of arange, traces with
    // symbolic sizes). Through the dispatcher with autograd, so double backward works too.
    const at::Tensor perm = perm_.unpack();
    return {gather_op().call(grads[0], at::argsort(perm))};
  }

  // Compiled autograd: the backward as a function of (grads, saved values), bound to the
  // compiler, as PyTorch's own nodes do.
  static variable_list apply_functional(const variable_list& grads,
                                        const std::vector<c10::IValue>& saved) {
    if (!grads[0].defined()) return {at::Tensor()};
    return {gather_op().call(grads[0], at::argsort(saved[0].toTensor()))};
  }

  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(perm_, false);
  }

  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(perm_);
    variable_list result = call_compiled(*this, grads, saved, {perm_.unpack()}, apply_functional);
    saved.after(perm_);
    return result;
  }
};

at::Tensor channel_gather_autograd(c10::DispatchKeySet ks, const at::Tensor& x,
                                   const at::Tensor& perm) {
  c10::intrusive_ptr<ChannelGatherBackward> grad_fn;
  if (torch::autograd::compute_requires_grad(x)) {
    grad_fn = c10::make_intrusive<ChannelGatherBackward>();
    grad_fn->set_next_edges(torch::autograd::collect_next_edges(x));
    grad_fn->perm_ = torch::autograd::SavedVariable(perm, /*is_output=*/false);
  }
  const at::Tensor x_tangent = tangent(x);
  at::Tensor result;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    result = gather_op().redispatch(ks & c10::after_autograd_keyset, x, perm);
  }
  if (grad_fn) torch::autograd::set_history(result, grad_fn);
  if (x_tangent.defined()) set_tangent(result, gather_op().call(x_tangent, perm));
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("channel_gather", &channel_gather_autograd);
}

}  // namespace autoshuffle_ext::autograd
