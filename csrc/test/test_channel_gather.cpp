// C++ (libtorch) test of channel_gather, run by ctest: the op is found through the dispatcher, as a
// C++ user would, and compared exactly with index_select on random inputs.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cpu/gather_plan.h"
#include "cpu/near_shuffle.h"
#include "cpu/pixel_transpose.h"
#include "cpu/plane_gather.h"
#include "expect.h"

namespace {

using autoshuffle_ext::test::expect;
using autoshuffle_ext::test::expect_throws;

using GatherFn = at::Tensor(const at::Tensor&, const at::Tensor&);
using GatherOutFn = void(const at::Tensor&, const at::Tensor&, at::Tensor&);

auto gather_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("autoshuffle_ext::channel_gather", "")
      .typed<GatherFn>();
}

auto gather_out_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("autoshuffle_ext::channel_gather", "out")
      .typed<GatherOutFn>();
}

at::Tensor random_tensor(at::IntArrayRef shape, at::ScalarType dtype) {
  if (dtype == at::kBool) return at::randint(0, 2, shape).to(at::kBool);
  if (at::isIntegralType(dtype, /*includeBool=*/false)) {
    return at::randint(dtype == at::kByte ? 0 : -100, 100, shape).to(dtype);
  }
  return at::randn(shape).to(dtype);
}

std::string describe(const at::Tensor& x) {
  std::string s = std::string(c10::toString(x.scalar_type())) + " shape [";
  for (auto d : x.sizes()) s += std::to_string(d) + ",";
  s += "] strides [";
  for (auto d : x.strides()) s += std::to_string(d) + ",";
  return s + "]";
}

void check_gather(const at::Tensor& x, at::MemoryFormat expected_format) {
  const auto op = gather_op();
  const at::Tensor perm = at::randperm(x.size(1), at::kLong);
  const at::Tensor y = op.call(x, perm);
  expect(at::equal(y, x.index_select(1, perm)), "values of " + describe(x));
  expect(y.is_contiguous(expected_format), "memory format of the result for " + describe(x));
  // out= into a fresh tensor of each layout.
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Contiguous);
  gather_out_op().call(x, perm, out);
  expect(at::equal(out, y), "out= (contiguous) for " + describe(x));
  if (x.dim() == 4) {
    at::Tensor out_cl = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    gather_out_op().call(x, perm, out_cl);
    expect(at::equal(out_cl, y), "out= (channels_last) for " + describe(x));
  }
}

void test_values() {
  const std::vector<at::ScalarType> dtypes = {at::kFloat, at::kDouble, at::kHalf,  at::kBFloat16,
                                              at::kByte,  at::kChar,   at::kShort, at::kInt,
                                              at::kLong,  at::kBool,   at::kComplexDouble};
  const std::vector<std::vector<int64_t>> shapes4 = {
      {2, 116, 7, 5}, {3, 1, 4, 4}, {0, 8, 3, 3}, {1, 33, 1, 1}, {5, 17, 3, 2}, {2, 240, 4, 4}};
  for (auto dtype : dtypes) {
    for (const auto& shape : shapes4) {
      const at::Tensor x = random_tensor(shape, dtype);
      check_gather(x, at::MemoryFormat::Contiguous);
      const at::Tensor cl = x.contiguous(at::MemoryFormat::ChannelsLast);
      check_gather(cl, cl.is_contiguous() ? at::MemoryFormat::Contiguous
                                          : at::MemoryFormat::ChannelsLast);
      // A strided view: every other column.
      check_gather(random_tensor({shape[0], shape[1], 4, 6}, dtype).slice(3, 0, 6, 2),
                   at::MemoryFormat::Contiguous);
    }
    check_gather(random_tensor({7, 13}, dtype), at::MemoryFormat::Contiguous);
    check_gather(random_tensor({4, 9, 11}, dtype), at::MemoryFormat::Contiguous);
    check_gather(random_tensor({2, 19, 3, 4, 5}, dtype), at::MemoryFormat::Contiguous);
    check_gather(
        random_tensor({2, 19, 3, 4, 5}, dtype).contiguous(at::MemoryFormat::ChannelsLast3d),
        at::MemoryFormat::ChannelsLast3d);
  }
}

