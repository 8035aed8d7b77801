// The CPU gather paths timed side by side in one process, one thread: channel_gather.out with
// each path forced in turn (cpu/gather_plan.h), called round-robin on the same buffers so that a
// noisy machine slows them alike, against memcpy (the floor). Rows: contiguous (NCHW) and
// channels_last float32 and bfloat16, a random perm; a path that does not apply prints "-". It
// also prints the automatic choice per row and the one gathers_are_faster() makes by a quick
// timing when a process first gathers, to check it on the CPU at hand.
// Built with the C++ tests (CMakeLists.txt):
//   build/cmake/bench_gather_paths [rounds]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cpu/features.h"
#include "cpu/gather_plan.h"

namespace {

using autoshuffle_ext::cpu::GatherPath;
using autoshuffle_ext::cpu::Isa;

std::string cpu_name() {
  std::ifstream file("/proc/cpuinfo");
  for (std::string line; std::getline(file, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

double seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Candidate {
  std::string name;
  std::function<void()> run;
  std::vector<double> times;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Each candidate `rounds` times in turn, after 3 warm-up rounds.
void round_robin(std::vector<Candidate>& candidates, int rounds) {
  for (int r = 0; r < rounds + 3; ++r) {
    for (auto& candidate : candidates) {
      const double start = seconds();
      candidate.run();
      if (r >= 3) candidate.times.push_back(seconds() - start);
    }
  }
}

using GatherOutFn = void(const at::Tensor&, const at::Tensor&, at::Tensor&);
using PathFn = std::string(const at::Tensor&, const at::Tensor&);

// One Markdown row: the shape in `format`, memcpy's time and each path's ratio to it.
void time_row(const char* label, std::vector<int64_t> shape, at::ScalarType dtype,
              at::MemoryFormat format, int rounds) {
  static const auto gather_out = c10::Dispatcher::singleton()
                                     .findSchemaOrThrow("autoshuffle_ext::channel_gather", "out")
                                     .typed<GatherOutFn>();
  static const auto path_of = c10::Dispatcher::singleton()
                                  .findSchemaOrThrow("autoshuffle_ext::channel_gather_path", "")
                                  .typed<PathFn>();
  const at::Tensor x = at::randn(shape).to(dtype).contiguous(format);
  const at::Tensor perm = at::randperm(shape[1], at::kLong);
  const at::Tensor expected = x.index_select(1, perm);
  at::Tensor out = at::empty_like(x);
  const int64_t bytes = x.numel() * x.element_size();
  std::vector<Candidate> candidates = {
      {"memcpy",
       [&] { std::memcpy(out.mutable_data_ptr(), x.const_data_ptr(), bytes); },
       {}}};
  std::vector<std::string> shown;
  for (GatherPath path : autoshuffle_ext::cpu::kGatherPaths) {
    const std::string name = autoshuffle_ext::cpu::path_name(path);
    autoshuffle_ext::cpu::set_forced_gather_paths(name);
    try {
      gather_out.call(x, perm, out);
    } catch (const c10::ValueError&) {
      shown.push_back("-");
      continue;
    }
    if (!at::equal(out, expected)) {
      std::printf("%s: %s gave wrong values\n", label, name.c_str());
      std::exit(1);
    }
    shown.push_back("");
    candidates.push_back({name,
                          [&, name] {
                            autoshuffle_ext::cpu::set_forced_gather_paths(name);
                            gather_out.call(x, perm, out);
                          },
                          {}});
  }
  autoshuffle_ext::cpu::set_forced_gather_paths(std::nullopt);
  const std::string automatic = path_of.call(x, perm);
  round_robin(candidates, rounds);
  const double floor = median(candidates[0].times);
  std::printf("| %s %s %s | %s | %.1f |", label, c10::toString(dtype),
              format == at::MemoryFormat::Contiguous ? "NCHW" : "channels_last",
              automatic.c_str(), floor * 1e6);
  size_t next = 1;
  for (const std::string& cell : shown) {
    if (cell == "-") {
      std::printf(" - |");
    } else {
      std::printf(" %.2f |", median(candidates[next++].times) / floor);
    }
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  at::set_num_threads(1);
  at::manual_seed(0);
  std::printf("%s, one thread, median of %d round-robin rounds, ratios to memcpy\n",
              cpu_name().c_str(), rounds);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!autoshuffle_ext::cpu::isa_supported(isa)) continue;
    for (int64_t e : {4, 2}) {
      std::printf("the automatic choice, %s, %d-byte elements: %s\n",
                  isa == Isa::kAvx2 ? "AVX2" : "AVX-512", static_cast<int>(e),
                  autoshuffle_ext::cpu::gathers_are_faster(isa, e) ? "gathers" : "transposes");
    }
  }
  std::printf("\n| shape | automatic | memcpy (us) |");
  for (GatherPath path : autoshuffle_ext::cpu::kGatherPaths) {
    std::printf(" %s |", autoshuffle_ext::cpu::path_name(path));
  }
  std::printf("\n| --- | --- | ---: |");
  for (size_t i = 0; i < autoshuffle_ext::cpu::kGatherPaths.size(); ++i) std::printf(" ---: |");
  std::printf("\n");
  const std::vector<std::pair<const char*, std::vector<int64_t>>> shapes = {
      {"1x116x28x28", {1, 116, 28, 28}},
      {"64x240x16x16", {64, 240, 16, 16}},
      {"64x480x8x8", {64, 480, 8, 8}},
      {"32x232x14x14", {32, 232, 14, 14}},
      {"32x116x28x28", {32, 116, 28, 28}}};
  for (auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      for (const auto& [label, shape] : shapes) time_row(label, shape, dtype, format, rounds);
    }
  }
  return 0;
}
