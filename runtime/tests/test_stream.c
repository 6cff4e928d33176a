/* test_stream.c - streams: handles, priorities, async ordering, destroy
 * draining, wait_event across streams, device_synchronize. */
#include <stdint.h>

#include "check.h"
#include "timing.h"

typedef struct {
  atomic_int *flag;
  int seen;
} probe_t;

static void read_flag_fn(void *arg) {
  probe_t *p = arg;
  p->seen = atomic_load(p->flag);
}

typedef struct {
  unsigned char *src;
  int ms;
} fill_t;

static void slow_fill_fn(void *arg) {
  fill_t *f = arg;
  usleep((useconds_t)f->ms * 1000u);
  memset(f->src, 0x77, 4096);
}

/* 4 KiB of host source, host output and device memory. */
typedef struct {
  unsigned char *src, *out;
  void *dev;
} buffers_t;

static buffers_t buffers_alloc(void) {
  buffers_t b = {calloc(1, 4096), calloc(1, 4096), NULL};
  CHECK_OK(flagos_malloc(&b.dev, 4096));
  return b;
}

static void buffers_free(buffers_t *b) {
  CHECK_OK(flagos_free(b->dev));
  free(b->src);
  free(b->out);
}

/* Queues on `s` a host function that fills `fill->src` after `fill->ms`,
 * then the upload of src to `dev`: the upload must see the filled bytes. */
static void queue_slow_upload(flagos_stream_t s, fill_t *fill, void *dev) {
  CHECK_OK(flagos_launch_host_func(s, slow_fill_fn, fill));
  CHECK_OK(flagos_memcpy_async(dev, fill->src, 4096, FLAGOS_MEMCPY_HOST_TO_DEVICE, s));
}

/* A sync copy is ordered after work queued on the device's default stream:
 * with that stream busy it waits; with it idle it runs at once. */
