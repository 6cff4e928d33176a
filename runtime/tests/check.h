/*
 * check.h - minimal test helpers: CHECK/CHECK_EQ count failures and print
 * file:line; check_report() prints "N passed, N failed" and gives the exit code.
 */
#ifndef FLAGOS_TESTS_CHECK_H
#define FLAGOS_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flagos/flagos.h"

static int check_passed, check_failed;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (cond) {                                                               \
      check_passed++;                                                         \
    } else {                                                                  \
      check_failed++;                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                         \
  } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    long long a_ = (long long)(a), b_ = (long long)(b);                                  \
    if (a_ == b_) {                                                                      \
      check_passed++;                                                                    \
    } else {                                                                             \
      check_failed++;                                                                    \
      fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld vs %lld)\n", __FILE__,     \
              __LINE__, #a, #b, a_, b_);                                                 \
    }                                                                                    \
  } while (0)

/* A flagos call that must succeed; prints the runtime's message if not. */
#define CHECK_OK(call)                                                                \
  do {                                                                                \
    flagos_status_t s_ = (call);                                                      \
    if (s_ == FLAGOS_SUCCESS) {                                                       \
      check_passed++;                                                                 \
    } else {                                                                          \
      check_failed++;                                                                 \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,             \
              flagos_status_string(s_), flagos_last_error());                         \
    }                                                                                 \
  } while (0)

/* A call that must fail with `status` and leave a message containing `text`. */
#define CHECK_ERR(call, status, text)                                                  \
  do {                                                                                 \
    flagos_clear_error();                                                              \
    flagos_status_t s_ = (call);                                                       \
    const char *m_ = flagos_last_error();                                              \
    if (s_ == (status) && strstr(m_, (text))) {                                        \
      check_passed++;                                                                  \
    } else {                                                                           \
      check_failed++;                                                                  \
      fprintf(stderr, "%s:%d: %s -> %s (want %s) message \"%s\" (want \"%s\")\n",      \
              __FILE__, __LINE__, #call, flagos_status_string(s_),                     \
              flagos_status_string(status), m_, (text));                               \
    }                                                                                  \
  } while (0)

static inline int check_report(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