// Channels-last float32 with C <= 128 permutes whole pixels in registers: every register count,
// partial last registers, odd pixel counts, and the gathers just above.
void test_register_boundaries() {
  for (int64_t c : {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 97, 116, 127, 128, 129}) {
    for (int64_t w : {1, 3}) {
      const at::Tensor x = at::randn({2, c, 1, w}).contiguous(at::MemoryFormat::ChannelsLast);
      check_gather(x, x.is_contiguous() ? at::MemoryFormat::Contiguous
                                        : at::MemoryFormat::ChannelsLast);
    }
  }
}

// The plane copies of every ISA this CPU has, streamed or not (the ops stream only outputs larger
// than the cache), on planes of whole lines and of odd sizes, split in two ranges.
void test_plane_copies() {
  using autoshuffle_ext::cpu::Isa;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!autoshuffle_ext::cpu::isa_supported(isa)) continue;
    for (bool stream : {false, true}) {
      for (int64_t plane_bytes : {1, 3, 64, 100, 784, 3136}) {
        for (int64_t c : {1, 7, 33}) {
          const int64_t n = 3;
          const at::Tensor x = at::randint(0, 256, {n, c, plane_bytes}, at::kByte);
          const at::Tensor perm = at::randperm(c, at::kLong);
          const char* src = static_cast<const char*>(x.const_data_ptr());
          std::vector<const char*> first(c);
          const std::vector<int64_t> step(c, c * plane_bytes);
          for (int64_t ch = 0; ch < c; ++ch) {
            first[ch] = src + perm[ch].item<int64_t>() * plane_bytes;
          }
          at::Tensor out = at::zeros_like(x);
          const int64_t split = n * c / 2 + 1;
          for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, n * c}}) {
            autoshuffle_ext::cpu::gather_planes(first.data(), step.data(), c,
                                                static_cast<char*>(out.mutable_data_ptr()), begin,
                                                end, plane_bytes, isa, stream);
          }
          expect(at::equal(out, x.index_select(1, perm)),
                 "plane copies (isa " + std::to_string(static_cast<int>(isa)) + "): " +
                     std::to_string(c) + " planes of " + std::to_string(plane_bytes) +
                     " bytes" + (stream ? ", streamed" : ""));
        }
      }
    }
  }
}

// Every pixel-row path forced through the op, on [pixels, C] rows of 4- and 2-byte elements:
// channel counts around the transposes' 8-channel blocks and the registers' 128, pixel counts
// around the tiles. A path this CPU has runs exactly where it applies and raises elsewhere; every
// one this CPU has runs somewhere.
void test_forced_pixel_paths() {
  using autoshuffle_ext::cpu::GatherPath;
  const auto op = gather_op();
  for (GatherPath path : {GatherPath::kPixels, GatherPath::kPixelsGatherAvx2,
                          GatherPath::kPixelsGatherAvx512, GatherPath::kPixelsTransposeAvx2,
                          GatherPath::kPixelsPermuteAvx512}) {
    const std::string name = autoshuffle_ext::cpu::path_name(path);
    if (!autoshuffle_ext::test::path_on_this_cpu(name)) continue;
    const autoshuffle_ext::test::ForcePath force(name);
    int ran = 0;
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kDouble, at::kByte}) {
      for (int64_t c : {1, 5, 8, 13, 16, 17, 116, 129, 136, 232, 237, 480}) {
        for (int64_t pixels : {1, 3, 4, 9, 17}) {
          const at::Tensor x = random_tensor({pixels, c}, dtype);
          const at::Tensor perm = at::randperm(c, at::kLong);
          const std::string what = name + ": " + describe(x);
          try {
            const at::Tensor y = op.call(x, perm);
            expect(at::equal(y, x.index_select(1, perm)), what);
            ++ran;
          } catch (const c10::ValueError& e) {
            expect(std::string(e.what()).find("forced gather path") != std::string::npos,
                   what + ": " + e.what());
          }
        }
      }
    }
    expect(ran > 0, name + " never ran");
  }
}

