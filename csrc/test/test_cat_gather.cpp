// C++ (libtorch) test of cat_gather, run by ctest: the op is found through the dispatcher, as a
// C++ user would, and compared exactly with at::cat then index_select on random inputs.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "expect.h"

namespace {

using autoshuffle_ext::test::expect;
using autoshuffle_ext::test::expect_throws;

using CatGatherFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&);

auto cat_gather_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("autoshuffle_ext::cat_gather", "")
      .typed<CatGatherFn>();
}

at::Tensor random_tensor(at::IntArrayRef shape, at::ScalarType dtype) {
  if (dtype == at::kBool) return at::randint(0, 2, shape).to(at::kBool);
  if (at::isIntegralType(dtype, /*includeBool=*/false)) {
    return at::randint(dtype == at::kByte ? 0 : -100, 100, shape).to(dtype);
  }
  return at::randn(shape).to(dtype);
}

std::string describe(const at::Tensor& t) {
  std::string s = std::string(c10::toString(t.scalar_type())) + " shape [";
  for (auto d : t.sizes()) s += std::to_string(d) + ",";
  s += "] strides [";
  for (auto d : t.strides()) s += std::to_string(d) + ",";
  return s + "]";
}

void check(const at::Tensor& a, const at::Tensor& b, at::MemoryFormat expected_format) {
  const at::Tensor perm = at::randperm(a.size(1) + b.size(1), at::kLong);
  const at::Tensor y = cat_gather_op().call(a, b, perm);
  const std::string what = describe(a) + " + " + describe(b);
  expect(at::equal(y, at::cat({a, b}, 1).index_select(1, perm)), "values of " + what);
  expect(y.is_contiguous(expected_format), "memory format of the result for " + what);
}

void test_values() {
  const std::vector<at::ScalarType> dtypes = {at::kFloat, at::kDouble, at::kHalf,  at::kBFloat16,
                                              at::kByte,  at::kChar,   at::kShort, at::kInt,
                                              at::kLong,  at::kBool,   at::kComplexDouble};
  const auto cl = at::MemoryFormat::ChannelsLast;
  const auto contiguous = at::MemoryFormat::Contiguous;
  // (Ca, Cb): ShuffleNet v2's three stages, odd and unequal counts, one channel.
  const std::vector<std::pair<int64_t, int64_t>> channels = {
      {58, 58}, {116, 116}, {232, 232}, {3, 17}, {1, 8}, {33, 1}};
  for (auto dtype : dtypes) {
    for (const auto& [ca, cb] : channels) {
      const at::Tensor a = random_tensor({2, ca, 3, 5}, dtype);
      const at::Tensor b = random_tensor({2, cb, 3, 5}, dtype);
      check(a, b, contiguous);
      check(a.contiguous(cl), b.contiguous(cl), ca > 1 && cb > 1 ? cl : contiguous);
      check(a.contiguous(cl), b, contiguous);  // mixed formats: contiguous, as torch.cat
      // A unit's split: the second half of a tensor twice as wide, read in place.
      const at::Tensor x = random_tensor({2, 2 * ca, 3, 5}, dtype).contiguous(cl);
      check(x.narrow(1, ca, ca), b.contiguous(cl), cb > 1 ? cl : contiguous);
      check(random_tensor({2, ca, 3, 10}, dtype).slice(3, 0, 10, 2), b, contiguous);
    }
    check(random_tensor({7, 13}, dtype), random_tensor({7, 2}, dtype), contiguous);
    check(random_tensor({2, 19, 3, 4, 5}, dtype).contiguous(at::MemoryFormat::ChannelsLast3d),
          random_tensor({2, 6, 3, 4, 5}, dtype).contiguous(at::MemoryFormat::ChannelsLast3d),
          at::MemoryFormat::ChannelsLast3d);
  }
}

// F.channel_shuffle's 2-group perm of ca + cb channels with its entries at `moved` random
// positions rotated by one (moved != 1).
at::Tensor near_zip_perm(int64_t c, int64_t moved) {
  at::Tensor perm = at::arange(c, at::kLong).view({2, c / 2}).t().reshape({c});
  if (moved < 2) return perm;
  const at::Tensor at_ = at::randperm(c, at::kLong).slice(0, 0, moved);
  perm.index_put_({at_}, perm.index({at_.roll(1)}));
  return perm;
}

