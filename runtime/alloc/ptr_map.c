/* ptr_map.c - chained hash from block address to live block. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "alloc/ptr_map.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static block_t **buckets;
static size_t nbuckets, count;

static size_t slot(const void *p, size_t n) {
  uintptr_t x = (uintptr_t)p >> 9; /* blocks are 512-byte aligned */
  x *= 0x9E3779B97F4A7C15ull;
  return (size_t)(x >> 24) & (n - 1);
}

static bool grow(void) {
  size_t n = nbuckets ? nbuckets * 2 : 1024;
  block_t **nb = calloc(n, sizeof *nb);
  if (!nb) return false;
  for (size_t i = 0; i < nbuckets; i++) {
    for (block_t *b = buckets[i], *next; b; b = next) {
      next = b->map_next;
      size_t s = slot(b->ptr, n);
      b->map_next = nb[s];
      nb[s] = b;
    }
  }
  free(buckets);
  buckets = nb;
  nbuckets = n;
  return true;
}

bool ptr_map_insert(block_t *b) {
  pthread_mutex_lock(&lock);
  bool ok = count + 1 <= nbuckets || grow();
  if (ok) {
    size_t s = slot(b->ptr, nbuckets);
    b->map_next = buckets[s];
    buckets[s] = b;
    count++;
  }
  pthread_mutex_unlock(&lock);
  return ok;
}

static block_t **find(const void *p) {
  if (!nbuckets) return NULL;
  block_t **q = &buckets[slot(p, nbuckets)];
  while (*q && (*q)->ptr != p) q = &(*q)->map_next;
  return q;
}

block_t *ptr_map_find(const void *ptr) {
  pthread_mutex_lock(&lock);
  block_t **q = find(ptr);
  block_t *b = q ? *q : NULL;
  pthread_mutex_unlock(&lock);
  return b;
}

int ptr_map_device(const void *ptr) {
  pthread_mutex_lock(&lock);
  block_t **q = find(ptr);
  int d = q && *q ? (*q)->device : -1;
  pthread_mutex_unlock(&lock);
  return d;
}

block_t *ptr_map_remove(const void *ptr) {
  pthread_mutex_lock(&lock);
  block_t **q = find(ptr);
  block_t *b = q ? *q : NULL;
  if (b) {
    *q = b->map_next;
    b->map_next = NULL;
    count--;
  }
  pthread_mutex_unlock(&lock);
  return b;
}
