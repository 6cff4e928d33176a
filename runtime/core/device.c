/* device.c - device count, per-thread current device, properties. */
#include <string.h>

#include "core/internal.h"

/* Each thread starts on device 0, as with CUDA. */
static _Thread_local int current_device = 0;

int flagos_core_current_device(void) { return current_device; }

flagos_status_t flagos_core_check_device(int device) {
  int n = flagos_core_device_count();
  if (device < 0 || device >= n)
    return flagos_set_error(FLAGOS_ERROR_INVALID_DEVICE,
                            "flagos: device index %d is out of range: flagos has %d device%s",
                            device, n, n == 1 ? "" : "s");
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_device_count(int *count) {
  NEED_PTR(count, "flagos_device_count");
  NEED_VENDOR(v);
  (void)v;
  *count = flagos_core_device_count();
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_get_device(int *device) {
  NEED_PTR(device, "flagos_get_device");
  NEED_VENDOR(v);
  (void)v;
  *device = current_device;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_set_device(int device) {
  NEED_VENDOR(v);
  flagos_status_t st = flagos_core_check_device(device);
  if (st) return st;
  st = v->set_device(device);
  if (st) return st;
  current_device = device;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_exchange_device(int device, int *previous) {
  NEED_PTR(previous, "flagos_exchange_device");
  NEED_VENDOR(v);
  int prev = current_device;
  if (device != prev) {
    flagos_status_t st = flagos_core_check_device(device);
    if (st) return st;
    st = v->set_device(device);
    if (st) return st;
    current_device = device;
  }
  *previous = prev;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_device_synchronize(void) {
  NEED_VENDOR(v);
  return v->device_synchronize(current_device);
}

FLAGOS_API flagos_status_t flagos_get_device_properties(int device,
                                                        flagos_device_properties_t *props) {
  NEED_PTR(props, "flagos_get_device_properties");
  NEED_VENDOR(v);
  flagos_status_t st = flagos_core_check_device(device);
  if (st) return st;
  flagos_device_properties_t p;
  memset(&p, 0, sizeof p);
  st = v->device_properties(device, &p);
  if (st) return st;
  p.name[sizeof p.name - 1] = '\0';
  *props = p;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_mem_get_info(int device, size_t *free_bytes,
                                               size_t *total_bytes) {
  NEED_PTR(free_bytes, "flagos_mem_get_info");
  NEED_PTR(total_bytes, "flagos_mem_get_info");
  NEED_VENDOR(v);
  flagos_status_t st = flagos_core_check_device(device);
  if (st) return st;
  size_t f = 0, t = 0;
  st = v->mem_get_info(device, &f, &t);
  if (st) return st;
  *free_bytes = f;
  *total_bytes = t;
  return FLAGOS_SUCCESS;
}
