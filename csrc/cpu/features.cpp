#include "features.h"

#include <ATen/Version.h>

#include <algorithm>
#include <fstream>
#include <string>

namespace autoshuffle_ext::cpu {
namespace {

Isa detect_isa() {
  const std::string aten = at::get_cpu_capability();  // "DEFAULT", "AVX2" or "AVX512"
  if (aten == "AVX512" && isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if ((aten == "AVX512" || aten == "AVX2") && isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

// The largest cache level that sysfs lists for cpu0, e.g. "32768K".
int64_t read_last_level_cache_bytes() {
  int64_t bytes = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream file("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) +
                       "/size");
    int64_t size = 0;
    std::string unit;
    if (!(file >> size)) break;
    file >> unit;
    size *= unit == "K" ? 1024 : unit == "M" ? 1024 * 1024 : 1;
    bytes = std::max(bytes, size);
  }
  return bytes;
}

}  // namespace

bool isa_supported(Isa isa) {
#ifdef AUTOSHUFFLE_X86_SIMD
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

Isa kernel_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

int64_t last_level_cache_bytes() {
  static const int64_t bytes = read_last_level_cache_bytes();
  return bytes;
}

}  // namespace autoshuffle_ext::cpu
