// The checks of the C++ (ctest) tests: each failed check is printed and counted, and main returns
// non-zero when `failures` is.
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <string>

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

}  // namespace autoshuffle_ext::test
