/* error.c - thread-local message of the last failing call. */
#include <stdarg.h>
#include <stdio.h>

#include "core/vendor.h"

/* Fixed buffer: setting an error must not allocate (it may report OOM). */
static _Thread_local char last_error[1024];

flagos_status_t flagos_set_error(flagos_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return status;
}

FLAGOS_API const char *flagos_last_error(void) { return last_error; }

FLAGOS_API void flagos_clear_error(void) { last_error[0] = '\0'; }
