// CPU kernel of project_doubly_stochastic_ (schema: ops/projection.cpp): the projection that keeps
// a learned shuffle's M doubly stochastic after each step, fused. The ATen form in
// autoshuffle_ext/doubly_stochastic.py is the reference and defines the algorithm; this is the
// same sequence of operations on each matrix of the stack, in vectorised loops instead of some 200
// small tensor ops per stack. The matrices of the stack are independent: one task each.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "vectorised.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace autoshuffle_ext::cpu {
namespace {

constexpr int64_t kFirstNewtonSteps = 3;  // FIRST_NEWTON_STEPS of doubly_stochastic.py

// Every pass below walks the matrix row by row with independent lanes along the row, so that the
// compiler vectorises it: row reductions through `omp simd` (-fopenmp), column reductions as
// per-column accumulators. Sums are in T (float32 as ATen's own for float32). The clamped
// difference is named (d) and counted by a select on it: written as max(expression, 0) and a test
// of that result, gcc left the polish's loops scalar below AVX-512, 3x slower at n = 192. Each
// matrix runs compiled for the CPU's widest ISA (vectorised.h).

template <typename T>
inline T row_sum(const T* row, int64_t n) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += row[j];
  return sum;
}

template <typename T>
void column_sums(const T* m, int64_t n, T* cols) {
  std::fill(cols, cols + n, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const T* row = m + i * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) cols[j] += row[j];
  }
}

// u[i]: the shift of row i with sum_j max(m[i, j] - v[j] - u[i], 0) = 1 (`_shift` along rows;
// v is zero in the first round), Newton's method from the mean shift or from the last u.
template <typename T>
void shift_rows(const T* m, int64_t n, const T* v, T* u, bool warm, int64_t steps) {
  for (int64_t i = 0; i < n; ++i) {
    const T* row = m + i * n;
    T tau = u[i];
    if (!warm) {
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) sum += row[j] - v[j];
      tau = (sum - 1) / static_cast<T>(n);
    }
    for (int64_t s = 0; s < steps; ++s) {
      T sum = 0;
      T count = 0;
#pragma omp simd reduction(+ : sum, count)
      for (int64_t j = 0; j < n; ++j) {
        const T d = row[j] - v[j] - tau;
        sum += std::max(d, T(0));
        count += d > 0 ? T(1) : T(0);
      }
      tau += (sum - 1) / std::max<T>(count, T(1));
    }
    u[i] = tau;
  }
}

// v[j]: the shift of column j with sum_i max(m[i, j] - u[i] - v[j], 0) = 1, all columns at once
// (`_shift` along columns), row by row.
template <typename T>
void shift_columns(const T* m, int64_t n, const T* u, T* v, bool warm, int64_t steps, T* sum,
                   T* count) {
  if (!warm) {
    std::fill(sum, sum + n, T(0));
    for (int64_t i = 0; i < n; ++i) {
      const T* row = m + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) sum[j] += row[j] - u[i];
    }
    for (int64_t j = 0; j < n; ++j) v[j] = (sum[j] - 1) / static_cast<T>(n);
  }
  for (int64_t s = 0; s < steps; ++s) {
    std::fill(sum, sum + n, T(0));
    std::fill(count, count + n, T(0));
    for (int64_t i = 0; i < n; ++i) {
      const T* row = m + i * n;
      const T ui = u[i];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T d = row[j] - ui - v[j];
        sum[j] += std::max(d, T(0));
        count[j] += d > 0 ? T(1) : T(0);
      }
    }
    for (int64_t j = 0; j < n; ++j) v[j] += (sum[j] - 1) / std::max<T>(count[j], T(1));
  }
}

template <typename T>
void project_one(T* m, int64_t n, int64_t iters, int64_t polish) {
  const int64_t nn = n * n;
  std::vector<T> rows(n), cols(n), u(n, 0), v(n, 0), count(n);
  // Threshold, then divide by the peak (scaling is invariant to it; it keeps sums finite).
  T peak = 0;
#pragma omp simd reduction(max : peak)
  for (int64_t k = 0; k < nn; ++k) {
    const T x = std::max(m[k], T(0));
    m[k] = x;
    peak = std::max(peak, x);
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
  column_sums(m, n, cols.data());
  for (int64_t i = 0; i < n; ++i) rows[i] = row_sum(m + i * n, n);
  const T uniform = T(1) / static_cast<T>(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (rows[i] == 0 || cols[j] == 0) m[i * n + j] = uniform;
    }
  }
  // Scaling: columns, then rows; sums clamped at the smallest normal number.
  const T tiny = std::numeric_limits<T>::min();
  for (int64_t it = 0; it < iters; ++it) {
    column_sums(m, n, cols.data());
    for (int64_t j = 0; j < n; ++j) cols[j] = std::max(cols[j], tiny);
    for (int64_t i = 0; i < n; ++i) {
      T* row = m + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] /= cols[j];
      const T r = std::max(row_sum(row, n), tiny);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] /= r;
    }
  }
  // The polish: block coordinate ascent on the dual of the Euclidean projection, u per row and v
  // per column, each warm-started from the round before.
  for (int64_t r = 0; r < polish; ++r) {
    const int64_t steps = r == 0 ? kFirstNewtonSteps : 1;
    shift_rows(m, n, v.data(), u.data(), r > 0, steps);
    shift_columns(m, n, u.data(), v.data(), r > 0, steps, cols.data(), count.data());
  }
  if (polish > 0) {
    for (int64_t i = 0; i < n; ++i) {
      T* row = m + i * n;
      const T ui = u[i];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T d = row[j] - ui - v[j];
        row[j] = std::max(d, T(0));
      }
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
      run_vectorised([&] {
        for (int64_t b = begin; b < end; ++b) {
          project_one<scalar_t>(data + b * n * n, n, iters, polish);
        }
      });
    });
  });
}

TORCH_LIBRARY_IMPL(autoshuffle_ext, CPU, m) {
  m.impl("project_doubly_stochastic_", &project_doubly_stochastic_);
}

}  // namespace autoshuffle_ext::cpu
