/*
 * cuda.c - the CUDA vendor: the flagos vtable over the CUDA runtime API.
 *
 * No CUDA header and no link-time CUDA dependency: libcudart is found at run
 * time with dlopen (reusing the copy already in the process, e.g. torch's,
 * so that flagos streams are the very cudaStream_t that torch sees), and the
 * few types and constants used are declared below (values checked against
 * the CUDA 12 and 13 headers). libcuda (the driver) is used, when present,
 * only for device names, total memory and allocation ranges.
 *
 * Handles: a flagos stream is a small heap object wrapping a cudaStream_t,
 * a flagos event one wrapping a cudaEvent_t. The core keeps the registry of
 * live handles (core/handles.c) and never passes a stale one here; each
 * handle also carries a magic number that is checked as a second line of
 * defence and cleared when it is destroyed. The default stream of a device
 * wraps the legacy default stream (cudaStream_t 0), as torch's default CUDA
 * stream does. Events create their cudaEvent_t at the first record, on the
 * device of the recording stream (as torch's CUDA events do).
 *
 * Every CUDA call that works on a device or a stream first makes that device
 * current and restores the previous one afterwards. Every failing CUDA call
 * clears CUDA's sticky "last error" (cudaGetLastError) so that the shared
 * runtime does not report our failure later from someone else's kernel launch.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NOLOAD */
#endif

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vendor.h"

/* ------------------------------------------------------------------ */
/* The slice of the CUDA API we use                                    */
/* ------------------------------------------------------------------ */

typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotReady = 600,
};
/* cudaMemcpyKind: same numbering as flagos_memcpy_kind_t (0..3). */
enum { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
       cudaMemcpyDeviceToDevice = 3 };
enum { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2,
       cudaMemoryTypeManaged = 3 };
enum { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrComputeCapabilityMajor = 75,
       cudaDevAttrComputeCapabilityMinor = 76 };
enum { cudaStreamNonBlocking = 0x01 };
enum { cudaEventDefault = 0x00, cudaEventDisableTiming = 0x02 };
enum { CU_POINTER_ATTRIBUTE_RANGE_START_ADDR = 11, CU_POINTER_ATTRIBUTE_RANGE_SIZE = 12 };

/* CUDA 12: {type, device, devicePointer, hostPointer}; CUDA 13 appends
 * `long reserved[8]` that must be zero. Extra zeroed room covers both. */
typedef struct cuda_pointer_attributes {
  int type;
  int device;
  void *devicePointer;
  void *hostPointer;
  long reserved[8];
  long spare[8];
} cuda_pointer_attributes_t;

typedef struct cuda_api {
  const char *(*GetErrorString)(cudaError_t);
  cudaError_t (*GetLastError)(void);
  cudaError_t (*GetDeviceCount)(int *);
  cudaError_t (*SetDevice)(int);
  cudaError_t (*GetDevice)(int *);
  cudaError_t (*DeviceSynchronize)(void);
  cudaError_t (*DeviceGetAttribute)(int *, int, int);
  cudaError_t (*MemGetInfo)(size_t *, size_t *);
  cudaError_t (*Malloc)(void **, size_t);
  cudaError_t (*Free)(void *);
  cudaError_t (*MallocHost)(void **, size_t);
  cudaError_t (*FreeHost)(void *);
  cudaError_t (*Memcpy)(void *, const void *, size_t, int);
  cudaError_t (*MemcpyAsync)(void *, const void *, size_t, int, cudaStream_t);
  cudaError_t (*MemsetAsync)(void *, int, size_t, cudaStream_t);
  cudaError_t (*PointerGetAttributes)(cuda_pointer_attributes_t *, const void *);
  cudaError_t (*DeviceGetStreamPriorityRange)(int *, int *);
  cudaError_t (*StreamCreateWithPriority)(cudaStream_t *, unsigned, int);
  cudaError_t (*StreamDestroy)(cudaStream_t);
  cudaError_t (*StreamQuery)(cudaStream_t);
  cudaError_t (*StreamSynchronize)(cudaStream_t);
  cudaError_t (*StreamWaitEvent)(cudaStream_t, cudaEvent_t, unsigned);
  cudaError_t (*StreamGetPriority)(cudaStream_t, int *);
  cudaError_t (*LaunchHostFunc)(cudaStream_t, void (*)(void *), void *);
  cudaError_t (*EventCreateWithFlags)(cudaEvent_t *, unsigned);
  cudaError_t (*EventDestroy)(cudaEvent_t);
  cudaError_t (*EventRecord)(cudaEvent_t, cudaStream_t);
  cudaError_t (*EventQuery)(cudaEvent_t);
  cudaError_t (*EventSynchronize)(cudaEvent_t);
  cudaError_t (*EventElapsedTime)(float *, cudaEvent_t, cudaEvent_t);
  /* optional */
  cudaError_t (*GetDeviceProperties)(void *, int);
  /* optional, from libcuda */
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
  CUresult (*cuPointerGetAttribute)(void *, int, CUdeviceptr);
  CUresult (*cuLaunchKernel)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                             unsigned by, unsigned bz, unsigned shared, void *stream,
                             void **params, void **extra);
  CUresult (*cuGetErrorString)(CUresult, const char **);
} cuda_api_t;

