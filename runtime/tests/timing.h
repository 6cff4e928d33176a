/* timing.h - small helpers shared by the stream/event tests. */
#ifndef FLAGOS_TESTS_TIMING_H
#define FLAGOS_TESTS_TIMING_H

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static inline double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Host function: sleeps for *(int *)ms milliseconds. */
static inline void sleep_fn(void *ms) { usleep((useconds_t)(*(int *)ms) * 1000u); }

/* Host function: sets an atomic flag. */
static inline void set_flag_fn(void *flag) { atomic_store((atomic_int *)flag, 1); }

/* Host function: spins until the flag is set (a gate the test opens). */
static inline void gate_fn(void *flag) {
  while (!atomic_load((atomic_int *)flag)) usleep(1000);
}

#endif
