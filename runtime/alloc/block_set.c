/* block_set.c - sorted array of free blocks keyed by (stream, size, ptr). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/block_set.h"

static int cmp(flagos_stream_t s1, size_t z1, const char *p1, const block_t *b) {
  uintptr_t a = (uintptr_t)s1, c = (uintptr_t)b->stream;
  if (a != c) return a < c ? -1 : 1;
  if (z1 != b->size) return z1 < b->size ? -1 : 1;
  if (p1 != b->ptr) return (uintptr_t)p1 < (uintptr_t)b->ptr ? -1 : 1;
  return 0;
}

/* First index whose block is >= the key. */
static size_t lower_bound(const block_set_t *s, flagos_stream_t st, size_t size, const char *ptr) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (cmp(st, size, ptr, s->v[mid]) > 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

bool block_set_insert(block_set_t *s, block_t *b) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    block_t **v = realloc(s->v, cap * sizeof *v);
    if (!v) return false;
    s->v = v;
    s->cap = cap;
  }
  size_t i = lower_bound(s, b->stream, b->size, b->ptr);
  memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof *s->v);
  s->v[i] = b;
  s->n++;
  return true;
}

void block_set_erase(block_set_t *s, block_t *b) {
  size_t i = lower_bound(s, b->stream, b->size, b->ptr);
  if (i < s->n && s->v[i] == b) {
    memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof *s->v);
    s->n--;
  }
}

block_t *block_set_best_fit(const block_set_t *s, flagos_stream_t stream, size_t size) {
  size_t i = lower_bound(s, stream, size, NULL);
  return i < s->n && s->v[i]->stream == stream ? s->v[i] : NULL;
}