#define SYM(field, name) {name, offsetof(cuda_api_t, field)}
static const struct {
  const char *name;
  size_t offset;
} kRequired[] = {
    SYM(GetErrorString, "cudaGetErrorString"),
    SYM(GetLastError, "cudaGetLastError"),
    SYM(GetDeviceCount, "cudaGetDeviceCount"),
    SYM(SetDevice, "cudaSetDevice"),
    SYM(GetDevice, "cudaGetDevice"),
    SYM(DeviceSynchronize, "cudaDeviceSynchronize"),
    SYM(DeviceGetAttribute, "cudaDeviceGetAttribute"),
    SYM(MemGetInfo, "cudaMemGetInfo"),
    SYM(Malloc, "cudaMalloc"),
    SYM(Free, "cudaFree"),
    SYM(MallocHost, "cudaMallocHost"),
    SYM(FreeHost, "cudaFreeHost"),
    SYM(Memcpy, "cudaMemcpy"),
    SYM(MemcpyAsync, "cudaMemcpyAsync"),
    SYM(MemsetAsync, "cudaMemsetAsync"),
    SYM(PointerGetAttributes, "cudaPointerGetAttributes"),
    SYM(DeviceGetStreamPriorityRange, "cudaDeviceGetStreamPriorityRange"),
    SYM(StreamCreateWithPriority, "cudaStreamCreateWithPriority"),
    SYM(StreamDestroy, "cudaStreamDestroy"),
    SYM(StreamQuery, "cudaStreamQuery"),
    SYM(StreamSynchronize, "cudaStreamSynchronize"),
    SYM(StreamWaitEvent, "cudaStreamWaitEvent"),
    SYM(StreamGetPriority, "cudaStreamGetPriority"),
    SYM(LaunchHostFunc, "cudaLaunchHostFunc"),
    SYM(EventCreateWithFlags, "cudaEventCreateWithFlags"),
    SYM(EventDestroy, "cudaEventDestroy"),
    SYM(EventRecord, "cudaEventRecord"),
    SYM(EventQuery, "cudaEventQuery"),
    SYM(EventSynchronize, "cudaEventSynchronize"),
    SYM(EventElapsedTime, "cudaEventElapsedTime"),
};
/* CUDA 12 headers map cudaGetDeviceProperties to _v2; the name is at offset 0 in both. */
static const char *const kDevicePropsSyms[] = {"cudaGetDeviceProperties_v2",
                                               "cudaGetDeviceProperties"};
static const struct {
  const char *name;
  size_t offset;
} kDriver[] = {
    SYM(cuDeviceGet, "cuDeviceGet"),
    SYM(cuDeviceGetName, "cuDeviceGetName"),
    SYM(cuDeviceTotalMem, "cuDeviceTotalMem_v2"),
    SYM(cuPointerGetAttribute, "cuPointerGetAttribute"),
    SYM(cuLaunchKernel, "cuLaunchKernel"),
    SYM(cuGetErrorString, "cuGetErrorString"),
};
#undef SYM

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

#define STREAM_MAGIC 0x43535452u /* "CSTR" */
#define EVENT_MAGIC 0x43455654u  /* "CEVT" */

typedef struct cuda_stream {
  uint32_t magic;
  int device;
  int priority;
  bool is_default;
  cudaStream_t native;
} cuda_stream_t;

typedef struct cuda_event {
  uint32_t magic;
  unsigned flags;              /* FLAGOS_EVENT_* */
  _Atomic int device;          /* -1 until the first record */
  _Atomic(cudaEvent_t) native; /* NULL until the first record */
} cuda_event_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* probe, lazy event creation */
static atomic_bool g_loaded;
static cuda_api_t api;
static void *g_cudart, *g_libcuda;
static char g_cudart_name[512];
static int g_device_count;
static cuda_stream_t *g_default_streams; /* one per device */

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

static flagos_status_t map_error(cudaError_t err) {
  switch (err) {
    case cudaErrorMemoryAllocation: return FLAGOS_ERROR_OUT_OF_MEMORY;
    case cudaErrorInvalidDevice: return FLAGOS_ERROR_INVALID_DEVICE;
    case cudaErrorNotReady: return FLAGOS_ERROR_NOT_READY;
    default: return FLAGOS_ERROR_VENDOR;
  }
}

