/*
 * init.c - choosing the live vendor (FLAGOS_VENDOR / flagos_init).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/*
 * cuda.c is written separately and may be absent from a build (or from a
 * partial checkout); a weak reference lets "auto" fall back to host then.
 */
#pragma weak flagos_vendor_cuda

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(const flagos_vendor_ops_t *) live = NULL;
static int device_count = 0;

static const char allowed_words[] = "auto, host, cuda, metax, ascend";

const flagos_vendor_ops_t *flagos_live_vendor(void) {
  return atomic_load_explicit(&live, memory_order_acquire);
}

int flagos_core_device_count(void) { return device_count; }

/* Probes one vendor; on success it has >= 1 device and *count is set. */
static flagos_status_t try_vendor(const flagos_vendor_ops_t *v, int *count) {
  flagos_status_t st = v->probe();
  if (st != FLAGOS_SUCCESS) return st;
  int n = 0;
  st = v->device_count(&n);
  if (st != FLAGOS_SUCCESS) return st;
  if (n <= 0)
    return flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                            "flagos: vendor '%s' loaded but reports no devices", v->name);
  *count = n;
  return FLAGOS_SUCCESS;
}

static flagos_status_t choose(const char *word, const char *origin,
                              const flagos_vendor_ops_t **out, int *count) {
  const flagos_vendor_ops_t *cuda = &flagos_vendor_cuda ? &flagos_vendor_cuda : NULL;
  if (!strcmp(word, "auto")) {
    if (cuda && try_vendor(cuda, count) == FLAGOS_SUCCESS) {
      *out = cuda;
      return FLAGOS_SUCCESS;
    }
    flagos_clear_error(); /* cuda missing is the normal case for auto */
    flagos_status_t st = try_vendor(&flagos_vendor_host, count);
    if (st == FLAGOS_SUCCESS) *out = &flagos_vendor_host;
    return st;
  }
  if (!strcmp(word, "host")) {
    flagos_status_t st = try_vendor(&flagos_vendor_host, count);
    if (st == FLAGOS_SUCCESS) *out = &flagos_vendor_host;
    return st;
  }
  if (!strcmp(word, "cuda")) {
    if (!cuda)
      return flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                              "flagos: vendor 'cuda' is not compiled into this libflagos");
    flagos_status_t st = try_vendor(cuda, count);
    if (st == FLAGOS_SUCCESS) *out = cuda;
    else if (st != FLAGOS_ERROR_VENDOR_UNAVAILABLE) st = FLAGOS_ERROR_VENDOR_UNAVAILABLE;
    return st;
  }
  if (!strcmp(word, "metax") || !strcmp(word, "ascend"))
    return flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                            "flagos: vendor '%s' is not available in this build yet "
                            "(use one of: auto, host, cuda)", word);
  return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                          "flagos: unknown vendor '%s'%s; allowed: %s", word, origin,
                          allowed_words);
}

FLAGOS_API flagos_status_t flagos_init(const char *vendor) {
  const char *origin = "";
  if (!vendor) {
    vendor = getenv("FLAGOS_VENDOR");
    origin = " (from FLAGOS_VENDOR)";
    if (!vendor || !*vendor) vendor = "auto";
  }
  pthread_mutex_lock(&init_lock);
  const flagos_vendor_ops_t *cur = flagos_live_vendor();
  flagos_status_t st = FLAGOS_SUCCESS;
  if (cur) {
    /* "auto" accepts whatever is live, so lazy init never fights an explicit one. */
    if (strcmp(vendor, "auto") && strcmp(vendor, cur->name)) {
      const flagos_vendor_ops_t *tmp;
      int n;
      bool known = !strcmp(vendor, "host") || !strcmp(vendor, "cuda") ||
                   !strcmp(vendor, "metax") || !strcmp(vendor, "ascend");
      if (!known)
        st = choose(vendor, origin, &tmp, &n); /* same "unknown vendor" message */
      else
        st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                              "flagos: already initialized with vendor '%s'; cannot switch "
                              "to '%s'%s", cur->name, vendor, origin);
    }
    pthread_mutex_unlock(&init_lock);
    return st;
  }
  const flagos_vendor_ops_t *chosen = NULL;
  int n = 0;
  st = choose(vendor, origin, &chosen, &n);
  if (st == FLAGOS_SUCCESS) {
    device_count = n;
    atomic_store_explicit(&live, chosen, memory_order_release);
  }
  pthread_mutex_unlock(&init_lock);
  return st;
}

flagos_status_t flagos_core_vendor(const flagos_vendor_ops_t **v) {
  const flagos_vendor_ops_t *cur = flagos_live_vendor();
  if (!cur) {
    flagos_status_t st = flagos_init(NULL);
    if (st != FLAGOS_SUCCESS) return st;
    cur = flagos_live_vendor();
  }
  *v = cur;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_vendor(flagos_vendor_kind_t *kind) {
  if (!kind) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_vendor: kind is NULL");
  const flagos_vendor_ops_t *v;
  flagos_status_t st = flagos_core_vendor(&v);
  if (st) return st;
  *kind = v->kind;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_vendor_name(const char **name) {
  if (!name)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_vendor_name: name is NULL");
  const flagos_vendor_ops_t *v;
  flagos_status_t st = flagos_core_vendor(&v);
  if (st) return st;
  *name = v->name;
  return FLAGOS_SUCCESS;
}
