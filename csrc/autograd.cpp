// Autograd of channel_gather and cat_gather in C++, reverse and forward mode.
//
// Reverse: the gradient of a gather by perm is the gather by perm's inverse (for cat_gather, split
// back into a's and b's channels). perm must be a permutation (the op's contract; the CPU kernel
// checks it, on CUDA the caller guarantees it): a repeated entry would need a scatter-add, not a
// gather. Forward: the tangent of a gather is the same gather of the input's tangent (for
// cat_gather, of a's and b's tangents, a zero tangent standing in for a missing one).
//
// Written as PyTorch's own generated autograd kernels are (a graph Node set as the output's
// grad_fn, the tangent set with _set_fw_grad, the primal redispatched below autograd), not as a
// torch::autograd::Function: torch.func's transforms (grad, vjp, jacrev, jvp, jacfwd) refuse C++
// Functions but run such kernels like any ATen op, and autograd::Function has no forward mode.
// Kept out of Python because a Python autograd kernel costs ~4 us on every call, more than the
// whole op on small activations. The batching rules (vmap) live in Python, beside each op.
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

namespace autoshuffle_ext {
namespace {

using torch::autograd::variable_list;

using GatherFn = at::Tensor(const at::Tensor&, const at::Tensor&);
using CatGatherFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);

// The ops through the dispatcher, looked up once.
const c10::TypedOperatorHandle<GatherFn>& gather_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::channel_gather", "")
                             .typed<GatherFn>();
  return op;
}

const c10::TypedOperatorHandle<CatGatherFn>& cat_gather_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::cat_gather", "")
                             .typed<CatGatherFn>();
  return op;
}

// The input's tangent at forward-AD level 0 (the only one; torch.func nests through its own
// levels), or an undefined tensor.
at::Tensor tangent(const at::Tensor& t) {
  return t.defined() ? at::Tensor(t._fw_grad(/*level=*/0)) : at::Tensor();
}

void set_tangent(const at::Tensor& result, const at::Tensor& result_tangent) {
  result._set_fw_grad(result_tangent, /*level=*/0, /*is_inplace_op=*/false);
}

// A node's backward under compiled autograd: `fn(grads, saved)` bound to the compiler and called
// through it (it traces the function), as CppNode::apply_with_saved does.
variable_list call_compiled(const torch::autograd::Node& node, const variable_list& grads,
                            torch::dynamo::autograd::SwapSavedVariables& saved,
                            std::vector<c10::IValue> args, torch::autograd::functional_apply_t fn) {
  namespace ca = torch::dynamo::autograd;
  std::vector<at::TypePtr> schema;
  schema.reserve(args.size());
  for (const auto& arg : args) {
    schema.emplace_back(arg.isTensor() ? at::TensorType::get() : arg.type());
  }
  const auto& compiler = ca::getPyCompilerInterface();
  const std::string fn_name = compiler->bind_function(saved.get_py_compiler(), node.name(),
                                                      std::move(fn), schema);
  const auto output_metadata = ca::IValuePacker<std::vector<std::optional<ca::InputMetadata>>>::pack(
      ca::get_input_metadata(node.next_edges()));
  return compiler->call_function(saved.get_py_compiler(), "apply_functional", fn_name, grads,
                                 args, output_metadata);
}

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
  m.impl("channel_gather", &channel_gather_autograd);
  m.impl("cat_gather", &cat_gather_autograd);
}

}  // namespace autoshuffle_ext
