/*
 * test_routing_fuzz.c - seeded random and mutated inputs for the routing
 * config parser (deterministic: the same seed gives the same corpus).
 *
 * Every input is loaded with flagos_routing_load_string (text up to the first
 * NUL) and one in eight also as a file (all bytes, NULs included) with
 * flagos_routing_load_file; random FLAGOS_OP_* environments go through
 * flagos_routing_load_environ. Each result must be FLAGOS_SUCCESS or
 * FLAGOS_ERROR_CONFIG with a non-empty message, and a failed load must leave
 * the table as it was. Inputs without includes are also checked against a
 * small reference parser written here (status, error line, resulting routes).
 *
 * FLAGOS_FUZZ_ITERATIONS and FLAGOS_FUZZ_SEED override the defaults.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkdtemp, nanosleep */
#endif
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "flagos/flagos.h"

static uint64_t g_rng;

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* ------------------------------------------------------------------ */
/* Growable byte buffer                                                */
/* ------------------------------------------------------------------ */

typedef struct buf {
  char *p;
  size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *data, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      fprintf(stderr, "out of memory\n");
      exit(2);
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
  b->p[b->n] = '\0';
}
static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }
static void putc_(buf_t *b, char c) { put(b, &c, 1); }

/* ------------------------------------------------------------------ */
/* Corpus                                                              */
/* ------------------------------------------------------------------ */

static const char *const kSeeds[] = {
    "mm = cuda\nadd.Tensor = flagos\n",
    "# comment\n\n  aten::softmax.int = flaggems_python # trailing\r\n",
    "include inc_ok.conf\nmm = cpu\n",
    "include sub/inc_nested.conf\n",
    "include inc_cycle_a.conf\n",
    "include inc_bad.conf\n",
    "include missing.conf\n",
    "sum.dim_IntList=metax\nmean = ascend\nmm=cuda#x\n",
    "a = cuda\nb = cpu\na = metax\n",
    "include = cuda\n",
    "mm = cudaa\n",
    "x.y.z = cpu\n",
};

static const char *const kTokens[] = {
    "mm", "add", "Tensor", "out", "aten::", "aten:", "::", ".", "..", "_", "=", " = ", "==", " ",
    "\t", "\r", "\r\n", "\n", "\n", "\n", "#", "# c", "include ", "include", "inc_ok.conf",
    "inc_bad.conf", "sub/inc_nested.conf", "inc_cycle_a.conf", "/", "../", "cuda", "cpu",
    "metax", "ascend", "flagos", "flaggems", "flagos_python", "flaggems_python", "CUDA", "cud",
    "\xff", "\xc3\xa9", "\x80", "\x01", "\v", "\f", "0", "9", "mm.out", "add.Tensor", "-", "'",
    "\"", "\\", "%s", "%n", "%%", "\xef\xbb\xbf",
};
#define NTOK (sizeof kTokens / sizeof kTokens[0])

static void gen_tokens(buf_t *b) {
  size_t n = 1 + below(40);
  for (size_t i = 0; i < n; ++i) puts_(b, kTokens[below(NTOK)]);
}

static void gen_lines(buf_t *b) {
  static const char *const words[] = {"flagos", "flaggems", "flagos_python", "flaggems_python",
                                      "cuda", "metax", "ascend", "cpu"};
  static const char *const ops[] = {"mm", "add.Tensor", "aten::sum", "softmax.int", "x_1", "A.B"};
  size_t n = 1 + below(12);
  for (size_t i = 0; i < n; ++i) {
    if (below(10) == 0) puts_(b, "  # comment = cuda");
    else {
      if (below(4) == 0) puts_(b, " \t");
      puts_(b, ops[below(6)]);
      puts_(b, below(2) ? " = " : "=");
      puts_(b, words[below(8)]);
      if (below(5) == 0) puts_(b, " # t");
    }
    puts_(b, below(4) ? "\n" : "\r\n");
  }
}

static void gen_random_bytes(buf_t *b, bool allow_nul) {
  size_t n = below(300);
  for (size_t i = 0; i < n; ++i) {
    char c = (char)below(256);
    if (!allow_nul && c == '\0') c = '\n';
    putc_(b, c);
  }
}

