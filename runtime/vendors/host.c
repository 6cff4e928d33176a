/*
 * host.c - the simulated accelerator: configuration, devices, vtable.
 *
 * Device memory lives in host RAM but is mapped PROT_NONE, and every
 * stream has a worker thread, so missing copies crash and missing
 * synchronisation shows up in tests (the idea of PyTorch's OpenReg).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vendors/host_internal.h"

host_config_t host_cfg = {2, 0, true};

static _Thread_local int host_current = 0;

static flagos_status_t parse_int_env(const char *name, long lo, long hi, long *out) {
  const char *s = getenv(name);
  if (!s || !*s) return FLAGOS_SUCCESS;
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos host: %s='%s' is invalid: expected an integer from %ld to %ld",
                            name, s, lo, hi);
  *out = v;
  return FLAGOS_SUCCESS;
}

/* Reads the environment each time it runs: init retries see fixed values. */
static flagos_status_t host_probe(void) {
  host_config_t cfg = {2, 0, true};
  long devices = 2, fail_after = -1;
  flagos_status_t st = parse_int_env("FLAGOS_HOST_DEVICES", 1, HOST_MAX_DEVICES, &devices);
  if (st) return st;
  st = parse_int_env("FLAGOS_HOST_FAIL_MALLOC_AFTER", 0, 1L << 40, &fail_after);
  if (st) return st;
  cfg.devices = (int)devices;
  const char *lim = getenv("FLAGOS_HOST_MEMORY_LIMIT");
  if (lim && *lim) {
    unsigned long long bytes = 0;
    if (!flagos_parse_bytes(lim, &bytes))
      return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                              "flagos host: FLAGOS_HOST_MEMORY_LIMIT='%s' is invalid: expected "
                              "bytes with an optional K, M or G suffix (e.g. 512M)", lim);
    cfg.memory_limit = (size_t)bytes;
  }
  cfg.protect = flagos_env_flag("FLAGOS_HOST_PROTECT", true);
  host_cfg = cfg;
  host_memory_configure(fail_after);
  return FLAGOS_SUCCESS;
}

static flagos_status_t host_device_count(int *count) {
  *count = host_cfg.devices;
  return FLAGOS_SUCCESS;
}

static flagos_status_t host_set_device(int device) {
  host_current = device;
  return FLAGOS_SUCCESS;
}

static flagos_status_t host_get_device(int *device) {
  *device = host_current;
  return FLAGOS_SUCCESS;
}

static size_t device_total(void) {
  return host_cfg.memory_limit ? host_cfg.memory_limit : host_physical_memory();
}

static flagos_status_t host_device_properties(int device, flagos_device_properties_t *p) {
  (void)device;
  snprintf(p->name, sizeof p->name, "flagos host device");
  p->total_memory = device_total();
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  p->multi_processor_count = cpus > 0 ? (int)cpus : 1;
  p->major = 1;
  p->minor = 0;
  return FLAGOS_SUCCESS;
}

static flagos_status_t host_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes) {
  size_t total = device_total(), used = host_memory_used(device);
  size_t free_ = total > used ? total - used : 0;
  if (!host_cfg.memory_limit) {
    long avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (avail > 0 && page > 0 && (size_t)avail * (size_t)page < free_)
      free_ = (size_t)avail * (size_t)page;
  }
  *free_bytes = free_;
  *total_bytes = total;
  return FLAGOS_SUCCESS;
}

const flagos_vendor_ops_t flagos_vendor_host = {
    .name = "host",
    .kind = FLAGOS_VENDOR_HOST,
    .probe = host_probe,
    .device_count = host_device_count,
    .set_device = host_set_device,
    .get_device = host_get_device,
    .device_synchronize = host_device_synchronize,
    .device_properties = host_device_properties,
    .mem_get_info = host_mem_get_info,
    .malloc_device = host_malloc_device,
    .free_device = host_free_device,
    .malloc_host = host_malloc_host,
    .free_host = host_free_host,
    .memcpy_sync = host_memcpy_sync,
    .memcpy_async = host_memcpy_async,
    .memset_async = host_memset_async,
    .pointer_attributes = host_pointer_attributes,
    .host_access_begin = host_access_begin,
    .host_access_end = host_access_end,
    .default_stream = host_default_stream,
    .stream_priority_range = host_stream_priority_range,
    .stream_create = host_stream_create,
    .stream_destroy = host_stream_destroy,
    .stream_query = host_stream_query,
    .stream_synchronize = host_stream_synchronize,
    .stream_wait_event = host_stream_wait_event,
    .stream_device = host_stream_device,
    .stream_priority = host_stream_priority,
    .stream_native_handle = host_stream_native_handle,
    .launch_host_func = host_launch_host_func,
    .event_create = host_event_create,
    .event_destroy = host_event_destroy,
    .event_record = host_event_record,
    .event_query = host_event_query,
    .event_synchronize = host_event_synchronize,
    .event_elapsed_time = host_event_elapsed_time,
};
