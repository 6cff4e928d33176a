/*
 * routing.c - the op -> backend routing table (flagos_routing_* in flagos.h).
 *
 * Sources of entries:
 *  - config files / strings: `op = backend` lines, '#' comments (whole line
 *    or trailing), blank lines, `include other.conf` (relative to the
 *    including file's directory; for flagos_routing_load_string relative to
 *    the directory of `origin` when it contains a '/', else to the current
 *    directory), nesting depth <= 8, cycles rejected, later lines win;
 *  - environment: FLAGOS_OP_<name>=<backend>, the last "__" in <name> stands for '.';
 *  - flagos_routing_set.
 *
 * Every load parses into a pending list first and commits only when the
 * whole input is valid, so a failing load leaves the table unchanged. The
 * commit reserves all memory it needs before it touches the table, so it
 * cannot fail half way.
 *
 * The parser works on (pointer, length) slices of the whole input and never
 * relies on NUL termination of a line: files may hold any bytes (NUL,
 * invalid UTF-8, CR LF line ends, lines of any length).
 */
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "../core/vendor.h"

#define ROUTING_MAX_INCLUDE_DEPTH 8
#define ROUTING_MAX_FILE_BYTES ((size_t)256 << 20) /* 256 MiB: far beyond any config */
#define ROUTING_SNIPPET_CHARS 80                   /* longest text quoted in a message */
#define ROUTING_TABLE_MAGIC 0x524f555445u          /* "ROUTE" */
#define ROUTING_SET_ORIGIN "flagos_routing_set"

static const char kAllowed[] =
    "flagos, flaggems, flagos_python, flaggems_python, cuda, metax, ascend, cpu";

/* ------------------------------------------------------------------ */
/* Backend words                                                       */
/* ------------------------------------------------------------------ */

static const struct {
  const char *word;
  flagos_backend_t backend;
} kWords[] = {
    {"flagos", FLAGOS_BACKEND_FLAGOS},
    {"flaggems", FLAGOS_BACKEND_FLAGGEMS},
    {"flagos_python", FLAGOS_BACKEND_FLAGOS_PYTHON},
    {"flaggems_python", FLAGOS_BACKEND_FLAGOS_PYTHON}, /* alias */
    {"cuda", FLAGOS_BACKEND_CUDA},
    {"metax", FLAGOS_BACKEND_METAX},
    {"ascend", FLAGOS_BACKEND_ASCEND},
    {"cpu", FLAGOS_BACKEND_CPU},
};

static bool word_to_backend(const char *p, size_t n, flagos_backend_t *out) {
  for (size_t i = 0; i < sizeof kWords / sizeof kWords[0]; ++i) {
    if (strlen(kWords[i].word) == n && memcmp(kWords[i].word, p, n) == 0) {
      *out = kWords[i].backend;
      return true;
    }
  }
  return false;
}

FLAGOS_API const char *flagos_backend_name(flagos_backend_t backend) {
  switch (backend) {
    case FLAGOS_BACKEND_DEFAULT: return "default";
    case FLAGOS_BACKEND_FLAGOS: return "flagos";
    case FLAGOS_BACKEND_FLAGGEMS: return "flaggems";
    case FLAGOS_BACKEND_FLAGOS_PYTHON: return "flagos_python";
    case FLAGOS_BACKEND_CUDA: return "cuda";
    case FLAGOS_BACKEND_METAX: return "metax";
    case FLAGOS_BACKEND_ASCEND: return "ascend";
    case FLAGOS_BACKEND_CPU: return "cpu";
    default: return NULL;
  }
}

/* Writes a printable, bounded rendering of p[0..n) into out (always
 * NUL-terminated): bytes outside printable ASCII become \xNN, and text past
 * ROUTING_SNIPPET_CHARS is cut with "...". */
static const char *snippet(const char *p, size_t n, char *out, size_t outsz) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  size_t shown = 0;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = (unsigned char)p[i];
    if (shown >= ROUTING_SNIPPET_CHARS || o + 8 >= outsz) {
      if (o + 4 <= outsz) { memcpy(out + o, "...", 3); o += 3; }
      break;
    }
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out[o++] = (char)c;
    } else if (c == '\\') {
      out[o++] = '\\'; out[o++] = '\\';
    } else {
      out[o++] = '\\'; out[o++] = 'x';
      out[o++] = hex[c >> 4]; out[o++] = hex[c & 15];
    }
    ++shown;
  }
  out[o] = '\0';
  return out;
}