static void mutate(buf_t *b, bool allow_nul) {
  size_t rounds = 1 + below(8);
  for (size_t r = 0; r < rounds; ++r) {
    size_t what = below(6);
    if (b->n == 0 || what == 0) { /* insert a token */
      size_t at = below(b->n + 1);
      const char *tok = kTokens[below(NTOK)];
      size_t tn = strlen(tok);
      buf_t nb = {0};
      put(&nb, b->p ? b->p : "", at);
      put(&nb, tok, tn);
      put(&nb, b->p ? b->p + at : "", b->n - at);
      free(b->p);
      *b = nb;
    } else if (what == 1) { /* flip a byte */
      size_t at = below(b->n);
      b->p[at] = (char)(b->p[at] ^ (char)(1u << below(8)));
      if (!allow_nul && b->p[at] == '\0') b->p[at] = '#';
    } else if (what == 2) { /* delete a range */
      size_t at = below(b->n), len = below(b->n - at + 1);
      memmove(b->p + at, b->p + at + len, b->n - at - len + 1);
      b->n -= len;
    } else if (what == 3) { /* duplicate a range */
      size_t at = below(b->n), len = below(b->n - at + 1);
      if (len > 4096) len = 4096;
      char *copy = malloc(len + 1);
      if (!copy) exit(2);
      memcpy(copy, b->p + at, len);
      put(b, copy, len);
      free(copy);
    } else if (what == 4) { /* random byte */
      char c = (char)below(256);
      if (!allow_nul && c == '\0') c = '=';
      b->p[below(b->n)] = c;
    } else { /* truncate */
      b->n = below(b->n + 1);
      b->p[b->n] = '\0';
    }
  }
}

static void gen_long_line(buf_t *b, bool allow_nul) {
  size_t n = 1000 + below(200000);
  int kind = (int)below(4);
  if (kind == 1) puts_(b, "mm = ");
  if (kind == 2) puts_(b, "include ");
  for (size_t i = 0; i < n; ++i) {
    char c;
    switch (kind) {
      case 0: c = "abcXYZ_09"[below(9)]; break;
      case 3: c = (char)below(256); if (c == '\n' || (!allow_nul && c == '\0')) c = 'q'; break;
      default: c = (char)("ab.=# \t\xff"[below(8)]); break;
    }
    putc_(b, c);
  }
  if (kind == 0) puts_(b, " = cuda");
  if (below(2)) puts_(b, "\r\n");
}

static void generate(buf_t *b, bool allow_nul) {
  b->n = 0;
  if (b->p) b->p[0] = '\0';
  size_t choice = below(100);
  if (choice < 25) gen_tokens(b);
  else if (choice < 45) gen_lines(b);
  else if (choice < 55) gen_random_bytes(b, allow_nul);
  else if (choice < 99) {
    puts_(b, kSeeds[below(sizeof kSeeds / sizeof kSeeds[0])]);
    if (below(2)) gen_lines(b);
    mutate(b, allow_nul);
  } else gen_long_line(b, allow_nul);
}

/* ------------------------------------------------------------------ */
/* Reference parser for inputs without "include"                       */
/* ------------------------------------------------------------------ */

typedef struct ref_entry {
  char op[256];
  flagos_backend_t b;
} ref_entry_t;

