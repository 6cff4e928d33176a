/* stream.c - public stream calls: validate, then call the live vendor. */
#include "core/internal.h"

static flagos_status_t bad_stream(const char *fn, flagos_stream_t s) {
  return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                          "%s: stream %p is not a live flagos stream (destroyed or never "
                          "created)", fn, (void *)s);
}

static flagos_status_t default_of(const flagos_vendor_ops_t *v, int device, flagos_stream_t *out) {
  flagos_stream_t s = NULL;
  flagos_status_t st = v->default_stream(device, &s);
  if (st) return st;
  st = flagos_handle_add(s, FLAGOS_HANDLE_DEFAULT_STREAM);
  if (st) return st;
  *out = s;
  return FLAGOS_SUCCESS;
}

flagos_status_t flagos_core_stream(const flagos_vendor_ops_t *v, flagos_stream_t in,
                                   flagos_stream_t *out) {
  if (!in) return default_of(v, flagos_core_current_device(), out);
  int k = flagos_handle_kind(in);
  if (k != FLAGOS_HANDLE_STREAM && k != FLAGOS_HANDLE_DEFAULT_STREAM)
    return bad_stream("flagos", in);
  *out = in;
  return FLAGOS_SUCCESS;
}

/* Resolves `stream` into local `s` or returns the error with the caller's name. */
#define RESOLVE(v, stream, s, fn)                                   \
  flagos_stream_t s = NULL;                                         \
  do {                                                              \
    flagos_status_t st_ = flagos_core_stream(v, stream, &s);        \
    if (st_ == FLAGOS_ERROR_INVALID_HANDLE) return bad_stream(fn, stream); \
    if (st_) return st_;                                            \
  } while (0)

FLAGOS_API flagos_status_t flagos_default_stream(int device, flagos_stream_t *stream) {
  NEED_PTR(stream, "flagos_default_stream");
  NEED_VENDOR(v);
  flagos_status_t st = flagos_core_check_device(device);
  if (st) return st;
  return default_of(v, device, stream);
}

FLAGOS_API flagos_status_t flagos_stream_priority_range(int *least, int *greatest) {
  NEED_PTR(least, "flagos_stream_priority_range");
  NEED_PTR(greatest, "flagos_stream_priority_range");
  NEED_VENDOR(v);
  int l = 0, g = 0;
  flagos_status_t st = v->stream_priority_range(&l, &g);
  if (st) return st;
  *least = l;
  *greatest = g;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_stream_create(flagos_stream_t *stream, int priority) {
  NEED_PTR(stream, "flagos_stream_create");
  NEED_VENDOR(v);
  int l = 0, g = 0;
  flagos_status_t st = v->stream_priority_range(&l, &g);
  if (st) return st;
  /* Out-of-range priorities are clamped, as CUDA does. */
  if (priority > l) priority = l;
  if (priority < g) priority = g;
  flagos_stream_t s = NULL;
  st = v->stream_create(flagos_core_current_device(), &s, priority);
  if (st) return st;
  st = flagos_handle_add(s, FLAGOS_HANDLE_STREAM);
  if (st) {
    v->stream_destroy(s);
    return st;
  }
  *stream = s;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_stream_destroy(flagos_stream_t stream) {
  NEED_VENDOR(v);
  if (!stream)
    return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                            "flagos_stream_destroy: stream is NULL");
  int had = flagos_handle_remove(stream, FLAGOS_HANDLE_STREAM);
  if (had == FLAGOS_HANDLE_DEFAULT_STREAM)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_stream_destroy: stream %p is a default stream, which is "
                            "never destroyed", (void *)stream);
  if (had != FLAGOS_HANDLE_STREAM) return bad_stream("flagos_stream_destroy", stream);
  flagos_status_t st = v->stream_destroy(stream);
  if (st) flagos_handle_add(stream, FLAGOS_HANDLE_STREAM); /* still alive: keep it usable */
  return st;
}

FLAGOS_API flagos_status_t flagos_stream_query(flagos_stream_t stream) {
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_query");
  return v->stream_query(s);
}

FLAGOS_API flagos_status_t flagos_stream_synchronize(flagos_stream_t stream) {
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_synchronize");
  return v->stream_synchronize(s);
}

FLAGOS_API flagos_status_t flagos_stream_wait_event(flagos_stream_t stream, flagos_event_t event) {
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_wait_event");
  if (flagos_handle_kind(event) != FLAGOS_HANDLE_EVENT)
    return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                            "flagos_stream_wait_event: event %p is not a live flagos event",
                            (void *)event);
  return v->stream_wait_event(s, event);
}

FLAGOS_API flagos_status_t flagos_stream_device(flagos_stream_t stream, int *device) {
  NEED_PTR(device, "flagos_stream_device");
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_device");
  return v->stream_device(s, device);
}

FLAGOS_API flagos_status_t flagos_stream_priority(flagos_stream_t stream, int *priority) {
  NEED_PTR(priority, "flagos_stream_priority");
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_priority");
  return v->stream_priority(s, priority);
}

FLAGOS_API flagos_status_t flagos_stream_native_handle(flagos_stream_t stream, void **handle) {
  NEED_PTR(handle, "flagos_stream_native_handle");
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_stream_native_handle");
  return v->stream_native_handle(s, handle);
}

FLAGOS_API flagos_status_t flagos_launch_host_func(flagos_stream_t stream, flagos_host_fn_t fn,
                                                   void *user_data) {
  NEED_PTR(fn, "flagos_launch_host_func");
  NEED_VENDOR(v);
  RESOLVE(v, stream, s, "flagos_launch_host_func");
  return v->launch_host_func(s, fn, user_data);
}
