/* test_event.c - events: timing, re-record semantics, errors, lifetimes. */
#include <stdint.h>

#include "check.h"
#include "timing.h"

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "1", 1);
  CHECK_OK(flagos_init(NULL));
  flagos_stream_t s, t;
  CHECK_OK(flagos_stream_create(&s, 0));
  CHECK_OK(flagos_stream_create(&t, 0));
  flagos_event_t a, b, quiet;
  CHECK_ERR(flagos_event_create(&a, 0x10), FLAGOS_ERROR_INVALID_ARGUMENT, "unknown flags 0x10");
  CHECK_ERR(flagos_event_create(NULL, 0), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_OK(flagos_event_create(&a, FLAGOS_EVENT_DEFAULT));
  CHECK_OK(flagos_event_create(&b, FLAGOS_EVENT_DEFAULT));
  CHECK_OK(flagos_event_create(&quiet, FLAGOS_EVENT_DISABLE_TIMING));
  CHECK_OK(flagos_event_query(a)); /* never recorded: complete */
  CHECK_OK(flagos_event_synchronize(a));
  float ms = -1;
  CHECK_ERR(flagos_event_elapsed_time(&ms, a, b), FLAGOS_ERROR_INVALID_ARGUMENT, "never recorded");

  /* Timing: ~100 ms of stream work between the two records. */
  int sleep_ms = 100;
  CHECK_OK(flagos_event_record(a, s));
  CHECK_OK(flagos_launch_host_func(s, sleep_fn, &sleep_ms));
  CHECK_OK(flagos_event_record(b, s));
  CHECK_EQ(flagos_event_query(b), FLAGOS_ERROR_NOT_READY);
  CHECK_ERR(flagos_event_elapsed_time(&ms, a, b), FLAGOS_ERROR_NOT_READY, "has not completed");
  CHECK_OK(flagos_event_synchronize(b));
  CHECK_OK(flagos_event_query(b));
  CHECK_OK(flagos_event_elapsed_time(&ms, a, b));
  CHECK(ms >= 95 && ms < 400);
  CHECK_ERR(flagos_event_elapsed_time(NULL, a, b), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_OK(flagos_event_record(quiet, s));
  CHECK_OK(flagos_event_synchronize(quiet));
  CHECK_ERR(flagos_event_elapsed_time(&ms, a, quiet), FLAGOS_ERROR_INVALID_ARGUMENT,
            "FLAGOS_EVENT_DISABLE_TIMING");

  /* Re-recording: the event tracks only its latest record. */
  atomic_int gate = 0;
  CHECK_OK(flagos_launch_host_func(s, gate_fn, &gate));
  CHECK_OK(flagos_event_record(a, s)); /* stuck behind the gate */
  CHECK_EQ(flagos_event_query(a), FLAGOS_ERROR_NOT_READY);
  CHECK_OK(flagos_event_record(a, t)); /* t is idle */
  CHECK_OK(flagos_event_synchronize(a)); /* returns although s is still gated */
  CHECK_OK(flagos_event_query(a));
  CHECK_EQ(flagos_stream_query(s), FLAGOS_ERROR_NOT_READY);
  atomic_store(&gate, 1);
  CHECK_OK(flagos_stream_synchronize(s));
  CHECK_OK(flagos_event_query(a)); /* the stale marker did not disturb it */

  /* Record on the default stream via NULL. */
  CHECK_OK(flagos_event_record(b, NULL));
  CHECK_OK(flagos_event_synchronize(b));

  /* Destroying an event whose record is still queued is safe. */
  atomic_int gate2 = 0;
  flagos_event_t doomed;
  CHECK_OK(flagos_event_create(&doomed, 0));
  CHECK_OK(flagos_launch_host_func(s, gate_fn, &gate2));
  CHECK_OK(flagos_event_record(doomed, s));
  CHECK_OK(flagos_stream_wait_event(t, doomed));
  CHECK_OK(flagos_event_destroy(doomed));
  atomic_store(&gate2, 1);
  CHECK_OK(flagos_stream_synchronize(t));
  CHECK_OK(flagos_stream_synchronize(s));

  /* Destroyed and fake handles. */
  CHECK_ERR(flagos_event_query(doomed), FLAGOS_ERROR_INVALID_HANDLE, "not a live flagos event");
  CHECK_ERR(flagos_event_record(doomed, s), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_ERR(flagos_event_synchronize(doomed), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_ERR(flagos_event_destroy(doomed), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_ERR(flagos_event_elapsed_time(&ms, a, doomed), FLAGOS_ERROR_INVALID_HANDLE, "end event");
  CHECK_ERR(flagos_stream_wait_event(s, doomed), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_ERR(flagos_event_query((flagos_event_t)(uintptr_t)0x40), FLAGOS_ERROR_INVALID_HANDLE, "0x40");
  CHECK_ERR(flagos_event_query((flagos_event_t)s), FLAGOS_ERROR_INVALID_HANDLE, "event");
  CHECK_ERR(flagos_event_record(a, (flagos_stream_t)b), FLAGOS_ERROR_INVALID_HANDLE, "stream");

  CHECK_OK(flagos_event_destroy(a));
  CHECK_OK(flagos_event_destroy(b));
  CHECK_OK(flagos_event_destroy(quiet));
  CHECK_OK(flagos_stream_destroy(s));
  CHECK_OK(flagos_stream_destroy(t));
  return check_report();
}
