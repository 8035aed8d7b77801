// The CPU gathers' planner and runner (see gather_plan.h).
#include "gather_plan.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

#include "gather_common.h"
#include "pixel_gather.h"
#include "pixel_permute.h"
#include "pixel_transpose.h"
#include "plane_gather.h"
#include "row_cursor.h"

namespace autoshuffle_ext::cpu {
namespace {

// ---- Forcing ---------------------------------------------------------------------------------

std::string known_paths() {
  std::string names;
  for (GatherPath path : kGatherPaths) {
    names += std::string(names.empty() ? "" : ", ") + path_name(path);
  }
  return names;
}

// "name,name,..." as paths; "auto" (or nothing) is none. `origin` says where the text came from.
std::vector<GatherPath> parse_paths(const std::string& text, const std::string& origin) {
  std::vector<GatherPath> paths;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) {
    const auto first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;
    item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
    if (item == "auto") continue;
    const auto path = path_from_name(item);
    TORCH_CHECK_VALUE(path.has_value(), origin, ": unknown gather path '", item, "' in '", text,
                      "'; the paths are: auto, ", known_paths());
    paths.push_back(*path);
  }
  return paths;
}

std::mutex forced_mutex;
std::optional<std::string> forced_override;  // set_forced_gather_paths', guarded by forced_mutex
std::atomic<bool> has_override{false};

const std::optional<std::string>& environment_paths() {
  static const std::optional<std::string> paths = []() -> std::optional<std::string> {
    const char* value = std::getenv(kForcePathVariable);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  }();
  return paths;
}

struct Forced {
  std::vector<GatherPath> paths;  // empty: automatic
  std::string origin;             // what forced them, for messages
};

Forced forced_paths() {
  if (has_override.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(forced_mutex);
    if (forced_override) {
      const std::string origin = "force_gather_path('" + *forced_override + "')";
      return {parse_paths(*forced_override, origin), origin};
    }
  }
  if (const auto& text = environment_paths()) {
    const std::string origin = std::string(kForcePathVariable) + "=" + *text;
    return {parse_paths(*text, origin), origin};
  }
  return {};
}

// ---- What each path needs ---------------------------------------------------------------------

Isa isa_of(GatherPath path) {
  switch (path) {
    case GatherPath::kPlanes:
    case GatherPath::kPixels:
      return Isa::kScalar;
    case GatherPath::kPlanesAvx2:
    case GatherPath::kPixelsGatherAvx2:
    case GatherPath::kPixelsTransposeAvx2:
    case GatherPath::kNearShuffleAvx2:
      return Isa::kAvx2;
    case GatherPath::kPlanesAvx512:
    case GatherPath::kPixelsGatherAvx512:
    case GatherPath::kPixelsPermuteAvx512:
    case GatherPath::kNearShuffleAvx512:
      return Isa::kAvx512;
  }
  return Isa::kScalar;
}

const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "AVX-512 (F, VL, BW)" : isa == Isa::kAvx2 ? "AVX2" : "scalar";
}

// The element sizes a path moves, or an empty list for any.
std::vector<int64_t> element_sizes(GatherPath path) {
  switch (path) {
    case GatherPath::kPixelsGatherAvx2: return {4, 8};
    case GatherPath::kPixelsGatherAvx512: return {1, 2, 4, 8};
    case GatherPath::kPixelsTransposeAvx2: return {2, 4};
    case GatherPath::kPixelsPermuteAvx512: return {4};
    case GatherPath::kNearShuffleAvx2: return {4};
    case GatherPath::kNearShuffleAvx512: return {2, 4};
    default: return {};
  }
}

std::optional<NearShuffle> near_shuffle(GatherPath path, const GatherJob& job) {
  const bool zip = path == GatherPath::kNearShuffleAvx2;
  return NearShuffle::find(job.perm32, job.a.channels, job.b.channels, job.element_size,
                           zip ? 2 : 1, zip ? 2 : NearShuffle::kMaxGroups);
}

