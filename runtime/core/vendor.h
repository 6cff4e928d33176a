/*
 * vendor.h - the table every vendor fills in (internal to libflagos).
 *
 * The public functions in flagos.h validate their arguments, then call the
 * live vendor through this table. A vendor never sees an invalid device
 * index, a NULL output pointer, or a stream/event handle that is not live
 * (core/handles.c keeps the registry of handles the vendor created; a NULL
 * stream argument arrives as the current device's default stream).
 * Vendors report failures with
 * flagos_set_error() and return the status.
 */
#ifndef FLAGOS_RUNTIME_VENDOR_H
#define FLAGOS_RUNTIME_VENDOR_H

#include "flagos/flagos.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct flagos_vendor_ops {
  const char *name;
  flagos_vendor_kind_t kind;

  /* Loads the runtime; FLAGOS_ERROR_VENDOR_UNAVAILABLE if it cannot. */
  flagos_status_t (*probe)(void);
  flagos_status_t (*device_count)(int *count);
  flagos_status_t (*set_device)(int device);   /* binds the calling thread */
  flagos_status_t (*get_device)(int *device);
  flagos_status_t (*device_synchronize)(int device);
  flagos_status_t (*device_properties)(int device, flagos_device_properties_t *props);
  flagos_status_t (*mem_get_info)(int device, size_t *free_bytes, size_t *total_bytes);

  flagos_status_t (*malloc_device)(int device, void **ptr, size_t size);
  flagos_status_t (*free_device)(void *ptr);
  flagos_status_t (*malloc_host)(void **ptr, size_t size);
  flagos_status_t (*free_host)(void *ptr);
  flagos_status_t (*memcpy_sync)(void *dst, const void *src, size_t size,
                                 flagos_memcpy_kind_t kind);
  flagos_status_t (*memcpy_async)(void *dst, const void *src, size_t size,
                                  flagos_memcpy_kind_t kind, flagos_stream_t stream);
  flagos_status_t (*memset_async)(void *dst, int value, size_t size, flagos_stream_t stream);
  flagos_status_t (*pointer_attributes)(flagos_pointer_attributes_t *attr, const void *ptr);
  flagos_status_t (*host_access_begin)(const void *ptr); /* may be NULL */
  flagos_status_t (*host_access_end)(const void *ptr);   /* may be NULL */

  flagos_status_t (*default_stream)(int device, flagos_stream_t *stream);
  flagos_status_t (*stream_priority_range)(int *least, int *greatest);
  flagos_status_t (*stream_create)(int device, flagos_stream_t *stream, int priority);
  flagos_status_t (*stream_destroy)(flagos_stream_t stream);
  flagos_status_t (*stream_query)(flagos_stream_t stream);
  flagos_status_t (*stream_synchronize)(flagos_stream_t stream);
  flagos_status_t (*stream_wait_event)(flagos_stream_t stream, flagos_event_t event);
  flagos_status_t (*stream_device)(flagos_stream_t stream, int *device);
  flagos_status_t (*stream_priority)(flagos_stream_t stream, int *priority);
  flagos_status_t (*stream_native_handle)(flagos_stream_t stream, void **handle);
  flagos_status_t (*launch_host_func)(flagos_stream_t stream, flagos_host_fn_t fn, void *data);
  /* may be NULL: the vendor runs no compiled device kernels */
  flagos_status_t (*launch_kernel)(const flagos_kernel_launch_t *launch, void *native_stream);

  flagos_status_t (*event_create)(flagos_event_t *event, unsigned flags);
  flagos_status_t (*event_destroy)(flagos_event_t event);
  flagos_status_t (*event_record)(flagos_event_t event, flagos_stream_t stream);
  flagos_status_t (*event_query)(flagos_event_t event);
  flagos_status_t (*event_synchronize)(flagos_event_t event);
  flagos_status_t (*event_elapsed_time)(float *ms, flagos_event_t start, flagos_event_t end);
} flagos_vendor_ops_t;

/* The vendors compiled into libflagos. */
extern const flagos_vendor_ops_t flagos_vendor_host;
extern const flagos_vendor_ops_t flagos_vendor_cuda;

/* The live vendor, or NULL before flagos_init succeeds. */
const flagos_vendor_ops_t *flagos_live_vendor(void);

/* Records a formatted message for flagos_last_error() and returns status. */
flagos_status_t flagos_set_error(flagos_status_t status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#endif /* FLAGOS_RUNTIME_VENDOR_H */