static bool ref_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
static bool ref_ident(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Returns 0 on success (entries filled, *n set; op names longer than 255 make
 * it give up: -2), else the 1-based line of the first error. */
static int ref_parse(const char *text, ref_entry_t *out, size_t max, size_t *n) {
  static const char *const words[] = {"flagos", "flaggems", "flagos_python", "flaggems_python",
                                      "cuda", "metax", "ascend", "cpu"};
  static const flagos_backend_t vals[] = {FLAGOS_BACKEND_FLAGOS, FLAGOS_BACKEND_FLAGGEMS,
                                          FLAGOS_BACKEND_FLAGOS_PYTHON, FLAGOS_BACKEND_FLAGOS_PYTHON,
                                          FLAGOS_BACKEND_CUDA, FLAGOS_BACKEND_METAX,
                                          FLAGOS_BACKEND_ASCEND, FLAGOS_BACKEND_CPU};
  *n = 0;
  int line = 0;
  const char *p = text;
  while (*p) {
    const char *e = strchr(p, '\n');
    if (!e) e = p + strlen(p);
    ++line;
    const char *b = p, *end = e;
    p = *e ? e + 1 : e;
    for (const char *q = b; q < end; ++q)
      if (*q == '#') { end = q; break; }
    while (b < end && ref_space(*b)) ++b;
    while (end > b && ref_space(end[-1])) --end;
    if (b == end) continue;
    const char *eq = NULL;
    for (const char *q = b; q < end; ++q)
      if (*q == '=') { eq = q; break; }
    if (!eq) return line;
    const char *ob = b, *oe = eq, *bb = eq + 1, *be = end;
    while (ob < oe && ref_space(*ob)) ++ob;
    while (oe > ob && ref_space(oe[-1])) --oe;
    while (bb < be && ref_space(*bb)) ++bb;
    while (be > bb && ref_space(be[-1])) --be;
    if (ob == oe || bb == be) return line;
    for (const char *q = bb; q < be; ++q)
      if (*q == '=') return line;
    if (oe - ob >= 6 && !strncmp(ob, "aten::", 6)) ob += 6;
    int dots = 0;
    size_t part = 0;
    if (ob == oe) return line;
    for (const char *q = ob; q < oe; ++q) {
      if (*q == '.') {
        if (++dots > 1 || part == 0) return line;
        part = 0;
      } else if (ref_ident(*q)) {
        ++part;
      } else {
        return line;
      }
    }
    if (part == 0) return line;
    int w = -1;
    for (int i = 0; i < 8; ++i)
      if ((size_t)(be - bb) == strlen(words[i]) && !strncmp(bb, words[i], (size_t)(be - bb))) w = i;
    if (w < 0) return line;
    if ((size_t)(oe - ob) >= sizeof out[0].op) return -2;
    size_t k;
    for (k = 0; k < *n; ++k)
      if (strlen(out[k].op) == (size_t)(oe - ob) && !strncmp(out[k].op, ob, (size_t)(oe - ob))) break;
    if (k == *n) {
      if (*n == max) return -2;
      memcpy(out[k].op, ob, (size_t)(oe - ob));
      out[k].op[oe - ob] = '\0';
      ++*n;
    }
    out[k].b = vals[w];
  }
  return 0;
}

/* ------------------------------------------------------------------ */

static char g_dir[256];
static long g_bad;

static void fail(const char *what, const buf_t *in, flagos_status_t st, long iter) {
  check_failed++;
  if (++g_bad > 20) return;
  fprintf(stderr, "iteration %ld: %s: status %s, message \"%s\"; input (%zu bytes): \"", iter, what,
          flagos_status_string(st), flagos_last_error(), in->n);
  for (size_t i = 0; i < in->n && i < 200; ++i) {
    unsigned char c = (unsigned char)in->p[i];
    if (c >= 0x20 && c < 0x7f) fputc(c, stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, "%s\"\n", in->n > 200 ? "..." : "");
}

static void write_file(const char *rel, const char *data, size_t n) {
  FILE *f = fopen(rel, "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s/%s: %s\n", g_dir, rel, strerror(errno));
    exit(2);
  }
  if (n) fwrite(data, 1, n, f);
  fclose(f);
}

/* Snapshot of a table, to check that a failed load changed nothing. */
typedef struct snap {
  size_t count;
  const char *last_op;
  flagos_backend_t last_b;
  int last_line;
} snap_t;

static snap_t snapshot(flagos_routing_table_t t) {
  snap_t s = {0, NULL, FLAGOS_BACKEND_DEFAULT, -1};
  flagos_routing_count(t, &s.count);
  if (s.count) flagos_routing_entry(t, s.count - 1, &s.last_op, &s.last_b, NULL, &s.last_line);
  return s;
}
static bool same(snap_t a, snap_t b) {
  return a.count == b.count && a.last_op == b.last_op && a.last_b == b.last_b &&
         a.last_line == b.last_line;
}

static void check_result(flagos_status_t st, const buf_t *in, long iter, const char *what) {
  if (st == FLAGOS_SUCCESS) {
    check_passed++;
  } else if (st == FLAGOS_ERROR_CONFIG) {
    const char *m = flagos_last_error();
    if (m[0] == '\0') fail("empty message", in, st, iter);
    else check_passed++;
  } else {
    fail(what, in, st, iter);
  }
}

int main(void) {
  long iterations = 20000;
  uint64_t seed = 0x5eed2024f1a605ull;
  const char *env = getenv("FLAGOS_FUZZ_ITERATIONS");
  if (env && *env) iterations = strtol(env, NULL, 10);
  env = getenv("FLAGOS_FUZZ_SEED");
  if (env && *env) seed = strtoull(env, NULL, 0);
  g_rng = seed;

  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/flagos_rfuzz_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  char cwd[1024];
  if (!mkdtemp(g_dir) || !getcwd(cwd, sizeof cwd) || chdir(g_dir) != 0) {
    fprintf(stderr, "cannot set up %s: %s\n", g_dir, strerror(errno));
    return 2;
  }
  /* include targets, relative to the current directory */
  mkdir("sub", 0700);
  write_file("inc_ok.conf", "add = cpu\nmm = flaggems\n", 24);
  write_file("inc_bad.conf", "add = nope\n", 11);
  write_file("sub/inc_nested.conf", "include ../inc_ok.conf\nsum = metax\n", 35);
  write_file("inc_cycle_a.conf", "include inc_cycle_b.conf\n", 25);
  write_file("inc_cycle_b.conf", "include inc_cycle_a.conf\n", 25);

  flagos_routing_table_t t = NULL, fresh = NULL;
  CHECK_OK(flagos_routing_create(&t));
  buf_t in = {0};
  ref_entry_t *ref = calloc(4096, sizeof *ref);
  if (!ref) return 2;
  long oracle_checked = 0, successes = 0, file_loads = 0;

  for (long iter = 0; iter < iterations; ++iter) {
    bool as_file = below(8) == 0;
    generate(&in, as_file);
    const char *text = in.p ? in.p : "";

    /* 1. the persistent table (accumulates entries) */
    snap_t before = snapshot(t);
    flagos_clear_error();
    flagos_status_t st = flagos_routing_load_string(t, text, "fuzz");
    check_result(st, &in, iter, "load_string");
    if (st != FLAGOS_SUCCESS && !same(before, snapshot(t))) fail("table changed on error", &in, st, iter);
    if (st == FLAGOS_SUCCESS) successes++;

    /* 2. a fresh table, against the reference parser */
    if (!strstr(text, "include")) {
      size_t n = 0;
      int want = ref_parse(text, ref, 4096, &n);
      if (want != -2) {
        CHECK_OK(flagos_routing_create(&fresh));
        flagos_clear_error();
        st = flagos_routing_load_string(fresh, text, "fuzz");
        oracle_checked++;
        if (want == 0) {
          size_t count = 0;
          flagos_routing_count(fresh, &count);
          if (st != FLAGOS_SUCCESS || count != n) {
            fail("reference parser accepts the input", &in, st, iter);
          } else {
            for (size_t k = 0; k < n; ++k) {
              flagos_backend_t b = FLAGOS_BACKEND_DEFAULT;
              const char *op = NULL;
              flagos_routing_lookup(fresh, ref[k].op, &b);
              flagos_routing_entry(fresh, k, &op, NULL, NULL, NULL);
              if (b != ref[k].b || !op || strcmp(op, ref[k].op)) {
                fail("route differs from the reference parser", &in, st, iter);
                break;
              }
            }
            check_passed++;
          }
        } else {
          char prefix[64];
          snprintf(prefix, sizeof prefix, "fuzz:%d: ", want);
          if (st != FLAGOS_ERROR_CONFIG || strncmp(flagos_last_error(), prefix, strlen(prefix)) != 0)
            fail("reference parser expects an error at another line", &in, st, iter);
          else check_passed++;
        }
        CHECK_OK(flagos_routing_destroy(fresh));
      }
    }

    /* 3. as a file: every byte, NULs included */
    if (as_file) {
      write_file("fuzz_input.conf", text, in.n);
      before = snapshot(t);
      flagos_clear_error();
      st = flagos_routing_load_file(t, "fuzz_input.conf");
      check_result(st, &in, iter, "load_file");
      if (st != FLAGOS_SUCCESS && !same(before, snapshot(t))) fail("table changed on error (file)", &in, st, iter);
      file_loads++;
    }

    /* 4. an environment built from the same bytes */
    if (below(4) == 0) {
      char *vars[8];
      buf_t store[8] = {{0}};
      size_t nv = below(7);
      for (size_t k = 0; k < nv; ++k) {
        if (below(3)) puts_(&store[k], "FLAGOS_OP_");
        size_t len = below(12);
        for (size_t c = 0; c < len; ++c) puts_(&store[k], kTokens[below(NTOK)]);
        /* a NUL inside would end the string: stop there */
        vars[k] = store[k].p ? store[k].p : (char *)"";
      }
      vars[nv] = NULL;
      before = snapshot(t);
      flagos_clear_error();
      st = flagos_routing_load_environ(t, vars);
      check_result(st, &in, iter, "load_environ");
      if (st != FLAGOS_SUCCESS && !same(before, snapshot(t))) fail("table changed on error (environ)", &in, st, iter);
      for (size_t k = 0; k < nv; ++k) free(store[k].p);
    }

    /* keep the persistent table from growing without bound */
    if (iter % 2000 == 1999) {
      CHECK_OK(flagos_routing_destroy(t));
      CHECK_OK(flagos_routing_create(&t));
    }
  }
  CHECK_OK(flagos_routing_destroy(t));
  free(in.p);
  free(ref);
  printf("seed 0x%llx: %ld inputs, %ld loaded without error, %ld checked against the reference "
         "parser, %ld loaded as files\n",
         (unsigned long long)seed, iterations, successes, oracle_checked, file_loads);
  /* the corpus must exercise both outcomes */
  CHECK(successes > iterations / 20);
  CHECK(successes < iterations);
  CHECK(oracle_checked > iterations / 2);

  if (chdir(cwd) != 0) fprintf(stderr, "note: cannot return to %s\n", cwd);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", g_dir);
  return check_report();
}
