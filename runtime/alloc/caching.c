/*
 * caching.c - stream-aware caching allocator over the live vendor, in
 * the manner of PyTorch's CUDACachingAllocator: per device a small and a
 * large pool of free blocks keyed by stream, best fit, split and merge,
 * record_stream events before cross-stream reuse, free-cache-and-retry
 * on out-of-memory. It calls only the vendor table (never Python).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/ptr_map.h"

enum {
  MIN_BLOCK = 512,                      /* all sizes round to this */
  SMALL_SIZE = 1 << 20,                 /* small pool: requests <= 1 MiB */
  SMALL_SEGMENT = 2 << 20,              /* small pool segments */
  LARGE_SEGMENT = 20 << 20,             /* large requests < 10 MiB share these */
  MIN_LARGE_ALLOC = 10 << 20,
  ROUND_LARGE = 2 << 20,
  EVENT_POOL_MAX = 64,
};

typedef struct pending {
  flagos_event_t event;
  block_t *block;
  bool pooled; /* from this device's event pool (else destroy when done) */
} pending_t;

typedef struct device_alloc {
  pthread_mutex_t mu;
  block_set_t small, large;
  pending_t *pending;
  size_t n_pending, cap_pending;
  flagos_event_t events[EVENT_POOL_MAX];
  size_t n_events;
  flagos_allocator_stats_t stats;
} device_alloc_t;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static device_alloc_t *devs;
static int n_devs;
static bool no_cache;
static const flagos_vendor_ops_t *vendor;

static void init_once(void) {
  vendor = flagos_live_vendor();
  n_devs = flagos_core_device_count();
  no_cache = flagos_env_flag("FLAGOS_ALLOC_NO_CACHE", false);
  devs = calloc((size_t)n_devs, sizeof *devs);
  if (!devs) return;
  for (int i = 0; i < n_devs; i++) pthread_mutex_init(&devs[i].mu, NULL);
}

/* Vendor live and allocator state ready. */
static flagos_status_t ready(void) {
  const flagos_vendor_ops_t *v;
  flagos_status_t st = flagos_core_vendor(&v);
  if (st) return st;
  pthread_once(&once, init_once);
  if (!devs)
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                            "flagos caching allocator: out of host memory at start-up");
  return FLAGOS_SUCCESS;
}

static size_t round_size(size_t size) {
  return size < MIN_BLOCK ? MIN_BLOCK : (size + MIN_BLOCK - 1) / MIN_BLOCK * MIN_BLOCK;
}

static size_t segment_size(size_t rsize) {
  if (no_cache) return rsize;
  if (rsize <= SMALL_SIZE) return SMALL_SEGMENT;
  if (rsize < MIN_LARGE_ALLOC) return LARGE_SEGMENT;
  return (rsize + ROUND_LARGE - 1) / ROUND_LARGE * ROUND_LARGE;
}

static block_set_t *pool_of(device_alloc_t *d, bool small) { return small ? &d->small : &d->large; }

static void peak(uint64_t *p, uint64_t v) {
  if (v > *p) *p = v;
}

/* ------------------------------------------------------- freeing blocks */

static void release_segment(device_alloc_t *d, block_t *b) {
  vendor->free_device(b->ptr);
  d->stats.reserved_bytes -= b->size;
  d->stats.segments--;
  d->stats.num_device_frees++;
  free(b->uses);
  free(b);
}

/* Absorbs free neighbour n into b (n is before or after b). */
static void merge(device_alloc_t *d, block_t *b, block_t *n) {
  if (!n || n->state != BLOCK_FREE) return;
  block_set_erase(pool_of(d, n->small), n);
  if (n == b->prev) {
    b->ptr = n->ptr;
    b->prev = n->prev;
    if (b->prev) b->prev->next = b;
  } else {
    b->next = n->next;
    if (b->next) b->next->prev = b;
  }
  b->size += n->size;
  free(n->uses);
  free(n);
}

/* Returns a block to its stream's pool, merging with free neighbours. */
static void free_block(device_alloc_t *d, block_t *b) {
  b->state = BLOCK_FREE;
  b->n_uses = 0;
  merge(d, b, b->prev);
  merge(d, b, b->next);
  if (no_cache && !b->prev && !b->next) {
    release_segment(d, b);
    return;
  }
  /* Insert only fails without host memory; the block is then lost to the cache. */
  block_set_insert(pool_of(d, b->small), b);
}

static void event_done(device_alloc_t *d, pending_t *p) {
  if (p->pooled && d->n_events < EVENT_POOL_MAX) d->events[d->n_events++] = p->event;
  else vendor->event_destroy(p->event);
  if (--p->block->pending_events == 0) free_block(d, p->block);
}

