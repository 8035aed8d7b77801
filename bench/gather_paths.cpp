// channel_gather's CPU paths timed side by side in one process, one thread, called round-robin on
// the same buffers so that a noisy machine slows them alike, against memcpy (the floor):
// - contiguous (NCHW) float32: the plane copies with AVX-512 and with AVX2;
// - channels_last float32 and bfloat16: hardware gathers, tile transposes and (float32, C <= 128)
//   the register permutation. It also prints the choice gathers_are_faster() makes by a quick
//   timing when a process first gathers, to check it on the CPU at hand.
// Built with the C++ tests (CMakeLists.txt):
//   build/cmake/bench_gather_paths [rounds]
#include <ATen/ATen.h>

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
#include "cpu/pixel_gather.h"
#include "cpu/plane_gather.h"

namespace {

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

// One Markdown row: N x C x H x W as N * C planes of H * W elements, copied in perm's order.
void time_planes(const char* label, int64_t n, int64_t c, int64_t hw, int rounds) {
  const at::Tensor x = at::randn({n, c, hw});
  const at::Tensor perm = at::randperm(c, at::kLong);
  const at::Tensor expected = x.index_select(1, perm);
  at::Tensor out = at::empty_like(x);
  const char* src = static_cast<const char*>(x.const_data_ptr());
  char* dst = static_cast<char*>(out.mutable_data_ptr());
  const int64_t plane_bytes = hw * 4, bytes = x.numel() * 4;
  std::vector<const char*> first(c);
  const std::vector<int64_t> step(c, c * plane_bytes);
  for (int64_t ch = 0; ch < c; ++ch) first[ch] = src + perm[ch].item<int64_t>() * plane_bytes;
  const bool stream = autoshuffle_ext::cpu::stream_output(bytes);  // as channel_gather decides
  auto path = [&](Isa isa) {
    return [=, &first, &step] {
      autoshuffle_ext::cpu::gather_planes(first.data(), step.data(), c, dst, 0, n * c, plane_bytes,
                                          isa, stream);
    };
  };
  std::vector<Candidate> candidates = {
      {"memcpy", [=] { std::memcpy(dst, src, bytes); }, {}},
      {"avx2", path(Isa::kAvx2), {}},
  };
  if (autoshuffle_ext::cpu::isa_supported(Isa::kAvx512)) {
    candidates.push_back({"avx512", path(Isa::kAvx512), {}});
  }
  for (size_t i = 1; i < candidates.size(); ++i) {
    candidates[i].run();
    if (!at::equal(out, expected)) {
      std::printf("%s: %s gave wrong values\n", label, candidates[i].name.c_str());
      std::exit(1);
    }
  }
  round_robin(candidates, rounds);
  const double floor = median(candidates[0].times);
  std::printf("| %s Float | %s | %.1f | %.2f | ", label, stream ? "yes" : "no", floor * 1e6,
              median(candidates[1].times) / floor);
  if (candidates.size() > 2) {
    std::printf("%.2f |\n", median(candidates[2].times) / floor);
  } else {
    std::printf("- |\n");
  }
}

// One Markdown row: N x C x H x W as pixels = N * H * W rows of C channels.
void time_pixels(const char* label, int64_t pixels, int64_t c, at::ScalarType dtype, int rounds) {
  const at::Tensor x = at::randn({pixels, c}).to(dtype);
  const int64_t e = x.element_size();
  const at::Tensor perm = at::randperm(c, at::kLong);
  const at::Tensor perm32 = perm.to(at::kInt);
  const at::Tensor expected = x.index_select(1, perm);
  at::Tensor out = at::empty_like(x);
  const void* src = x.const_data_ptr();
  void* dst = out.mutable_data_ptr();
  const int64_t* p = perm.const_data_ptr<int64_t>();
  const int32_t* p32 = perm32.const_data_ptr<int32_t>();
  const Isa widest = autoshuffle_ext::cpu::isa_supported(Isa::kAvx512) ? Isa::kAvx512 : Isa::kAvx2;
  // 4-byte C <= 128 takes the register permutation on AVX-512 whatever `gathers` says: time the
  // AVX2 paths there, where gathers and transposes both run.
  const bool registers = e == 4 && c <= 128;
  const Isa isa = registers ? Isa::kAvx2 : widest;
  // Streamed stores past half the cache, as channel_gather decides.
  const bool stream = autoshuffle_ext::cpu::stream_output(pixels * c * e);
  auto path = [&](bool gathers, Isa which) {
    return [=] {
      autoshuffle_ext::cpu::gather_pixels(src, dst, p, p32, 0, pixels, pixels - 1, c, e, which,
                                          gathers, stream);
    };
  };
  std::vector<Candidate> candidates = {
      {"memcpy", [=] { std::memcpy(dst, src, pixels * c * e); }, {}},
      {"gathers", path(true, isa), {}},
      {"transposes", path(false, isa), {}},
  };
  if (registers && widest == Isa::kAvx512) candidates.push_back({"registers", path(true, widest), {}});
  for (auto& candidate : candidates) {
    if (candidate.name == "memcpy") continue;
    candidate.run();
    if (!at::equal(out, expected)) {
      std::printf("%s: %s gave wrong values\n", label, candidate.name.c_str());
      std::exit(1);
    }
  }
  round_robin(candidates, rounds);
  const double floor = median(candidates[0].times);
  const double gathers = median(candidates[1].times), transposes = median(candidates[2].times);
  std::printf("| %s %s | %s | %.1f | %.2f | %.2f | ", label, c10::toString(dtype),
              isa == Isa::kAvx512 ? "AVX-512" : "AVX2", floor * 1e6, gathers / floor,
              transposes / floor);
  if (candidates.size() > 3) {
    std::printf("%.2f", median(candidates[3].times) / floor);
  } else {
    std::printf("-");
  }
  std::printf(" | %.2f |\n", transposes / gathers);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 200;
  if (!autoshuffle_ext::cpu::isa_supported(Isa::kAvx2)) {
    std::printf("this CPU has no AVX2: only the scalar path exists\n");
    return 0;
  }
  at::manual_seed(0);
  std::printf("%s, one thread, median of %d round-robin rounds, ratios to memcpy\n",
              cpu_name().c_str(), rounds);
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    if (!autoshuffle_ext::cpu::isa_supported(isa)) continue;
    for (int64_t e : {4, 2}) {
      std::printf("channel_gather's own choice, %s, %d-byte elements: %s\n",
                  isa == Isa::kAvx2 ? "AVX2" : "AVX-512", static_cast<int>(e),
                  autoshuffle_ext::cpu::gathers_are_faster(isa, e) ? "gathers" : "transposes");
    }
  }
  std::printf("\n");
  std::printf("| NCHW shape | streamed | memcpy (us) | AVX2 / memcpy | AVX-512 / memcpy |\n"
              "| --- | --- | ---: | ---: | ---: |\n");
  time_planes("1x116x28x28", 1, 116, 784, rounds);
  time_planes("64x240x16x16", 64, 240, 256, rounds);
  time_planes("64x480x8x8", 64, 480, 64, rounds);
  time_planes("32x232x14x14", 32, 232, 196, rounds);
  std::printf(
      "\n| channels_last shape | gathers, transposes | memcpy (us) | gathers / memcpy | "
      "transposes / memcpy | registers (AVX-512) / memcpy | transposes / gathers |\n"
      "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    time_pixels("1x116x28x28", 784, 116, dtype, rounds);
    time_pixels("64x240x16x16", 64 * 256, 240, dtype, rounds);
    time_pixels("64x480x8x8", 64 * 64, 480, dtype, rounds);
    time_pixels("32x232x14x14", 32 * 196, 232, dtype, rounds);
    time_pixels("32x116x28x28", 32 * 784, 116, dtype, rounds);
  }
  return 0;
}
