/*
 * host_stream.c - host vendor streams and events.
 *
 * Each stream owns a worker thread draining a FIFO of tasks, so async
 * calls really return before their work is done. Streams and events are
 * reference counted: a queued task keeps its event alive, and
 * device_synchronize keeps the streams it waits on alive.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vendors/host_internal.h"

typedef enum { T_COPY, T_MEMSET, T_HOST_FN, T_RECORD, T_WAIT } task_kind_t;

typedef struct task {
  struct task *next;
  task_kind_t kind;
  void *dst;
  const void *src;
  size_t size;
  int value;
  flagos_memcpy_kind_t copy_kind;
  flagos_host_fn_t fn;
  void *data;
  flagos_event_t event;
  uint64_t seq;
} task_t;

struct flagos_stream {
  int device, priority;
  bool is_default;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work; /* a task arrived or stop was asked */
  pthread_cond_t idle; /* pending dropped */
  task_t *head, *tail;
  size_t pending; /* queued or running */
  bool stop;
  int refs;                  /* under reg_lock */
  struct flagos_stream *next; /* device list, under reg_lock */
};

struct flagos_event {
  unsigned flags;
  pthread_mutex_t mu;
  pthread_cond_t done;
  uint64_t recorded;  /* sequence of the latest record */
  uint64_t completed; /* highest sequence whose marker ran */
  struct timespec stamp; /* when `completed` ran */
  _Atomic int refs;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static flagos_stream_t streams_of[HOST_MAX_DEVICES];
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static flagos_stream_t defaults[HOST_MAX_DEVICES];

/* ---------------------------------------------------------------- events */

static void event_unref(flagos_event_t e) {
  if (atomic_fetch_sub(&e->refs, 1) != 1) return;
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->done);
  free(e);
}

static void event_mark(flagos_event_t e, uint64_t seq) {
  pthread_mutex_lock(&e->mu);
  /* A marker of an older record that runs late must not undo a newer one. */
  if (seq > e->completed) {
    e->completed = seq;
    clock_gettime(CLOCK_MONOTONIC, &e->stamp);
  }
  pthread_cond_broadcast(&e->done);
  pthread_mutex_unlock(&e->mu);
}

static void event_wait_seq(flagos_event_t e, uint64_t seq) {
  pthread_mutex_lock(&e->mu);
  while (e->completed < seq) pthread_cond_wait(&e->done, &e->mu);
  pthread_mutex_unlock(&e->mu);
}

flagos_status_t host_event_create(flagos_event_t *out, unsigned flags) {
  flagos_event_t e = calloc(1, sizeof *e);
  if (!e) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  e->flags = flags;
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->done, NULL);
  atomic_init(&e->refs, 1);
  *out = e;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_event_destroy(flagos_event_t e) {
  event_unref(e);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_event_query(flagos_event_t e) {
  pthread_mutex_lock(&e->mu);
  bool done = e->completed >= e->recorded;
  pthread_mutex_unlock(&e->mu);
  return done ? FLAGOS_SUCCESS : FLAGOS_ERROR_NOT_READY;
}

flagos_status_t host_event_synchronize(flagos_event_t e) {
  pthread_mutex_lock(&e->mu);
  uint64_t seq = e->recorded;
  pthread_mutex_unlock(&e->mu);
  event_wait_seq(e, seq);
  return FLAGOS_SUCCESS;
}

/* Snapshot of one event for elapsed_time; status says if it can be used. */
static flagos_status_t event_stamp(flagos_event_t e, const char *which, struct timespec *t) {
  pthread_mutex_lock(&e->mu);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (e->flags & FLAGOS_EVENT_DISABLE_TIMING)
    st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                          "flagos_event_elapsed_time: %s event %p was created with "
                          "FLAGOS_EVENT_DISABLE_TIMING", which, (void *)e);
  else if (e->recorded == 0)
    st = flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                          "flagos_event_elapsed_time: %s event %p was never recorded", which,
                          (void *)e);
  else if (e->completed < e->recorded)
    st = flagos_set_error(FLAGOS_ERROR_NOT_READY,
                          "flagos_event_elapsed_time: %s event %p has not completed yet", which,
                          (void *)e);
  else
    *t = e->stamp;
  pthread_mutex_unlock(&e->mu);
  return st;
}

flagos_status_t host_event_elapsed_time(float *ms, flagos_event_t a, flagos_event_t b) {
  struct timespec ta = {0, 0}, tb = {0, 0}; /* set on success; zeroed to quiet -Wmaybe-uninitialized */
  flagos_status_t st = event_stamp(a, "start", &ta);
  if (st) return st;
  st = event_stamp(b, "end", &tb);
  if (st) return st;
  double d = (double)(tb.tv_sec - ta.tv_sec) * 1e3 + (double)(tb.tv_nsec - ta.tv_nsec) / 1e6;
  *ms = (float)d;
  return FLAGOS_SUCCESS;
}

/* --------------------------------------------------------------- streams */

