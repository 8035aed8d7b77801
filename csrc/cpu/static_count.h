// A kernel templated on a small count (registers, groups), picked at run time.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace autoshuffle_ext::cpu {

namespace detail {
template <typename F, int... I>
bool with_count(int64_t n, F& f, std::integer_sequence<int, I...>) {
  return ((n == I + 1 && (f(std::integral_constant<int, I + 1>{}), true)) || ...);
}
}  // namespace detail

// Calls f(std::integral_constant<int, n>{}) for n in [1, kMax]; false (f not called) otherwise.
template <int kMax, typename F>
bool with_count(int64_t n, F&& f) {
  return detail::with_count(n, f, std::make_integer_sequence<int, kMax>{});
}

}  // namespace autoshuffle_ext::cpu
