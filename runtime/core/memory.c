/* memory.c - public raw-memory calls: validate, then call the live vendor. */
#include <string.h>

#include "core/internal.h"

static const char *kind_name(flagos_memcpy_kind_t k) {
  switch (k) {
  case FLAGOS_MEMCPY_HOST_TO_HOST: return "HOST_TO_HOST";
  case FLAGOS_MEMCPY_HOST_TO_DEVICE: return "HOST_TO_DEVICE";
  case FLAGOS_MEMCPY_DEVICE_TO_HOST: return "DEVICE_TO_HOST";
  case FLAGOS_MEMCPY_DEVICE_TO_DEVICE: return "DEVICE_TO_DEVICE";
  }
  return NULL;
}

static flagos_status_t check_copy(const char *fn, void *dst, const void *src, size_t size,
                                  flagos_memcpy_kind_t kind) {
  if (!kind_name(kind))
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "%s: invalid memcpy kind %d", fn,
                            (int)kind);
  if (size && (!dst || !src))
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "%s: %s pointer is NULL for a copy of %zu bytes", fn,
                            dst ? "source" : "destination", size);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_malloc(void **ptr, size_t size) {
  NEED_PTR(ptr, "flagos_malloc");
  NEED_VENDOR(v);
  if (!size) {
    *ptr = NULL;
    return FLAGOS_SUCCESS;
  }
  void *p = NULL;
  flagos_status_t st = v->malloc_device(flagos_core_current_device(), &p, size);
  if (st) return st;
  *ptr = p;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_free(void *ptr) {
  NEED_VENDOR(v);
  if (!ptr) return FLAGOS_SUCCESS;
  return v->free_device(ptr);
}

FLAGOS_API flagos_status_t flagos_host_malloc(void **ptr, size_t size) {
  NEED_PTR(ptr, "flagos_host_malloc");
  NEED_VENDOR(v);
  if (!size) {
    *ptr = NULL;
    return FLAGOS_SUCCESS;
  }
  void *p = NULL;
  flagos_status_t st = v->malloc_host(&p, size);
  if (st) return st;
  *ptr = p;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_host_free(void *ptr) {
  NEED_VENDOR(v);
  if (!ptr) return FLAGOS_SUCCESS;
  return v->free_host(ptr);
}

FLAGOS_API flagos_status_t flagos_memcpy(void *dst, const void *src, size_t size,
                                         flagos_memcpy_kind_t kind) {
  NEED_VENDOR(v);
  flagos_status_t st = check_copy("flagos_memcpy", dst, src, size, kind);
  if (st || !size) return st;
  return v->memcpy_sync(dst, src, size, kind);
}

FLAGOS_API flagos_status_t flagos_memcpy_async(void *dst, const void *src, size_t size,
                                               flagos_memcpy_kind_t kind,
                                               flagos_stream_t stream) {
  NEED_VENDOR(v);
  flagos_status_t st = check_copy("flagos_memcpy_async", dst, src, size, kind);
  if (st) return st;
  flagos_stream_t s;
  st = flagos_core_stream(v, stream, &s);
  if (st || !size) return st;
  return v->memcpy_async(dst, src, size, kind, s);
}

FLAGOS_API flagos_status_t flagos_memset_async(void *dst, int value, size_t size,
                                               flagos_stream_t stream) {
  NEED_VENDOR(v);
  if (size && !dst)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_memset_async: destination is NULL for %zu bytes", size);
  flagos_stream_t s;
  flagos_status_t st = flagos_core_stream(v, stream, &s);
  if (st || !size) return st;
  return v->memset_async(dst, value, size, s);
}

/*
 * The vtable has only an async memset: run it on the default stream of
 * the device that owns dst (ordered after that stream's work) and wait.
 */
FLAGOS_API flagos_status_t flagos_memset(void *dst, int value, size_t size) {
  NEED_VENDOR(v);
  if (!size) return FLAGOS_SUCCESS;
  if (!dst)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_memset: destination is NULL for %zu bytes", size);
  flagos_pointer_attributes_t a;
  memset(&a, 0, sizeof a);
  flagos_status_t st = v->pointer_attributes(&a, dst);
  if (st) return st;
  int device = a.type == FLAGOS_MEMORY_DEVICE ? a.device : flagos_core_current_device();
  flagos_stream_t s = NULL;
  st = v->default_stream(device, &s);
  if (st) return st;
  st = v->memset_async(dst, value, size, s);
  if (st) return st;
  return v->stream_synchronize(s);
}

FLAGOS_API flagos_status_t flagos_pointer_get_attributes(flagos_pointer_attributes_t *attr,
                                                         const void *ptr) {
  NEED_PTR(attr, "flagos_pointer_get_attributes");
  NEED_VENDOR(v);
  flagos_pointer_attributes_t a = {FLAGOS_MEMORY_UNREGISTERED, -1, NULL, 0};
  if (!ptr) {
    *attr = a;
    return FLAGOS_SUCCESS;
  }
  flagos_status_t st = v->pointer_attributes(&a, ptr);
  if (st) return st;
  *attr = a;
  return FLAGOS_SUCCESS;
}

static flagos_status_t access_call(const char *fn, flagos_status_t (*op)(const void *),
                                   const void *ptr, const flagos_vendor_ops_t *v) {
  if (!ptr) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "%s: pointer is NULL", fn);
  if (!op)
    return flagos_set_error(FLAGOS_ERROR_NOT_SUPPORTED,
                            "%s: vendor '%s' has no direct CPU access to device memory", fn,
                            v->name);
  return op(ptr);
}

FLAGOS_API flagos_status_t flagos_host_access_begin(const void *device_ptr) {
  NEED_VENDOR(v);
  return access_call("flagos_host_access_begin", v->host_access_begin, device_ptr, v);
}

FLAGOS_API flagos_status_t flagos_host_access_end(const void *device_ptr) {
  NEED_VENDOR(v);
  return access_call("flagos_host_access_end", v->host_access_end, device_ptr, v);
}
