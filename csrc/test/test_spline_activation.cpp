// C++ (libtorch) test of spline_activation's CPU kernels, run by ctest: the ops are found through
// the dispatcher, as a C++ user would, and compared with a reference written in ATen ops (floor,
// clamp, gathers and index_add, in float64) over layouts, dtypes and thread counts.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "expect.h"

namespace {

using autoshuffle_ext::test::expect;
using autoshuffle_ext::test::expect_throws;
using autoshuffle_ext::test::failures;

using ForwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, double);
using BackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, double, bool, bool);

auto forward_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("autoshuffle_ext::spline_activation", "")
      .typed<ForwardFn>();
}

auto backward_op() {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("autoshuffle_ext::spline_activation_backward", "")
      .typed<BackwardFn>();
}

constexpr double kSpacing = 0.125;

// (flat index of each element's left knot in coefficients.view(-1), t), in float64.
std::pair<at::Tensor, at::Tensor> segments(const at::Tensor& x, int64_t C, int64_t K) {
  const int64_t half = K / 2;
  const at::Tensor u = x.to(at::kDouble) / kSpacing;
  const at::Tensor low = at::floor(u).clamp(-half, K - 2 - half);
  std::vector<int64_t> view(x.dim(), 1);
  view[1] = C;
  const at::Tensor offsets = (at::arange(C, at::kLong) * K + half).view(view);
  return {low.to(at::kLong) + offsets, u - low};
}

at::Tensor reference_forward(const at::Tensor& x, const at::Tensor& c) {
  const auto [index, t] = segments(x, c.size(0), c.size(1));
  const at::Tensor flat = c.to(at::kDouble).reshape(-1);
  const at::Tensor left = flat.index({index});
  const at::Tensor right = flat.index({index + 1});
  return left + t * (right - left);
}

std::pair<at::Tensor, at::Tensor> reference_backward(const at::Tensor& grad, const at::Tensor& x,
                                                     const at::Tensor& c) {
  const auto [index, t] = segments(x, c.size(0), c.size(1));
  const at::Tensor flat = c.to(at::kDouble).reshape(-1);
  const at::Tensor g = grad.to(at::kDouble);
  const at::Tensor dx = g * ((flat.index({index + 1}) - flat.index({index})) / kSpacing);
  const at::Tensor right = (t * g).reshape(-1);
  const at::Tensor left = g.reshape(-1) - right;
  at::Tensor dc = at::zeros_like(flat);
  dc.index_add_(0, index.reshape(-1), left);
  dc.index_add_(0, index.reshape(-1) + 1, right);
  return {dx, dc.view(c.sizes())};
}

