/* event.c - public event calls: validate, then call the live vendor. */
#include "core/internal.h"

static flagos_status_t check_event(const char *fn, const char *what, flagos_event_t e) {
  if (flagos_handle_kind(e) == FLAGOS_HANDLE_EVENT) return FLAGOS_SUCCESS;
  return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                          "%s: %s %p is not a live flagos event (destroyed or never created)",
                          fn, what, (void *)e);
}

#define CHECK_EVENT(fn, what, e)                   \
  do {                                             \
    flagos_status_t st_ = check_event(fn, what, e); \
    if (st_) return st_;                           \
  } while (0)

FLAGOS_API flagos_status_t flagos_event_create(flagos_event_t *event, unsigned flags) {
  NEED_PTR(event, "flagos_event_create");
  NEED_VENDOR(v);
  if (flags & ~(unsigned)FLAGOS_EVENT_DISABLE_TIMING)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_event_create: unknown flags 0x%x", flags);
  flagos_event_t e = NULL;
  flagos_status_t st = v->event_create(&e, flags);
  if (st) return st;
  st = flagos_handle_add(e, FLAGOS_HANDLE_EVENT);
  if (st) {
    v->event_destroy(e);
    return st;
  }
  *event = e;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_event_destroy(flagos_event_t event) {
  NEED_VENDOR(v);
  if (flagos_handle_remove(event, FLAGOS_HANDLE_EVENT) != FLAGOS_HANDLE_EVENT)
    return check_event("flagos_event_destroy", "event", event);
  return v->event_destroy(event);
}

FLAGOS_API flagos_status_t flagos_event_record(flagos_event_t event, flagos_stream_t stream) {
  NEED_VENDOR(v);
  CHECK_EVENT("flagos_event_record", "event", event);
  flagos_stream_t s;
  flagos_status_t st = flagos_core_stream(v, stream, &s);
  if (st) return st;
  return v->event_record(event, s);
}

FLAGOS_API flagos_status_t flagos_event_query(flagos_event_t event) {
  NEED_VENDOR(v);
  CHECK_EVENT("flagos_event_query", "event", event);
  return v->event_query(event);
}

FLAGOS_API flagos_status_t flagos_event_synchronize(flagos_event_t event) {
  NEED_VENDOR(v);
  CHECK_EVENT("flagos_event_synchronize", "event", event);
  return v->event_synchronize(event);
}

FLAGOS_API flagos_status_t flagos_event_elapsed_time(float *ms, flagos_event_t start,
                                                     flagos_event_t end) {
  NEED_PTR(ms, "flagos_event_elapsed_time");
  NEED_VENDOR(v);
  CHECK_EVENT("flagos_event_elapsed_time", "start event", start);
  CHECK_EVENT("flagos_event_elapsed_time", "end event", end);
  float out = 0;
  flagos_status_t st = v->event_elapsed_time(&out, start, end);
  if (st) return st;
  *ms = out;
  return FLAGOS_SUCCESS;
}