/* Retires completed record_stream events (wait: block on all of them). */
static void process_events(device_alloc_t *d, bool wait) {
  size_t keep = 0;
  for (size_t i = 0; i < d->n_pending; i++) {
    pending_t p = d->pending[i];
    flagos_status_t st = wait ? vendor->event_synchronize(p.event) : vendor->event_query(p.event);
    if (st == FLAGOS_ERROR_NOT_READY) d->pending[keep++] = p;
    else event_done(d, &p); /* an error leaves nothing to wait for */
  }
  d->n_pending = keep;
}

/* Frees every cached segment that has no live block (after pending events). */
static void release_cached(device_alloc_t *d) {
  process_events(d, true);
  for (int pool = 0; pool < 2; pool++) {
    block_set_t *s = pool_of(d, pool == 0);
    size_t keep = 0;
    for (size_t i = 0; i < s->n; i++) {
      block_t *b = s->v[i];
      if (!b->prev && !b->next) release_segment(d, b);
      else s->v[keep++] = b;
    }
    s->n = keep; /* order is preserved by the in-place filter */
  }
}

/* ----------------------------------------------------------- allocation */

static flagos_status_t oom_error(device_alloc_t *d, int device, size_t size, const char *why) {
  char req[32], alloc[32], res[32], cached[32], tot[32], fr[32];
  const flagos_allocator_stats_t *s = &d->stats;
  size_t free_b = 0, total_b = 0;
  char limit[96] = "";
  if (vendor->mem_get_info(device, &free_b, &total_b) == FLAGOS_SUCCESS)
    snprintf(limit, sizeof limit, "; device total %s, %s free",
             flagos_format_bytes(tot, sizeof tot, total_b),
             flagos_format_bytes(fr, sizeof fr, free_b));
  return flagos_set_error(
      FLAGOS_ERROR_OUT_OF_MEMORY,
      "flagos: out of memory on device %d: tried to allocate %s; %s allocated, %s reserved "
      "(%s cached)%s. Vendor said: %s",
      device, flagos_format_bytes(req, sizeof req, size),
      flagos_format_bytes(alloc, sizeof alloc, s->allocated_bytes),
      flagos_format_bytes(res, sizeof res, s->reserved_bytes),
      flagos_format_bytes(cached, sizeof cached, s->reserved_bytes - s->allocated_bytes),
      limit, why);
}

/* A new segment from the vendor; on OOM frees the cache and retries once. */
static flagos_status_t new_segment(device_alloc_t *d, int device, flagos_stream_t stream,
                                   size_t rsize, size_t requested, bool small, block_t **out) {
  size_t seg = segment_size(rsize);
  void *p = NULL;
  flagos_status_t st = vendor->malloc_device(device, &p, seg);
  if (st == FLAGOS_ERROR_OUT_OF_MEMORY) {
    release_cached(d);
    d->stats.num_alloc_retries++;
    st = vendor->malloc_device(device, &p, seg);
  }
  if (st == FLAGOS_ERROR_OUT_OF_MEMORY) {
    char why[512];
    snprintf(why, sizeof why, "%s", flagos_last_error());
    d->stats.num_ooms++;
    return oom_error(d, device, requested, why);
  }
  if (st) return st;
  block_t *b = calloc(1, sizeof *b);
  if (!b) {
    vendor->free_device(p);
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                            "flagos caching allocator: out of host memory for block metadata");
  }
  b->ptr = p;
  b->size = seg;
  b->device = device;
  b->stream = stream;
  b->small = small;
  d->stats.reserved_bytes += seg;
  d->stats.segments++;
  d->stats.num_device_mallocs++;
  peak(&d->stats.peak_reserved_bytes, d->stats.reserved_bytes);
  *out = b;
  return FLAGOS_SUCCESS;
}

/* Cuts the tail off b into a free block if it is worth keeping apart. */
static void maybe_split(device_alloc_t *d, block_t *b, size_t rsize) {
  size_t rest = b->size - rsize;
  if (no_cache || (b->small ? rest < MIN_BLOCK : rest <= SMALL_SIZE)) return;
  block_t *r = calloc(1, sizeof *r);
  if (!r) return; /* keep the block whole: correct, just less compact */
  *r = (block_t){.ptr = b->ptr + rsize, .size = rest, .device = b->device, .stream = b->stream,
                 .small = b->small, .state = BLOCK_FREE, .prev = b, .next = b->next};
  if (b->next) b->next->prev = r;
  b->next = r;
  b->size = rsize;
  if (!block_set_insert(pool_of(d, r->small), r)) {
    /* Undo: without host memory the remainder stays inside b. */
    b->next = r->next;
    if (b->next) b->next->prev = b;
    b->size += rest;
    free(r);
  }
}