#define SNIPPET_BUF (ROUTING_SNIPPET_CHARS * 4 + 16)

FLAGOS_API flagos_status_t flagos_backend_parse(const char *word, flagos_backend_t *backend) {
  if (word == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                                            "flagos_backend_parse: word is NULL");
  if (backend == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                                               "flagos_backend_parse: backend is NULL");
  flagos_backend_t b;
  if (!word_to_backend(word, strlen(word), &b)) {
    char s[SNIPPET_BUF];
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "unknown backend '%s' (allowed: %s)",
                            snippet(word, strlen(word), s, sizeof s), kAllowed);
  }
  *backend = b;
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Entries, pending lists, the table                                   */
/* ------------------------------------------------------------------ */

typedef struct entry {
  char *op;           /* one malloc block: "op\0origin\0"; owns both strings */
  const char *origin; /* points into the op block */
  flagos_backend_t backend;
  int line;
} entry_t;

typedef struct pending {
  entry_t *items;
  size_t count, cap;
} pending_t;

struct flagos_routing_table {
  uint64_t magic;
  pthread_mutex_t mu;
  entry_t *entries; /* insertion order */
  size_t count, cap;
  uint32_t *slots;  /* open addressing, entry index + 1, 0 = empty */
  size_t nslots;    /* power of two, >= 2 * cap of live entries, or 0 */
};

static flagos_status_t oom(const char *what) {
  return flagos_set_error(FLAGOS_ERROR_OUT_OF_MEMORY, "routing: out of host memory (%s)", what);
}

static void pending_free(pending_t *p) {
  for (size_t i = 0; i < p->count; ++i) free(p->items[i].op);
  free(p->items);
  p->items = NULL;
  p->count = p->cap = 0;
}

static flagos_status_t pending_add(pending_t *p, const char *op, size_t op_len,
                                   flagos_backend_t backend, const char *origin,
                                   size_t origin_len, int line) {
  if (p->count == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 16;
    entry_t *n = realloc(p->items, ncap * sizeof *n);
    if (n == NULL) return oom("pending entries");
    p->items = n;
    p->cap = ncap;
  }
  if (op_len > SIZE_MAX / 4 || origin_len > SIZE_MAX / 4) return oom("entry strings");
  char *block = malloc(op_len + origin_len + 2);
  if (block == NULL) return oom("entry strings");
  memcpy(block, op, op_len);
  block[op_len] = '\0';
  memcpy(block + op_len + 1, origin, origin_len);
  block[op_len + 1 + origin_len] = '\0';
  entry_t *e = &p->items[p->count++];
  e->op = block;
  e->origin = block + op_len + 1;
  e->backend = backend;
  e->line = line;
  return FLAGOS_SUCCESS;
}

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; ++i) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

/* Index of the entry named p[0..n), or -1. */
static ptrdiff_t table_find(const struct flagos_routing_table *t, const char *p, size_t n) {
  if (t->nslots == 0) return -1;
  size_t mask = t->nslots - 1;
  for (size_t i = (size_t)hash_bytes(p, n) & mask;; i = (i + 1) & mask) {
    uint32_t s = t->slots[i];
    if (s == 0) return -1;
    const char *op = t->entries[s - 1].op;
    if (strncmp(op, p, n) == 0 && op[n] == '\0') return (ptrdiff_t)(s - 1);
  }
}

static void slots_insert(uint32_t *slots, size_t nslots, const char *op, uint32_t value) {
  size_t mask = nslots - 1;
  size_t i = (size_t)hash_bytes(op, strlen(op)) & mask;
  while (slots[i] != 0) i = (i + 1) & mask;
  slots[i] = value;
}

/* Makes room for `extra` more entries without changing what the table holds;
 * after success, commit_one cannot fail. */
static flagos_status_t table_reserve(struct flagos_routing_table *t, size_t extra) {
  if (extra > (size_t)UINT32_MAX - 1 - t->count)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "routing: too many entries (%zu + %zu)", t->count, extra);
  size_t need = t->count + extra;
  if (need > t->cap) {
    size_t ncap = t->cap ? t->cap : 16;
    while (ncap < need) ncap *= 2;
    entry_t *n = realloc(t->entries, ncap * sizeof *n);
    if (n == NULL) return oom("routing entries");
    t->entries = n;
    t->cap = ncap;
  }
  if (need * 2 > t->nslots) {
    size_t ns = t->nslots ? t->nslots : 32;
    while (ns < need * 2) ns *= 2;
    uint32_t *slots = calloc(ns, sizeof *slots);
    if (slots == NULL) return oom("routing hash table");
    for (size_t i = 0; i < t->count; ++i) slots_insert(slots, ns, t->entries[i].op, (uint32_t)(i + 1));
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
  }
  return FLAGOS_SUCCESS;
}