// The tile transposes with streamed stores on arrays small enough to stay in the cache (the op
// streams only outputs past it), split in two ranges.
void test_streamed_transposes() {
#ifdef AUTOSHUFFLE_X86_SIMD
  using autoshuffle_ext::GatherSource;
  if (!autoshuffle_ext::cpu::isa_supported(autoshuffle_ext::cpu::Isa::kAvx2)) return;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t c : {8, 16, 232, 240}) {
      for (int64_t pixels : {1, 4, 9, 17}) {
        const at::Tensor x = at::randn({pixels, c}).to(dtype);
        const at::Tensor perm32 = at::randperm(c, at::kLong).to(at::kInt);
        const autoshuffle_ext::cpu::TransposePlan tiles(perm32.const_data_ptr<int32_t>(), c, c,
                                                        x.element_size());
        const GatherSource rows{x.const_data_ptr(), c, 0, 1, c};
        const GatherSource none{x.const_data_ptr(), 0, 0, 1, c};
        at::Tensor out = at::zeros_like(x);
        for (auto [begin, end] :
             {std::pair<int64_t, int64_t>{0, pixels / 2}, {pixels / 2, pixels}}) {
          tiles.run(rows, none, out.mutable_data_ptr(), begin, end, pixels, true);
        }
        expect(at::equal(out, x.index_select(1, perm32.to(at::kLong))),
               "streamed transposes: " + describe(x));
      }
    }
  }
#endif
}

// F.channel_shuffle's perm of c channels in `groups` groups with its entries at `moved` distinct
// random positions rotated by one: exactly `moved` channels differ from the shuffle (moved != 1).
at::Tensor near_shuffle_perm(int64_t c, int64_t groups, int64_t moved) {
  at::Tensor perm = at::arange(c, at::kLong).view({groups, c / groups}).t().reshape({c});
  if (moved < 2) return perm;
  const at::Tensor at_ = at::randperm(c, at::kLong).slice(0, 0, moved);
  perm.index_put_({at_}, perm.index({at_.roll(1)}));
  return perm;
}

