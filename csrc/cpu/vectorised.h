// Plain loops compiled for the widest vector ISA this CPU offers. The library targets baseline
// x86-64 (SSE2), while ATen picks AVX2 or AVX-512 at run time: a kernel written as loops that gcc
// vectorises would otherwise run 4 floats wide next to ATen's 8 or 16. The copies differ only in
// the order of vector reductions: the build turns off FMA contraction (-ffp-contract=off), which
// the AVX-512 target would otherwise apply.
#pragma once

#include "features.h"

namespace autoshuffle_ext::cpu {

#ifdef AUTOSHUFFLE_X86_SIMD
// One copy of `body` per ISA: flatten inlines every call it makes (the kernel's loops, templates
// in headers) into a function compiled for that target. Calls that cannot be inlined (the
// allocator, at::parallel_for's tasks) stay baseline code, so a body is one task's whole work.
template <typename F>
__attribute__((target("avx2"), flatten)) void run_avx2(F& body) {
  body();
}

template <typename F>
__attribute__((target("avx512f,avx512vl,avx512bw"), flatten)) void run_avx512(F& body) {
  body();
}
#endif

// Runs body() compiled for `isa` (default kernel_isa(), which ATEN_CPU_CAPABILITY caps, so that
// tests reach every copy on one machine).
template <typename F>
void run_vectorised(F&& body, Isa isa = kernel_isa()) {
#ifdef AUTOSHUFFLE_X86_SIMD
  if (isa == Isa::kAvx512) return run_avx512(body);
  if (isa == Isa::kAvx2) return run_avx2(body);
#endif
  body();
}

}  // namespace autoshuffle_ext::cpu