/* Records "cuda: <what>: <CUDA's text> (cudaError <n>)" with a mapped status. */
static flagos_status_t cuda_failv(cudaError_t err, flagos_status_t status, const char *fmt,
                                  va_list ap) {
  char what[512];
  vsnprintf(what, sizeof what, fmt, ap);
  const char *text = api.GetErrorString ? api.GetErrorString(err) : NULL;
  if (err != cudaErrorNotReady && api.GetLastError) (void)api.GetLastError(); /* clear it */
  return flagos_set_error(status, "cuda: %s: %s (cudaError %d)", what, text ? text : "unknown error",
                          err);
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static flagos_status_t cuda_fail(cudaError_t err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  flagos_status_t st = cuda_failv(err, map_error(err), fmt, ap);
  va_end(ap);
  return st;
}

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static flagos_status_t cuda_fail_as(cudaError_t err, flagos_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  flagos_status_t st = cuda_failv(err, status, fmt, ap);
  va_end(ap);
  return st;
}

/* ------------------------------------------------------------------ */
/* Device guard                                                        */
/* ------------------------------------------------------------------ */

typedef struct guard {
  int previous;
  bool switched;
} guard_t;

static flagos_status_t guard_enter(guard_t *g, int device, const char *fn) {
  g->switched = false;
  int cur = -1;
  cudaError_t err = api.GetDevice(&cur);
  if (err != cudaSuccess) return cuda_fail(err, "%s: cudaGetDevice", fn);
  if (cur != device) {
    err = api.SetDevice(device);
    if (err != cudaSuccess) return cuda_fail(err, "%s: cudaSetDevice(%d)", fn, device);
    g->previous = cur;
    g->switched = true;
  }
  return FLAGOS_SUCCESS;
}

static void guard_exit(const guard_t *g) {
  if (g->switched && api.SetDevice(g->previous) != cudaSuccess) (void)api.GetLastError();
}

/* ------------------------------------------------------------------ */
/* Handles                                                             */
/* ------------------------------------------------------------------ */

static cuda_stream_t *as_stream(flagos_stream_t s) { return (cuda_stream_t *)(void *)s; }
static cuda_event_t *as_event(flagos_event_t e) { return (cuda_event_t *)(void *)e; }

static flagos_status_t check_stream(const cuda_stream_t *s, const char *fn) {
  if (s == NULL || s->magic != STREAM_MAGIC)
    return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE, "cuda: %s: %p is not a live flagos stream",
                            fn, (const void *)s);
  return FLAGOS_SUCCESS;
}

static flagos_status_t check_event(const cuda_event_t *e, const char *fn) {
  if (e == NULL || e->magic != EVENT_MAGIC)
    return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE, "cuda: %s: %p is not a live flagos event",
                            fn, (const void *)e);
  return FLAGOS_SUCCESS;
}

#define CHECK_STREAM(s, fn)                           \
  do {                                                \
    flagos_status_t st_ = check_stream((s), (fn));    \
    if (st_ != FLAGOS_SUCCESS) return st_;            \
  } while (0)
#define CHECK_EVENT(e, fn)                            \
  do {                                                \
    flagos_status_t st_ = check_event((e), (fn));     \
    if (st_ != FLAGOS_SUCCESS) return st_;            \
  } while (0)

/* ------------------------------------------------------------------ */
/* Loading                                                             */
/* ------------------------------------------------------------------ */

static void *resolve(void *lib, const char *name) {
  dlerror();
  return dlsym(lib, name);
}

static void unload_locked(void) {
  memset(&api, 0, sizeof api);
  if (g_libcuda) dlclose(g_libcuda);
  if (g_cudart) dlclose(g_cudart);
  g_libcuda = g_cudart = NULL;
  free(g_default_streams);
  g_default_streams = NULL;
  g_device_count = 0;
}

static flagos_status_t open_cudart_locked(void) {
  static const char *const names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
  const size_t nnames = sizeof names / sizeof names[0];
  /* 1. a libcudart already in the process (torch's) */
  for (size_t i = 0; i < nnames; ++i) {
    g_cudart = dlopen(names[i], RTLD_NOW | RTLD_NOLOAD);
    if (g_cudart) {
      snprintf(g_cudart_name, sizeof g_cudart_name, "%s (already loaded)", names[i]);
      return FLAGOS_SUCCESS;
    }
  }
  /* 2. an explicit path */
  const char *path = getenv("FLAGOS_CUDART_PATH");
  if (path != NULL && path[0] != '\0') {
    g_cudart = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (g_cudart) {
      snprintf(g_cudart_name, sizeof g_cudart_name, "%s", path);
      return FLAGOS_SUCCESS;
    }
    const char *why = dlerror();
    return flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                            "cuda: cannot load the CUDA runtime from FLAGOS_CUDART_PATH='%s': %s",
                            path, why ? why : "unknown dlopen error");
  }
  /* 3. the usual names */
  char why[1024] = "";
  size_t o = 0;
  for (size_t i = 0; i < nnames; ++i) {
    g_cudart = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (g_cudart) {
      snprintf(g_cudart_name, sizeof g_cudart_name, "%s", names[i]);
      return FLAGOS_SUCCESS;
    }
    const char *e = dlerror();
    int w = snprintf(why + o, sizeof why - o, "%s%s", o ? "; " : "", e ? e : names[i]);
    if (w > 0 && (size_t)w < sizeof why - o) o += (size_t)w;
  }
  return flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                          "cuda: cannot load the CUDA runtime (tried libcudart.so.13, "
                          "libcudart.so.12, libcudart.so; set FLAGOS_CUDART_PATH to its path): %s",
                          why);
}