static void run_task(task_t *t) {
  switch (t->kind) {
  case T_COPY: host_run_copy(t->dst, t->src, t->size, t->copy_kind); break;
  case T_MEMSET: host_run_memset(t->dst, t->value, t->size); break;
  case T_HOST_FN: t->fn(t->data); break;
  case T_RECORD: event_mark(t->event, t->seq); event_unref(t->event); break;
  case T_WAIT: event_wait_seq(t->event, t->seq); event_unref(t->event); break;
  }
}

static void *worker(void *arg) {
  flagos_stream_t s = arg;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->head && !s->stop) pthread_cond_wait(&s->work, &s->mu);
    if (!s->head) break; /* stop asked and queue drained */
    task_t *t = s->head;
    s->head = t->next;
    if (!s->head) s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    run_task(t);
    free(t);
    pthread_mutex_lock(&s->mu);
    if (--s->pending == 0) pthread_cond_broadcast(&s->idle);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static flagos_status_t enqueue(flagos_stream_t s, const task_t *proto) {
  task_t *t = malloc(sizeof *t);
  if (!t) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  *t = *proto;
  t->next = NULL;
  pthread_mutex_lock(&s->mu);
  if (s->tail) s->tail->next = t;
  else s->head = t;
  s->tail = t;
  s->pending++;
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
  return FLAGOS_SUCCESS;
}

static bool on_worker(flagos_stream_t s) { return pthread_equal(pthread_self(), s->thread); }

static bool is_idle(flagos_stream_t s) {
  pthread_mutex_lock(&s->mu);
  bool idle = s->pending == 0;
  pthread_mutex_unlock(&s->mu);
  return idle;
}

static void drain(flagos_stream_t s) {
  pthread_mutex_lock(&s->mu);
  while (s->pending) pthread_cond_wait(&s->idle, &s->mu);
  pthread_mutex_unlock(&s->mu);
}

static void stream_unref(flagos_stream_t s) {
  pthread_mutex_lock(&reg_lock);
  bool last = --s->refs == 0;
  pthread_mutex_unlock(&reg_lock);
  if (!last) return;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->work);
  pthread_cond_destroy(&s->idle);
  free(s);
}

static flagos_status_t new_stream(int device, int priority, bool is_default, flagos_stream_t *out) {
  flagos_stream_t s = calloc(1, sizeof *s);
  if (!s) return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  s->device = device;
  s->priority = priority;
  s->is_default = is_default;
  s->refs = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->work, NULL);
  pthread_cond_init(&s->idle, NULL);
  int rc = pthread_create(&s->thread, NULL, worker, s);
  if (rc) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->idle);
    free(s);
    return flagos_set_error(FLAGOS_ERROR_VENDOR,
                            "flagos host: cannot start a stream worker thread (error %d)", rc);
  }
  pthread_mutex_lock(&reg_lock);
  s->next = streams_of[device];
  streams_of[device] = s;
  pthread_mutex_unlock(&reg_lock);
  *out = s;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_default_stream(int device, flagos_stream_t *out) {
  pthread_mutex_lock(&default_lock);
  flagos_status_t st = FLAGOS_SUCCESS;
  if (!defaults[device]) st = new_stream(device, 0, true, &defaults[device]);
  if (!st) *out = defaults[device];
  pthread_mutex_unlock(&default_lock);
  return st;
}

