/*
 * routing_fuzzer.c - libFuzzer target for the routing config parser.
 *
 * Built only with -DFLAGOS_LIBFUZZER=ON and clang (see CMakeLists.txt here);
 * the parser is compiled into this binary with coverage instrumentation.
 * Each input is loaded three ways: as a string (up to its first NUL), as a
 * file holding every byte (an in-memory memfd, NULs included), and split
 * into lines as an environment. Any status other than SUCCESS or CONFIG, an
 * empty error message, or a table changed by a failed load aborts.
 *
 *   flagos_routing_fuzzer -dict=runtime/tests/fuzz/routing.dict -max_len=65536 CORPUS_DIR
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "flagos/flagos.h"

static void must(int ok, const char *what, flagos_status_t st) {
  if (!ok) {
    fprintf(stderr, "routing_fuzzer: %s (status %d, message \"%s\")\n", what, (int)st,
            flagos_last_error());
    abort();
  }
}

static void check_status(flagos_status_t st, const char *what) {
  must(st == FLAGOS_SUCCESS || st == FLAGOS_ERROR_CONFIG, what, st);
  if (st == FLAGOS_ERROR_CONFIG) must(flagos_last_error()[0] != '\0', "empty error message", st);
}

static void check_unchanged(flagos_routing_table_t t, size_t count_before, flagos_status_t st) {
  if (st == FLAGOS_SUCCESS) return;
  size_t n = 0;
  flagos_routing_count(t, &n);
  must(n == count_before, "a failed load changed the table", st);
}

static int g_memfd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  flagos_routing_table_t t = NULL;
  must(flagos_routing_create(&t) == FLAGOS_SUCCESS, "create", FLAGOS_SUCCESS);
  flagos_routing_set(t, "sentinel", FLAGOS_BACKEND_CPU);

  char *text = malloc(size + 1);
  if (!text) abort();
  if (size) memcpy(text, data, size);
  text[size] = '\0';

  /* 1. string */
  size_t before = 0;
  flagos_routing_count(t, &before);
  flagos_status_t st = flagos_routing_load_string(t, text, "fuzz");
  check_status(st, "load_string");
  check_unchanged(t, before, st);

  /* 2. every byte, as a file */
  if (g_memfd < 0) g_memfd = memfd_create("flagos_routing_fuzz", 0);
  if (g_memfd >= 0 && ftruncate(g_memfd, 0) == 0 &&
      (size == 0 || pwrite(g_memfd, data, size, 0) == (ssize_t)size)) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", g_memfd);
    flagos_routing_count(t, &before);
    st = flagos_routing_load_file(t, path);
    check_status(st, "load_file");
    check_unchanged(t, before, st);
  }

  /* 3. lines as environment entries */
  size_t nvars = 1;
  for (size_t i = 0; i < size; ++i) nvars += text[i] == '\n';
  char **vars = calloc(nvars + 1, sizeof *vars);
  if (!vars) abort();
  size_t k = 0;
  for (char *p = text, *nl; k < nvars; p = nl + 1) {
    vars[k++] = p;
    nl = strchr(p, '\n');
    if (!nl) break;
    *nl = '\0';
  }
  vars[k] = NULL;
  flagos_routing_count(t, &before);
  st = flagos_routing_load_environ(t, vars);
  check_status(st, "load_environ");
  check_unchanged(t, before, st);

  /* lookups of every entry still work */
  size_t n = 0;
  flagos_routing_count(t, &n);
  for (size_t i = 0; i < n; ++i) {
    const char *op = NULL;
    flagos_backend_t b = FLAGOS_BACKEND_DEFAULT, b2 = FLAGOS_BACKEND_DEFAULT;
    must(flagos_routing_entry(t, i, &op, &b, NULL, NULL) == FLAGOS_SUCCESS, "entry", FLAGOS_SUCCESS);
    must(flagos_routing_lookup(t, op, &b2) == FLAGOS_SUCCESS && b == b2, "lookup of an entry",
         FLAGOS_SUCCESS);
  }
  free(vars);
  free(text);
  flagos_routing_destroy(t);
  return 0;
}
