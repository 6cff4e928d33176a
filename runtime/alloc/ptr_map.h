/* ptr_map.h - live block of a pointer (caching_free gets only the pointer). */
#ifndef FLAGOS_ALLOC_PTR_MAP_H
#define FLAGOS_ALLOC_PTR_MAP_H

#include "alloc/block_set.h"

/* Thread-safe; its lock is taken last (inside a device lock), never held across calls. */
FLAGOS_HIDDEN bool ptr_map_insert(block_t *b);
/* Device of the live block at ptr, read under the map lock; -1 if none. */
FLAGOS_HIDDEN int ptr_map_device(const void *ptr);
/* Only with the owning device's lock held (blocks change under it). */
FLAGOS_HIDDEN block_t *ptr_map_find(const void *ptr);
FLAGOS_HIDDEN block_t *ptr_map_remove(const void *ptr);

#endif
