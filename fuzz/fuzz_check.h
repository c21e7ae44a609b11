// fuzz/fuzz_check.h — invariant checks for libFuzzer targets.
//
// FUZZ_CHECK(cond) aborts with the file, line and condition when an
// invariant the fuzzer can prove from the API does not hold, so libFuzzer
// records the input as a crash. Unlike assert() it stays on in NDEBUG builds.
#ifndef LIBVIRTIO_FUZZ_FUZZ_CHECK_H_
#define LIBVIRTIO_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, \
                   __LINE__, #cond);                                    \
      std::abort();                                                     \
    }                                                                   \
  } while (0)

#endif  // LIBVIRTIO_FUZZ_FUZZ_CHECK_H_
