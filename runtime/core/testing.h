/*
 * testing.h - test-only hooks of libflagos (exported, not part of the API).
 */
#ifndef FLAGOS_RUNTIME_TESTING_H
#define FLAGOS_RUNTIME_TESTING_H

#include "flagos/flagos.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Host vendor fault injection: after `after` more successful device
 * mallocs, the next `count` fail with FLAGOS_ERROR_OUT_OF_MEMORY
 * (count < 0: all of them). after < 0 switches injection off.
 * FLAGOS_HOST_FAIL_MALLOC_AFTER=N at init is the same as (N, -1).
 */
FLAGOS_API void flagos_testing_fail_device_malloc(long after, long count);

#ifdef __cplusplus
}
#endif

#endif
