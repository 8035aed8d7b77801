// What this CPU offers the gather kernels, read at run time: vector instructions and the size of
// its last-level cache.
#pragma once

#include <cstdint>

// GCC or Clang on x86-64: the SIMD paths are compiled, with function-level target attributes, and
// picked at run time, so the library still runs on any x86-64 (and any other) CPU.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define AUTOSHUFFLE_X86_SIMD 1
#endif

namespace autoshuffle_ext::cpu {

// kAvx512 stands for AVX-512 F, VL and BW.
enum class Isa { kScalar, kAvx2, kAvx512 };

// Whether this CPU can run `isa`.
bool isa_supported(Isa isa);

// The widest ISA the CPU supports, capped by ATen's own choice so that
// ATEN_CPU_CAPABILITY=default / avx2 forces (and tests) the narrower paths. Read once.
Isa kernel_isa();

// The size of the last-level cache in bytes (Linux sysfs, cpu0), or 0 when unknown. Read once.
int64_t last_level_cache_bytes();

}  // namespace autoshuffle_ext::cpu