static void open_libcuda_locked(void) {
  g_libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!g_libcuda) g_libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!g_libcuda) {
    dlerror();
    return;
  }
  for (size_t i = 0; i < sizeof kDriver / sizeof kDriver[0]; ++i) {
    void *sym = resolve(g_libcuda, kDriver[i].name);
    memcpy((char *)&api + kDriver[i].offset, &sym, sizeof sym); /* NULL if absent */
  }
  if (!api.cuDeviceGet) {
    api.cuDeviceGetName = NULL;
    api.cuDeviceTotalMem = NULL;
  }
}

static flagos_status_t cuda_probe(void) {
  if (atomic_load_explicit(&g_loaded, memory_order_acquire)) return FLAGOS_SUCCESS;
  pthread_mutex_lock(&g_lock);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (atomic_load_explicit(&g_loaded, memory_order_relaxed)) goto out;
  st = open_cudart_locked();
  if (st != FLAGOS_SUCCESS) goto out;
  for (size_t i = 0; i < sizeof kRequired / sizeof kRequired[0]; ++i) {
    void *sym = resolve(g_cudart, kRequired[i].name);
    if (sym == NULL) {
      const char *why = dlerror();
      st = flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                            "cuda: the CUDA runtime %s lacks symbol '%s' (%s); it is too old or "
                            "not a CUDA runtime",
                            g_cudart_name, kRequired[i].name, why ? why : "not found");
      unload_locked();
      goto out;
    }
    memcpy((char *)&api + kRequired[i].offset, &sym, sizeof sym);
  }
  for (size_t i = 0; i < sizeof kDevicePropsSyms / sizeof kDevicePropsSyms[0]; ++i) {
    void *sym = resolve(g_cudart, kDevicePropsSyms[i]);
    if (sym != NULL) {
      memcpy(&api.GetDeviceProperties, &sym, sizeof sym);
      break;
    }
  }
  int count = 0;
  cudaError_t err = api.GetDeviceCount(&count);
  if (err != cudaSuccess) {
    st = cuda_fail_as(err, FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                      "the CUDA runtime %s loaded, but cudaGetDeviceCount failed (no usable GPU "
                      "or driver)",
                      g_cudart_name);
    unload_locked();
    goto out;
  }
  if (count <= 0) {
    st = flagos_set_error(FLAGOS_ERROR_VENDOR_UNAVAILABLE,
                          "cuda: the CUDA runtime %s loaded, but it reports no CUDA devices",
                          g_cudart_name);
    unload_locked();
    goto out;
  }
  g_default_streams = calloc((size_t)count, sizeof *g_default_streams);
  if (g_default_streams == NULL) {
    st = flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "cuda: out of host memory for %d default streams",
                          count);
    unload_locked();
    goto out;
  }
  for (int d = 0; d < count; ++d)
    g_default_streams[d] = (cuda_stream_t){STREAM_MAGIC, d, 0, true, NULL};
  g_device_count = count;
  open_libcuda_locked();
  atomic_store_explicit(&g_loaded, true, memory_order_release);
out:
  pthread_mutex_unlock(&g_lock);
  return st;
}

/* ------------------------------------------------------------------ */
/* Devices                                                             */
/* ------------------------------------------------------------------ */