// Every path forced through the op, on both layouts, element sizes 1 to 16, random and near-zip
// perms, inputs read in place (a channel slice) or copied: a path this CPU has runs exactly where
// it applies and raises elsewhere, and every one runs somewhere.
void test_forced_paths() {
  const auto op = cat_gather_op();
  const auto cl = at::MemoryFormat::ChannelsLast;
  for (autoshuffle_ext::cpu::GatherPath path : autoshuffle_ext::cpu::kGatherPaths) {
    const std::string name = autoshuffle_ext::cpu::path_name(path);
    if (!autoshuffle_ext::test::path_on_this_cpu(name)) continue;
    const autoshuffle_ext::test::ForcePath force(name);
    int ran = 0;
    for (at::ScalarType dtype :
         {at::kByte, at::kBFloat16, at::kFloat, at::kDouble, at::kComplexDouble}) {
      for (auto [ca, cb] : std::vector<std::pair<int64_t, int64_t>>{
               {58, 58}, {8, 8}, {116, 116}, {3, 17}, {64, 64}}) {
        for (int64_t moved : {int64_t{0}, int64_t{3}, int64_t{-1}}) {  // -1: a random perm
          if (moved >= 0 && ca != cb) continue;
          const at::Tensor perm =
              moved < 0 ? at::randperm(ca + cb, at::kLong) : near_zip_perm(ca + cb, moved);
          const at::Tensor wide = random_tensor({2, 2 * ca, 3, 5}, dtype);
          const at::Tensor b = random_tensor({2, cb, 3, 5}, dtype);
          const std::vector<std::pair<at::Tensor, at::Tensor>> inputs = {
              {wide.narrow(1, ca, ca), b},
              {wide.contiguous(cl).narrow(1, ca, ca), b.contiguous(cl)},
              {wide.narrow(1, 0, ca).contiguous(cl), b.contiguous(cl)}};
          for (const auto& [a_in, b_in] : inputs) {
            const std::string what = name + ": " + describe(a_in) + " + " + describe(b_in);
            try {
              const at::Tensor y = op.call(a_in, b_in, perm);
              expect(at::equal(y, at::cat({a_in, b_in}, 1).index_select(1, perm)), what);
              ++ran;
            } catch (const c10::ValueError& e) {
              expect(std::string(e.what()).find("forced gather path") != std::string::npos,
                     what + ": " + e.what());
            }
          }
        }
      }
    }
    expect(ran > 0, name + " never ran");
  }
}

void test_empty() {
  const auto op = cat_gather_op();
  for (auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
    const at::TensorOptions options = at::TensorOptions().memory_format(format);
    const at::Tensor a = at::empty({0, 4, 3, 3}, options);
    const at::Tensor b = at::empty({0, 2, 3, 3}, options);
    const at::Tensor y = op.call(a, b, at::randperm(6, at::kLong));
    expect(y.sizes() == at::IntArrayRef({0, 6, 3, 3}), "empty batch: shape");
    expect(y.strides() == at::empty({0, 6, 3, 3}, options).strides(),
           "empty batch keeps the inputs' format");
  }
  const at::Tensor b = at::randn({2, 5, 3, 3});
  const at::Tensor perm = at::randperm(5, at::kLong);
  expect(at::equal(op.call(at::empty({2, 0, 3, 3}), b, perm), b.index_select(1, perm)),
         "a with no channels");
}

void test_errors() {
  const auto op = cat_gather_op();
  const at::Tensor a = at::randn({2, 4, 3, 3});
  const at::Tensor b = at::randn({2, 5, 3, 3});
  const at::Tensor ok = at::randperm(9, at::kLong);
  expect_throws<c10::ValueError>([&] { op.call(at::randn({4}), b, ok); },
                                 "a must have at least 2 dims", "1-D a");
  expect_throws<c10::ValueError>([&] { op.call(a, at::randn({2, 5, 3}), ok); },
                                 "b must have a's number of dims 4, got 3", "3-D b");
  expect_throws<c10::ValueError>([&] { op.call(a, at::randn({3, 5, 3, 3}), ok); },
                                 "b must have a's size in every dim but 1", "other batch");
  expect_throws<c10::ValueError>([&] { op.call(a, at::randn({2, 5, 3, 4}), ok); },
                                 "got b.shape = [2, 5, 3, 4]", "other width");
  expect_throws<c10::TypeError>([&] { op.call(a, b.to(at::kDouble), ok); },
                                "b must have a's dtype Float, got Double", "other dtype");
  expect_throws<c10::TypeError>([&] { op.call(a, b, ok.to(at::kInt)); },
                                "perm must have dtype int64", "int32 perm");
  expect_throws<c10::ValueError>([&] { op.call(a, b, ok.view({3, 3})); }, "perm must be 1-D",
                                 "2-D perm");
  expect_throws<c10::ValueError>([&] { op.call(a, b, at::arange(8, at::kLong)); },
                                 "perm must have length a.size(1) + b.size(1) = 4 + 5 = 9, got 8",
                                 "wrong length");
  expect_throws<c10::IndexError>([&] { op.call(a, b, at::arange(1, 10, at::kLong)); },
                                 "perm entries must lie in [0, 9)", "entry too large");
  expect_throws<c10::ValueError>(
      [&] { op.call(a, b, at::tensor({0, 1, 1, 3, 4, 5, 6, 7, 8}, at::kLong)); },
      "perm must be a permutation of 0..8 (each index exactly once), got perm[2] = 1, also at "
      "perm[1]",
      "repeated entry");
}

void test_autograd() {
  const at::Tensor a = at::randn({3, 4, 2, 2}, at::kDouble).requires_grad_(true);
  const at::Tensor b = at::randn({3, 2, 2, 2}, at::kDouble).requires_grad_(true);
  const at::Tensor perm = at::randperm(6, at::kLong);
  const at::Tensor w = at::randn({3, 6, 2, 2}, at::kDouble);
  const at::Tensor y = cat_gather_op().call(a, b, perm);
  torch::autograd::backward({(y * w).sum()});
  // d/d(cat) sum(w * cat[:, perm]) places w[:, c] at channel perm[c]; a and b take their parts.
  const at::Tensor grad = at::cat({a.grad(), b.grad()}, 1);
  expect(at::equal(grad.index_select(1, perm), w), "gradient is the inverse gather, split");
}

}  // namespace

using autoshuffle_ext::test::failures;

int main() {
  at::manual_seed(0);
  test_values();
  test_forced_paths();
  test_empty();
  test_errors();
  test_autograd();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("cat_gather: all C++ checks passed (cpu capability %s)\n",
              at::get_cpu_capability().c_str());
  return 0;
}
