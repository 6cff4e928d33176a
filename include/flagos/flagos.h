/*
 * flagos.h - C API of the flagos runtime.
 *
 * One table of function pointers per vendor (host, cuda, later metax and
 * ascend) sits behind these calls; the vendor is chosen at run time.
 *
 * Rules that hold for every function below:
 *  - it returns a flagos_status_t; FLAGOS_SUCCESS is 0;
 *  - on failure, flagos_last_error() (thread-local) holds a message that
 *    names what was at fault (the device index, the handle, the sizes);
 *  - nothing aborts the process, nothing prints unless FLAGOS_LOG asks;
 *  - output pointers are written only on success;
 *  - "device" means a device index of the live vendor, 0 <= d < count.
 * Handles are opaque. A stream or event belongs to the device that was
 * current when it was created; it is destroyed only by its destroy call.
 */
#ifndef FLAGOS_FLAGOS_H
#define FLAGOS_FLAGOS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FLAGOS_API __declspec(dllexport)
#else
#define FLAGOS_API __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------ */
/* Status and errors                                                   */
/* ------------------------------------------------------------------ */

typedef enum flagos_status {
  FLAGOS_SUCCESS = 0,
  FLAGOS_ERROR_INVALID_ARGUMENT = 1, /* NULL pointer, bad size, bad enum */
  FLAGOS_ERROR_INVALID_DEVICE = 2,   /* device index out of range */
  FLAGOS_ERROR_INVALID_HANDLE = 3,   /* unknown or destroyed stream/event/pointer */
  FLAGOS_ERROR_OUT_OF_MEMORY = 4,    /* device or host memory exhausted */
  FLAGOS_ERROR_NOT_READY = 5,        /* query: work still pending (not a failure) */
  FLAGOS_ERROR_NOT_SUPPORTED = 6,    /* the live vendor cannot do this */
  FLAGOS_ERROR_VENDOR_UNAVAILABLE = 7, /* asked-for vendor runtime did not load */
  FLAGOS_ERROR_VENDOR = 8,           /* the vendor runtime reported an error */
  FLAGOS_ERROR_CONFIG = 9,           /* routing configuration is invalid */
  FLAGOS_ERROR_NOT_INITIALIZED = 10, /* flagos_init has not succeeded */
  FLAGOS_ERROR_INTERNAL = 11
} flagos_status_t;

/* Static name of a status, e.g. "FLAGOS_ERROR_INVALID_DEVICE". */
FLAGOS_API const char *flagos_status_string(flagos_status_t status);
/* Message of the last failing call on this thread ("" if none). */
FLAGOS_API const char *flagos_last_error(void);
FLAGOS_API void flagos_clear_error(void);

/* ------------------------------------------------------------------ */
/* Vendors                                                             */
/* ------------------------------------------------------------------ */

typedef enum flagos_vendor_kind {
  FLAGOS_VENDOR_HOST = 0,   /* simulated device in host memory, always present */
  FLAGOS_VENDOR_CUDA = 1,
  FLAGOS_VENDOR_METAX = 2,
  FLAGOS_VENDOR_ASCEND = 3
} flagos_vendor_kind_t;

/*
 * Chooses and starts the vendor. `vendor` is "auto", "host", "cuda",
 * "metax", "ascend" or NULL (NULL reads FLAGOS_VENDOR, default "auto").
 * "auto" takes the first vendor whose runtime loads and reports at least
 * one device, else "host". Calling it again with the same choice is a
 * no-op; a different choice after success is FLAGOS_ERROR_INVALID_ARGUMENT.
 */
FLAGOS_API flagos_status_t flagos_init(const char *vendor);
FLAGOS_API flagos_status_t flagos_vendor(flagos_vendor_kind_t *kind);
/* "host", "cuda", ... (static string). */
FLAGOS_API flagos_status_t flagos_vendor_name(const char **name);

/* ------------------------------------------------------------------ */
/* Devices                                                             */
/* ------------------------------------------------------------------ */

typedef struct flagos_device_properties {
  char name[256];
  size_t total_memory;        /* bytes */
  int multi_processor_count;
  int major;                  /* compute capability or vendor version */
  int minor;
} flagos_device_properties_t;