static flagos_status_t cuda_device_count(int *count) {
  if (!atomic_load_explicit(&g_loaded, memory_order_acquire))
    return flagos_set_error(FLAGOS_ERROR_NOT_INITIALIZED, "cuda: the CUDA runtime is not loaded");
  int n = 0;
  cudaError_t err = api.GetDeviceCount(&n);
  if (err != cudaSuccess) return cuda_fail(err, "cudaGetDeviceCount");
  *count = n;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_set_device(int device) {
  cudaError_t err = api.SetDevice(device);
  if (err != cudaSuccess) return cuda_fail(err, "cudaSetDevice(%d)", device);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_get_device(int *device) {
  int d = 0;
  cudaError_t err = api.GetDevice(&d);
  if (err != cudaSuccess) return cuda_fail(err, "cudaGetDevice");
  *device = d;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_device_synchronize(int device) {
  guard_t g;
  flagos_status_t st = guard_enter(&g, device, "device_synchronize");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.DeviceSynchronize();
  if (err != cudaSuccess) st = cuda_fail(err, "cudaDeviceSynchronize on device %d", device);
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes) {
  guard_t g;
  flagos_status_t st = guard_enter(&g, device, "mem_get_info");
  if (st != FLAGOS_SUCCESS) return st;
  size_t f = 0, t = 0;
  cudaError_t err = api.MemGetInfo(&f, &t);
  if (err != cudaSuccess) st = cuda_fail(err, "cudaMemGetInfo on device %d", device);
  guard_exit(&g);
  if (st == FLAGOS_SUCCESS) {
    *free_bytes = f;
    *total_bytes = t;
  }
  return st;
}

static flagos_status_t cuda_device_properties(int device, flagos_device_properties_t *props) {
  flagos_device_properties_t p;
  memset(&p, 0, sizeof p);
  cudaError_t err;
  if ((err = api.DeviceGetAttribute(&p.multi_processor_count, cudaDevAttrMultiProcessorCount,
                                    device)) != cudaSuccess ||
      (err = api.DeviceGetAttribute(&p.major, cudaDevAttrComputeCapabilityMajor, device)) !=
          cudaSuccess ||
      (err = api.DeviceGetAttribute(&p.minor, cudaDevAttrComputeCapabilityMinor, device)) !=
          cudaSuccess)
    return cuda_fail(err, "cudaDeviceGetAttribute on device %d", device);

  bool have_name = false, have_total = false;
  CUdevice dev = 0;
  if (api.cuDeviceGet && api.cuDeviceGet(&dev, device) == 0) {
    if (api.cuDeviceGetName && api.cuDeviceGetName(p.name, (int)sizeof p.name, dev) == 0)
      have_name = true;
    if (api.cuDeviceTotalMem && api.cuDeviceTotalMem(&p.total_memory, dev) == 0) have_total = true;
  }
  if (!have_name && api.GetDeviceProperties) {
    /* cudaDeviceProp begins with char name[256]; its size (about 1 KiB) differs between
     * releases, so it goes into a buffer far larger than any of them. */
    unsigned char *buf = calloc(1, 16384);
    if (buf == NULL)
      return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "cuda: out of host memory for device properties");
    err = api.GetDeviceProperties(buf, device);
    if (err != cudaSuccess) {
      free(buf);
      return cuda_fail(err, "cudaGetDeviceProperties on device %d", device);
    }
    memcpy(p.name, buf, sizeof p.name - 1);
    free(buf);
    have_name = true;
  }
  if (!have_name) snprintf(p.name, sizeof p.name, "CUDA device %d", device);
  if (!have_total) {
    size_t f = 0;
    flagos_status_t st = cuda_mem_get_info(device, &f, &p.total_memory);
    if (st != FLAGOS_SUCCESS) return st;
  }
  p.name[sizeof p.name - 1] = '\0';
  *props = p;
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */
/* ------------------------------------------------------------------ */

static flagos_status_t cuda_malloc_device(int device, void **ptr, size_t size) {
  if (size == 0) {
    *ptr = NULL;
    return FLAGOS_SUCCESS;
  }
  guard_t g;
  flagos_status_t st = guard_enter(&g, device, "malloc");
  if (st != FLAGOS_SUCCESS) return st;
  void *p = NULL;
  cudaError_t err = api.Malloc(&p, size);
  if (err != cudaSuccess) st = cuda_fail(err, "cudaMalloc of %zu bytes on device %d", size, device);
  guard_exit(&g);
  if (st == FLAGOS_SUCCESS) *ptr = p;
  return st;
}

static flagos_status_t cuda_free_device(void *ptr) {
  cudaError_t err = api.Free(ptr);
  if (err == cudaErrorInvalidValue)
    return cuda_fail_as(err, FLAGOS_ERROR_INVALID_HANDLE,
                        "cudaFree(%p): not a live device allocation", ptr);
  if (err != cudaSuccess) return cuda_fail(err, "cudaFree(%p)", ptr);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_malloc_host(void **ptr, size_t size) {
  if (size == 0) {
    *ptr = NULL;
    return FLAGOS_SUCCESS;
  }
  void *p = NULL;
  cudaError_t err = api.MallocHost(&p, size);
  if (err != cudaSuccess) return cuda_fail(err, "cudaMallocHost of %zu bytes", size);
  *ptr = p;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_free_host(void *ptr) {
  cudaError_t err = api.FreeHost(ptr);
  if (err == cudaErrorInvalidValue)
    return cuda_fail_as(err, FLAGOS_ERROR_INVALID_HANDLE,
                        "cudaFreeHost(%p): not a live pinned host allocation", ptr);
  if (err != cudaSuccess) return cuda_fail(err, "cudaFreeHost(%p)", ptr);
  return FLAGOS_SUCCESS;
}

static const char *kind_name(flagos_memcpy_kind_t kind) {
  switch (kind) {
    case FLAGOS_MEMCPY_HOST_TO_HOST: return "host to host";
    case FLAGOS_MEMCPY_HOST_TO_DEVICE: return "host to device";
    case FLAGOS_MEMCPY_DEVICE_TO_HOST: return "device to host";
    case FLAGOS_MEMCPY_DEVICE_TO_DEVICE: return "device to device";
  }
  return "?";
}

static flagos_status_t cuda_memcpy_sync(void *dst, const void *src, size_t size,
                                        flagos_memcpy_kind_t kind) {
  if (size == 0) return FLAGOS_SUCCESS;
  cudaError_t err = api.Memcpy(dst, src, size, (int)kind);
  if (err != cudaSuccess)
    return cuda_fail(err, "cudaMemcpy of %zu bytes %s (dst %p, src %p)", size, kind_name(kind), dst,
                     src);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_memcpy_async(void *dst, const void *src, size_t size,
                                         flagos_memcpy_kind_t kind, flagos_stream_t stream) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "memcpy_async");
  if (size == 0) return FLAGOS_SUCCESS;
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "memcpy_async");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.MemcpyAsync(dst, src, size, (int)kind, s->native);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaMemcpyAsync of %zu bytes %s (dst %p, src %p) on stream %p of device %d",
                   size, kind_name(kind), dst, src, (void *)s, s->device);
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_memset_async(void *dst, int value, size_t size, flagos_stream_t stream) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "memset_async");
  if (size == 0) return FLAGOS_SUCCESS;
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "memset_async");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.MemsetAsync(dst, value, size, s->native);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaMemsetAsync of %zu bytes at %p on stream %p of device %d", size, dst,
                   (void *)s, s->device);
  guard_exit(&g);
  return st;
}

