/* test_alloc_nocache.c - FLAGOS_ALLOC_NO_CACHE=1: every caching call goes
 * straight to the vendor (still honouring record_stream). */
#include "check.h"
#include "timing.h"

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "1", 1);
  setenv("FLAGOS_ALLOC_NO_CACHE", "1", 1);
  CHECK_OK(flagos_init(NULL));
  flagos_stream_t a, b;
  CHECK_OK(flagos_stream_create(&a, 0));
  CHECK_OK(flagos_stream_create(&b, 0));
  flagos_allocator_stats_t s;
  void *p, *q;
  for (int i = 0; i < 3; i++) {
    CHECK_OK(flagos_caching_malloc(&p, 1000, 0, a));
    size_t bs = 0;
    CHECK_OK(flagos_caching_block_size(p, &bs));
    CHECK_EQ(bs, 1024);
    CHECK_OK(flagos_caching_free(p));
  }
  CHECK_OK(flagos_caching_get_stats(0, &s));
  CHECK_EQ(s.num_device_mallocs, 3);
  CHECK_EQ(s.num_device_frees, 3);
  CHECK_EQ(s.reserved_bytes, 0);
  CHECK_EQ(s.peak_reserved_bytes, 1024);

  atomic_int gate = 0;
  CHECK_OK(flagos_caching_malloc(&p, 5u << 20, 0, a));
  CHECK_OK(flagos_caching_record_stream(p, b));
  CHECK_OK(flagos_launch_host_func(b, gate_fn, &gate));
  CHECK_OK(flagos_caching_free(p));
  CHECK_OK(flagos_caching_get_stats(0, &s));
  CHECK_EQ(s.reserved_bytes, 5u << 20); /* held until b is done with it */
  atomic_store(&gate, 1);
  CHECK_OK(flagos_stream_synchronize(b));
  CHECK_OK(flagos_caching_malloc(&q, 512, 0, a)); /* processes the finished event */
  CHECK_OK(flagos_caching_get_stats(0, &s));
  CHECK_EQ(s.reserved_bytes, 512);
  CHECK_OK(flagos_caching_free(q));
  CHECK_OK(flagos_stream_destroy(a));
  CHECK_OK(flagos_stream_destroy(b));
  return check_report();
}