/* Takes ownership of e->op. Room must have been reserved. */
static void commit_one(struct flagos_routing_table *t, entry_t *e) {
  ptrdiff_t idx = table_find(t, e->op, strlen(e->op));
  if (idx >= 0) {
    entry_t *old = &t->entries[idx];
    free(old->op);
    *old = *e; /* keeps its place in insertion order */
  } else {
    t->entries[t->count] = *e;
    slots_insert(t->slots, t->nslots, e->op, (uint32_t)(t->count + 1));
    t->count++;
  }
  e->op = NULL;
}

static flagos_status_t table_commit(struct flagos_routing_table *t, pending_t *p) {
  pthread_mutex_lock(&t->mu);
  flagos_status_t st = table_reserve(t, p->count);
  if (st == FLAGOS_SUCCESS) {
    for (size_t i = 0; i < p->count; ++i) commit_one(t, &p->items[i]);
    p->count = 0;
  }
  pthread_mutex_unlock(&t->mu);
  pending_free(p);
  return st;
}

static flagos_status_t check_table(struct flagos_routing_table *t, const char *fn) {
  if (t == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "%s: table is NULL", fn);
  if (t->magic != ROUTING_TABLE_MAGIC)
    return flagos_set_error(FLAGOS_ERROR_INVALID_HANDLE,
                            "%s: %p is not a live routing table", fn, (void *)t);
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_routing_create(flagos_routing_table_t *table) {
  if (table == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_create: table is NULL");
  struct flagos_routing_table *t = calloc(1, sizeof *t);
  if (t == NULL) return oom("routing table");
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    free(t);
    return flagos_set_error(FLAGOS_ERROR_INTERNAL, "flagos_routing_create: mutex init failed");
  }
  t->magic = ROUTING_TABLE_MAGIC;
  *table = t;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_routing_destroy(flagos_routing_table_t table) {
  flagos_status_t st = check_table(table, "flagos_routing_destroy");
  if (st != FLAGOS_SUCCESS) return st;
  table->magic = 0;
  for (size_t i = 0; i < table->count; ++i) free(table->entries[i].op);
  free(table->entries);
  free(table->slots);
  pthread_mutex_destroy(&table->mu);
  free(table);
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Op names                                                            */
/* ------------------------------------------------------------------ */

static bool is_ident_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Strips "aten::" and checks `name` or `name.overload`. */
static bool normalize_op(const char **p, size_t *n) {
  if (*n >= 6 && memcmp(*p, "aten::", 6) == 0) { *p += 6; *n -= 6; }
  if (*n == 0) return false;
  size_t dots = 0, part = 0;
  for (size_t i = 0; i < *n; ++i) {
    unsigned char c = (unsigned char)(*p)[i];
    if (c == '.') {
      if (++dots > 1 || part == 0) return false;
      part = 0;
    } else if (is_ident_char(c)) {
      ++part;
    } else {
      return false;
    }
  }
  return part > 0;
}

FLAGOS_API flagos_status_t flagos_routing_set(flagos_routing_table_t table, const char *op,
                                              flagos_backend_t backend) {
  flagos_status_t st = check_table(table, "flagos_routing_set");
  if (st != FLAGOS_SUCCESS) return st;
  if (op == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_set: op is NULL");
  if (flagos_backend_name(backend) == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_routing_set: invalid backend value %d for op '%.200s'",
                            (int)backend, op);
  const char *p = op;
  size_t n = strlen(op);
  if (!normalize_op(&p, &n)) {
    char s[SNIPPET_BUF];
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_routing_set: invalid op name '%s' (expected an ATen name "
                            "like 'add' or 'add.Tensor')",
                            snippet(op, strlen(op), s, sizeof s));
  }
  pending_t pend = {0};
  st = pending_add(&pend, p, n, backend, ROUTING_SET_ORIGIN, strlen(ROUTING_SET_ORIGIN), 0);
  if (st != FLAGOS_SUCCESS) {
    pending_free(&pend);
    return st;
  }
  return table_commit(table, &pend);
}

FLAGOS_API flagos_status_t flagos_routing_lookup(flagos_routing_table_t table, const char *op,
                                                 flagos_backend_t *backend) {
  flagos_status_t st = check_table(table, "flagos_routing_lookup");
  if (st != FLAGOS_SUCCESS) return st;
  if (op == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_lookup: op is NULL");
  if (backend == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_lookup: backend is NULL");
  size_t n = strlen(op);
  if (n >= 6 && memcmp(op, "aten::", 6) == 0) { op += 6; n -= 6; }
  flagos_backend_t b = FLAGOS_BACKEND_DEFAULT;
  pthread_mutex_lock(&table->mu);
  ptrdiff_t idx = table_find(table, op, n);
  if (idx < 0) {
    const char *dot = memchr(op, '.', n);
    if (dot != NULL) idx = table_find(table, op, (size_t)(dot - op));
  }
  if (idx >= 0) b = table->entries[idx].backend;
  pthread_mutex_unlock(&table->mu);
  *backend = b;
  return FLAGOS_SUCCESS;
}

FLAGOS_API flagos_status_t flagos_routing_count(flagos_routing_table_t table, size_t *count) {
  flagos_status_t st = check_table(table, "flagos_routing_count");
  if (st != FLAGOS_SUCCESS) return st;
  if (count == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_count: count is NULL");
  pthread_mutex_lock(&table->mu);
  *count = table->count;
  pthread_mutex_unlock(&table->mu);
  return FLAGOS_SUCCESS;
}

/* Any of the output pointers may be NULL (that field is not wanted). */
FLAGOS_API flagos_status_t flagos_routing_entry(flagos_routing_table_t table, size_t index,
                                                const char **op, flagos_backend_t *backend,
                                                const char **origin, int *line) {
  flagos_status_t st = check_table(table, "flagos_routing_entry");
  if (st != FLAGOS_SUCCESS) return st;
  pthread_mutex_lock(&table->mu);
  size_t count = table->count;
  if (index >= count) {
    pthread_mutex_unlock(&table->mu);
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT,
                            "flagos_routing_entry: index %zu out of range (table has %zu entries)",
                            index, count);
  }
  const entry_t *e = &table->entries[index];
  if (op) *op = e->op;
  if (backend) *backend = e->backend;
  if (origin) *origin = e->origin;
  if (line) *line = e->line;
  pthread_mutex_unlock(&table->mu);
  return FLAGOS_SUCCESS;
}

/* ------------------------------------------------------------------ */
/* Config text                                                         */
/* ------------------------------------------------------------------ */

typedef struct chain_link {
  const char *path; /* as shown in messages */
  bool has_id;      /* false for text given to load_string */
  dev_t dev;
  ino_t ino;
} chain_link_t;

typedef struct parse_ctx {
  pending_t pending;
  chain_link_t chain[ROUTING_MAX_INCLUDE_DEPTH + 2];
  int depth; /* index of the innermost link */
} parse_ctx_t;

static void trim(const char **b, const char **e) {
  while (*b < *e && is_space((unsigned char)**b)) ++*b;
  while (*e > *b && is_space((unsigned char)(*e)[-1])) --*e;
}

/* Reads a whole regular file. On failure *err_no holds errno, or -1 for
 * "not a regular file", -2 for "too large", -3 for out of memory. */
static bool read_whole_file(const char *path, char **data, size_t *len, struct stat *st,
                            int *err_no) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { *err_no = errno; return false; }
  if (fstat(fd, st) != 0) { *err_no = errno; close(fd); return false; }
  if (!S_ISREG(st->st_mode)) { *err_no = S_ISDIR(st->st_mode) ? EISDIR : -1; close(fd); return false; }
  size_t cap = st->st_size > 0 && (uintmax_t)st->st_size < ROUTING_MAX_FILE_BYTES
                   ? (size_t)st->st_size + 1 : 4096;
  char *buf = malloc(cap);
  if (buf == NULL) { *err_no = -3; close(fd); return false; }
  size_t n = 0;
  for (;;) {
    if (n == cap) {
      if (cap >= ROUTING_MAX_FILE_BYTES) { free(buf); close(fd); *err_no = -2; return false; }
      size_t ncap = cap * 2;
      char *nb = realloc(buf, ncap);
      if (nb == NULL) { free(buf); close(fd); *err_no = -3; return false; }
      buf = nb;
      cap = ncap;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      *err_no = errno; free(buf); close(fd); return false;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  *data = buf;
  *len = n;
  return true;
}

static const char *read_error_text(int err_no) {
  switch (err_no) {
    case -1: return "not a regular file";
    case -2: return "file too large (limit 256 MiB)";
    case -3: return "out of host memory";
    default: return strerror(err_no);
  }
}

/* "a -> b -> c" into out, bounded. */
static void chain_text(const parse_ctx_t *ctx, const char *last, char *out, size_t outsz) {
  size_t o = 0;
  out[0] = '\0';
  for (int i = 0; i <= ctx->depth + 1; ++i) {
    const char *p = i <= ctx->depth ? ctx->chain[i].path : last;
    int w = snprintf(out + o, outsz - o, "%s%s", i ? " -> " : "", p);
    if (w < 0 || (size_t)w >= outsz - o) break;
    o += (size_t)w;
  }
}

static flagos_status_t parse_text(parse_ctx_t *ctx, const char *text, size_t len,
                                  const char *origin, const char *dir);

static flagos_status_t do_include(parse_ctx_t *ctx, const char *origin, int lineno,
                                  const char *dir, const char *path, size_t path_len) {
  char s[SNIPPET_BUF];
  if (memchr(path, '\0', path_len) != NULL)
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: include path contains a NUL byte: '%s'",
                            origin, lineno, snippet(path, path_len, s, sizeof s));
  /* Resolve against the including file's directory. */
  size_t dir_len = (path[0] != '/' && dir != NULL) ? strlen(dir) : 0;
  char *resolved = malloc(dir_len + 1 + path_len + 1);
  if (resolved == NULL) return oom("include path");
  size_t o = 0;
  if (dir_len) {
    memcpy(resolved, dir, dir_len);
    o = dir_len;
    if (resolved[o - 1] != '/') resolved[o++] = '/';
  }
  memcpy(resolved + o, path, path_len);
  resolved[o + path_len] = '\0';

  flagos_status_t st = FLAGOS_SUCCESS;
  char *data = NULL;
  size_t data_len = 0;
  struct stat sb;
  int err_no = 0;
  if (ctx->depth + 1 > ROUTING_MAX_INCLUDE_DEPTH) {
    char chain[2048];
    chain_text(ctx, resolved, chain, sizeof chain);
    st = flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: include depth limit (%d) exceeded: %s",
                          origin, lineno, ROUTING_MAX_INCLUDE_DEPTH, chain);
    goto out;
  }
  if (!read_whole_file(resolved, &data, &data_len, &sb, &err_no)) {
    st = flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: cannot read included file '%s': %s",
                          origin, lineno, resolved, read_error_text(err_no));
    goto out;
  }
  for (int i = 0; i <= ctx->depth; ++i) {
    if (ctx->chain[i].has_id && ctx->chain[i].dev == sb.st_dev && ctx->chain[i].ino == sb.st_ino) {
      char chain[2048];
      chain_text(ctx, resolved, chain, sizeof chain);
      st = flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: include cycle: %s", origin, lineno, chain);
      goto out;
    }
  }
  {
    /* Directory of the included file, for its own includes. */
    char *sub_dir = strdup(resolved);
    if (sub_dir == NULL) { st = oom("include path"); goto out; }
    char *slash = strrchr(sub_dir, '/');
    const char *next_dir = NULL; /* no slash: relative to the current directory */
    if (slash == sub_dir) { sub_dir[1] = '\0'; next_dir = sub_dir; }
    else if (slash != NULL) { *slash = '\0'; next_dir = sub_dir; }
    ctx->depth++;
    ctx->chain[ctx->depth] = (chain_link_t){resolved, true, sb.st_dev, sb.st_ino};
    st = parse_text(ctx, data, data_len, resolved, next_dir);
    ctx->depth--;
    free(sub_dir);
  }
out:
  free(data);
  free(resolved);
  return st;
}

static flagos_status_t parse_line(parse_ctx_t *ctx, const char *b, const char *e,
                                  const char *origin, int lineno, const char *dir) {
  char s[SNIPPET_BUF], s2[SNIPPET_BUF];
  const char *hash = memchr(b, '#', (size_t)(e - b));
  if (hash != NULL) e = hash;
  trim(&b, &e);
  if (b == e) return FLAGOS_SUCCESS;
  size_t n = (size_t)(e - b);

  if (n > 7 && memcmp(b, "include", 7) == 0 && is_space((unsigned char)b[7])) {
    const char *pb = b + 8, *pe = e;
    trim(&pb, &pe);
    if (pb < pe && *pb != '=') return do_include(ctx, origin, lineno, dir, pb, (size_t)(pe - pb));
  }

  const char *eq = memchr(b, '=', n);
  if (eq == NULL)
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: malformed line (expected 'op = backend'): '%s'",
                            origin, lineno, snippet(b, n, s, sizeof s));
  const char *ob = b, *oe = eq, *bb = eq + 1, *be = e;
  trim(&ob, &oe);
  trim(&bb, &be);
  if (ob == oe || bb == be || memchr(bb, '=', (size_t)(be - bb)) != NULL)
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: malformed line (expected 'op = backend'): '%s'",
                            origin, lineno, snippet(b, n, s, sizeof s));
  const char *op = ob;
  size_t op_len = (size_t)(oe - ob);
  if (!normalize_op(&op, &op_len))
    return flagos_set_error(FLAGOS_ERROR_CONFIG,
                            "%s:%d: malformed line (invalid op name '%s'; expected an ATen name "
                            "like 'add' or 'add.Tensor'): '%s'",
                            origin, lineno, snippet(ob, (size_t)(oe - ob), s2, sizeof s2),
                            snippet(b, n, s, sizeof s));
  flagos_backend_t backend;
  if (!word_to_backend(bb, (size_t)(be - bb), &backend))
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "%s:%d: unknown backend '%s' for op '%s' (allowed: %s)",
                            origin, lineno, snippet(bb, (size_t)(be - bb), s, sizeof s),
                            snippet(op, op_len, s2, sizeof s2), kAllowed);
  return pending_add(&ctx->pending, op, op_len, backend, origin, strlen(origin), lineno);
}

static flagos_status_t parse_text(parse_ctx_t *ctx, const char *text, size_t len,
                                  const char *origin, const char *dir) {
  const char *p = text, *end = text + len;
  int lineno = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    if (lineno < INT32_MAX) ++lineno;
    flagos_status_t st = parse_line(ctx, p, le, origin, lineno, dir);
    if (st != FLAGOS_SUCCESS) return st;
    p = nl ? nl + 1 : end;
  }
  return FLAGOS_SUCCESS;
}