/* Start and size of the allocation holding ptr, through the driver; false if unknown. */
static bool allocation_range(const void *ptr, void **base, size_t *size) {
  if (!api.cuPointerGetAttribute) return false;
  CUdeviceptr start = 0;
  size_t bytes = 0;
  if (api.cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                (CUdeviceptr)(uintptr_t)ptr) != 0)
    return false;
  if (api.cuPointerGetAttribute(&bytes, CU_POINTER_ATTRIBUTE_RANGE_SIZE,
                                (CUdeviceptr)(uintptr_t)ptr) != 0)
    return false;
  *base = (void *)(uintptr_t)start;
  *size = bytes;
  return true;
}

static flagos_status_t cuda_pointer_attributes(flagos_pointer_attributes_t *attr, const void *ptr) {
  flagos_pointer_attributes_t out = {FLAGOS_MEMORY_UNREGISTERED, -1, NULL, 0};
  cuda_pointer_attributes_t a;
  memset(&a, 0, sizeof a);
  cudaError_t err = api.PointerGetAttributes(&a, ptr);
  if (err == cudaErrorInvalidValue) {
    /* CUDA < 11 says this for plain host memory. */
    (void)api.GetLastError();
    *attr = out;
    return FLAGOS_SUCCESS;
  }
  if (err != cudaSuccess) return cuda_fail(err, "cudaPointerGetAttributes(%p)", ptr);
  switch (a.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
      out.type = FLAGOS_MEMORY_DEVICE;
      out.device = a.device;
      break;
    case cudaMemoryTypeHost:
      out.type = FLAGOS_MEMORY_HOST;
      out.device = -1;
      break;
    default:
      *attr = out;
      return FLAGOS_SUCCESS;
  }
  if (!allocation_range(ptr, &out.base, &out.size)) {
    out.base = (void *)(uintptr_t)ptr; /* the driver cannot tell: the pointer itself, size unknown */
    out.size = 0;
  }
  *attr = out;
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */
/* ------------------------------------------------------------------ */

static flagos_status_t cuda_default_stream(int device, flagos_stream_t *stream) {
  if (device < 0 || device >= g_device_count || g_default_streams == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_DEVICE,
                            "cuda: device index %d is out of range: %d CUDA device%s", device,
                            g_device_count, g_device_count == 1 ? "" : "s");
  *stream = (flagos_stream_t)(void *)&g_default_streams[device];
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_priority_range(int *least, int *greatest) {
  int l = 0, g = 0;
  cudaError_t err = api.DeviceGetStreamPriorityRange(&l, &g);
  if (err != cudaSuccess) return cuda_fail(err, "cudaDeviceGetStreamPriorityRange");
  *least = l;
  *greatest = g;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_create(int device, flagos_stream_t *stream, int priority) {
  cuda_stream_t *s = calloc(1, sizeof *s);
  if (s == NULL) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "cuda: out of host memory for a stream");
  guard_t g;
  flagos_status_t st = guard_enter(&g, device, "stream_create");
  if (st != FLAGOS_SUCCESS) {
    free(s);
    return st;
  }
  cudaStream_t native = NULL;
  /* Non-blocking, as torch's own streams: no implicit sync with the legacy stream. */
  cudaError_t err = api.StreamCreateWithPriority(&native, cudaStreamNonBlocking, priority);
  if (err != cudaSuccess) {
    st = cuda_fail(err, "cudaStreamCreateWithPriority(priority %d) on device %d", priority, device);
  } else {
    int actual = priority;
    if (api.StreamGetPriority(native, &actual) != cudaSuccess) {
      (void)api.GetLastError();
      actual = priority;
    }
    *s = (cuda_stream_t){STREAM_MAGIC, device, actual, false, native};
  }
  guard_exit(&g);
  if (st != FLAGOS_SUCCESS) {
    free(s);
    return st;
  }
  *stream = (flagos_stream_t)(void *)s;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_destroy(flagos_stream_t stream) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_destroy");
  if (s->is_default)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "cuda: stream %p is the default stream of device %d, which is never "
                            "destroyed", (void *)s, s->device);
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "stream_destroy");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.StreamDestroy(s->native);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaStreamDestroy of stream %p on device %d", (void *)s, s->device);
  guard_exit(&g);
  if (st != FLAGOS_SUCCESS) return st;
  s->magic = 0;
  free(s);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_query(flagos_stream_t stream) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_query");
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "stream_query");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.StreamQuery(s->native);
  if (err == cudaErrorNotReady) st = FLAGOS_ERROR_NOT_READY; /* not a failure: no message */
  else if (err != cudaSuccess)
    st = cuda_fail(err, "cudaStreamQuery of stream %p on device %d", (void *)s, s->device);
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_stream_synchronize(flagos_stream_t stream) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_synchronize");
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "stream_synchronize");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.StreamSynchronize(s->native);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaStreamSynchronize of stream %p on device %d", (void *)s, s->device);
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_stream_wait_event(flagos_stream_t stream, flagos_event_t event) {
  cuda_stream_t *s = as_stream(stream);
  cuda_event_t *e = as_event(event);
  CHECK_STREAM(s, "stream_wait_event");
  CHECK_EVENT(e, "stream_wait_event");
  cudaEvent_t native = atomic_load_explicit(&e->native, memory_order_acquire);
  if (native == NULL) return FLAGOS_SUCCESS; /* never recorded: nothing to wait for */
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "stream_wait_event");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.StreamWaitEvent(s->native, native, 0);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaStreamWaitEvent(stream %p of device %d, event %p)", (void *)s, s->device,
                   (void *)e);
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_stream_device(flagos_stream_t stream, int *device) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_device");
  *device = s->device;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_priority(flagos_stream_t stream, int *priority) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_priority");
  *priority = s->priority;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_stream_native_handle(flagos_stream_t stream, void **handle) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "stream_native_handle");
  *handle = s->native;
  return FLAGOS_SUCCESS;
}