FLAGOS_API flagos_status_t flagos_device_count(int *count);
/* Current device of the calling thread (default 0). */
FLAGOS_API flagos_status_t flagos_get_device(int *device);
FLAGOS_API flagos_status_t flagos_set_device(int device);
/* Sets `device` current and writes the previous one to *previous. */
FLAGOS_API flagos_status_t flagos_exchange_device(int device, int *previous);
/* Waits for all work on every stream of the current device. */
FLAGOS_API flagos_status_t flagos_device_synchronize(void);
FLAGOS_API flagos_status_t flagos_get_device_properties(int device,
                                                        flagos_device_properties_t *props);
FLAGOS_API flagos_status_t flagos_mem_get_info(int device, size_t *free_bytes,
                                               size_t *total_bytes);

/* ------------------------------------------------------------------ */
/* Streams and events                                                  */
/* ------------------------------------------------------------------ */

typedef struct flagos_stream *flagos_stream_t;
typedef struct flagos_event *flagos_event_t;

/*
 * The default stream of a device is a real handle, never destroyed.
 * Wherever a stream is taken, NULL means the default stream of the
 * current device (for flagos_caching_malloc: of its `device`).
 */
FLAGOS_API flagos_status_t flagos_default_stream(int device, flagos_stream_t *stream);
/* Lower numbers are higher priority, as in CUDA. */
FLAGOS_API flagos_status_t flagos_stream_priority_range(int *least, int *greatest);
/* Creates a stream on the current device. */
FLAGOS_API flagos_status_t flagos_stream_create(flagos_stream_t *stream, int priority);
FLAGOS_API flagos_status_t flagos_stream_destroy(flagos_stream_t stream);
/* FLAGOS_SUCCESS when all work is done, FLAGOS_ERROR_NOT_READY otherwise. */
FLAGOS_API flagos_status_t flagos_stream_query(flagos_stream_t stream);
FLAGOS_API flagos_status_t flagos_stream_synchronize(flagos_stream_t stream);
/* Later work on `stream` waits until `event`'s recorded work is done. */
FLAGOS_API flagos_status_t flagos_stream_wait_event(flagos_stream_t stream, flagos_event_t event);
FLAGOS_API flagos_status_t flagos_stream_device(flagos_stream_t stream, int *device);
FLAGOS_API flagos_status_t flagos_stream_priority(flagos_stream_t stream, int *priority);
/* The vendor's own handle (cudaStream_t on cuda; the flagos handle on host). */
FLAGOS_API flagos_status_t flagos_stream_native_handle(flagos_stream_t stream, void **handle);
/*
 * Runs fn(user_data) on the stream in order with its other work (on the
 * host vendor in the stream's worker thread). Used by tests and by host
 * kernels that must run asynchronously.
 */
typedef void (*flagos_host_fn_t)(void *user_data);
FLAGOS_API flagos_status_t flagos_launch_host_func(flagos_stream_t stream, flagos_host_fn_t fn,
                                                   void *user_data);

/*
 * A compiled device kernel launched on a vendor stream: what FlagGems'
 * Triton kernels are, once compiled. `function` is the vendor's kernel
 * handle (a CUfunction on cuda), `params` points at one buffer per kernel
 * parameter, in order. `native_stream` is the vendor's own stream handle
 * (cudaStream_t; NULL is the legacy default stream), as torch's current
 * stream hands it out. The host vendor runs no compiled device kernels:
 * FLAGOS_ERROR_NOT_SUPPORTED.
 */
typedef struct flagos_kernel_launch {
  void *function;
  unsigned grid[3];
  unsigned block[3];
  unsigned shared_bytes;
  void **params;
} flagos_kernel_launch_t;
FLAGOS_API flagos_status_t flagos_launch_kernel(const flagos_kernel_launch_t *launch,
                                                void *native_stream);

enum { FLAGOS_EVENT_DEFAULT = 0, FLAGOS_EVENT_DISABLE_TIMING = 1 };

FLAGOS_API flagos_status_t flagos_event_create(flagos_event_t *event, unsigned flags);
FLAGOS_API flagos_status_t flagos_event_destroy(flagos_event_t event);
/* Captures the work submitted to `stream` so far. */
FLAGOS_API flagos_status_t flagos_event_record(flagos_event_t event, flagos_stream_t stream);
/* FLAGOS_SUCCESS when the captured work is done (or never recorded). */
FLAGOS_API flagos_status_t flagos_event_query(flagos_event_t event);
FLAGOS_API flagos_status_t flagos_event_synchronize(flagos_event_t event);
/* Milliseconds between two completed, timing-enabled events. */
FLAGOS_API flagos_status_t flagos_event_elapsed_time(float *ms, flagos_event_t start,
                                                     flagos_event_t end);