flagos_status_t host_stream_priority_range(int *least, int *greatest) {
  *least = 0;
  *greatest = -1;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_stream_create(int device, flagos_stream_t *out, int priority) {
  return new_stream(device, priority, false, out);
}

flagos_status_t host_stream_destroy(flagos_stream_t s) {
  if (on_worker(s))
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_stream_destroy: stream %p cannot destroy itself from its own "
                            "host function", (void *)s);
  pthread_mutex_lock(&reg_lock);
  for (flagos_stream_t *p = &streams_of[s->device]; *p; p = &(*p)->next) {
    if (*p == s) {
      *p = s->next;
      break;
    }
  }
  pthread_mutex_unlock(&reg_lock);
  pthread_mutex_lock(&s->mu);
  s->stop = true; /* the worker finishes the queue first */
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  stream_unref(s);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_stream_query(flagos_stream_t s) {
  pthread_mutex_lock(&s->mu);
  bool idle = s->pending == 0;
  pthread_mutex_unlock(&s->mu);
  return idle ? FLAGOS_SUCCESS : FLAGOS_ERROR_NOT_READY;
}

flagos_status_t host_stream_synchronize(flagos_stream_t s) {
  if (on_worker(s))
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_stream_synchronize: called from a host function of stream %p "
                            "itself (would deadlock)", (void *)s);
  drain(s);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_device_synchronize(int device) {
  pthread_mutex_lock(&reg_lock);
  size_t n = 0;
  for (flagos_stream_t s = streams_of[device]; s; s = s->next) n++;
  flagos_stream_t *list = malloc((n ? n : 1) * sizeof *list);
  if (!list) {
    pthread_mutex_unlock(&reg_lock);
    return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "flagos host: out of host memory");
  }
  n = 0;
  for (flagos_stream_t s = streams_of[device]; s; s = s->next) {
    s->refs++;
    list[n++] = s;
  }
  pthread_mutex_unlock(&reg_lock);
  for (size_t i = 0; i < n; i++) {
    if (!on_worker(list[i])) drain(list[i]); /* a host fn may free memory */
    stream_unref(list[i]);
  }
  free(list);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_stream_wait_event(flagos_stream_t s, flagos_event_t e) {
  pthread_mutex_lock(&e->mu);
  uint64_t seq = e->recorded;
  pthread_mutex_unlock(&e->mu);
  if (seq == 0) return FLAGOS_SUCCESS; /* never recorded: nothing to wait for */
  atomic_fetch_add(&e->refs, 1);
  task_t t = {.kind = T_WAIT, .event = e, .seq = seq};
  flagos_status_t st = enqueue(s, &t);
  if (st) event_unref(e);
  return st;
}

flagos_status_t host_event_record(flagos_event_t e, flagos_stream_t s) {
  pthread_mutex_lock(&e->mu);
  uint64_t seq = ++e->recorded;
  pthread_mutex_unlock(&e->mu);
  atomic_fetch_add(&e->refs, 1);
  task_t t = {.kind = T_RECORD, .event = e, .seq = seq};
  flagos_status_t st = enqueue(s, &t);
  if (st) {
    event_mark(e, seq); /* keep the event usable rather than stuck NOT_READY */
    event_unref(e);
  }
  return st;
}

flagos_status_t host_stream_device(flagos_stream_t s, int *device) {
  *device = s->device;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_stream_priority(flagos_stream_t s, int *priority) {
  *priority = s->priority;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_stream_native_handle(flagos_stream_t s, void **handle) {
  *handle = s;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_launch_host_func(flagos_stream_t s, flagos_host_fn_t fn, void *data) {
  task_t t = {.kind = T_HOST_FN, .fn = fn, .data = data};
  return enqueue(s, &t);
}

/* ----------------------------------------------------------------- copies */

static const char *dst_host(flagos_memcpy_kind_t k) {
  return k == FLAGOS_MEMCPY_HOST_TO_DEVICE || k == FLAGOS_MEMCPY_DEVICE_TO_DEVICE ? NULL : "";
}

/* Validates both sides; *device is the device whose default stream orders a sync copy. */
static flagos_status_t check_copy(const char *fn, void *dst, const void *src, size_t size,
                                  flagos_memcpy_kind_t kind, int *device) {
  bool dd = !dst_host(kind);
  bool sd = kind == FLAGOS_MEMCPY_DEVICE_TO_HOST || kind == FLAGOS_MEMCPY_DEVICE_TO_DEVICE;
  int ddev = -1, sdev = -1;
  flagos_status_t st = host_check_range(fn, "destination", dst, size, dd, &ddev);
  if (st) return st;
  st = host_check_range(fn, "source", src, size, sd, &sdev);
  if (st) return st;
  *device = sd ? sdev : dd ? ddev : -1;
  return FLAGOS_SUCCESS;
}

flagos_status_t host_memcpy_sync(void *dst, const void *src, size_t size,
                                 flagos_memcpy_kind_t kind) {
  int device;
  flagos_status_t st = check_copy("flagos_memcpy", dst, src, size, kind, &device);
  if (st) return st;
  if (device < 0) {
    memmove(dst, src, size);
    return FLAGOS_SUCCESS;
  }
  /* Ordered after work already queued on the device's default stream. */
  flagos_stream_t s;
  st = host_default_stream(device, &s);
  if (st) return st;
  /* With nothing queued on that stream the copy is already in order: do it
   * here rather than pay two thread hand-offs (most sync copies, e.g. the
   * native route's results, find the stream idle). */
  if (on_worker(s) || is_idle(s)) {
    host_run_copy(dst, src, size, kind);
    return FLAGOS_SUCCESS;
  }
  task_t t = {.kind = T_COPY, .dst = dst, .src = src, .size = size, .copy_kind = kind};
  st = enqueue(s, &t);
  if (st) return st;
  drain(s);
  return FLAGOS_SUCCESS;
}

flagos_status_t host_memcpy_async(void *dst, const void *src, size_t size,
                                  flagos_memcpy_kind_t kind, flagos_stream_t s) {
  int device;
  flagos_status_t st = check_copy("flagos_memcpy_async", dst, src, size, kind, &device);
  if (st) return st;
  task_t t = {.kind = T_COPY, .dst = dst, .src = src, .size = size, .copy_kind = kind};
  return enqueue(s, &t);
}

flagos_status_t host_memset_async(void *dst, int value, size_t size, flagos_stream_t s) {
  flagos_pointer_attributes_t a;
  host_pointer_attributes(&a, dst);
  if (a.type == FLAGOS_MEMORY_UNREGISTERED)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_memset: destination %p is not flagos device or pinned memory",
                            dst);
  int device;
  flagos_status_t st = host_check_range("flagos_memset", "destination", dst, size,
                                        a.type == FLAGOS_MEMORY_DEVICE, &device);
  if (st) return st;
  task_t t = {.kind = T_MEMSET, .dst = dst, .size = size, .value = value};
  return enqueue(s, &t);
}