/* Kernels run in the current CUDA context of the stream's device, which
 * is the one torch (and Triton, which loaded the kernel) made primary. */
static flagos_status_t cuda_launch_kernel(const flagos_kernel_launch_t *launch, void *stream) {
  if (!api.cuLaunchKernel)
    return flagos_set_error(FLAGOS_ERROR_NOT_SUPPORTED,
                            "cuda: the driver library libcuda.so.1 (cuLaunchKernel) is not loaded");
  CUresult r = api.cuLaunchKernel(launch->function, launch->grid[0], launch->grid[1],
                                  launch->grid[2], launch->block[0], launch->block[1],
                                  launch->block[2], launch->shared_bytes, stream, launch->params,
                                  NULL);
  if (r == 0) return FLAGOS_SUCCESS;
  const char *why = NULL;
  if (api.cuGetErrorString) api.cuGetErrorString(r, &why);
  return flagos_set_error(FLAGOS_ERROR_VENDOR,
                          "cuda: cuLaunchKernel of kernel %p (grid %ux%ux%u, block %u, %u bytes "
                          "shared) failed: %s (CUresult %d)",
                          launch->function, launch->grid[0], launch->grid[1], launch->grid[2],
                          launch->block[0], launch->shared_bytes, why ? why : "unknown error", r);
}

static flagos_status_t cuda_launch_host_func(flagos_stream_t stream, flagos_host_fn_t fn,
                                             void *data) {
  cuda_stream_t *s = as_stream(stream);
  CHECK_STREAM(s, "launch_host_func");
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "launch_host_func");
  if (st != FLAGOS_SUCCESS) return st;
  cudaError_t err = api.LaunchHostFunc(s->native, fn, data);
  if (err != cudaSuccess)
    st = cuda_fail(err, "cudaLaunchHostFunc on stream %p of device %d", (void *)s, s->device);
  guard_exit(&g);
  return st;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

static flagos_status_t cuda_event_create(flagos_event_t *event, unsigned flags) {
  cuda_event_t *e = calloc(1, sizeof *e);
  if (e == NULL) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "cuda: out of host memory for an event");
  e->magic = EVENT_MAGIC;
  e->flags = flags;
  atomic_init(&e->device, -1);
  atomic_init(&e->native, NULL);
  *event = (flagos_event_t)(void *)e;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_event_destroy(flagos_event_t event) {
  cuda_event_t *e = as_event(event);
  CHECK_EVENT(e, "event_destroy");
  cudaEvent_t native = atomic_load_explicit(&e->native, memory_order_acquire);
  if (native != NULL) {
    cudaError_t err = api.EventDestroy(native); /* CUDA defers it while work is pending */
    if (err != cudaSuccess) return cuda_fail(err, "cudaEventDestroy of event %p", (void *)e);
  }
  e->magic = 0;
  free(e);
  return FLAGOS_SUCCESS;
}

/* The event's cudaEvent_t, created on `device` at the first record. */
static flagos_status_t event_native_for(cuda_event_t *e, int device, cudaEvent_t *out) {
  cudaEvent_t native = atomic_load_explicit(&e->native, memory_order_acquire);
  if (native == NULL) {
    pthread_mutex_lock(&g_lock);
    native = atomic_load_explicit(&e->native, memory_order_relaxed);
    if (native == NULL) {
      unsigned cflags = (e->flags & FLAGOS_EVENT_DISABLE_TIMING) ? cudaEventDisableTiming
                                                                 : cudaEventDefault;
      cudaError_t err = api.EventCreateWithFlags(&native, cflags);
      if (err != cudaSuccess) {
        pthread_mutex_unlock(&g_lock);
        return cuda_fail(err, "cudaEventCreateWithFlags for event %p on device %d", (void *)e,
                         device);
      }
      atomic_store_explicit(&e->device, device, memory_order_relaxed);
      atomic_store_explicit(&e->native, native, memory_order_release);
    }
    pthread_mutex_unlock(&g_lock);
  }
  int edev = atomic_load_explicit(&e->device, memory_order_relaxed);
  if (edev != device)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "cuda: event %p belongs to device %d (first recorded there) and cannot "
                            "be recorded on a stream of device %d",
                            (void *)e, edev, device);
  *out = native;
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_event_record(flagos_event_t event, flagos_stream_t stream) {
  cuda_event_t *e = as_event(event);
  cuda_stream_t *s = as_stream(stream);
  CHECK_EVENT(e, "event_record");
  CHECK_STREAM(s, "event_record");
  guard_t g;
  flagos_status_t st = guard_enter(&g, s->device, "event_record");
  if (st != FLAGOS_SUCCESS) return st;
  cudaEvent_t native = NULL;
  st = event_native_for(e, s->device, &native);
  if (st == FLAGOS_SUCCESS) {
    cudaError_t err = api.EventRecord(native, s->native);
    if (err != cudaSuccess)
      st = cuda_fail(err, "cudaEventRecord(event %p, stream %p of device %d)", (void *)e, (void *)s,
                     s->device);
  }
  guard_exit(&g);
  return st;
}

