// CPU kernels of cat_gather: a gather from two sources, a and b, read where they lie, planned and
// run by gather_plan.h (the same planner and runner as channel_gather's), and the query of the
// path an input takes. Every path moves bytes only, so one kernel serves every dtype.
#include <torch/library.h>

#include <limits>
#include <string>

#include "../cat_gather.h"
#include "gather_common.h"
#include "gather_plan.h"

namespace autoshuffle_ext {
namespace {

// Checks perm's values (a permutation, before any copy, also for empty inputs), then calls
// fn(&job) for a non-empty output, fn(nullptr) for an empty one.
template <typename F>
auto with_job(const GatherSource& a, const GatherSource& b, const GatherLayout& layout,
              const at::Tensor& perm, int64_t element_size, bool empty, F&& fn) {
  const int64_t c = layout.c;
  TORCH_CHECK_VALUE(c <= std::numeric_limits<int32_t>::max(),
                    "cat_gather: a.size(1) + b.size(1) must be < 2^31 on the CPU, got ", c);
  const at::Tensor perm_c = perm.contiguous();
  const int64_t* p = perm_c.const_data_ptr<int64_t>();
  const auto perm32 = cpu::checked_perm32(p, c, "cat_gather", "a.size(1) + b.size(1)");
  if (empty) return fn(static_cast<const cpu::GatherJob*>(nullptr));
  const cpu::GatherJob job = cpu::make_job(a, b, layout, p, perm32.data(), element_size);
  return fn(&job);
}

// The CPU kernel (a CatGatherInto).
void cat_gather_into(const GatherSource& a, const GatherSource& b, const GatherLayout& layout,
                     const at::Tensor& perm, at::Tensor& out) {
  with_job(a, b, layout, perm, out.element_size(), out.numel() == 0,
           [&](const cpu::GatherJob* job) {
             if (job) cpu::gather(*job, out.mutable_data_ptr(), "cat_gather");
           });
}

// The name of the path cat_gather(a, b, perm) takes on this CPU now ("none" for an empty output).
std::string cat_gather_path(const at::Tensor& a, const at::Tensor& b, const at::Tensor& perm) {
  const at::MemoryFormat format = check_cat_gather_args(a, b, perm);
  const GatherLayout layout = cat_layout(a, b, format);
  const at::Tensor a_read = readable_source(a, layout, format);
  const at::Tensor b_read = readable_source(b, layout, format);
  const bool empty = layout.n * layout.c * layout.inner == 0;
  return with_job(gather_source(a_read, layout), gather_source(b_read, layout), layout, perm,
                  a.element_size(), empty, [](const cpu::GatherJob* job) {
                    return std::string(
                        job ? cpu::path_name(cpu::plan_gather(*job, "cat_gather").path) : "none");
                  });
}

}  // namespace

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("cat_gather", &cat_gather_with<cat_gather_into>);
  m.impl("cat_gather_path", &cat_gather_path);
}

}  // namespace autoshuffle_ext
