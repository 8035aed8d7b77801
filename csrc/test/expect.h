// The checks of the C++ (ctest) tests: each failed check is printed and counted, and main returns
// non-zero when `failures` is.
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>

#include "cpu/features.h"
#include "cpu/gather_plan.h"

namespace autoshuffle_ext::test {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

// Expects `fn` to throw an exception of type E whose message contains `part`.
template <typename E>
void expect_throws(const std::function<void()>& fn, const std::string& part,
                   const std::string& what) {
  try {
    fn();
  } catch (const E& e) {
    expect(std::string(e.what()).find(part) != std::string::npos,
           what + ": message lacks '" + part + "': " + e.what());
    return;
  } catch (const std::exception& e) {
    expect(false, what + ": wrong exception type: " + e.what());
    return;
  }
  expect(false, what + ": did not throw");
}

// Forces the CPU gathers' path while in scope (as AUTOSHUFFLE_GATHER_PATH would).
class ForcePath {
 public:
  explicit ForcePath(const std::string& paths)
      : previous_(autoshuffle_ext::cpu::set_forced_gather_paths(paths)) {}
  ~ForcePath() { autoshuffle_ext::cpu::set_forced_gather_paths(previous_); }
  ForcePath(const ForcePath&) = delete;
  ForcePath& operator=(const ForcePath&) = delete;

 private:
  std::optional<std::string> previous_;
};

// Whether this CPU has the instructions of the path named `name` (by its suffix).
inline bool path_on_this_cpu(const std::string& name) {
  using autoshuffle_ext::cpu::Isa;
  const auto ends_with = [&](const std::string& tail) {
    return name.size() >= tail.size() &&
           name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  if (ends_with("_avx512")) return autoshuffle_ext::cpu::isa_supported(Isa::kAvx512);
  if (ends_with("_avx2")) return autoshuffle_ext::cpu::isa_supported(Isa::kAvx2);
  return true;
}

}  // namespace autoshuffle_ext::test
