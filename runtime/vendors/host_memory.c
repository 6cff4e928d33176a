/*
 * host_memory.c - host vendor memory: mmap'd device allocations kept
 * PROT_NONE outside runtime copies, pinned host memory, and the sorted
 * registry that maps any (interior) pointer to its allocation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/testing.h"
#include "vendors/host_internal.h"

typedef struct allocation {
  uintptr_t base;
  size_t size;     /* as requested */
  size_t map_size; /* page-rounded */
  int device;      /* -1 for pinned host memory */
  int user_refs;   /* flagos_host_access_begin nesting */
  int busy_refs;   /* runtime copies in flight */
} allocation_t;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static allocation_t **table; /* sorted by base: lookups are binary searches */
static size_t table_len, table_cap;
static size_t used[HOST_MAX_DEVICES];
static long fail_after = -1, fail_count = 0;

void host_memory_configure(long after) {
  pthread_mutex_lock(&mem_lock);
  fail_after = after;
  fail_count = -1;
  pthread_mutex_unlock(&mem_lock);
}

FLAGOS_API void flagos_testing_fail_device_malloc(long after, long count) {
  pthread_mutex_lock(&mem_lock);
  fail_after = after;
  fail_count = count;
  pthread_mutex_unlock(&mem_lock);
}

size_t host_physical_memory(void) {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)1 << 34;
}

size_t host_memory_used(int device) {
  pthread_mutex_lock(&mem_lock);
  size_t u = used[device];
  pthread_mutex_unlock(&mem_lock);
  return u;
}

/* Index of the first entry with base > p. Caller holds mem_lock. */
static size_t upper_bound(uintptr_t p) {
  size_t lo = 0, hi = table_len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (table[mid]->base <= p) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* The allocation holding p, or NULL. Caller holds mem_lock. */
static allocation_t *lookup(const void *p) {
  uintptr_t x = (uintptr_t)p;
  size_t i = upper_bound(x);
  if (!i) return NULL;
  allocation_t *a = table[i - 1];
  return x < a->base + a->size ? a : NULL;
}

static bool table_insert(allocation_t *a) {
  if (table_len == table_cap) {
    size_t cap = table_cap ? table_cap * 2 : 256;
    allocation_t **t = realloc(table, cap * sizeof *t);
    if (!t) return false;
    table = t;
    table_cap = cap;
  }
  size_t i = upper_bound(a->base);
  memmove(&table[i + 1], &table[i], (table_len - i) * sizeof *table);
  table[i] = a;
  table_len++;
  return true;
}

static void table_remove(allocation_t *a) {
  size_t i = upper_bound(a->base) - 1;
  memmove(&table[i], &table[i + 1], (table_len - i - 1) * sizeof *table);
  table_len--;
}

static void set_open(allocation_t *a, bool open) {
  if (!host_cfg.protect || a->device < 0) return;
  mprotect((void *)a->base, a->map_size, open ? PROT_READ | PROT_WRITE : PROT_NONE);
}

static size_t page_round(size_t size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (size + page - 1) / page * page;
}

static flagos_status_t oom(int device, size_t size, const char *why) {
  char a[32], b[32], c[32];
  if (host_cfg.memory_limit)
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                            "flagos host: out of memory on device %d: tried to allocate %s; %s in "
                            "use, limit %s (FLAGOS_HOST_MEMORY_LIMIT)%s",
                            device, flagos_format_bytes(a, sizeof a, size),
                            flagos_format_bytes(b, sizeof b, used[device]),
                            flagos_format_bytes(c, sizeof c, host_cfg.memory_limit), why);
  return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                          "flagos host: out of memory on device %d: tried to allocate %s; %s in "
                          "use%s", device, flagos_format_bytes(a, sizeof a, size),
                          flagos_format_bytes(b, sizeof b, used[device]), why);
}

