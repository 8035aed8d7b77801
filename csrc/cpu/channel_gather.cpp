// CPU kernels of channel_gather: a gather from one source, planned and run by gather_plan.h (the
// same planner and runner as cat_gather's), and the query of the path an input takes. Every path
// moves bytes only, so one kernel serves every dtype.
#include <torch/library.h>

#include <limits>
#include <string>

#include "../channel_gather.h"
#include "gather_common.h"
#include "gather_plan.h"

namespace autoshuffle_ext {
namespace {

// Checks perm's values (a permutation, before any copy, also for an empty x), then calls
// fn(&job) for a non-empty x dense in `format`, fn(nullptr) for an empty one.
template <typename F>
auto with_job(const at::Tensor& x, const at::Tensor& perm, at::MemoryFormat format, F&& fn) {
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(c <= std::numeric_limits<int32_t>::max(),
                    "channel_gather: x.size(1) must be < 2^31 on the CPU, got ", c);
  const at::Tensor perm_c = perm.contiguous();
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const auto perm32 = cpu::checked_perm32(p, c, "channel_gather", "x.size(1)");
  if (x.numel() == 0) return fn(static_cast<const cpu::GatherJob*>(nullptr));
  const at::Tensor src = x.contiguous(format);
  const GatherLayout layout = gather_layout(x, format);
  const cpu::GatherJob job = cpu::make_job(gather_source(src, layout), std::nullopt, layout, p,
                                           perm32.data(), x.element_size());
  return fn(&job);
}

// The CPU kernel (a GatherInto).
void gather_into(const at::Tensor& x, at::Tensor& out, const at::Tensor& perm,
                 at::MemoryFormat format) {
  with_job(x, perm, format, [&](const cpu::GatherJob* job) {
    if (job) cpu::gather(*job, out.mutable_data_ptr(), "channel_gather");
  });
}

// The name of the path channel_gather(x, perm) takes on this CPU now ("none" for an empty x).
std::string gather_path(const at::Tensor& x, const at::Tensor& perm) {
  const at::MemoryFormat format = check_channel_gather_args(x, perm);
  return with_job(x, perm, format, [](const cpu::GatherJob* job) {
    return std::string(job ? cpu::path_name(cpu::plan_gather(*job, "channel_gather").path)
                           : "none");
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("channel_gather", &channel_gather_with<gather_into>);
  m.impl("channel_gather.out", &channel_gather_out_with<gather_into>);
  m.impl("channel_gather_path", &gather_path);
}

}  // namespace autoshuffle_ext