// why_not, filling plan.shuffle for the near-shuffle paths.
std::optional<std::string> check(GatherPath path, const GatherJob& job, GatherPlan& plan) {
  if (copies_planes(path) && !job.layout.planes) {
    return std::string("it copies planes: it needs a contiguous output with more than one "
                       "element per channel, got a channels-last (or [N, C]) output");
  }
  if (!copies_planes(path) && job.layout.planes) {
    return std::string("it gathers pixel rows: it needs a channels-last (or [N, C]) output, got "
                       "a contiguous one with more than one element per channel");
  }
  if (!isa_supported(isa_of(path))) {
    return std::string("this CPU has no ") + isa_name(isa_of(path));
  }
  const std::vector<int64_t> sizes = element_sizes(path);
  if (!sizes.empty() &&
      std::find(sizes.begin(), sizes.end(), job.element_size) == sizes.end()) {
    std::string list;
    for (size_t i = 0; i < sizes.size(); ++i) {
      list += (i == 0 ? "" : i + 1 == sizes.size() ? " or " : ", ") + std::to_string(sizes[i]);
    }
    return "it moves " + list + "-byte elements, got " + std::to_string(job.element_size) +
           "-byte ones";
  }
  const int64_t ca = job.a.channels, cb = job.b.channels;
  if (path == GatherPath::kPixelsPermuteAvx512 && !permute_fits(ca, cb)) {
    return "a pixel's channels (" + std::to_string(ca) + " + " + std::to_string(cb) +
           ") do not fit in " + std::to_string(kMaxPermuteRegs) +
           " AVX-512 registers of 16 (at most 128 channels of one input)";
  }
  if (path == GatherPath::kNearShuffleAvx2 || path == GatherPath::kNearShuffleAvx512) {
    plan.shuffle = near_shuffle(path, job);
    if (!plan.shuffle) {
      return std::string("perm is more than 1/") + std::to_string(kMaxPatchShare) +
             " of its channels away from " +
             (path == GatherPath::kNearShuffleAvx2 ? "the 2-group channel shuffle"
                                                   : "every channel shuffle of 1 to 8 groups") +
             " (whose groups each lie within one input)";
    }
  }
  return std::nullopt;
}

bool streams(const GatherJob& job) {
  return stream_output(job.layout.pixels() * job.layout.c * job.element_size);
}

GatherPlan automatic(const GatherJob& job) {
  const Isa isa = kernel_isa();
  const bool avx512 = isa == Isa::kAvx512, avx2 = isa != Isa::kScalar;
  const int64_t e = job.element_size, ca = job.a.channels, cb = job.b.channels;
  GatherPlan plan{GatherPath::kPixels, streams(job), std::nullopt};
  if (job.layout.planes) {
    plan.path = avx512 ? GatherPath::kPlanesAvx512
                : avx2 ? GatherPath::kPlanesAvx2
                       : GatherPath::kPlanes;
    return plan;
  }
  // A perm at or near a channel shuffle: the shuffle and a patch.
  if (avx512 && (e == 2 || e == 4)) {
    if ((plan.shuffle = near_shuffle(GatherPath::kNearShuffleAvx512, job))) {
      plan.path = GatherPath::kNearShuffleAvx512;
      return plan;
    }
  } else if (avx2 && e == 4) {
    if ((plan.shuffle = near_shuffle(GatherPath::kNearShuffleAvx2, job))) {
      plan.path = GatherPath::kNearShuffleAvx2;
      return plan;
    }
  }
  if (avx512 && e == 4 && permute_fits(ca, cb)) {
    plan.path = GatherPath::kPixelsPermuteAvx512;
  } else if (avx2 && (e == 2 || e == 4) && !gathers_are_faster(isa, e)) {
    plan.path = GatherPath::kPixelsTransposeAvx2;
  } else if (avx512 && e <= 8) {
    plan.path = GatherPath::kPixelsGatherAvx512;
  } else if (avx2 && (e == 4 || e == 8)) {
    plan.path = GatherPath::kPixelsGatherAvx2;
  }
  return plan;
}

// ---- Running ----------------------------------------------------------------------------------

// Contiguous output [N, C, inner]: plane (n, ch) is plane perm[ch] of image n of cat(a, b).
void run_planes(const GatherPlan& plan, const GatherJob& job, char* dst) {
  const int64_t c = job.layout.c, e = job.element_size;
  const int64_t plane_bytes = job.layout.inner * e;
  // Output channel ch of image n copies from first[ch] + n * step[ch].
  c10::SmallVector<const char*, 512> first(c, nullptr);
  c10::SmallVector<int64_t, 512> step(c, 0);
  for (int64_t ch = 0; ch < c; ++ch) {
    const int64_t j = job.perm[ch];
    const bool in_a = j < job.a.channels;
    const GatherSource& s = in_a ? job.a : job.b;
    first[ch] = static_cast<const char*>(s.data) +
                (in_a ? j : j - job.a.channels) * s.channel_stride * e;
    step[ch] = s.batch_stride * e;
  }
  const Isa isa = isa_of(plan.path);
  at::parallel_for(0, job.layout.n * c, grain_for(plane_bytes), [&](int64_t begin, int64_t end) {
    gather_planes(first.data(), step.data(), c, dst, begin, end, plane_bytes, isa, plan.stream);
  });
}

