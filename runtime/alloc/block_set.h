/*
 * block_set.h - blocks of the caching allocator and the ordered sets
 * (by stream, size, address) that make best-fit a binary search.
 */
#ifndef FLAGOS_ALLOC_BLOCK_SET_H
#define FLAGOS_ALLOC_BLOCK_SET_H

#include <stdbool.h>
#include <stddef.h>

#include "core/internal.h"

typedef enum { BLOCK_FREE, BLOCK_ALLOCATED, BLOCK_PENDING } block_state_t;

typedef struct block {
  char *ptr;
  size_t size;      /* rounded, what the block holds */
  size_t requested; /* what the caller asked for (live blocks) */
  int device;
  flagos_stream_t stream; /* the stream its segment was allocated for */
  bool small;             /* which pool */
  block_state_t state;
  int pending_events;             /* record_stream events not yet complete */
  struct block *prev, *next;      /* neighbours inside the segment */
  struct block *map_next;         /* pointer map chain */
  flagos_stream_t *uses;          /* streams from record_stream */
  size_t n_uses, cap_uses;
} block_t;

typedef struct block_set {
  block_t **v;
  size_t n, cap;
} block_set_t;

FLAGOS_HIDDEN bool block_set_insert(block_set_t *s, block_t *b);
FLAGOS_HIDDEN void block_set_erase(block_set_t *s, block_t *b);
/* Smallest block of `stream` with size >= size, or NULL. */
FLAGOS_HIDDEN block_t *block_set_best_fit(const block_set_t *s, flagos_stream_t stream, size_t size);

#endif