/* ------------------------------------------------------------------ */
/* Memory: raw vendor allocations (no caching)                         */
/* ------------------------------------------------------------------ */

typedef enum flagos_memcpy_kind {
  FLAGOS_MEMCPY_HOST_TO_HOST = 0,
  FLAGOS_MEMCPY_HOST_TO_DEVICE = 1,
  FLAGOS_MEMCPY_DEVICE_TO_HOST = 2,
  FLAGOS_MEMCPY_DEVICE_TO_DEVICE = 3
} flagos_memcpy_kind_t;

typedef enum flagos_memory_type {
  FLAGOS_MEMORY_UNREGISTERED = 0, /* plain host memory not known to flagos */
  FLAGOS_MEMORY_HOST = 1,         /* pinned host memory from flagos_host_malloc */
  FLAGOS_MEMORY_DEVICE = 2
} flagos_memory_type_t;

typedef struct flagos_pointer_attributes {
  flagos_memory_type_t type;
  int device;         /* -1 for host memory */
  void *base;         /* start of the allocation holding the pointer */
  size_t size;        /* size of that allocation */
} flagos_pointer_attributes_t;

/* Device memory on the current device. size 0 gives *ptr = NULL. */
FLAGOS_API flagos_status_t flagos_malloc(void **ptr, size_t size);
FLAGOS_API flagos_status_t flagos_free(void *ptr);
/* Page-locked host memory usable by async copies. */
FLAGOS_API flagos_status_t flagos_host_malloc(void **ptr, size_t size);
FLAGOS_API flagos_status_t flagos_host_free(void *ptr);
FLAGOS_API flagos_status_t flagos_memcpy(void *dst, const void *src, size_t size,
                                         flagos_memcpy_kind_t kind);
FLAGOS_API flagos_status_t flagos_memcpy_async(void *dst, const void *src, size_t size,
                                               flagos_memcpy_kind_t kind,
                                               flagos_stream_t stream);
FLAGOS_API flagos_status_t flagos_memset(void *dst, int value, size_t size);
FLAGOS_API flagos_status_t flagos_memset_async(void *dst, int value, size_t size,
                                               flagos_stream_t stream);
FLAGOS_API flagos_status_t flagos_pointer_get_attributes(flagos_pointer_attributes_t *attr,
                                                         const void *ptr);

/*
 * Direct CPU access to device memory. On the host vendor device memory is
 * protected (PROT_NONE) so that a missing copy faults; a kernel that runs
 * on the CPU over device memory brackets its work with begin/end for each
 * allocation it touches. Calls nest (counted per allocation) and are
 * thread-safe. On other vendors both are FLAGOS_ERROR_NOT_SUPPORTED.
 */
FLAGOS_API flagos_status_t flagos_host_access_begin(const void *device_ptr);
FLAGOS_API flagos_status_t flagos_host_access_end(const void *device_ptr);

/* ------------------------------------------------------------------ */
/* Caching allocator (stream-aware)                                    */
/* ------------------------------------------------------------------ */

/*
 * Per device, two pools (small <= 1 MiB, large). A block freed with
 * flagos_caching_free is reused by the same stream at once; for use on
 * other streams call flagos_caching_record_stream before freeing, and the
 * block returns to the pool when events recorded on those streams complete.
 * On out-of-memory the allocator frees its cached segments and retries
 * once; if that fails the error states requested, in-use and cached bytes.
 */
typedef struct flagos_allocator_stats {
  uint64_t allocated_bytes;        /* held by live blocks (rounded sizes) */
  uint64_t reserved_bytes;         /* held by segments from the vendor */
  uint64_t peak_allocated_bytes;
  uint64_t peak_reserved_bytes;
  uint64_t requested_bytes;        /* sum of the sizes asked for by live blocks */
  uint64_t active_blocks;
  uint64_t segments;
  uint64_t num_allocs;             /* successful flagos_caching_malloc calls */
  uint64_t num_frees;
  uint64_t num_device_mallocs;     /* segments taken from the vendor */
  uint64_t num_device_frees;
  uint64_t num_alloc_retries;      /* OOM -> free cache -> retry */
  uint64_t num_ooms;
} flagos_allocator_stats_t;