static flagos_status_t resolve_stream(const flagos_vendor_ops_t *v, int device,
                                      flagos_stream_t in, flagos_stream_t *out) {
  if (!in) {
    flagos_status_t st = flagos_default_stream(device, out);
    return st;
  }
  flagos_status_t st = flagos_core_stream(v, in, out);
  if (st) return st;
  int sd = -1;
  st = v->stream_device(*out, &sd);
  if (st) return st;
  if (sd != device)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_caching_malloc: stream %p belongs to device %d, not device %d",
                            (void *)in, sd, device);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_malloc(void **ptr, size_t size, int device,
                                                 flagos_stream_t stream) {
  NEED_PTR(ptr, "flagos_caching_malloc");
  flagos_status_t st = ready();
  if (st) return st;
  st = flagos_core_check_device(device);
  if (st) return st;
  flagos_stream_t s;
  st = resolve_stream(vendor, device, stream, &s);
  if (st) return st;
  if (!size) {
    *ptr = NULL;
    return FLAGOS_SUCCESS;
  }
  device_alloc_t *d = &devs[device];
  if (size > SIZE_MAX - 2 * (size_t)ROUND_LARGE) {
    pthread_mutex_lock(&d->mu);
    d->stats.num_ooms++;
    st = oom_error(d, device, size, "the size is impossibly large");
    pthread_mutex_unlock(&d->mu);
    return st;
  }
  size_t rsize = round_size(size);
  bool small = rsize <= SMALL_SIZE;
  pthread_mutex_lock(&d->mu);
  if (d->n_pending) process_events(d, false);
  block_t *b = no_cache ? NULL : block_set_best_fit(pool_of(d, small), s, rsize);
  if (b) block_set_erase(pool_of(d, small), b);
  else st = new_segment(d, device, s, rsize, size, small, &b);
  if (!st) {
    maybe_split(d, b, rsize);
    b->state = BLOCK_ALLOCATED;
    b->requested = size;
    if (!ptr_map_insert(b)) {
      free_block(d, b);
      st = flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                            "flagos caching allocator: out of host memory for the pointer map");
    }
  }
  if (!st) {
    flagos_allocator_stats_t *x = &d->stats;
    x->allocated_bytes += b->size;
    x->requested_bytes += size;
    x->active_blocks++;
    x->num_allocs++;
    peak(&x->peak_allocated_bytes, x->allocated_bytes);
    *ptr = b->ptr;
  }
  pthread_mutex_unlock(&d->mu);
  return st;
}

static flagos_status_t not_ours(const char *fn, const void *ptr) {
  return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                          "%s: pointer %p was not allocated by the flagos caching allocator (or "
                          "was already freed)", fn, ptr);
}

/* Locks the device owning ptr's live block; NULL (error set) if none. */
static block_t *lock_block(const char *fn, const void *ptr, device_alloc_t **dout) {
  int device = ptr_map_device(ptr);
  if (device < 0) {
    not_ours(fn, ptr);
    return NULL;
  }
  device_alloc_t *d = &devs[device];
  pthread_mutex_lock(&d->mu);
  block_t *b = ptr_map_find(ptr);
  if (!b || b->device != device) { /* freed meanwhile by another thread */
    pthread_mutex_unlock(&d->mu);
    not_ours(fn, ptr);
    return NULL;
  }
  *dout = d;
  return b;
}

/* Records an event for b on stream u; false if it had to synchronize instead. */
static bool record_use(device_alloc_t *d, block_t *b, flagos_stream_t u) {
  if (d->n_pending == d->cap_pending) {
    size_t cap = d->cap_pending ? d->cap_pending * 2 : 16;
    pending_t *p = realloc(d->pending, cap * sizeof *p);
    if (!p) return false;
    d->pending = p;
    d->cap_pending = cap;
  }
  int sd = b->device, prev = -1;
  vendor->stream_device(u, &sd);
  bool pooled = sd == b->device && d->n_events > 0;
  /* Events belong to the device current at creation (CUDA): switch to the stream's. */
  bool switched = vendor->get_device(&prev) == FLAGOS_SUCCESS && prev != sd &&
                  vendor->set_device(sd) == FLAGOS_SUCCESS;
  flagos_event_t e = pooled ? d->events[--d->n_events] : NULL;
  flagos_status_t st = e ? FLAGOS_SUCCESS : vendor->event_create(&e, FLAGOS_EVENT_DISABLE_TIMING);
  if (!st) st = vendor->event_record(e, u);
  if (switched) vendor->set_device(prev);
  if (st) {
    if (e) vendor->event_destroy(e);
    return false;
  }
  d->pending[d->n_pending++] = (pending_t){e, b, sd == b->device};
  b->pending_events++;
  return true;
}