// Bytes of pixel rows that the packing gathers at a time: well inside L1.
constexpr int64_t kPackBytes = 16 * 1024;

bool dense_rows(const GatherJob& job) {
  return job.b.channels == 0 && job.layout.n == 1 && job.a.pixel_stride == job.layout.c;
}

// The element-by-element paths (gather_rows) on rows that are not one dense array: each block of
// pixels' rows of a and b copied into one dense buffer, then gathered from there.
void packed_rows(GatherPath path, const GatherJob& job, char* dst, int64_t begin, int64_t end) {
  const int64_t e = job.element_size, c = job.layout.c;
  const int64_t row_bytes = c * e, a_bytes = job.a.channels * e, b_bytes = job.b.channels * e;
  const int64_t block = std::max<int64_t>(1, kPackBytes / row_bytes);
  std::vector<char> buffer(std::min(block, end - begin) * row_bytes);
  RowCursor ra(job.a, e, job.layout.inner, begin);
  RowCursor rb(job.b, e, job.layout.inner, begin);
  for (int64_t p = begin; p < end; p += block) {
    const int64_t count = std::min(block, end - p);
    for (int64_t i = 0; i < count; ++i, ra.next(), rb.next()) {
      std::memcpy(buffer.data() + i * row_bytes, ra.row(), a_bytes);
      std::memcpy(buffer.data() + i * row_bytes + a_bytes, rb.row(), b_bytes);
    }
    gather_rows(path, buffer.data(), dst + p * row_bytes, job.perm, job.perm32, 0, count, count,
                c, e);
  }
}

// Channels-last output [pixels, C]: every pixel's row gathered from its rows of a and b.
void run_pixels(const GatherPlan& plan, const GatherJob& job, char* dst) {
  const GatherSource& a = job.a;
  const GatherSource& b = job.b;
  const int64_t c = job.layout.c, e = job.element_size, inner = job.layout.inner;
  const int64_t pixels = job.layout.pixels(), grain = grain_for(c * e);
  const auto in_parallel = [&](const auto& fn) { at::parallel_for(0, pixels, grain, fn); };
  switch (plan.path) {
#ifdef AUTOSHUFFLE_X86_SIMD
    case GatherPath::kNearShuffleAvx512:
      in_parallel([&](int64_t begin, int64_t end) {
        plan.shuffle->run_avx512(a, b, dst, begin, end, inner);
      });
      return;
    case GatherPath::kNearShuffleAvx2:
      in_parallel([&](int64_t begin, int64_t end) {
        plan.shuffle->run_avx2(a, b, dst, begin, end, inner);
      });
      return;
    case GatherPath::kPixelsPermuteAvx512: {
      PermutePlan permutes;
      build_permute_plan(job.perm32, a.channels, b.channels, permutes);
      in_parallel([&](int64_t begin, int64_t end) {
        permute_pixels(permutes, a, b, dst, begin, end, inner);
      });
      return;
    }
    case GatherPath::kPixelsTransposeAvx2: {
      const TransposePlan tiles(job.perm32, c, a.channels, e);
      in_parallel([&](int64_t begin, int64_t end) {
        tiles.run(a, b, dst, begin, end, inner, plan.stream);
      });
      return;
    }
#endif
    case GatherPath::kPixels:
    case GatherPath::kPixelsGatherAvx2:
    case GatherPath::kPixelsGatherAvx512:
      if (dense_rows(job)) {
        in_parallel([&](int64_t begin, int64_t end) {
          gather_rows(plan.path, a.data, dst, job.perm, job.perm32, begin, end, pixels, c, e);
        });
      } else {
        in_parallel([&](int64_t begin, int64_t end) {
          packed_rows(plan.path, job, dst, begin, end);
        });
      }
      return;
    default:
      TORCH_CHECK(false, "gather path ", path_name(plan.path), " is not built into this library");
  }
}

// ---- The timed choice between hardware gathers and tile transposes ----------------------------

