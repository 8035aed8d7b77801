// Autograd of cat_gather in C++, reverse and forward mode (see node_support.h for how).
//
// Reverse: the gradient of the concatenation gathered by perm is the gather by perm's inverse,
// split back into a's and b's channels. perm must be a permutation, as for channel_gather.
// Forward: the tangent is the same cat_gather of a's and b's tangents, a zero tangent standing in
// for a missing one.
#include "node_support.h"

namespace autoshuffle_ext::autograd {
namespace {

using CatGatherFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);

// cat_gather through the dispatcher, looked up once.
const c10::TypedOperatorHandle<CatGatherFn>& cat_gather_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::cat_gather", "")
                             .typed<CatGatherFn>();
  return op;
}

struct CatGatherBackward : public torch::autograd::TraceableFunction {
  torch::autograd::SavedVariable perm_;
  // sym_size, not size: size() on a traced tensor would pin its symbolic batch to a number.
  c10::SymInt a_channels_;

  std::string name() const override { return "CatGatherBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    perm_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined() || !(should_compute_output(0) || should_compute_output(1))) {
      return {at::Tensor(), at::Tensor()};
    }
    // The concatenation's gradient, then a's and b's channels of it as views.
    const at::Tensor grad = gather_op().call(grads[0], at::argsort(perm_.unpack()));
    return {grad.narrow_symint(1, 0, a_channels_),
            grad.narrow_symint(1, a_channels_, grad.sym_size(1) - a_channels_)};
  }

  static variable_list apply_functional(const variable_list& grads,
                                        const std::vector<c10::IValue>& saved) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor()};
    const c10::SymInt a_channels = saved[1].toSymInt();
    const at::Tensor grad = gather_op().call(grads[0], at::argsort(saved[0].toTensor()));
    return {grad.narrow_symint(1, 0, a_channels),
            grad.narrow_symint(1, a_channels, grad.sym_size(1) - a_channels)};
  }

  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(perm_, false);
    args.collect(a_channels_);
  }

  variable_list apply_with_saved(const variable_list& grads,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(perm_);
    saved.before(a_channels_);
    variable_list result =
        call_compiled(*this, grads, saved, {perm_.unpack(), a_channels_}, apply_functional);
    saved.after(perm_);
    saved.after(a_channels_);
    return result;
  }
};

at::Tensor cat_gather_autograd(c10::DispatchKeySet ks, const at::Tensor& a, const at::Tensor& b,
                               const at::Tensor& perm) {
  c10::intrusive_ptr<CatGatherBackward> grad_fn;
  if (torch::autograd::compute_requires_grad(a, b)) {
    grad_fn = c10::make_intrusive<CatGatherBackward>();
    grad_fn->set_next_edges(torch::autograd::collect_next_edges(a, b));
    grad_fn->perm_ = torch::autograd::SavedVariable(perm, /*is_output=*/false);
    grad_fn->a_channels_ = a.sym_size(1);
  }
  const at::Tensor a_tangent = tangent(a);
  const at::Tensor b_tangent = tangent(b);
  at::Tensor result;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    result = cat_gather_op().redispatch(ks & c10::after_autograd_keyset, a, b, perm);
  }
  if (grad_fn) torch::autograd::set_history(result, grad_fn);
  if (a_tangent.defined() || b_tangent.defined()) {
    set_tangent(result, cat_gather_op().call(a_tangent.defined() ? a_tangent : at::zeros_like(a),
                                             b_tangent.defined() ? b_tangent : at::zeros_like(b),
                                             perm));
  }
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, Autograd, m) {
  m.impl("cat_gather", &cat_gather_autograd);
}

}  // namespace autoshuffle_ext::autograd
