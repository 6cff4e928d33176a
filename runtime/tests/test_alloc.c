/* test_alloc.c - caching allocator: per-stream reuse, record_stream,
 * split/merge, empty_cache, OOM retry and message, statistics, bad pointers. */
#include <stdint.h>

#include "check.h"
#include "core/testing.h"
#include "timing.h"

#define MiB ((size_t)1 << 20)

static flagos_allocator_stats_t stats(int device) {
  flagos_allocator_stats_t s;
  memset(&s, 0xff, sizeof s);
  flagos_caching_get_stats(device, &s);
  return s;
}

static void arguments(flagos_stream_t s0, flagos_stream_t s1) {
  void *p = (void *)1;
  CHECK_OK(flagos_caching_malloc(&p, 0, 0, s0));
  CHECK(p == NULL);
  CHECK_ERR(flagos_caching_malloc(NULL, 8, 0, s0), FLAGOS_ERROR_INVALID_ARGUMENT, "ptr is NULL");
  CHECK_ERR(flagos_caching_malloc(&p, 8, 3, s0), FLAGOS_ERROR_INVALID_DEVICE,
            "device index 3 is out of range: flagos has 2 devices");
  CHECK_ERR(flagos_caching_malloc(&p, 8, 0, s1), FLAGOS_ERROR_INVALID_ARGUMENT,
            "belongs to device 1, not device 0");
  flagos_stream_t gone;
  CHECK_OK(flagos_stream_create(&gone, 0));
  CHECK_OK(flagos_stream_destroy(gone));
  CHECK_ERR(flagos_caching_malloc(&p, 8, 0, gone), FLAGOS_ERROR_INVALID_HANDLE, "stream");
  int local;
  char want[64];
  snprintf(want, sizeof want, "pointer %p was not allocated", (void *)&local);
  CHECK_ERR(flagos_caching_free(&local), FLAGOS_ERROR_INVALID_HANDLE, want);
  CHECK_ERR(flagos_caching_record_stream(&local, s0), FLAGOS_ERROR_INVALID_HANDLE, "not allocated");
  size_t bs;
  CHECK_ERR(flagos_caching_block_size(&local, &bs), FLAGOS_ERROR_INVALID_HANDLE, "not allocated");
  CHECK_OK(flagos_caching_free(NULL));
  CHECK_ERR(flagos_caching_get_stats(2, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  flagos_allocator_stats_t st;
  CHECK_ERR(flagos_caching_get_stats(-1, &st), FLAGOS_ERROR_INVALID_DEVICE, "device index -1");
  CHECK_ERR(flagos_caching_reset_peak_stats(7), FLAGOS_ERROR_INVALID_DEVICE, "device index 7");

  /* A freed block: double free and use of its pointer are errors. */
  CHECK_OK(flagos_caching_malloc(&p, 100, 0, s0));
  CHECK_OK(flagos_caching_free(p));
  CHECK_ERR(flagos_caching_free(p), FLAGOS_ERROR_INVALID_HANDLE, "already freed");
}

static void reuse_and_streams(flagos_stream_t a, flagos_stream_t b) {
  flagos_allocator_stats_t s = stats(0);
  CHECK_EQ(s.reserved_bytes, 0);
  void *p, *q, *r;
  CHECK_OK(flagos_caching_malloc(&p, 1000, 0, a));
  size_t bs = 0;
  CHECK_OK(flagos_caching_block_size(p, &bs));
  CHECK_EQ(bs, 1024);
  s = stats(0);
  CHECK_EQ(s.allocated_bytes, 1024);
  CHECK_EQ(s.requested_bytes, 1000);
  CHECK_EQ(s.reserved_bytes, 2 * MiB); /* one small segment */
  CHECK_EQ(s.segments, 1);
  CHECK_EQ(s.active_blocks, 1);
  CHECK_OK(flagos_caching_free(p));
  CHECK_OK(flagos_caching_malloc(&q, 1000, 0, a));
  CHECK(q == p); /* same stream: reused at once */
  CHECK_OK(flagos_caching_malloc(&r, 1000, 0, b));
  CHECK(r != p);
  CHECK_EQ(stats(0).segments, 2); /* another stream never takes a's blocks */
  CHECK_OK(flagos_caching_free(q));
  CHECK_OK(flagos_caching_free(r));

  /* Data written through the runtime survives in the block. */
  unsigned char buf[4096];
  CHECK_OK(flagos_caching_malloc(&p, 4096, 0, a));
  CHECK_OK(flagos_memset_async(p, 0x3C, 4096, a));
  CHECK_OK(flagos_memcpy_async(buf, p, 4096, FLAGOS_MEMCPY_DEVICE_TO_HOST, a));
  CHECK_OK(flagos_stream_synchronize(a));
  CHECK(buf[0] == 0x3C && buf[4095] == 0x3C);
  CHECK_OK(flagos_caching_free(p));

  /* record_stream: no reuse until b's work at free time is done. */
  flagos_stream_t c;
  CHECK_OK(flagos_stream_create(&c, 0));
  atomic_int gate = 0;
  CHECK_OK(flagos_caching_malloc(&p, 4096, 0, c));
  CHECK_OK(flagos_caching_record_stream(p, b));
  CHECK_OK(flagos_caching_record_stream(p, b)); /* twice is once */
  CHECK_OK(flagos_caching_record_stream(p, c)); /* its own stream: nothing to do */
  CHECK_OK(flagos_launch_host_func(b, gate_fn, &gate));
  CHECK_OK(flagos_caching_free(p));
  s = stats(0);
  CHECK_EQ(s.allocated_bytes, 0); /* counted free at once, like CUDA */
  CHECK_OK(flagos_caching_malloc(&q, 4096, 0, c));
  CHECK(q != p);
  atomic_store(&gate, 1);
  CHECK_OK(flagos_stream_synchronize(b));
  CHECK_OK(flagos_caching_malloc(&r, 4096, 0, c));
  CHECK(r == p); /* returned to c's pool once the event completed */
  CHECK_OK(flagos_caching_free(q));
  CHECK_OK(flagos_caching_free(r));
  CHECK_OK(flagos_stream_destroy(c));
}

static void split_merge_empty(flagos_stream_t a) {
  CHECK_OK(flagos_caching_empty_cache());
  flagos_allocator_stats_t s = stats(0);
  CHECK_EQ(s.reserved_bytes, 0);
  CHECK_EQ(s.segments, 0);
  CHECK_EQ(s.num_device_frees, s.num_device_mallocs);
  void *x, *y, *z;
  CHECK_OK(flagos_caching_malloc(&x, 3 * MiB, 0, a));
  CHECK_EQ(stats(0).reserved_bytes, 20 * MiB); /* large requests < 10 MiB share 20 MiB */
  CHECK_OK(flagos_caching_malloc(&y, 3 * MiB, 0, a));
  CHECK(y == (char *)x + 3 * MiB); /* split from the same segment */
  s = stats(0);
  CHECK_EQ(s.reserved_bytes, 20 * MiB);
  CHECK_EQ(s.allocated_bytes, 6 * MiB);
  CHECK_OK(flagos_caching_free(x));
  CHECK_OK(flagos_caching_free(y));
  s = stats(0);
  CHECK_EQ(s.allocated_bytes, 0);
  CHECK_EQ(s.reserved_bytes, 20 * MiB);
  CHECK_OK(flagos_caching_malloc(&z, 19 * MiB, 0, a)); /* fits only if merged back */
  CHECK(z == x);
  s = stats(0);
  CHECK_EQ(s.reserved_bytes, 20 * MiB);
  CHECK_EQ(s.segments, 1);
  CHECK_OK(flagos_caching_free(z));
  CHECK_OK(flagos_caching_malloc(&z, 11 * MiB + 5, 0, a));
  CHECK_OK(flagos_caching_block_size(z, &(size_t){0}));
  CHECK_OK(flagos_caching_free(z));
  /* Small requests never come from the large pool. */
  CHECK_OK(flagos_caching_malloc(&x, 512 * 1024, 0, a));
  CHECK_EQ(stats(0).reserved_bytes, 22 * MiB);
  CHECK_OK(flagos_caching_free(x));
  uint64_t frees = stats(0).num_device_frees;
  CHECK_OK(flagos_caching_empty_cache());
  s = stats(0);
  CHECK_EQ(s.reserved_bytes, 0);
  CHECK_EQ(s.num_device_frees, frees + 2);
  size_t fr, tot;
  CHECK_OK(flagos_mem_get_info(0, &fr, &tot));
  CHECK_EQ(fr, tot); /* everything went back to the vendor */
}

static void oom_and_retry(flagos_stream_t s1) {
  /* Device 1, limit 64 MiB. */
  CHECK_OK(flagos_caching_reset_accumulated_stats(1));
  void *x, *y, *z;
  CHECK_OK(flagos_caching_malloc(&x, 30 * MiB, 1, s1));
  CHECK_OK(flagos_caching_free(x)); /* 30 MiB cached */
  CHECK_OK(flagos_caching_malloc(&y, 40 * MiB, 1, s1)); /* fits only after freeing the cache */
  flagos_allocator_stats_t s = stats(1);
  CHECK_EQ(s.num_alloc_retries, 1);
  CHECK_EQ(s.reserved_bytes, 40 * MiB);
  CHECK_EQ(s.num_ooms, 0);
  CHECK_ERR(flagos_caching_malloc(&z, 50 * MiB, 1, s1), FLAGOS_ERROR_OUT_OF_MEMORY,
            "flagos: out of memory on device 1: tried to allocate 50.00 MiB; 40.00 MiB allocated, "
            "40.00 MiB reserved (0 bytes cached); device total 64.00 MiB, 24.00 MiB free");
  CHECK(strstr(flagos_last_error(), "limit 64.00 MiB") != NULL); /* the vendor's own words */
  s = stats(1);
  CHECK_EQ(s.num_ooms, 1);
  CHECK_EQ(s.num_alloc_retries, 2);
  CHECK_OK(flagos_caching_free(y));
  CHECK_OK(flagos_caching_malloc(&z, 50 * MiB, 1, s1)); /* recovers (a third retry) */
  CHECK_EQ(stats(1).num_alloc_retries, 3);
  CHECK_OK(flagos_caching_free(z));

  /* An injected failure: the retry succeeds and no OOM is reported. */
  CHECK_OK(flagos_caching_empty_cache());
  flagos_testing_fail_device_malloc(0, 1);
  CHECK_OK(flagos_caching_malloc(&x, 1000, 1, s1));
  s = stats(1);
  CHECK_EQ(s.num_alloc_retries, 4);
  CHECK_EQ(s.num_ooms, 1);
  CHECK_OK(flagos_caching_free(x));
  flagos_testing_fail_device_malloc(0, -1);
  CHECK_OK(flagos_caching_malloc(&x, 1000, 1, s1)); /* served from the cache: no vendor call */
  CHECK_OK(flagos_caching_free(x));
  CHECK_OK(flagos_caching_empty_cache());
  CHECK_ERR(flagos_caching_malloc(&x, 1000, 1, s1), FLAGOS_ERROR_OUT_OF_MEMORY, "injected");
  flagos_testing_fail_device_malloc(-1, 0);
  CHECK_EQ(stats(1).num_ooms, 2);
}

static void peaks(flagos_stream_t a) {
  CHECK_OK(flagos_caching_empty_cache());
  CHECK_OK(flagos_caching_reset_peak_stats(0));
  CHECK_OK(flagos_caching_reset_accumulated_stats(0));
  flagos_allocator_stats_t s = stats(0);
  CHECK_EQ(s.peak_allocated_bytes, 0);
  CHECK_EQ(s.peak_reserved_bytes, 0);
  CHECK_EQ(s.num_allocs, 0);
  void *x, *y;
  CHECK_OK(flagos_caching_malloc(&x, 4 * MiB, 0, a));
  CHECK_OK(flagos_caching_malloc(&y, 2 * MiB, 0, a));
  CHECK_OK(flagos_caching_free(x));
  s = stats(0);
  CHECK_EQ(s.allocated_bytes, 2 * MiB);
  CHECK_EQ(s.peak_allocated_bytes, 6 * MiB);
  CHECK_EQ(s.peak_reserved_bytes, 20 * MiB);
  CHECK_EQ(s.num_allocs, 2);
  CHECK_EQ(s.num_frees, 1);
  CHECK_EQ(s.num_device_mallocs, 1);
  CHECK_OK(flagos_caching_reset_peak_stats(0));
  s = stats(0);
  CHECK_EQ(s.peak_allocated_bytes, 2 * MiB);
  CHECK_EQ(s.peak_reserved_bytes, 20 * MiB);
  CHECK_OK(flagos_caching_free(y));
  CHECK_OK(flagos_caching_empty_cache());
  s = stats(0);
  CHECK_EQ(s.peak_reserved_bytes, 20 * MiB); /* peaks survive frees */
  CHECK_EQ(s.num_device_frees, 1);
  CHECK_OK(flagos_caching_reset_accumulated_stats(0));
  s = stats(0);
  CHECK(s.num_allocs == 0 && s.num_frees == 0 && s.num_device_mallocs == 0 &&
        s.num_device_frees == 0 && s.num_alloc_retries == 0 && s.num_ooms == 0);
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "2", 1);
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "64M", 1);
  unsetenv("FLAGOS_ALLOC_NO_CACHE");
  CHECK_OK(flagos_init(NULL));
  flagos_stream_t a, b, s1;
  CHECK_OK(flagos_stream_create(&a, 0));
  CHECK_OK(flagos_stream_create(&b, 0));
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_stream_create(&s1, 0));
  CHECK_OK(flagos_set_device(0));
  arguments(a, s1);
  CHECK_OK(flagos_caching_empty_cache());
  reuse_and_streams(a, b);
  split_merge_empty(a);
  oom_and_retry(s1);
  peaks(a);
  void *p;
  CHECK_OK(flagos_caching_malloc(&p, 64, 0, NULL)); /* NULL: the device's default stream */
  CHECK_OK(flagos_caching_free(p));
  CHECK_OK(flagos_caching_empty_cache());
  CHECK_OK(flagos_stream_destroy(a));
  CHECK_OK(flagos_stream_destroy(b));
  CHECK_OK(flagos_stream_destroy(s1));
  return check_report();
}