// The near-shuffle paths, 2- and 4-byte elements (AVX-512; the AVX2 zip: 4-byte, 2 groups): every
// group count they take, channel counts around the vectors (16 and 32 lanes) and their phases, 0
// to c / 8 moved channels, split in two ranges that end at the array's last pixel; and the perms
// they must decline.
void test_near_shuffle() {
#ifdef AUTOSHUFFLE_X86_SIMD
  using autoshuffle_ext::GatherSource;
  using autoshuffle_ext::cpu::Isa;
  using autoshuffle_ext::cpu::NearShuffle;
  const bool avx512 = autoshuffle_ext::cpu::isa_supported(Isa::kAvx512);
  if (!autoshuffle_ext::cpu::isa_supported(Isa::kAvx2)) return;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const int64_t e = dtype == at::kFloat ? 4 : 2;
    for (int64_t groups = 1; groups <= NearShuffle::kMaxGroups; ++groups) {
      for (int64_t c : {1, 2, 3, 6, 8, 15, 16, 24, 35, 40, 48, 56, 116, 120, 232, 240, 480}) {
        if (c % groups) continue;
        for (int64_t moved : {int64_t{0}, int64_t{2}, int64_t{3}, c / 8}) {
          if (moved == 1 || moved > c / 8) continue;
          for (int64_t pixels : {1, 3, 9}) {
            const at::Tensor x = at::randn({pixels, c}).to(dtype);
            const at::Tensor perm = near_shuffle_perm(c, groups, moved);
            const at::Tensor perm32 = perm.to(at::kInt);
            const std::string what = "near shuffle, " + std::to_string(e) + "-byte, " +
                                     std::to_string(groups) + " groups of " + std::to_string(c) +
                                     " channels, " + std::to_string(moved) + " moved, " +
                                     std::to_string(pixels) + " pixels";
            const int32_t* p32 = perm32.const_data_ptr<int32_t>();
            const auto shuffle = NearShuffle::find(p32, c, 0, e, 1, NearShuffle::kMaxGroups);
            expect(shuffle.has_value(), what + ": not found");
            if (!shuffle) continue;
            expect(static_cast<int64_t>(shuffle->patches().size()) <= moved,
                   what + ": more patches than moved channels");
            const GatherSource rows{x.const_data_ptr(), c, 0, 1, c};
            const GatherSource none{x.const_data_ptr(), 0, 0, 1, c};
            const auto zip = NearShuffle::find(p32, c, 0, e, 2, 2);
            for (bool avx2 : {false, true}) {
              if (avx2 ? !(zip && e == 4) : !avx512) continue;
              at::Tensor out = at::zeros_like(x);
              for (auto [begin, end] :
                   {std::pair<int64_t, int64_t>{0, pixels / 2}, {pixels / 2, pixels}}) {
                if (avx2) {
                  zip->run_avx2(rows, none, out.mutable_data_ptr(), begin, end, pixels);
                } else {
                  shuffle->run_avx512(rows, none, out.mutable_data_ptr(), begin, end, pixels);
                }
              }
              expect(at::equal(out, x.index_select(1, perm)), what + (avx2 ? ", AVX2" : ""));
            }
          }
        }
      }
    }
  }
  const at::Tensor random = at::randperm(240, at::kInt);
  expect(!NearShuffle::find(random.const_data_ptr<int32_t>(), 240, 0, 4, 1, 8),
         "near shuffle: a random perm of 240 taken");
  const at::Tensor far = near_shuffle_perm(240, 3, 31).to(at::kInt);
  expect(!NearShuffle::find(far.const_data_ptr<int32_t>(), 240, 0, 4, 1, 8),
         "near shuffle: 31 of 240 channels moved (over 1 / 8) taken");
  const at::Tensor shuffle = near_shuffle_perm(240, 3, 0).to(at::kInt);
  const auto found = NearShuffle::find(shuffle.const_data_ptr<int32_t>(), 240, 0, 4, 1, 8);
  expect(found && found->groups() == 3 && found->patches().empty(),
         "near shuffle: the 3-group shuffle of 240 not found as such");
  expect(!NearShuffle::find(shuffle.const_data_ptr<int32_t>(), 240, 0, 4, 2, 2),
         "near shuffle: the 3-group shuffle of 240 taken as a 2-group one");
  // cat_gather's 2-group shuffle of 58 + 58 channels; its groups straddle 50 + 66.
  const at::Tensor zip = near_shuffle_perm(116, 2, 0).to(at::kInt);
  expect(NearShuffle::find(zip.const_data_ptr<int32_t>(), 58, 58, 4, 2, 2).has_value(),
         "near shuffle: 58 + 58 zip not found");
  expect(!NearShuffle::find(zip.const_data_ptr<int32_t>(), 50, 66, 4, 2, 2),
         "near shuffle: groups straddling a and b taken");
#endif
}

// The channels-last path choice is timed once per ISA and then fixed; without SIMD there is none.
void test_path_choice_is_stable() {
  using autoshuffle_ext::cpu::Isa;
  using autoshuffle_ext::cpu::gathers_are_faster;
  expect(!gathers_are_faster(Isa::kScalar, 4), "no transposes without SIMD");
  expect(!gathers_are_faster(Isa::kAvx2, 8), "no transposes of 8-byte elements");
  for (Isa isa : {Isa::kAvx2, Isa::kAvx512}) {
    for (int64_t size : {2, 4}) {
      const bool first = gathers_are_faster(isa, size);
      for (int i = 0; i < 3; ++i) {
        expect(gathers_are_faster(isa, size) == first,
               "the path choice of isa " + std::to_string(static_cast<int>(isa)) + " is fixed");
      }
      if (!autoshuffle_ext::cpu::isa_supported(isa)) expect(!first, "nothing on a missing ISA");
    }
  }
}

