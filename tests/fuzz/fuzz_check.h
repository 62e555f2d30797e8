// The fuzz targets' invariant check: a failed one prints where and stops the
// run with a signal, which libFuzzer reports as a finding with its input.
#pragma once
#include <cstdio>

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
      __builtin_trap();                                                                \
    }                                                                                  \
  } while (0)