/* Directory part of a path as a new string, or NULL (no '/': current directory).
 * *ok is false on out of memory. */
static char *dir_of(const char *path, bool *ok) {
  *ok = true;
  const char *slash = strrchr(path, '/');
  if (slash == NULL) return NULL;
  size_t n = slash == path ? 1 : (size_t)(slash - path);
  char *d = malloc(n + 1);
  if (d == NULL) { *ok = false; return NULL; }
  memcpy(d, path, n);
  d[n] = '\0';
  return d;
}

FLAGOS_API flagos_status_t flagos_routing_load_file(flagos_routing_table_t table, const char *path) {
  flagos_status_t st = check_table(table, "flagos_routing_load_file");
  if (st != FLAGOS_SUCCESS) return st;
  if (path == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_load_file: path is NULL");
  char *data = NULL;
  size_t len = 0;
  struct stat sb;
  int err_no = 0;
  if (!read_whole_file(path, &data, &len, &sb, &err_no))
    return flagos_set_error(FLAGOS_ERROR_CONFIG, "cannot read routing config '%s': %s", path,
                            read_error_text(err_no));
  bool ok;
  char *dir = dir_of(path, &ok);
  if (!ok) { free(data); return oom("config path"); }
  parse_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) { free(dir); free(data); return oom("parser state"); }
  ctx->chain[0] = (chain_link_t){path, true, sb.st_dev, sb.st_ino};
  st = parse_text(ctx, data, len, path, dir);
  if (st == FLAGOS_SUCCESS) st = table_commit(table, &ctx->pending);
  else pending_free(&ctx->pending);
  free(ctx);
  free(dir);
  free(data);
  return st;
}

