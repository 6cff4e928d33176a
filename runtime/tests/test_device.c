/* test_device.c - device count, current device per thread, properties, memory info. */
#include <pthread.h>
#include <unistd.h>

#include "check.h"

static void *other_thread(void *arg) {
  int *out = arg;
  flagos_get_device(out); /* a new thread starts on device 0 */
  return NULL;
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "2", 1);
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "64M", 1);
  CHECK_OK(flagos_init(NULL));
  int n = 0, d = -1;
  CHECK_OK(flagos_device_count(&n));
  CHECK_EQ(n, 2);
  CHECK_OK(flagos_get_device(&d));
  CHECK_EQ(d, 0);
  CHECK_ERR(flagos_set_device(5), FLAGOS_ERROR_INVALID_DEVICE,
            "device index 5 is out of range: flagos has 2 devices");
  CHECK_ERR(flagos_set_device(-1), FLAGOS_ERROR_INVALID_DEVICE, "device index -1");
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_get_device(&d));
  CHECK_EQ(d, 1);

  int seen = -1;
  pthread_t t;
  pthread_create(&t, NULL, other_thread, &seen);
  pthread_join(t, NULL);
  CHECK_EQ(seen, 0);

  int prev = -1;
  CHECK_OK(flagos_exchange_device(0, &prev));
  CHECK_EQ(prev, 1);
  CHECK_ERR(flagos_exchange_device(2, &prev), FLAGOS_ERROR_INVALID_DEVICE, "device index 2");
  CHECK_OK(flagos_get_device(&d));
  CHECK_EQ(d, 0); /* a failed exchange changes nothing */
  CHECK_ERR(flagos_exchange_device(1, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "previous is NULL");
  CHECK_ERR(flagos_get_device(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_OK(flagos_device_synchronize());

  flagos_device_properties_t p;
  CHECK_OK(flagos_get_device_properties(1, &p));
  CHECK(!strcmp(p.name, "flagos host device"));
  CHECK_EQ(p.total_memory, 64u << 20);
  CHECK_EQ(p.multi_processor_count, sysconf(_SC_NPROCESSORS_ONLN));
  CHECK_ERR(flagos_get_device_properties(2, &p), FLAGOS_ERROR_INVALID_DEVICE, "out of range");
  CHECK_ERR(flagos_get_device_properties(0, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "props is NULL");

  size_t fr = 0, tot = 0;
  CHECK_OK(flagos_mem_get_info(0, &fr, &tot));
  CHECK_EQ(tot, 64u << 20);
  CHECK_EQ(fr, 64u << 20);
  void *x = NULL;
  CHECK_OK(flagos_malloc(&x, 10u << 20));
  CHECK_OK(flagos_mem_get_info(0, &fr, &tot));
  CHECK_EQ(fr, 54u << 20);
  CHECK_OK(flagos_mem_get_info(1, &fr, &tot));
  CHECK_EQ(fr, 64u << 20); /* limits are per device */
  CHECK_OK(flagos_free(x));
  CHECK_ERR(flagos_mem_get_info(9, &fr, &tot), FLAGOS_ERROR_INVALID_DEVICE, "device index 9");
  CHECK_ERR(flagos_mem_get_info(0, NULL, &tot), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  return check_report();
}