static void sync_copy_order(void) {
  flagos_stream_t d0;
  CHECK_OK(flagos_default_stream(0, &d0));
  buffers_t b = buffers_alloc();
  fill_t fill = {b.src, 120};
  double t0 = now_ms();
  queue_slow_upload(d0, &fill, b.dev);
  CHECK_OK(flagos_memcpy(b.out, b.dev, 4096, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK(now_ms() - t0 >= 110); /* waited for the queued fill and copy */
  CHECK(b.out[0] == 0x77 && b.out[4095] == 0x77);
  memset(b.src, 0x11, 4096);
  t0 = now_ms();
  CHECK_OK(flagos_memcpy(b.dev, b.src, 4096, FLAGOS_MEMCPY_HOST_TO_DEVICE)); /* idle: inline */
  CHECK_OK(flagos_memcpy(b.out, b.dev, 4096, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK(now_ms() - t0 < 50);
  CHECK(b.out[0] == 0x11 && b.out[4095] == 0x11);
  buffers_free(&b);
}

static void handles(void) {
  flagos_stream_t d0 = NULL, d0b = NULL, s = NULL, t = NULL;
  CHECK_OK(flagos_default_stream(0, &d0));
  CHECK_OK(flagos_default_stream(0, &d0b));
  CHECK(d0 && d0 == d0b);
  CHECK_ERR(flagos_default_stream(2, &d0b), FLAGOS_ERROR_INVALID_DEVICE, "device index 2");
  CHECK_ERR(flagos_default_stream(0, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(flagos_stream_destroy(d0), FLAGOS_ERROR_INVALID_ARGUMENT, "default stream");

  int least = 9, greatest = 9, prio = 9, dev = -1;
  CHECK_OK(flagos_stream_priority_range(&least, &greatest));
  CHECK(least == 0 && greatest == -1);
  CHECK_OK(flagos_stream_create(&s, -1));
  CHECK_OK(flagos_stream_priority(s, &prio));
  CHECK_EQ(prio, -1);
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_stream_create(&t, -7)); /* clamped to greatest */
  CHECK_OK(flagos_set_device(0));
  CHECK_OK(flagos_stream_priority(t, &prio));
  CHECK_EQ(prio, -1);
  CHECK_OK(flagos_stream_device(t, &dev));
  CHECK_EQ(dev, 1);
  CHECK_OK(flagos_stream_device(s, &dev));
  CHECK_EQ(dev, 0);
  CHECK_OK(flagos_stream_device(NULL, &dev)); /* NULL: default stream of current device */
  CHECK_EQ(dev, 0);
  void *native = NULL;
  CHECK_OK(flagos_stream_native_handle(s, &native));
  CHECK(native == (void *)s);
  CHECK_ERR(flagos_stream_create(NULL, 0), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(flagos_stream_priority(s, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_ERR(flagos_launch_host_func(s, NULL, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "fn is NULL");

  CHECK_OK(flagos_stream_destroy(t));
  /* Destroyed, made-up and wrong-kind handles are errors, not crashes. */
  CHECK_ERR(flagos_stream_query(t), FLAGOS_ERROR_INVALID_HANDLE, "not a live flagos stream");
  CHECK_ERR(flagos_stream_synchronize(t), FLAGOS_ERROR_INVALID_HANDLE, "flagos_stream_synchronize");
  CHECK_ERR(flagos_stream_destroy(t), FLAGOS_ERROR_INVALID_HANDLE, "not a live flagos stream");
  CHECK_ERR(flagos_stream_device(t, &dev), FLAGOS_ERROR_INVALID_HANDLE, "stream");
  char buf[8], buf2[8];
  CHECK_ERR(flagos_memcpy_async(buf, buf2, 8, FLAGOS_MEMCPY_HOST_TO_HOST, t),
            FLAGOS_ERROR_INVALID_HANDLE, "stream");
  CHECK_ERR(flagos_memset_async(buf, 0, 8, t), FLAGOS_ERROR_INVALID_HANDLE, "stream");
  CHECK_ERR(flagos_launch_host_func(t, set_flag_fn, NULL), FLAGOS_ERROR_INVALID_HANDLE, "stream");
  flagos_stream_t fake = (flagos_stream_t)(uintptr_t)0x1234;
  CHECK_ERR(flagos_stream_query(fake), FLAGOS_ERROR_INVALID_HANDLE, "0x1234");
  flagos_event_t e;
  CHECK_OK(flagos_event_create(&e, 0));
  CHECK_ERR(flagos_stream_query((flagos_stream_t)e), FLAGOS_ERROR_INVALID_HANDLE, "stream");
  CHECK_ERR(flagos_stream_wait_event(s, (flagos_event_t)s), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_OK(flagos_event_destroy(e));
  CHECK_OK(flagos_stream_destroy(s));

  /* Many short-lived streams: threads start and join cleanly. */
  for (int i = 0; i < 50; i++) {
    flagos_stream_t x;
    CHECK_OK(flagos_stream_create(&x, 0));
    CHECK_OK(flagos_stream_destroy(x));
  }
}

static void ordering(void) {
  flagos_stream_t s;
  CHECK_OK(flagos_stream_create(&s, 0));
  buffers_t buf = buffers_alloc();
  unsigned char *out = buf.out;
  fill_t fill = {buf.src, 150};
  double t0 = now_ms();
  queue_slow_upload(s, &fill, buf.dev);
  CHECK_OK(flagos_memcpy_async(out, buf.dev, 4096, FLAGOS_MEMCPY_DEVICE_TO_HOST, s));
  double t1 = now_ms();
  CHECK(t1 - t0 < 100); /* the calls returned before the work ran */
  CHECK_EQ(flagos_stream_query(s), FLAGOS_ERROR_NOT_READY);
  CHECK_EQ(out[0], 0);
  CHECK_OK(flagos_stream_synchronize(s));
  CHECK(now_ms() - t0 >= 140);
  CHECK_OK(flagos_stream_query(s));
  CHECK(out[0] == 0x77 && out[4095] == 0x77); /* the copies ran after the host fn */

  /* Destroy drains the queue first. */
  atomic_int flag = 0;
  int ms = 50;
  CHECK_OK(flagos_launch_host_func(s, sleep_fn, &ms));
  CHECK_OK(flagos_launch_host_func(s, set_flag_fn, &flag));
  CHECK_OK(flagos_stream_destroy(s));
  CHECK_EQ(atomic_load(&flag), 1);

  /* device_synchronize waits for every stream of the current device. */
  flagos_stream_t a, b;
  CHECK_OK(flagos_stream_create(&a, 0));
  CHECK_OK(flagos_stream_create(&b, 0));
  atomic_int fa = 0, fb = 0;
  CHECK_OK(flagos_launch_host_func(a, sleep_fn, &ms));
  CHECK_OK(flagos_launch_host_func(a, set_flag_fn, &fa));
  CHECK_OK(flagos_launch_host_func(b, sleep_fn, &ms));
  CHECK_OK(flagos_launch_host_func(b, set_flag_fn, &fb));
  CHECK_OK(flagos_device_synchronize());
  CHECK(atomic_load(&fa) == 1 && atomic_load(&fb) == 1);

  /* wait_event: b's later work waits for a's recorded work. */
  atomic_int gate = 0, done = 0;
  probe_t probe = {&done, -1};
  flagos_event_t e;
  CHECK_OK(flagos_event_create(&e, FLAGOS_EVENT_DISABLE_TIMING));
  CHECK_OK(flagos_launch_host_func(a, gate_fn, &gate));
  CHECK_OK(flagos_launch_host_func(a, set_flag_fn, &done));
  CHECK_OK(flagos_event_record(e, a));
  CHECK_OK(flagos_stream_wait_event(b, e));
  CHECK_OK(flagos_launch_host_func(b, read_flag_fn, &probe));
  usleep(30000);
  CHECK_EQ(flagos_stream_query(b), FLAGOS_ERROR_NOT_READY); /* b blocked behind a */
  CHECK_EQ(probe.seen, -1);
  atomic_store(&gate, 1);
  CHECK_OK(flagos_stream_synchronize(b));
  CHECK_EQ(probe.seen, 1);
  /* Waiting on a never-recorded event is a no-op. */
  flagos_event_t fresh;
  CHECK_OK(flagos_event_create(&fresh, 0));
  CHECK_OK(flagos_stream_wait_event(b, fresh));
  CHECK_OK(flagos_stream_synchronize(b));
  CHECK_OK(flagos_event_destroy(fresh));
  CHECK_OK(flagos_event_destroy(e));
  CHECK_OK(flagos_stream_destroy(a));
  CHECK_OK(flagos_stream_destroy(b));
  buffers_free(&buf);
}

/* The host vendor runs no compiled device kernels: a clear refusal, after
 * the checks every vendor shares. */
static void kernel_launch(void) {
  int dummy = 0;
  void *params[] = {&dummy};
  flagos_kernel_launch_t launch = {(void *)&dummy, {1, 1, 1}, {32, 1, 1}, 0, params};
  CHECK_ERR(flagos_launch_kernel(NULL, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "launch is NULL");
  CHECK_ERR(flagos_launch_kernel(&launch, NULL), FLAGOS_ERROR_NOT_SUPPORTED,
            "host vendor runs no compiled device kernels");
  launch.grid[1] = 0;
  CHECK_ERR(flagos_launch_kernel(&launch, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "grid 1x0x1");
  launch.grid[1] = 1;
  launch.function = NULL;
  CHECK_ERR(flagos_launch_kernel(&launch, NULL), FLAGOS_ERROR_INVALID_ARGUMENT,
            "kernel handle is NULL");
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "2", 1);
  CHECK_OK(flagos_init(NULL));
  handles();
  sync_copy_order();
  ordering();
  kernel_launch();
  return check_report();
}