FLAGOS_API flagos_status_t flagos_routing_load_string(flagos_routing_table_t table, const char *text,
                                                      const char *origin) {
  flagos_status_t st = check_table(table, "flagos_routing_load_string");
  if (st != FLAGOS_SUCCESS) return st;
  if (text == NULL) return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_load_string: text is NULL");
  if (origin == NULL) origin = "<string>";
  bool ok;
  char *dir = dir_of(origin, &ok);
  if (!ok) return oom("origin path");
  parse_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) { free(dir); return oom("parser state"); }
  ctx->chain[0] = (chain_link_t){origin, false, 0, 0};
  st = parse_text(ctx, text, strlen(text), origin, dir);
  if (st == FLAGOS_SUCCESS) st = table_commit(table, &ctx->pending);
  else pending_free(&ctx->pending);
  free(ctx);
  free(dir);
  return st;
}

/* ------------------------------------------------------------------ */
/* Environment                                                         */
/* ------------------------------------------------------------------ */

#define ENV_PREFIX "FLAGOS_OP_"
#define ENV_PREFIX_LEN (sizeof ENV_PREFIX - 1)

FLAGOS_API flagos_status_t flagos_routing_load_environ(flagos_routing_table_t table,
                                                       char *const *environ_vars) {
  flagos_status_t st = check_table(table, "flagos_routing_load_environ");
  if (st != FLAGOS_SUCCESS) return st;
  if (environ_vars == NULL)
    return flagos_set_error(FLAGOS_ERROR_INVALID_ARGUMENT, "flagos_routing_load_environ: environ_vars is NULL");
  pending_t pend = {0};
  char *op = NULL;
  size_t op_cap = 0;
  for (char *const *v = environ_vars; *v != NULL; ++v) {
    const char *var = *v;
    if (strncmp(var, ENV_PREFIX, ENV_PREFIX_LEN) != 0) continue;
    const char *eq = strchr(var, '=');
    if (eq == NULL) continue;
    size_t var_len = (size_t)(eq - var);
    const char *name = var + ENV_PREFIX_LEN;
    size_t name_len = (size_t)(eq - name);
    char s[SNIPPET_BUF], s2[SNIPPET_BUF], s3[SNIPPET_BUF];
    /* "__" -> '.' */
    if (name_len + 1 > op_cap) {
      char *n = realloc(op, name_len + 1);
      if (n == NULL) { st = oom("environment op name"); break; }
      op = n;
      op_cap = name_len + 1;
    }
    /* The overload follows the last "__" that has a name before it and text
     * after it, so op names with "__" of their own survive:
     * mm__out -> mm.out, _foreach_add___List -> _foreach_add_.List,
     * __or____Tensor -> __or__.Tensor, __or__ -> __or__. */
    size_t split = name_len;
    for (size_t i = name_len; i-- > 1;) {
      if (name[i - 1] == '_' && name[i] == '_' && i + 1 < name_len && i - 1 > 0) {
        split = i - 1;
        break;
      }
    }
    size_t op_len = 0;
    for (size_t i = 0; i < name_len; ++i) {
      if (i == split) { op[op_len++] = '.'; ++i; }
      else op[op_len++] = name[i];
    }
    op[op_len] = '\0';
    const char *opp = op;
    size_t opn = op_len;
    if (!normalize_op(&opp, &opn)) {
      st = flagos_set_error(FLAGOS_ERROR_CONFIG,
                            "%s: malformed variable name (expected FLAGOS_OP_<op> with '__' for "
                            "'.', e.g. FLAGOS_OP_add__Tensor=cuda)",
                            snippet(var, var_len, s, sizeof s));
      break;
    }
    const char *bb = eq + 1, *be = eq + 1 + strlen(eq + 1);
    trim(&bb, &be);
    flagos_backend_t backend;
    if (!word_to_backend(bb, (size_t)(be - bb), &backend)) {
      st = flagos_set_error(FLAGOS_ERROR_CONFIG, "%s: unknown backend '%s' for op '%s' (allowed: %s)",
                            snippet(var, var_len, s, sizeof s),
                            snippet(bb, (size_t)(be - bb), s2, sizeof s2),
                            snippet(opp, opn, s3, sizeof s3), kAllowed);
      break;
    }
    st = pending_add(&pend, opp, opn, backend, var, var_len, 0);
    if (st != FLAGOS_SUCCESS) break;
  }
  free(op);
  if (st != FLAGOS_SUCCESS) {
    pending_free(&pend);
    return st;
  }
  return table_commit(table, &pend);
}
