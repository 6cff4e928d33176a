/* test_protect.c - device memory is PROT_NONE outside runtime copies; the
 * access_begin/end bracket opens it (nested, thread-safe). Children fork
 * off and touch memory, so a fault kills only the child. */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* 0: child wrote and read back fine; SIGSEGV: it faulted; else other. */
static int touch_in_child(volatile char *p) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    /* Sanitizers catch SEGV to print a report; we want the plain signal. */
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    p[0] = 42;
    _exit(p[0] == 42 ? 0 : 3);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS
                                     ? SIGSEGV : 100 + WTERMSIG(status);
  return -1;
}

static void *hammer(void *arg) {
  volatile char *p = arg;
  for (int i = 0; i < 2000; i++) {
    if (flagos_host_access_begin((const char *)p + i % 4096) != FLAGOS_SUCCESS) return (void *)1;
    p[i % 4096] += 1; /* faults if another thread's end closed it under us */
    if (flagos_host_access_end((const char *)p) != FLAGOS_SUCCESS) return (void *)1;
  }
  return NULL;
}

/* With FLAGOS_HOST_PROTECT=0 device memory is plain memory (fresh process). */
static void unprotected_child(void) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    setenv("FLAGOS_HOST_PROTECT", "0", 1);
    void *d = NULL;
    if (flagos_init("host") || flagos_malloc(&d, 4096)) _exit(2);
    signal(SIGSEGV, SIG_DFL);
    ((volatile char *)d)[0] = 1;
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
  setenv("FLAGOS_VENDOR", "host", 1);
  setenv("FLAGOS_HOST_DEVICES", "1", 1);
  unprotected_child(); /* before our own init: the child needs a fresh runtime */

  char *d = NULL;
  CHECK_OK(flagos_malloc((void **)&d, 10000));
  CHECK_EQ(touch_in_child(d), SIGSEGV);
  CHECK_EQ(touch_in_child(d + 9000), SIGSEGV);
  CHECK_OK(flagos_host_access_begin(d + 5000)); /* interior pointer opens the allocation */
  CHECK_EQ(touch_in_child(d), 0);
  d[1] = 7; /* the parent may touch it too */
  CHECK_OK(flagos_host_access_begin(d));
  CHECK_OK(flagos_host_access_end(d));
  CHECK_EQ(touch_in_child(d + 9999), 0); /* still open: nested */
  CHECK_OK(flagos_host_access_end(d));
  CHECK_EQ(touch_in_child(d), SIGSEGV);
  CHECK_ERR(flagos_host_access_end(d), FLAGOS_ERROR_INVALID_HANDLE, "no open flagos_host_access_begin");
  int local = 0;
  CHECK_ERR(flagos_host_access_begin(&local), FLAGOS_ERROR_INVALID_HANDLE,
            "not inside a live flagos device allocation");
  CHECK_ERR(flagos_host_access_begin(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "NULL");

  /* Runtime copies open and close the memory themselves. */
  char buf[2] = {0};
  CHECK_OK(flagos_memcpy(buf, d + 1, 1, FLAGOS_MEMCPY_DEVICE_TO_HOST));
  CHECK_EQ(buf[0], 7);
  CHECK_EQ(touch_in_child(d), SIGSEGV);

  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, d);
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += r != NULL;
  }
  CHECK_EQ(bad, 0);
  CHECK_EQ(touch_in_child(d), SIGSEGV);
  CHECK_OK(flagos_free(d));
  return check_report();
}