FLAGOS_API flagos_status_t flagos_caching_malloc(void **ptr, size_t size, int device,
                                                 flagos_stream_t stream);
FLAGOS_API flagos_status_t flagos_caching_free(void *ptr);
FLAGOS_API flagos_status_t flagos_caching_record_stream(void *ptr, flagos_stream_t stream);
/* Returns cached, unused segments of every device to the vendor. */
FLAGOS_API flagos_status_t flagos_caching_empty_cache(void);
FLAGOS_API flagos_status_t flagos_caching_get_stats(int device, flagos_allocator_stats_t *stats);
FLAGOS_API flagos_status_t flagos_caching_reset_peak_stats(int device);
FLAGOS_API flagos_status_t flagos_caching_reset_accumulated_stats(int device);
/* Size actually reserved for the block at ptr (rounded up). */
FLAGOS_API flagos_status_t flagos_caching_block_size(const void *ptr, size_t *size);

/* ------------------------------------------------------------------ */
/* Routing table                                                       */
/* ------------------------------------------------------------------ */

typedef enum flagos_backend {
  FLAGOS_BACKEND_DEFAULT = 0,      /* no explicit choice: built-in default */
  FLAGOS_BACKEND_FLAGOS = 1,       /* FlagGems Triton kernels, fastest launcher */
  FLAGOS_BACKEND_FLAGGEMS = 2,     /* same kernels, upstream name */
  FLAGOS_BACKEND_FLAGOS_PYTHON = 3,/* FlagGems Python wrapper functions */
  FLAGOS_BACKEND_CUDA = 4,
  FLAGOS_BACKEND_METAX = 5,
  FLAGOS_BACKEND_ASCEND = 6,
  FLAGOS_BACKEND_CPU = 7,
  FLAGOS_BACKEND_COUNT_ = 8
} flagos_backend_t;

/* "flagos", "cuda", ... ; NULL for an invalid value. */
FLAGOS_API const char *flagos_backend_name(flagos_backend_t backend);
/* Parses a backend word (case-sensitive, as written in config files). */
FLAGOS_API flagos_status_t flagos_backend_parse(const char *word, flagos_backend_t *backend);

typedef struct flagos_routing_table *flagos_routing_table_t;

FLAGOS_API flagos_status_t flagos_routing_create(flagos_routing_table_t *table);
FLAGOS_API flagos_status_t flagos_routing_destroy(flagos_routing_table_t table);
/*
 * Reads a config file (`op = backend` lines, '#' comments, blank lines,
 * `include other.conf` relative to the including file, depth <= 8, later
 * lines win). On error nothing is changed and the message names the file
 * and line.
 */
FLAGOS_API flagos_status_t flagos_routing_load_file(flagos_routing_table_t table,
                                                    const char *path);
/* Same, from memory; `origin` names the text in error messages. */
FLAGOS_API flagos_status_t flagos_routing_load_string(flagos_routing_table_t table,
                                                      const char *text, const char *origin);
/* Reads FLAGOS_OP_<name>=backend variables ('__' in a name stands for '.'). */
FLAGOS_API flagos_status_t flagos_routing_load_environ(flagos_routing_table_t table,
                                                       char *const *environ_vars);
FLAGOS_API flagos_status_t flagos_routing_set(flagos_routing_table_t table, const char *op,
                                              flagos_backend_t backend);
/*
 * Backend for an op name with overload ("add.Tensor"): an exact entry,
 * else the entry of its bare name ("add"), else FLAGOS_BACKEND_DEFAULT.
 */
FLAGOS_API flagos_status_t flagos_routing_lookup(flagos_routing_table_t table, const char *op,
                                                 flagos_backend_t *backend);
/* Entries in insertion order; *op stays valid until the table changes. */
FLAGOS_API flagos_status_t flagos_routing_count(flagos_routing_table_t table, size_t *count);
FLAGOS_API flagos_status_t flagos_routing_entry(flagos_routing_table_t table, size_t index,
                                                const char **op, flagos_backend_t *backend,
                                                const char **origin, int *line);

#ifdef __cplusplus
}
#endif

#endif /* FLAGOS_FLAGOS_H */
