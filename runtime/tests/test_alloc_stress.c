/* test_alloc_stress.c - 8 threads x thousands of random caching mallocs and
 * frees on shared streams of two devices; every block is filled through
 * the runtime and read back before its free, so overlap or reuse races
 * show up as corrupted bytes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

enum { THREADS = 8, ITERS = 1500, LIVE = 8, STREAMS_PER_DEVICE = 2 };

static flagos_stream_t streams[2][STREAMS_PER_DEVICE];
static atomic_int failures;

typedef struct {
  void *ptr;
  size_t size;
  unsigned char fill;
  flagos_stream_t stream;
} live_t;

static uint32_t rnd(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static size_t pick_size(uint32_t *seed) {
  uint32_t r = rnd(seed);
  if (r % 16 == 0) return 1 + rnd(seed) % (3u << 20); /* large pool now and then */
  return 1 + rnd(seed) % (64u << 10);
}

/* Reads the block back on its stream; checks head, tail and (if small) all of it. */
static bool verify(live_t *b, unsigned char *buf) {
  size_t n = b->size <= (64u << 10) ? b->size : 4096;
  if (flagos_memcpy_async(buf, b->ptr, n, FLAGOS_MEMCPY_DEVICE_TO_HOST, b->stream) ||
      flagos_memcpy_async(buf + n, (char *)b->ptr + b->size - n, n, FLAGOS_MEMCPY_DEVICE_TO_HOST,
                          b->stream) ||
      flagos_stream_synchronize(b->stream))
    return false;
  for (size_t i = 0; i < 2 * n; i++)
    if (buf[i] != b->fill) return false;
  return true;
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg, device = id % 2;
  uint32_t seed = 0x9E3779B9u * (uint32_t)(id + 1);
  unsigned char *buf = malloc(2 * (64u << 10));
  live_t live[LIVE] = {{0}};
  for (int it = 0; it < ITERS; it++) {
    live_t *b = &live[rnd(&seed) % LIVE];
    if (b->ptr) {
      if (!verify(b, buf)) atomic_fetch_add(&failures, 1);
      if (rnd(&seed) % 4 == 0) { /* sometimes hand it to another stream first */
        flagos_stream_t other = streams[device][rnd(&seed) % STREAMS_PER_DEVICE];
        if (flagos_caching_record_stream(b->ptr, other)) atomic_fetch_add(&failures, 1);
      }
      if (flagos_caching_free(b->ptr)) atomic_fetch_add(&failures, 1);
      b->ptr = NULL;
      continue;
    }
    b->size = pick_size(&seed);
    b->stream = streams[device][rnd(&seed) % STREAMS_PER_DEVICE];
    b->fill = (unsigned char)(id * 31 + it);
    if (flagos_caching_malloc(&b->ptr, b->size, device, b->stream) ||
        flagos_memset_async(b->ptr, b->fill, b->size, b->stream)) {
      atomic_fetch_add(&failures, 1);
      b->ptr = NULL;
    }
  }
  for (int i = 0; i < LIVE; i++) {
    if (!live[i].ptr) continue;
    if (!verify(&live[i], buf)) atomic_fetch_add(&failures, 1);
    flagos_caching_free(live[i].ptr);
  }
  free(buf);
  return NULL;
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "2", 1);
  CHECK_OK(flagos_init(NULL));
  for (int d = 0; d < 2; d++) {
    CHECK_OK(flagos_set_device(d));
    for (int i = 0; i < STREAMS_PER_DEVICE; i++) CHECK_OK(flagos_stream_create(&streams[d][i], 0));
  }
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  CHECK_EQ(atomic_load(&failures), 0);
  for (int d = 0; d < 2; d++) {
    flagos_allocator_stats_t s;
    for (int i = 0; i < STREAMS_PER_DEVICE; i++) CHECK_OK(flagos_stream_synchronize(streams[d][i]));
    CHECK_OK(flagos_caching_empty_cache());
    CHECK_OK(flagos_caching_get_stats(d, &s));
    CHECK_EQ(s.allocated_bytes, 0);
    CHECK_EQ(s.active_blocks, 0);
    CHECK_EQ(s.requested_bytes, 0);
    CHECK_EQ(s.reserved_bytes, 0);
    CHECK_EQ(s.num_allocs, s.num_frees);
    CHECK(s.num_allocs > 1000);
    CHECK(s.num_device_mallocs < s.num_allocs / 4); /* the cache did its job */
    for (int i = 0; i < STREAMS_PER_DEVICE; i++) CHECK_OK(flagos_stream_destroy(streams[d][i]));
  }
  return check_report();
}