// An empty tensor is dense in every format: the output takes the layout its strides show.
void test_empty_keeps_format() {
  for (auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    for (auto shape : std::vector<std::vector<int64_t>>{{0, 4, 3, 3}, {2, 4, 0, 3}, {2, 0, 3, 3}}) {
      const at::Tensor x = at::empty(shape, at::TensorOptions().memory_format(format));
      const at::Tensor y = gather_op().call(x, at::randperm(shape[1], at::kLong));
      expect(y.strides() == x.strides(), "empty output keeps the strides of " + describe(x));
    }
  }
}

void test_errors() {
  const auto op = gather_op();
  const at::Tensor x = at::randn({2, 4, 3, 3});
  expect_throws<c10::IndexError>([&] { op.call(x, at::tensor({0, 1, 2, 4}, at::kLong)); },
                                 "perm entries must lie in [0, 4)", "entry too large");
  expect_throws<c10::IndexError>([&] { op.call(x, at::tensor({0, -1, 2, 3}, at::kLong)); },
                                 "perm[1] = -1", "negative entry");
  expect_throws<c10::ValueError>([&] { op.call(x, at::tensor({0, 1, 1, 3}, at::kLong)); },
                                 "perm must be a permutation of 0..3 (each index exactly once), "
                                 "got perm[2] = 1, also at perm[1]",
                                 "repeated entry");
  expect_throws<c10::ValueError>([&] { op.call(x, at::arange(3, at::kLong)); },
                                 "perm must have length C = x.size(1) = 4, got 3", "wrong length");
  expect_throws<c10::TypeError>([&] { op.call(x, at::arange(4, at::kInt)); },
                                "perm must have dtype int64", "wrong dtype");
  expect_throws<c10::ValueError>([&] { op.call(x, at::arange(4, at::kLong).view({2, 2})); },
                                 "perm must be 1-D", "2-D perm");
  expect_throws<c10::ValueError>([&] { op.call(at::randn({4}), at::arange(4, at::kLong)); },
                                 "x must have at least 2 dims", "1-D x");
  at::Tensor same = x.clone();
  expect_throws<c10::ValueError>(
      [&] { gather_out_op().call(same, at::arange(4, at::kLong), same); },
      "out must not share memory with x", "out aliasing x");
  at::Tensor small = at::empty({2, 4, 3, 2});
  expect_throws<c10::ValueError>(
      [&] { gather_out_op().call(x, at::arange(4, at::kLong), small); },
      "out must have x's shape", "out of the wrong shape");
}

void test_autograd() {
  const at::Tensor x = at::randn({3, 6, 2, 2}, at::kDouble).requires_grad_(true);
  const at::Tensor perm = at::randperm(6, at::kLong);
  const at::Tensor w = at::randn({3, 6, 2, 2}, at::kDouble);
  const at::Tensor y = gather_op().call(x, perm);
  torch::autograd::backward({(y * w).sum()});
  // d/dx sum(w * x[:, perm]) places w[:, c] at channel perm[c].
  expect(at::equal(x.grad().index_select(1, perm), w), "gradient is the inverse gather");
}

}  // namespace

using autoshuffle_ext::test::failures;

int main() {
  at::manual_seed(0);
  test_values();
  test_register_boundaries();
  test_plane_copies();
  test_forced_pixel_paths();
  test_streamed_transposes();
  test_near_shuffle();
  test_path_choice_is_stable();
  test_empty_keeps_format();
  test_errors();
  test_autograd();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("channel_gather: all C++ checks passed (cpu capability %s)\n",
              at::get_cpu_capability().c_str());
  return 0;
}
