/*
 * internal.h - shared helpers of the core (hidden symbols, not API).
 */
#ifndef FLAGOS_RUNTIME_INTERNAL_H
#define FLAGOS_RUNTIME_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/vendor.h"

#define FLAGOS_HIDDEN __attribute__((visibility("hidden")))

/* Lazily runs flagos_init(NULL); on success *v is the live vendor. */
FLAGOS_HIDDEN flagos_status_t flagos_core_vendor(const flagos_vendor_ops_t **v);
/* Number of devices of the live vendor (valid after flagos_core_vendor). */
FLAGOS_HIDDEN int flagos_core_device_count(void);
/* INVALID_DEVICE with the standard message unless 0 <= device < count. */
FLAGOS_HIDDEN flagos_status_t flagos_core_check_device(int device);
/* Current device of the calling thread (core's view). */
FLAGOS_HIDDEN int flagos_core_current_device(void);

/* Registry of live stream/event handles, so a stale handle is an error. */
enum {
  FLAGOS_HANDLE_NONE = 0,
  FLAGOS_HANDLE_STREAM = 1,
  FLAGOS_HANDLE_DEFAULT_STREAM = 2, /* a stream that is never destroyed */
  FLAGOS_HANDLE_EVENT = 3
};
FLAGOS_HIDDEN flagos_status_t flagos_handle_add(const void *h, int kind);
/* Removes h if it has this kind; returns the kind it had (NONE if absent). */
FLAGOS_HIDDEN int flagos_handle_remove(const void *h, int kind);
FLAGOS_HIDDEN int flagos_handle_kind(const void *h);
/*
 * Resolves a stream argument: NULL means the default stream of the
 * current device; anything else must be a live stream handle.
 */
FLAGOS_HIDDEN flagos_status_t flagos_core_stream(const flagos_vendor_ops_t *v,
                                                 flagos_stream_t in, flagos_stream_t *out);

/* "64.00 MiB"-style rendering into buf (returns buf). */
FLAGOS_HIDDEN const char *flagos_format_bytes(char *buf, size_t len, unsigned long long bytes);
/* Parses "123", "64K", "512M", "2G" (binary units); false if malformed. */
FLAGOS_HIDDEN bool flagos_parse_bytes(const char *text, unsigned long long *out);
/* Environment flag set to a true-ish value ("1", "true", "yes", "on"). */
FLAGOS_HIDDEN bool flagos_env_flag(const char *name, bool default_value);

#define NEED_VENDOR(v)                            \
  const flagos_vendor_ops_t *v;                   \
  do {                                            \
    flagos_status_t st_ = flagos_core_vendor(&v); \
    if (st_) return st_;                          \
  } while (0)

#define NEED_PTR(p, fn)                                                              \
  do {                                                                               \
    if (!(p))                                                                        \
      return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, fn ": " #p " is NULL"); \
  } while (0)

#endif
