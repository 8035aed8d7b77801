// The one planner and runner of the CPU gathers: channel_gather is a gather from one source,
// cat_gather from two (a, then b). plan_gather picks the path of a call once, outside the
// parallel loop, from the input (layout, element size, perm, CPU) or takes the forced one;
// run_gather builds that path's tables once and runs it over the pixels or planes in parallel.
//
// Forcing: AUTOSHUFFLE_GATHER_PATH (read once per process) or set_forced_gather_paths (the
// Python `force_gather_path`, which takes precedence) hold a path name or a comma-separated list
// of them, "auto" for none: every gather then runs the first listed path that applies to its
// input, and raises (ValueError) naming each one and why it does not apply when none does. A
// forced path never falls back silently.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../channel_gather.h"
#include "../gather_source.h"
#include "features.h"
#include "gather_path.h"
#include "near_shuffle.h"

namespace autoshuffle_ext::cpu {

// The environment variable that forces a path.
constexpr const char* kForcePathVariable = "AUTOSHUFFLE_GATHER_PATH";

// One call of a gather with a non-empty output, dense in its format and walked as `layout`:
// output channel ch is channel perm[ch] of cat(a, b) (b without channels for channel_gather).
struct GatherJob {
  GatherSource a;
  GatherSource b;
  GatherLayout layout;
  const int64_t* perm;    // checked: a permutation of 0..layout.c - 1
  const int32_t* perm32;  // the same entries as int32
  int64_t element_size;
};

// A job, normalised: a source without channels borrows the other's data and strides (no null
// pointer is ever walked), and one source of dense pixel rows becomes a single image of all the
// pixels (batch stride 0), which the row kernels walk without a cursor.
GatherJob make_job(GatherSource a, std::optional<GatherSource> b, GatherLayout layout,
                   const int64_t* perm, const int32_t* perm32, int64_t element_size);

// What plan_gather decided for a job: the path, whether it streams its stores (planes and tile
// transposes, for outputs past the cache: stream_output) and the near-shuffle paths' shuffle.
struct GatherPlan {
  GatherPath path;
  bool stream;
  std::optional<NearShuffle> shuffle;
};

// The forced path, or the automatic choice. `op` names the op in messages.
GatherPlan plan_gather(const GatherJob& job, const char* op);

// Why `path` cannot run `job` on this CPU, or nullopt when it can.
std::optional<std::string> why_not(GatherPath path, const GatherJob& job);

// Writes the gather into `out` (dense, layout.pixels() * layout.c elements).
void run_gather(const GatherPlan& plan, const GatherJob& job, void* out);

// plan_gather then run_gather.
inline void gather(const GatherJob& job, void* out, const char* op) {
  run_gather(plan_gather(job, op), job, out);
}

// Sets the forced paths ("name" or "name,name,..."; "auto": none, whatever the environment says;
// nullopt: back to the environment), checking the names (ValueError), and returns the previous
// setting. Process-wide.
std::optional<std::string> set_forced_gather_paths(const std::optional<std::string>& paths);

// Whether `isa`'s element-by-element path (its hardware gathers; AVX2's scalar loop for 2-byte
// elements) beats the tile transposes on this CPU for elements of `element_size` bytes (2 or 4),
// timed once per ISA and size on a small array in cache (about 0.2 ms); false where there are no
// transposes. Hence a measurement, not a vendor check (bench/RESULTS.md: Intel's gathers are
// fast, AMD Zen 4's slow, microcode mitigations slow some Intel parts); every path gives the same
// exact result.
bool gathers_are_faster(Isa isa, int64_t element_size);

}  // namespace autoshuffle_ext::cpu