FLAGOS_API flagos_status_t flagos_caching_free(void *ptr) {
  if (!ptr) return FLAGOS_SUCCESS;
  flagos_status_t st = ready();
  if (st) return st;
  device_alloc_t *d;
  block_t *b = lock_block("flagos_caching_free", ptr, &d);
  if (!b) return FLAGOS_ERROR_INVALID_HANDLE;
  ptr_map_remove(ptr);
  flagos_allocator_stats_t *x = &d->stats;
  x->allocated_bytes -= b->size;
  x->requested_bytes -= b->requested;
  x->active_blocks--;
  x->num_frees++;
  b->state = BLOCK_PENDING;
  for (size_t i = 0; i < b->n_uses; i++) {
    if (!record_use(d, b, b->uses[i])) vendor->stream_synchronize(b->uses[i]);
  }
  b->n_uses = 0;
  if (b->pending_events == 0) free_block(d, b);
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_record_stream(void *ptr, flagos_stream_t stream) {
  NEED_PTR(ptr, "flagos_caching_record_stream");
  flagos_status_t st = ready();
  if (st) return st;
  flagos_stream_t s;
  st = flagos_core_stream(vendor, stream, &s);
  if (st) return st;
  device_alloc_t *d;
  block_t *b = lock_block("flagos_caching_record_stream", ptr, &d);
  if (!b) return FLAGOS_ERROR_INVALID_HANDLE;
  bool known = s == b->stream;
  for (size_t i = 0; !known && i < b->n_uses; i++) known = b->uses[i] == s;
  if (!known) {
    if (b->n_uses == b->cap_uses) {
      size_t cap = b->cap_uses ? b->cap_uses * 2 : 4;
      flagos_stream_t *u = realloc(b->uses, cap * sizeof *u);
      if (!u) {
        pthread_mutex_unlock(&d->mu);
        return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY,
                                "flagos_caching_record_stream: out of host memory");
      }
      b->uses = u;
      b->cap_uses = cap;
    }
    b->uses[b->n_uses++] = s;
  }
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_empty_cache(void) {
  flagos_status_t st = ready();
  if (st) return st;
  for (int i = 0; i < n_devs; i++) {
    pthread_mutex_lock(&devs[i].mu);
    release_cached(&devs[i]);
    pthread_mutex_unlock(&devs[i].mu);
  }
  return FLAGOS_SUCCESS;
}

/* Validates device and gives its locked state (error: nothing locked). */
static flagos_status_t lock_device(int device, device_alloc_t **d) {
  flagos_status_t st = ready();
  if (st) return st;
  st = flagos_core_check_device(device);
  if (st) return st;
  *d = &devs[device];
  pthread_mutex_lock(&(*d)->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_get_stats(int device, flagos_allocator_stats_t *stats) {
  NEED_PTR(stats, "flagos_caching_get_stats");
  device_alloc_t *d;
  flagos_status_t st = lock_device(device, &d);
  if (st) return st;
  *stats = d->stats;
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_reset_peak_stats(int device) {
  device_alloc_t *d;
  flagos_status_t st = lock_device(device, &d);
  if (st) return st;
  d->stats.peak_allocated_bytes = d->stats.allocated_bytes;
  d->stats.peak_reserved_bytes = d->stats.reserved_bytes;
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_reset_accumulated_stats(int device) {
  device_alloc_t *d;
  flagos_status_t st = lock_device(device, &d);
  if (st) return st;
  flagos_allocator_stats_t *x = &d->stats;
  x->num_allocs = x->num_frees = x->num_device_mallocs = x->num_device_frees = 0;
  x->num_alloc_retries = x->num_ooms = 0;
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_caching_block_size(const void *ptr, size_t *size) {
  NEED_PTR(ptr, "flagos_caching_block_size");
  NEED_PTR(size, "flagos_caching_block_size");
  flagos_status_t st = ready();
  if (st) return st;
  device_alloc_t *d;
  block_t *b = lock_block("flagos_caching_block_size", ptr, &d);
  if (!b) return FLAGOS_ERROR_INVALID_HANDLE;
  *size = b->size;
  pthread_mutex_unlock(&d->mu);
  return FLAGOS_SUCCESS;
}
