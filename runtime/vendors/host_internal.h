/*
 * host_internal.h - pieces of the host vendor shared by its files.
 */
#ifndef FLAGOS_HOST_INTERNAL_H
#define FLAGOS_HOST_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "core/internal.h"

enum { HOST_MAX_DEVICES = 64 };

typedef struct host_config {
  int devices;
  size_t memory_limit; /* per device; 0 = none */
  bool protect;        /* PROT_NONE device memory outside copies */
} host_config_t;

FLAGOS_HIDDEN extern host_config_t host_cfg;

/* host_memory.c */
FLAGOS_HIDDEN void host_memory_configure(long fail_after);
FLAGOS_HIDDEN size_t host_memory_used(int device);
FLAGOS_HIDDEN size_t host_physical_memory(void);
FLAGOS_HIDDEN flagos_status_t host_malloc_device(int device, void **ptr, size_t size);
FLAGOS_HIDDEN flagos_status_t host_free_device(void *ptr);
FLAGOS_HIDDEN flagos_status_t host_malloc_host(void **ptr, size_t size);
FLAGOS_HIDDEN flagos_status_t host_free_host(void *ptr);
FLAGOS_HIDDEN flagos_status_t host_pointer_attributes(flagos_pointer_attributes_t *a, const void *p);
FLAGOS_HIDDEN flagos_status_t host_access_begin(const void *ptr);
FLAGOS_HIDDEN flagos_status_t host_access_end(const void *ptr);
/*
 * Checks that [ptr, ptr+size) is wholly device memory (device_side) or
 * wholly not device memory; *device gets the owning device (or -1).
 */
FLAGOS_HIDDEN flagos_status_t host_check_range(const char *fn, const char *role, const void *ptr,
                                               size_t size, bool device_side, int *device);
/* Runs a copy/memset with the device allocations involved made accessible. */
FLAGOS_HIDDEN void host_run_copy(void *dst, const void *src, size_t size, flagos_memcpy_kind_t k);
FLAGOS_HIDDEN void host_run_memset(void *dst, int value, size_t size);

/* host_stream.c */
FLAGOS_HIDDEN flagos_status_t host_device_synchronize(int device);
FLAGOS_HIDDEN flagos_status_t host_default_stream(int device, flagos_stream_t *stream);
FLAGOS_HIDDEN flagos_status_t host_stream_priority_range(int *least, int *greatest);
FLAGOS_HIDDEN flagos_status_t host_stream_create(int device, flagos_stream_t *s, int priority);
FLAGOS_HIDDEN flagos_status_t host_stream_destroy(flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_stream_query(flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_stream_synchronize(flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_stream_wait_event(flagos_stream_t s, flagos_event_t e);
FLAGOS_HIDDEN flagos_status_t host_stream_device(flagos_stream_t s, int *device);
FLAGOS_HIDDEN flagos_status_t host_stream_priority(flagos_stream_t s, int *priority);
FLAGOS_HIDDEN flagos_status_t host_stream_native_handle(flagos_stream_t s, void **handle);
FLAGOS_HIDDEN flagos_status_t host_launch_host_func(flagos_stream_t s, flagos_host_fn_t fn, void *d);
FLAGOS_HIDDEN flagos_status_t host_memcpy_sync(void *dst, const void *src, size_t size,
                                               flagos_memcpy_kind_t kind);
FLAGOS_HIDDEN flagos_status_t host_memcpy_async(void *dst, const void *src, size_t size,
                                                flagos_memcpy_kind_t kind, flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_memset_async(void *dst, int value, size_t size,
                                                flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_event_create(flagos_event_t *e, unsigned flags);
FLAGOS_HIDDEN flagos_status_t host_event_destroy(flagos_event_t e);
FLAGOS_HIDDEN flagos_status_t host_event_record(flagos_event_t e, flagos_stream_t s);
FLAGOS_HIDDEN flagos_status_t host_event_query(flagos_event_t e);
FLAGOS_HIDDEN flagos_status_t host_event_synchronize(flagos_event_t e);
FLAGOS_HIDDEN flagos_status_t host_event_elapsed_time(float *ms, flagos_event_t a, flagos_event_t b);

#endif