/* Fault injection; caller holds mem_lock. */
static bool injected_failure(void) {
  if (fail_after < 0) return false;
  if (fail_after > 0) {
    fail_after--;
    return false;
  }
  if (fail_count == 0) {
    fail_after = -1;
    return false;
  }
  if (fail_count > 0 && --fail_count == 0) fail_after = -1;
  return true;
}

static flagos_status_t map_allocation(int device, size_t size, void **ptr) {
  allocation_t *a = calloc(1, sizeof *a);
  if (!a) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  a->size = size;
  a->map_size = page_round(size);
  a->device = device;
  int prot = device >= 0 && host_cfg.protect ? PROT_NONE : PROT_READ | PROT_WRITE;
  void *p = mmap(NULL, a->map_size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    free(a);
    pthread_mutex_lock(&mem_lock);
    flagos_status_t st = device >= 0 ? oom(device, size, " (mmap failed)")
                                     : flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                                                        "flagos host: pinned allocation of %zu "
                                                        "bytes failed (mmap)", size);
    pthread_mutex_unlock(&mem_lock);
    return st;
  }
  a->base = (uintptr_t)p;
  pthread_mutex_lock(&mem_lock);
  bool ok = table_insert(a);
  pthread_mutex_unlock(&mem_lock);
  if (!ok) {
    munmap(p, a->map_size);
    free(a);
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  }
  *ptr = p;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_malloc_device(int device, void **ptr, size_t size) {
  pthread_mutex_lock(&mem_lock);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (injected_failure())
    st = oom(device, size, " (injected failure)");
  else if (host_cfg.memory_limit && size > host_cfg.memory_limit - used[device])
    st = oom(device, size, "");
  else
    used[device] += size; /* reserve now so concurrent mallocs respect the limit */
  pthread_mutex_unlock(&mem_lock);
  if (st) return st;
  st = map_allocation(device, size, ptr);
  if (st) {
    pthread_mutex_lock(&mem_lock);
    used[device] -= size;
    pthread_mutex_unlock(&mem_lock);
  }
  return st;
}

/* Unregisters the allocation that starts at ptr with the wanted kind. */
static flagos_status_t unmap_allocation(const char *fn, void *ptr, bool device_side) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(ptr);
  if (!a || a->base != (uintptr_t)ptr || (a->device >= 0) != device_side) {
    flagos_status_t st = flagos_set_error(
        FLAGOS_ERROR_INVALID_HANDLE,
        "%s: pointer %p is not the start of a live flagos %s allocation%s", fn, ptr,
        device_side ? "device" : "pinned host",
        a && (a->device >= 0) == device_side ? " (it points inside one)" : "");
    pthread_mutex_unlock(&mem_lock);
    return st;
  }
  table_remove(a);
  if (a->device >= 0) used[a->device] -= a->size;
  pthread_mutex_unlock(&mem_lock);
  munmap((void *)a->base, a->map_size);
  free(a);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_free_device(void *ptr) {
  /* Like cudaFree: pending work of every stream may still use the memory. */
  for (int d = 0; d < host_cfg.devices; d++) {
    flagos_status_t st = host_device_synchronize(d);
    if (st) return st;
  }
  return unmap_allocation("flagos_free", ptr, true);
}

flagos_status_t host_malloc_host(void **ptr, size_t size) { return map_allocation(-1, size, ptr); }

flagos_status_t host_free_host(void *ptr) { return unmap_allocation("flagos_host_free", ptr, false); }

flagos_status_t host_pointer_attributes(flagos_pointer_attributes_t *attr, const void *p) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(p);
  if (a) {
    attr->type = a->device >= 0 ? FLAGOS_MEMORY_DEVICE : FLAGOS_MEMORY_HOST;
    attr->device = a->device;
    attr->base = (void *)a->base;
    attr->size = a->size;
  } else {
    *attr = (flagos_pointer_attributes_t){FLAGOS_MEMORY_UNREGISTERED, -1, NULL, 0};
  }
  pthread_mutex_unlock(&mem_lock);
  return FLAGOS_SUCCESS;
}

