// What the ops' autograd kernels share (autograd/<op>.cpp): the forward-mode tangent helpers, the
// call of a node's backward under compiled autograd, and channel_gather through the dispatcher
// (every gather's gradient is a channel_gather by the inverse permutation).
//
// The kernels are written as PyTorch's own generated autograd kernels are (a graph Node set as the
// output's grad_fn, the tangent set with _set_fw_grad, the primal redispatched below autograd),
// not as a torch::autograd::Function: torch.func's transforms (grad, vjp, jacrev, jvp, jacfwd)
// refuse C++ Functions but run such kernels like any ATen op, and autograd::Function has no forward
// mode. Kept out of Python because a Python autograd kernel costs ~4 us on every call, more than
// the whole op on small activations. The batching rules (vmap) live in Python, beside each op.
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <string>
#include <utility>
#include <vector>

namespace autoshuffle_ext::autograd {

using torch::autograd::variable_list;

using GatherFn = at::Tensor(const at::Tensor&, const at::Tensor&);

// channel_gather through the dispatcher, looked up once.
inline const c10::TypedOperatorHandle<GatherFn>& gather_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("autoshuffle_ext::channel_gather", "")
                             .typed<GatherFn>();
  return op;
}

// The input's tangent at forward-AD level 0 (the only one; torch.func nests through its own
// levels), or an undefined tensor.
inline at::Tensor tangent(const at::Tensor& t) {
  return t.defined() ? at::Tensor(t._fw_grad(/*level=*/0)) : at::Tensor();
}

inline void set_tangent(const at::Tensor& result, const at::Tensor& result_tangent) {
  result._set_fw_grad(result_tangent, /*level=*/0, /*is_inplace_op=*/false);
}

// A node's backward under compiled autograd: `fn(grads, saved)` bound to the compiler and called
// through it (it traces the function), as CppNode::apply_with_saved does.
inline variable_list call_compiled(const torch::autograd::Node& node, const variable_list& grads,
                                   torch::dynamo::autograd::SwapSavedVariables& saved,
                                   std::vector<c10::IValue> args,
                                   torch::autograd::functional_apply_t fn) {
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

}  // namespace autoshuffle_ext::autograd
