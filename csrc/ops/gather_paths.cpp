// The CPU gathers' path settings, shared by channel_gather and cat_gather (cpu/gather_plan.h):
// the path names, and forcing one (the Python `force_gather_path`; AUTOSHUFFLE_GATHER_PATH does
// the same from the environment). Plain functions, not ops of tensors: no dispatch.
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "../cpu/gather_plan.h"

namespace autoshuffle_ext {
namespace {

std::vector<std::string> gather_path_names() {
  std::vector<std::string> names;
  for (cpu::GatherPath path : cpu::kGatherPaths) names.emplace_back(cpu::path_name(path));
  return names;
}

std::optional<std::string> force_gather_path(std::optional<std::string> paths) {
  return cpu::set_forced_gather_paths(paths);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(autoshuffle_ext, m) {
  // Every CPU gather path, by name.
  m.def("_gather_path_names() -> str[]", &gather_path_names);
  // Forces the CPU gathers' path ("name" or "name,name,...", "auto"; None: back to the
  // environment) for the whole process; returns the previous setting.
  m.def("_force_gather_path(str? paths) -> str?", &force_gather_path);
}

}  // namespace autoshuffle_ext