static flagos_status_t not_device(const char *fn, const void *ptr) {
  return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                          "%s: pointer %p is not inside a live flagos device allocation", fn, ptr);
}

flagos_status_t host_access_begin(const void *ptr) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(ptr);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (!a || a->device < 0) {
    st = not_device("flagos_host_access_begin", ptr);
  } else if (a->user_refs++ == 0 && a->busy_refs == 0) {
    set_open(a, true);
  }
  pthread_mutex_unlock(&mem_lock);
  return st;
}

flagos_status_t host_access_end(const void *ptr) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(ptr);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (!a || a->device < 0) {
    st = not_device("flagos_host_access_end", ptr);
  } else if (a->user_refs == 0) {
    st = flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                          "flagos_host_access_end: allocation %p has no open "
                          "flagos_host_access_begin", (void *)a->base);
  } else if (--a->user_refs == 0 && a->busy_refs == 0) {
    set_open(a, false);
  }
  pthread_mutex_unlock(&mem_lock);
  return st;
}

flagos_status_t host_check_range(const char *fn, const char *role, const void *ptr, size_t size,
                                 bool device_side, int *device) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(ptr);
  flagos_status_t st = FLAGOS_SUCCESS;
  *device = a ? a->device : -1;
  if (device_side) {
    if (!a || a->device < 0)
      st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "%s: %s %p is not flagos device memory", fn, role, ptr);
    else if (size > a->base + a->size - (uintptr_t)ptr)
      st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "%s: %s range %p + %zu bytes overruns its allocation %p of %zu bytes",
                            fn, role, ptr, size, (void *)a->base, a->size);
  } else if (a && a->device >= 0) {
    st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                          "%s: %s %p is flagos device memory but the copy kind says host", fn,
                          role, ptr);
  } else if (a && size > a->base + a->size - (uintptr_t)ptr) {
    st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                          "%s: %s range %p + %zu bytes overruns its pinned allocation %p of %zu "
                          "bytes", fn, role, ptr, size, (void *)a->base, a->size);
  }
  pthread_mutex_unlock(&mem_lock);
  return st;
}

/* Opens the device allocation holding p for a runtime copy; NULL if none. */
static allocation_t *busy_begin(const void *p) {
  pthread_mutex_lock(&mem_lock);
  allocation_t *a = lookup(p);
  if (a && a->device >= 0) {
    if (a->busy_refs++ == 0 && a->user_refs == 0) set_open(a, true);
  } else {
    a = NULL;
  }
  pthread_mutex_unlock(&mem_lock);
  return a;
}

static void busy_end(allocation_t *a) {
  if (!a) return;
  pthread_mutex_lock(&mem_lock);
  if (--a->busy_refs == 0 && a->user_refs == 0) set_open(a, false);
  pthread_mutex_unlock(&mem_lock);
}

void host_run_copy(void *dst, const void *src, size_t size, flagos_memcpy_kind_t k) {
  bool dd = k == FLAGOS_MEMCPY_HOST_TO_DEVICE || k == FLAGOS_MEMCPY_DEVICE_TO_DEVICE;
  bool sd = k == FLAGOS_MEMCPY_DEVICE_TO_HOST || k == FLAGOS_MEMCPY_DEVICE_TO_DEVICE;
  allocation_t *da = dd ? busy_begin(dst) : NULL;
  allocation_t *sa = sd ? busy_begin(src) : NULL;
  /* An allocation freed under a pending copy is a caller bug; skip, don't fault. */
  if ((!dd || da) && (!sd || sa)) memmove(dst, src, size);
  busy_end(sa);
  busy_end(da);
}

void host_run_memset(void *dst, int value, size_t size) {
  allocation_t *a = busy_begin(dst);
  memset(dst, value, size);
  busy_end(a);
}