double max_error(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::string describe(const at::Tensor& x, int64_t K, int threads) {
  std::string s = std::string(c10::toString(x.scalar_type())) + " shape [";
  for (auto d : x.sizes()) s += std::to_string(d) + ",";
  s += "] strides [";
  for (auto d : x.strides()) s += std::to_string(d) + ",";
  return s + "] K " + std::to_string(K) + " threads " + std::to_string(threads);
}

at::Tensor sample(at::IntArrayRef shape, int64_t K, at::ScalarType dtype) {
  const double width = 1.5 * kSpacing * static_cast<double>(K / 2) + kSpacing;
  return ((at::rand(shape, at::kDouble) * 2 - 1) * width).to(dtype);
}

void check(const at::Tensor& x, const at::Tensor& c, double tol, int threads) {
  at::set_num_threads(threads);
  const std::string what = describe(x, c.size(1), threads);
  const at::Tensor y = forward_op().call(x, c, kSpacing);
  expect(y.dtype() == x.dtype() && y.sizes() == x.sizes(), "forward shape/dtype: " + what);
  expect(!x.is_non_overlapping_and_dense() || y.strides() == x.strides(),
         "forward keeps x's strides: " + what);
  expect(max_error(y, reference_forward(x, c)) <= tol, "forward values: " + what);
  const at::Tensor grad = at::randn(x.sizes(), at::kDouble).to(x.scalar_type());
  const auto [dx, dc] = backward_op().call(grad, x, c, kSpacing, true, true);
  const auto [dx_ref, dc_ref] = reference_backward(grad, x, c);
  expect(dc.dtype() == c.dtype() && dc.sizes() == c.sizes(), "dc shape/dtype: " + what);
  expect(max_error(dx, dx_ref) <= tol * 8, "dx values: " + what);
  // dc sums up to numel / C values per bin: relative to the sum of their magnitudes.
  const double scale = grad.to(at::kDouble).abs().sum().item<double>() / c.size(0);
  expect(max_error(dc, dc_ref) <= tol * scale, "dc values: " + what);
  const auto [dx_only, none] = backward_op().call(grad, x, c, kSpacing, true, false);
  expect(none.numel() == 0 && at::equal(dx_only, dx), "need_x only: " + what);
  const auto [empty, dc_only] = backward_op().call(grad, x, c, kSpacing, false, true);
  expect(empty.numel() == 0 && max_error(dc_only, dc) <= tol * scale, "need_c only: " + what);
}

void test_values() {
  const std::vector<std::vector<int64_t>> shapes = {
      {4, 6, 40, 40}, {2, 5, 3, 4}, {64, 33}, {3, 1, 50, 60}, {1, 300, 8, 8}};
  for (int threads : {1, 2, 4}) {
    for (const auto& shape : shapes) {
      for (int64_t K : {2, 5, 51}) {
        const at::Tensor x64 = sample(shape, K, at::kDouble);
        const at::Tensor c64 = at::randn({shape[1], K}, at::kDouble);
        check(x64, c64, 1e-12, threads);
        const at::Tensor x32 = x64.to(at::kFloat);
        check(x32, c64.to(at::kFloat), 1e-4, threads);
        if (shape.size() == 4) {
          check(x64.contiguous(at::MemoryFormat::ChannelsLast), c64, 1e-12, threads);
          check(x32.contiguous(at::MemoryFormat::ChannelsLast), c64.to(at::kFloat), 1e-4,
                threads);
          check(x64.slice(3, 0, shape[3], 2), c64, 1e-12, threads);  // strided: copied
        }
      }
    }
  }
  // float16 / bfloat16 inputs with float32 knots (float32 arithmetic).
  const at::Tensor c = at::randn({6, 21}, at::kFloat);
  for (auto dtype : {at::kHalf, at::kBFloat16}) {
    const at::Tensor x = sample({2, 6, 9, 9}, 21, dtype);
    const at::Tensor y = forward_op().call(x, c, kSpacing);
    const double bound = dtype == at::kHalf ? 1e-2 : 5e-2;
    expect(max_error(y, reference_forward(x, c)) <= bound, "forward of a half x");
    const auto [dx, dc] = backward_op().call(at::ones_like(x), x, c, kSpacing, true, true);
    expect(dx.scalar_type() == dtype && dc.scalar_type() == at::kFloat, "half dtypes");
    const auto [dx_ref, dc_ref] = reference_backward(at::ones_like(x), x, c);
    expect(max_error(dc, dc_ref) <= 1e-3 * x.numel() / 6, "dc of a half x");
  }
}

void test_empty_and_errors() {
  const at::Tensor c = at::randn({5, 7}, at::kDouble);
  const at::Tensor x = at::empty({0, 5, 3, 3}, at::kDouble);
  expect(forward_op().call(x, c, kSpacing).sizes() == x.sizes(), "empty forward");
  const auto [dx, dc] = backward_op().call(x, x, c, kSpacing, true, true);
  expect(dx.sizes() == x.sizes() && at::equal(dc, at::zeros_like(c)), "empty backward");
  const at::Tensor ok = at::randn({2, 5, 3}, at::kDouble);
  expect_throws<c10::ValueError>([&] { forward_op().call(ok, c, 0.0); },
                                 "spacing must be a finite", "spacing 0");
  expect_throws<c10::ValueError>([&] { forward_op().call(ok, c.narrow(1, 0, 1), kSpacing); },
                                 "K >= 2", "one knot");
  expect_throws<c10::TypeError>([&] { forward_op().call(ok.to(at::kFloat), c, kSpacing); },
                                "coefficients must have x's dtype", "dtype mismatch");
  expect_throws<c10::TypeError>([&] { forward_op().call(ok.to(at::kLong), c, kSpacing); },
                                "x must be float16", "integer x");
  expect_throws<c10::ValueError>(
      [&] { backward_op().call(ok.narrow(2, 0, 1), ok, c, kSpacing, true, true); },
      "grad must have x's shape", "grad shape");
}

}  // namespace

int main() {
  at::manual_seed(0);
  test_values();
  test_empty_and_errors();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("spline_activation: all C++ checks passed (%d threads at most)\n", 4);
  return 0;
}