// The faster path's answer for `isa` and elements of E bytes: 64 pixels of 240 channels (in L2),
// each path run 9 times alternately, the best time of each compared (the minimum shrugs off a
// noisy neighbour's interruptions).
template <int E>
bool time_gathers_against_transposes(Isa isa) {
#ifdef AUTOSHUFFLE_X86_SIMD
  constexpr int64_t kPixels = 64, kChannels = 240;
  std::vector<char> src(kPixels * kChannels * E), dst(kPixels * kChannels * E);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 7);
  std::vector<int64_t> perm(kChannels);
  std::vector<int32_t> perm32(kChannels);
  for (int64_t ch = 0; ch < kChannels; ++ch) {
    perm[ch] = (ch * 7 + 3) % kChannels;  // 7 is coprime to 240: a permutation
    perm32[ch] = static_cast<int32_t>(perm[ch]);
  }
  const GatherPath gathers = isa == Isa::kAvx512 ? GatherPath::kPixelsGatherAvx512
                             : E == 4            ? GatherPath::kPixelsGatherAvx2
                                                 : GatherPath::kPixels;
  const TransposePlan tiles(perm32.data(), kChannels, kChannels, E);
  const GatherSource rows{src.data(), kChannels, 0, 1, kChannels};
  const GatherSource none{src.data(), 0, 0, 1, kChannels};
  double best[2] = {1e30, 1e30};
  for (int round = 0; round < 9; ++round) {
    for (int by_gathers = 0; by_gathers < 2; ++by_gathers) {
      const auto start = std::chrono::steady_clock::now();
      if (by_gathers) {
        gather_rows(gathers, src.data(), dst.data(), perm.data(), perm32.data(), 0, kPixels,
                    kPixels, kChannels, E);
      } else {
        tiles.run(rows, none, dst.data(), 0, kPixels, kPixels, false);
      }
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      best[by_gathers] = std::min(best[by_gathers], took.count());
    }
  }
  return best[1] < best[0];
#else
  (void)isa;
  return false;
#endif
}

}  // namespace

GatherJob make_job(GatherSource a, std::optional<GatherSource> b, GatherLayout layout,
                   const int64_t* perm, const int32_t* perm32, int64_t element_size) {
  GatherSource second = b ? *b : GatherSource{a.data, 0, a.batch_stride, a.channel_stride,
                                              a.pixel_stride};
  if (a.channels == 0) a = {second.data, 0, second.batch_stride, second.channel_stride,
                            second.pixel_stride};
  if (second.channels == 0) second = {a.data, 0, a.batch_stride, a.channel_stride,
                                      a.pixel_stride};
  const int64_t c = layout.c;
  if (!layout.planes && second.channels == 0 && (layout.inner == 1 || a.pixel_stride == c) &&
      (layout.n == 1 || a.batch_stride == layout.inner * c)) {
    // Dense rows: one image of all the pixels.
    layout = {1, c, layout.pixels(), false};
    a.batch_stride = 0;
    a.pixel_stride = c;
    second.batch_stride = 0;
    second.pixel_stride = c;
  }
  return {a, second, layout, perm, perm32, element_size};
}

std::optional<std::string> why_not(GatherPath path, const GatherJob& job) {
  GatherPlan plan{path, false, std::nullopt};
  return check(path, job, plan);
}

GatherPlan plan_gather(const GatherJob& job, const char* op) {
  const Forced forced = forced_paths();
  if (forced.paths.empty()) return automatic(job);
  std::string reasons;
  for (GatherPath path : forced.paths) {
    GatherPlan plan{path, streams(job), std::nullopt};
    const auto why = check(path, job, plan);
    if (!why) return plan;
    reasons += std::string(reasons.empty() ? "" : "; ") + path_name(path) + ": " + *why;
  }
  C10_THROW_ERROR(ValueError,
                  c10::str(op, ": ",
                           forced.paths.size() == 1
                               ? "the forced gather path does not apply to this input ("
                               : "none of the forced gather paths applies to this input (",
                           reasons, "), forced by ", forced.origin));
}

void run_gather(const GatherPlan& plan, const GatherJob& job, void* out) {
  char* dst = static_cast<char*>(out);
  if (job.layout.planes) {
    run_planes(plan, job, dst);
  } else {
    run_pixels(plan, job, dst);
  }
}

std::optional<std::string> set_forced_gather_paths(const std::optional<std::string>& paths) {
  if (paths) parse_paths(*paths, std::string("force_gather_path('") + *paths + "')");  // check
  std::lock_guard<std::mutex> lock(forced_mutex);
  std::optional<std::string> previous = forced_override;
  forced_override = paths;
  has_override.store(forced_override.has_value(), std::memory_order_release);
  return previous;
}

bool gathers_are_faster(Isa isa, int64_t element_size) {
  if (isa == Isa::kScalar || !isa_supported(isa) || (element_size != 2 && element_size != 4)) {
    return false;
  }
#define AS_CASE(ISA, E)                                                  \
  if (isa == ISA && element_size == E) {                                 \
    static const bool faster = time_gathers_against_transposes<E>(ISA); \
    return faster;                                                       \
  }
  AS_CASE(Isa::kAvx512, 4)
  AS_CASE(Isa::kAvx512, 2)
  AS_CASE(Isa::kAvx2, 4)
  AS_CASE(Isa::kAvx2, 2)
#undef AS_CASE
  return false;
}

}  // namespace autoshuffle_ext::cpu
