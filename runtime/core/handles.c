/*
 * handles.c - set of live stream/event handles.
 *
 * Every public call checks its handles here first, so a destroyed or
 * made-up handle is FLAGOS_ERROR_INVALID_HANDLE and never reaches a vendor.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/internal.h"

typedef struct node {
  const void *h;
  int kind;
  struct node *next;
} node_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static node_t **buckets;
static size_t nbuckets, count;

static size_t slot(const void *h, size_t n) {
  uintptr_t x = (uintptr_t)h;
  x ^= x >> 17;
  x *= 0x9E3779B97F4A7C15ull;
  return (size_t)(x >> 20) & (n - 1);
}

static bool grow(void) {
  size_t n = nbuckets ? nbuckets * 2 : 64;
  node_t **nb = calloc(n, sizeof *nb);
  if (!nb) return false;
  for (size_t i = 0; i < nbuckets; i++) {
    for (node_t *e = buckets[i], *next; e; e = next) {
      next = e->next;
      size_t s = slot(e->h, n);
      e->next = nb[s];
      nb[s] = e;
    }
  }
  free(buckets);
  buckets = nb;
  nbuckets = n;
  return true;
}

static node_t **find(const void *h) {
  if (!nbuckets) return NULL;
  node_t **p = &buckets[slot(h, nbuckets)];
  while (*p && (*p)->h != h) p = &(*p)->next;
  return p;
}

flagos_status_t flagos_handle_add(const void *h, int kind) {
  pthread_mutex_lock(&lock);
  node_t **p = find(h);
  if (p && *p) { /* default streams are added on every lookup */
    (*p)->kind = kind;
    pthread_mutex_unlock(&lock);
    return FLAGOS_SUCCESS;
  }
  if (count + 1 > nbuckets && !grow()) {
    pthread_mutex_unlock(&lock);
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos: out of host memory for handles");
  }
  node_t *e = malloc(sizeof *e);
  if (!e) {
    pthread_mutex_unlock(&lock);
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos: out of host memory for handles");
  }
  size_t s = slot(h, nbuckets);
  *e = (node_t){h, kind, buckets[s]};
  buckets[s] = e;
  count++;
  pthread_mutex_unlock(&lock);
  return FLAGOS_SUCCESS;
}

int flagos_handle_remove(const void *h, int kind) {
  pthread_mutex_lock(&lock);
  node_t **p = find(h);
  int had = p && *p ? (*p)->kind : FLAGOS_HANDLE_NONE;
  if (had == kind) {
    node_t *e = *p;
    *p = e->next;
    free(e);
    count--;
  }
  pthread_mutex_unlock(&lock);
  return had;
}

int flagos_handle_kind(const void *h) {
  pthread_mutex_lock(&lock);
  node_t **p = find(h);
  int kind = p && *p ? (*p)->kind : FLAGOS_HANDLE_NONE;
  pthread_mutex_unlock(&lock);
  return kind;
}