static flagos_status_t cuda_event_query(flagos_event_t event) {
  cuda_event_t *e = as_event(event);
  CHECK_EVENT(e, "event_query");
  cudaEvent_t native = atomic_load_explicit(&e->native, memory_order_acquire);
  if (native == NULL) return FLAGOS_SUCCESS; /* never recorded */
  cudaError_t err = api.EventQuery(native);
  if (err == cudaErrorNotReady) return FLAGOS_ERROR_NOT_READY;
  if (err != cudaSuccess) return cuda_fail(err, "cudaEventQuery of event %p", (void *)e);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_event_synchronize(flagos_event_t event) {
  cuda_event_t *e = as_event(event);
  CHECK_EVENT(e, "event_synchronize");
  cudaEvent_t native = atomic_load_explicit(&e->native, memory_order_acquire);
  if (native == NULL) return FLAGOS_SUCCESS;
  cudaError_t err = api.EventSynchronize(native);
  if (err != cudaSuccess) return cuda_fail(err, "cudaEventSynchronize of event %p", (void *)e);
  return FLAGOS_SUCCESS;
}

static flagos_status_t cuda_event_elapsed_time(float *ms, flagos_event_t start, flagos_event_t end) {
  cuda_event_t *a = as_event(start), *b = as_event(end);
  CHECK_EVENT(a, "event_elapsed_time");
  CHECK_EVENT(b, "event_elapsed_time");
  if ((a->flags | b->flags) & FLAGOS_EVENT_DISABLE_TIMING)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "cuda: elapsed time needs two timing events, but %s event %p was "
                            "created with FLAGOS_EVENT_DISABLE_TIMING",
                            (a->flags & FLAGOS_EVENT_DISABLE_TIMING) ? "start" : "end",
                            (a->flags & FLAGOS_EVENT_DISABLE_TIMING) ? (void *)a : (void *)b);
  cudaEvent_t na = atomic_load_explicit(&a->native, memory_order_acquire);
  cudaEvent_t nb = atomic_load_explicit(&b->native, memory_order_acquire);
  if (na == NULL || nb == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "cuda: elapsed time needs both events recorded, but %s event %p was "
                            "never recorded",
                            na == NULL ? "start" : "end", na == NULL ? (void *)a : (void *)b);
  float t = 0.0f;
  cudaError_t err = api.EventElapsedTime(&t, na, nb);
  if (err == cudaErrorNotReady)
    return cuda_fail(err, "cudaEventElapsedTime(start %p, end %p): an event has not completed",
                     (void *)a, (void *)b);
  if (err != cudaSuccess)
    return cuda_fail(err, "cudaEventElapsedTime(start %p, end %p)", (void *)a, (void *)b);
  *ms = t;
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */

const flagos_vendor_ops_t flagos_vendor_cuda = {
    .name = "cuda",
    .kind = FLAGOS_VENDOR_CUDA,
    .probe = cuda_probe,
    .device_count = cuda_device_count,
    .set_device = cuda_set_device,
    .get_device = cuda_get_device,
    .device_synchronize = cuda_device_synchronize,
    .device_properties = cuda_device_properties,
    .mem_get_info = cuda_mem_get_info,
    .malloc_device = cuda_malloc_device,
    .free_device = cuda_free_device,
    .malloc_host = cuda_malloc_host,
    .free_host = cuda_free_host,
    .memcpy_sync = cuda_memcpy_sync,
    .memcpy_async = cuda_memcpy_async,
    .memset_async = cuda_memset_async,
    .pointer_attributes = cuda_pointer_attributes,
    .host_access_begin = NULL,
    .host_access_end = NULL,
    .default_stream = cuda_default_stream,
    .stream_priority_range = cuda_stream_priority_range,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_query = cuda_stream_query,
    .stream_synchronize = cuda_stream_synchronize,
    .stream_wait_event = cuda_stream_wait_event,
    .stream_device = cuda_stream_device,
    .stream_priority = cuda_stream_priority,
    .stream_native_handle = cuda_stream_native_handle,
    .launch_host_func = cuda_launch_host_func,
    .launch_kernel = cuda_launch_kernel,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_synchronize = cuda_event_synchronize,
    .event_elapsed_time = cuda_event_elapsed_time,
};
