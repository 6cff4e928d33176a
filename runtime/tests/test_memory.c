/* test_memory.c - raw allocations, the four copy kinds, memset, pointer
 * attributes, bad frees, the per-device memory limit and fault injection. */
#include <stdint.h>

#include "check.h"
#include "core/testing.h"

enum { N = 1 << 20 };

static void copies(void) {
  unsigned char *h = malloc(N), *back = malloc(N);
  for (size_t i = 0; i < N; i++) h[i] = (unsigned char)(i * 7 + 3);
  void *d0 = NULL, *d1 = NULL;
  CHECK_OK(flagos_malloc(&d0, N));
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_malloc(&d1, N));
  CHECK_OK(flagos_set_device(0));
  CHECK_OK(flagos_memcpy(d0, h, N, FLAGOS_MEMCPY_HOST_TO_DEVICE));
  CHECK_OK(flagos_memcpy(d1, d0, N, FLAGOS_MEMCPY_DEVICE_TO_DEVICE)); /* across devices */
  CHECK_OK(flagos_memcpy(back, d1, N, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK(!memcmp(h, back, N));
  memset(back, 0, N);
  CHECK_OK(flagos_memcpy(back, h, N, FLAGOS_MEMCPY_HOST_TO_HOST));
  CHECK(!memcmp(h, back, N));
  /* Interior pointers on both sides. */
  CHECK_OK(flagos_memcpy((char *)d1 + 100, (char *)d0 + 5000, 1000, FLAGOS_MEMCPY_DEVICE_TO_DEVICE));
  CHECK_OK(flagos_memcpy(back, (char *)d1 + 100, 1000, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK(!memcmp(back, h + 5000, 1000));
  /* memset (sync, async) and pinned staging. */
  CHECK_OK(flagos_memset((char *)d0 + 10, 0xAB, 100));
  CHECK_OK(flagos_memcpy(back, d0, 200, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK_EQ(back[9], h[9]);
  CHECK_EQ(back[10], 0xAB);
  CHECK_EQ(back[109], 0xAB);
  CHECK_EQ(back[110], h[110]);
  unsigned char *pin = NULL;
  CHECK_OK(flagos_host_malloc((void **)&pin, N));
  CHECK_OK(flagos_memset_async(d1, 0x5A, N, NULL));
  CHECK_OK(flagos_memcpy_async(pin, d1, N, FLAGOS_MEMCPY_DEVICE_TO_HOST, NULL));
  CHECK_OK(flagos_stream_synchronize(NULL));
  CHECK(pin[0] == 0x5A && pin[N - 1] == 0x5A);
  CHECK_OK(flagos_memset(pin, 1, 16)); /* pinned memory may be set too */
  CHECK_EQ(pin[15], 1);
  CHECK_OK(flagos_memcpy(d0, h, 0, FLAGOS_MEMCPY_HOST_TO_DEVICE)); /* size 0: nothing */

  /* Wrong kinds, overruns, NULLs: errors, never faults. */
  CHECK_ERR(flagos_memcpy(h, back, 16, FLAGOS_MEMCPY_HOST_TO_DEVICE), FLAGOS_ERROR_INVALID_ARGUMENT,
            "is not flagos device memory");
  CHECK_ERR(flagos_memcpy(h, d0, 16, FLAGOS_MEMCPY_HOST_TO_HOST), FLAGOS_ERROR_INVALID_ARGUMENT,
            "is flagos device memory but the copy kind says host");
  CHECK_ERR(flagos_memcpy(back, (char *)d0 + N - 8, 16, FLAGOS_MEMCPY_DEVICE_TO_HOST),
            FLAGOS_ERROR_INVALID_ARGUMENT, "overruns");
  CHECK_ERR(flagos_memcpy(back, d0, 16, (flagos_memcpy_kind_t)7), FLAGOS_ERROR_INVALID_ARGUMENT,
            "invalid memcpy kind 7");
  CHECK_ERR(flagos_memcpy(NULL, d0, 16, FLAGOS_MEMCPY_DEVICE_TO_HOST), FLAGOS_ERROR_INVALID_ARGUMENT,
            "destination pointer is NULL");
  CHECK_ERR(flagos_memcpy_async(d0, NULL, 16, FLAGOS_MEMCPY_HOST_TO_DEVICE, NULL),
            FLAGOS_ERROR_INVALID_ARGUMENT, "source pointer is NULL");
  CHECK_ERR(flagos_memset(h, 0, 16), FLAGOS_ERROR_INVALID_ARGUMENT, "not flagos device or pinned");
  CHECK_ERR(flagos_memset((char *)d0 + N - 1, 0, 2), FLAGOS_ERROR_INVALID_ARGUMENT, "overruns");
  CHECK_ERR(flagos_memset(NULL, 0, 2), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");

  CHECK_OK(flagos_free(d0));
  CHECK_OK(flagos_free(d1));
  CHECK_OK(flagos_host_free(pin));
  free(h);
  free(back);
}

static void attributes_and_frees(void) {
  void *d = NULL, *p = NULL;
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_malloc(&d, 1000));
  CHECK_OK(flagos_set_device(0));
  CHECK_OK(flagos_host_malloc(&p, 3000));
  flagos_pointer_attributes_t a;
  CHECK_OK(flagos_pointer_get_attributes(&a, (char *)d + 999));
  CHECK(a.type == FLAGOS_MEMORY_DEVICE && a.device == 1 && a.base == d && a.size == 1000);
  CHECK_OK(flagos_pointer_get_attributes(&a, (char *)d + 1000)); /* one past the end */
  CHECK(a.type == FLAGOS_MEMORY_UNREGISTERED && a.base == NULL && a.device == -1);
  CHECK_OK(flagos_pointer_get_attributes(&a, (char *)p + 17));
  CHECK(a.type == FLAGOS_MEMORY_HOST && a.device == -1 && a.base == p && a.size == 3000);
  int local;
  CHECK_OK(flagos_pointer_get_attributes(&a, &local));
  CHECK_EQ(a.type, FLAGOS_MEMORY_UNREGISTERED);
  CHECK_OK(flagos_pointer_get_attributes(&a, NULL));
  CHECK_EQ(a.type, FLAGOS_MEMORY_UNREGISTERED);
  CHECK_ERR(flagos_pointer_get_attributes(NULL, d), FLAGOS_ERROR_INVALID_ARGUMENT, "attr is NULL");

  CHECK_ERR(flagos_free((char *)d + 8), FLAGOS_ERROR_INVALID_HANDLE, "points inside one");
  CHECK_ERR(flagos_free(&local), FLAGOS_ERROR_INVALID_HANDLE, "is not the start of a live flagos device");
  CHECK_ERR(flagos_free(p), FLAGOS_ERROR_INVALID_HANDLE, "device allocation");
  CHECK_ERR(flagos_host_free(d), FLAGOS_ERROR_INVALID_HANDLE, "pinned host allocation");
  CHECK_OK(flagos_free(d));
  CHECK_ERR(flagos_free(d), FLAGOS_ERROR_INVALID_HANDLE, "not the start"); /* double free */
  CHECK_OK(flagos_host_free(p));
  CHECK_OK(flagos_free(NULL));
  CHECK_OK(flagos_host_free(NULL));
  void *z = (void *)1;
  CHECK_OK(flagos_malloc(&z, 0));
  CHECK(z == NULL);
  CHECK_ERR(flagos_malloc(NULL, 8), FLAGOS_ERROR_INVALID_ARGUMENT, "ptr is NULL");
  CHECK_ERR(flagos_host_malloc(NULL, 8), FLAGOS_ERROR_INVALID_ARGUMENT, "ptr is NULL");
}

static void limit_and_injection(void) {
  void *a = NULL, *b = NULL, *c = NULL;
  CHECK_ERR(flagos_malloc(&a, 40u << 20), FLAGOS_ERROR_OUT_OF_MEMORY,
            "out of memory on device 0: tried to allocate 40.00 MiB; 0 bytes in use, limit 32.00 MiB");
  CHECK(a == NULL);
  CHECK_OK(flagos_malloc(&a, 16u << 20));
  CHECK_OK(flagos_malloc(&b, 16u << 20));
  CHECK_ERR(flagos_malloc(&c, 1u << 20), FLAGOS_ERROR_OUT_OF_MEMORY, "32.00 MiB in use");
  CHECK_OK(flagos_set_device(1));
  CHECK_OK(flagos_malloc(&c, 1u << 20)); /* other device, own limit */
  CHECK_OK(flagos_free(c));
  CHECK_OK(flagos_set_device(0));
  CHECK_OK(flagos_free(b));
  CHECK_OK(flagos_malloc(&b, 8u << 20)); /* recovered after a free */
  CHECK_OK(flagos_free(a));
  CHECK_OK(flagos_free(b));

  flagos_testing_fail_device_malloc(1, 1); /* 2nd malloc from now fails, once */
  CHECK_OK(flagos_malloc(&a, 4096));
  CHECK_ERR(flagos_malloc(&b, 4096), FLAGOS_ERROR_OUT_OF_MEMORY, "injected failure");
  CHECK_OK(flagos_malloc(&b, 4096));
  flagos_testing_fail_device_malloc(0, -1);
  CHECK_ERR(flagos_malloc(&c, 1), FLAGOS_ERROR_OUT_OF_MEMORY, "injected");
  CHECK_ERR(flagos_malloc(&c, 1), FLAGOS_ERROR_OUT_OF_MEMORY, "injected");
  flagos_testing_fail_device_malloc(-1, 0);
  CHECK_OK(flagos_malloc(&c, 1));
  CHECK_OK(flagos_free(a));
  CHECK_OK(flagos_free(b));
  CHECK_OK(flagos_free(c));
  size_t fr, tot;
  CHECK_OK(flagos_mem_get_info(0, &fr, &tot));
  CHECK_EQ(fr, tot); /* nothing leaked in the accounting */
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "2", 1);
  setenv("FLAGOS_HOST_MEMORY_LIMIT", "32M", 1);
  CHECK_OK(flagos_init(NULL));
  copies();
  attributes_and_frees();
  limit_and_injection();
  return check_report();
}
