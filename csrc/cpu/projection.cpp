// CPU kernel of project_doubly_stochastic_ (schema: ops/projection.cpp): the projection that keeps
// a learned shuffle's M doubly stochastic after each step, fused. The ATen form in
// autoshuffle_ext/doubly_stochastic.py is the reference and defines the algorithm; this is the
// same sequence of operations on each matrix of the stack, in one pass of loops instead of some
// 200 small tensor ops per stack (20 ms of a ShuffleNet training step on two cores), with the sums
// accumulated in float64. The matrices of the stack are independent: one task each.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace autoshuffle_ext::cpu {
namespace {

constexpr int64_t kFirstNewtonSteps = 3;  // FIRST_NEWTON_STEPS of doubly_stochastic.py

// Newton steps on tau of one line: sum over the line of max(a - tau, 0) = 1, where a[k] is
// line(k) (see `_shift`). tau starts at the mean shift unless warm.
template <typename T, typename Line>
T shift(int64_t n, Line line, T tau, bool warm, int64_t steps) {
  if (!warm) {
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) sum += line(k);
    tau = static_cast<T>((sum - 1) / static_cast<double>(n));
  }
  for (int64_t s = 0; s < steps; ++s) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t k = 0; k < n; ++k) {
      const T w = std::max<T>(line(k) - tau, T(0));
      sum += w;
      count += w > 0;
    }
    tau = tau + static_cast<T>((sum - 1) / static_cast<double>(std::max<int64_t>(count, 1)));
  }
  return tau;
}

template <typename T>
void project_one(T* m, int64_t n, int64_t iters, int64_t polish) {
  const int64_t nn = n * n;
  std::vector<double> rows(n), cols(n);
  auto line_sums = [&] {
    std::fill(rows.begin(), rows.end(), 0.0);
    std::fill(cols.begin(), cols.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        rows[i] += m[i * n + j];
        cols[j] += m[i * n + j];
      }
    }
  };
  // Threshold, then divide by the peak (scaling is invariant to it; it keeps sums finite).
  T peak = 0;
  for (int64_t k = 0; k < nn; ++k) {
    m[k] = std::max<T>(m[k], T(0));
    peak = std::max(peak, m[k]);
  }
  T factor = 1;
  if (iters > 0) {
    factor = peak > 0 ? peak : T(1);
  } else {
    const T eps = std::numeric_limits<T>::epsilon();
    const T limit = std::min<T>(1 / eps, std::numeric_limits<T>::max() / (4 * static_cast<T>(n)));
    factor = peak > limit ? peak : T(1);
  }
  for (int64_t k = 0; k < nn; ++k) m[k] /= factor;
  // A line that thresholding left all zero is reset to uniform: no scaling brings it back.
  line_sums();
  const T uniform = T(1) / static_cast<T>(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (rows[i] == 0 || cols[j] == 0) m[i * n + j] = uniform;
    }
  }
  // Scaling: columns, then rows; sums clamped at the smallest normal number.
  const double tiny = std::numeric_limits<T>::min();
  for (int64_t it = 0; it < iters; ++it) {
    line_sums();
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) m[i * n + j] /= static_cast<T>(std::max(cols[j], tiny));
    }
    std::fill(rows.begin(), rows.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) rows[i] += m[i * n + j];
    }
    for (int64_t i = 0; i < n; ++i) {
      const T r = static_cast<T>(std::max(rows[i], tiny));
      for (int64_t j = 0; j < n; ++j) m[i * n + j] /= r;
    }
  }
  if (polish == 0) return;
  // The polish: block coordinate ascent on the dual of the Euclidean projection, u per row and v
  // per column, each warm-started from the round before.
  std::vector<T> u(n, 0), v(n, 0);
  for (int64_t r = 0; r < polish; ++r) {
    const int64_t steps = r == 0 ? kFirstNewtonSteps : 1;
    for (int64_t i = 0; i < n; ++i) {
      const T* row = m + i * n;
      u[i] = r == 0 ? shift<T>(n, [&](int64_t j) { return row[j]; }, u[i], false, steps)
                    : shift<T>(n, [&](int64_t j) { return row[j] - v[j]; }, u[i], true, steps);
    }
    for (int64_t j = 0; j < n; ++j) {
      v[j] = shift<T>(n, [&](int64_t i) { return m[i * n + j] - u[i]; }, v[j], r > 0, steps);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      m[i * n + j] = std::max<T>(m[i * n + j] - u[i] - v[j], T(0));
    }
  }
}

}  // namespace

void project_doubly_stochastic_(at::Tensor& M, int64_t iters, int64_t polish) {
  TORCH_CHECK_VALUE(M.dim() == 3 && M.size(1) == M.size(2),
                    "project_doubly_stochastic_: M must be a [B, n, n] stack, got ", M.sizes());
  TORCH_CHECK_VALUE(M.is_contiguous(), "project_doubly_stochastic_: M must be contiguous");
  TORCH_CHECK_TYPE(M.scalar_type() == at::kFloat || M.scalar_type() == at::kDouble,
                   "project_doubly_stochastic_: M must be float32 or float64, got ",
                   M.scalar_type());
  TORCH_CHECK_VALUE(iters >= 0 && polish >= 0, "project_doubly_stochastic_: iters and polish ",
                    "must be >= 0, got ", iters, " and ", polish);
  const int64_t B = M.size(0);
  const int64_t n = M.size(1);
  if (M.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "project_doubly_stochastic_", [&] {
    scalar_t* data = M.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) project_one<scalar_t>(data + b * n * n, n, iters, polish);
    });
  });
}

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("project_doubly_stochastic_", &project_doubly_stochastic_);
}

}  // namespace autoshuffle_ext::cpu
