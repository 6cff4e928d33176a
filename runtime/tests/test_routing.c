/*
 * test_routing.c - the routing table: config files and strings, includes,
 * environment overrides, lookups, error messages, atomicity on error.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkdtemp, nanosleep */
#endif
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "flagos/flagos.h"

#define ALLOWED "(allowed: flagos, flaggems, flagos_python, flaggems_python, cuda, metax, ascend, cpu)"

static char g_dir[256];

static void write_bytes(const char *rel, const char *data, size_t len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", g_dir, rel);
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(2);
  }
  if (len) fwrite(data, 1, len, f);
  fclose(f);
}

static void write_text(const char *rel, const char *text) { write_bytes(rel, text, strlen(text)); }

static const char *path_of(const char *rel) {
  static char buf[4][1024];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, rel);
  return buf[i];
}

static flagos_routing_table_t new_table(void) {
  flagos_routing_table_t t = NULL;
  CHECK_OK(flagos_routing_create(&t));
  return t;
}

static flagos_backend_t lookup(flagos_routing_table_t t, const char *op) {
  flagos_backend_t b = (flagos_backend_t)-1;
  CHECK_OK(flagos_routing_lookup(t, op, &b));
  return b;
}

static size_t count_of(flagos_routing_table_t t) {
  size_t n = (size_t)-1;
  CHECK_OK(flagos_routing_count(t, &n));
  return n;
}

/* Checks entry i completely. */
static void check_entry(flagos_routing_table_t t, size_t i, const char *op, flagos_backend_t b,
                        const char *origin, int line, int src_line) {
  const char *o = NULL, *org = NULL;
  flagos_backend_t bb = FLAGOS_BACKEND_DEFAULT;
  int ln = -1;
  flagos_status_t st = flagos_routing_entry(t, i, &o, &bb, &org, &ln);
  bool ok = st == FLAGOS_SUCCESS && o && !strcmp(o, op) && bb == b && org && !strcmp(org, origin) &&
            ln == line;
  if (ok) {
    check_passed++;
  } else {
    check_failed++;
    fprintf(stderr, "%s:%d: entry %zu: got (%s, %d, %s, %d) want (%s, %d, %s, %d) [%s]\n", __FILE__,
            src_line, i, o ? o : "(null)", (int)bb, org ? org : "(null)", ln, op, (int)b, origin,
            line, flagos_last_error());
  }
}
#define CHECK_ENTRY(t, i, op, b, origin, line) check_entry(t, i, op, b, origin, line, __LINE__)

/* An error whose whole message must equal `want`. */
#define CHECK_MSG(call, status, want)                                                     \
  do {                                                                                    \
    flagos_clear_error();                                                                 \
    flagos_status_t s2_ = (call);                                                         \
    const char *m2_ = flagos_last_error();                                                \
    if (s2_ == (status) && !strcmp(m2_, (want))) {                                        \
      check_passed++;                                                                     \
    } else {                                                                              \
      check_failed++;                                                                     \
      fprintf(stderr, "%s:%d: %s -> %s\n  got:  \"%s\"\n  want: \"%s\"\n", __FILE__,     \
              __LINE__, #call, flagos_status_string(s2_), m2_, (want));                   \
    }                                                                                     \
  } while (0)

static void test_backend_words(void) {
  static const struct {
    const char *word;
    flagos_backend_t b;
  } words[] = {{"flagos", FLAGOS_BACKEND_FLAGOS},       {"flaggems", FLAGOS_BACKEND_FLAGGEMS},
               {"flagos_python", FLAGOS_BACKEND_FLAGOS_PYTHON},
               {"flaggems_python", FLAGOS_BACKEND_FLAGOS_PYTHON},
               {"cuda", FLAGOS_BACKEND_CUDA},           {"metax", FLAGOS_BACKEND_METAX},
               {"ascend", FLAGOS_BACKEND_ASCEND},       {"cpu", FLAGOS_BACKEND_CPU}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; ++i) {
    flagos_backend_t b = FLAGOS_BACKEND_DEFAULT;
    CHECK_OK(flagos_backend_parse(words[i].word, &b));
    CHECK_EQ(b, words[i].b);
  }
  for (int b = 1; b < FLAGOS_BACKEND_COUNT_; ++b) {
    const char *name = flagos_backend_name((flagos_backend_t)b);
    CHECK(name != NULL);
    flagos_backend_t back = FLAGOS_BACKEND_DEFAULT;
    CHECK_OK(flagos_backend_parse(name, &back));
    CHECK_EQ(back, b);
  }
  CHECK(!strcmp(flagos_backend_name(FLAGOS_BACKEND_DEFAULT), "default"));
  CHECK(flagos_backend_name(FLAGOS_BACKEND_COUNT_) == NULL);
  CHECK(flagos_backend_name((flagos_backend_t)-1) == NULL);
  flagos_backend_t b = FLAGOS_BACKEND_CPU;
  CHECK_MSG(flagos_backend_parse("CUDA", &b), FLAGOS_ERROR_CONFIG,
            "unknown backend 'CUDA' " ALLOWED);
  CHECK_ERR(flagos_backend_parse("", &b), FLAGOS_ERROR_CONFIG, "unknown backend ''");
  CHECK_ERR(flagos_backend_parse("default", &b), FLAGOS_ERROR_CONFIG, "unknown backend");
  CHECK_EQ(b, FLAGOS_BACKEND_CPU); /* untouched on error */
  CHECK_ERR(flagos_backend_parse(NULL, &b), FLAGOS_ERROR_INVALID_ARGUMENT, "word is NULL");
  CHECK_ERR(flagos_backend_parse("cuda", NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "backend is NULL");
}

static void test_basic_lookup(void) {
  flagos_routing_table_t t = new_table();
  CHECK_EQ(count_of(t), 0);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_DEFAULT);
  CHECK_OK(flagos_routing_load_string(t,
                                      "mm = cuda\n"
                                      "add.Tensor = flagos\n"
                                      "aten::sum.dim_IntList = metax\n"
                                      "aten::softmax = flaggems_python\n",
                                      "basic.conf"));
  CHECK_EQ(count_of(t), 4);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CUDA);
  CHECK_EQ(lookup(t, "mm.out"), FLAGOS_BACKEND_CUDA);       /* bare name */
  CHECK_EQ(lookup(t, "aten::mm.out"), FLAGOS_BACKEND_CUDA); /* prefix stripped */
  CHECK_EQ(lookup(t, "add.Tensor"), FLAGOS_BACKEND_FLAGOS);
  CHECK_EQ(lookup(t, "add"), FLAGOS_BACKEND_DEFAULT);       /* overload entry only */
  CHECK_EQ(lookup(t, "add.Scalar"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "sum.dim_IntList"), FLAGOS_BACKEND_METAX);
  CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "softmax.int"), FLAGOS_BACKEND_FLAGOS_PYTHON);
  CHECK_EQ(lookup(t, "mmx"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "m"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, ""), FLAGOS_BACKEND_DEFAULT);
  CHECK_ENTRY(t, 0, "mm", FLAGOS_BACKEND_CUDA, "basic.conf", 1);
  CHECK_ENTRY(t, 1, "add.Tensor", FLAGOS_BACKEND_FLAGOS, "basic.conf", 2);
  CHECK_ENTRY(t, 2, "sum.dim_IntList", FLAGOS_BACKEND_METAX, "basic.conf", 3);
  CHECK_ENTRY(t, 3, "softmax", FLAGOS_BACKEND_FLAGOS_PYTHON, "basic.conf", 4);
  /* An overload entry beats the bare entry, whatever the order. */
  CHECK_OK(flagos_routing_load_string(t, "add.Tensor = cpu\nadd = cuda\n", "o.conf"));
  CHECK_EQ(lookup(t, "add.Tensor"), FLAGOS_BACKEND_CPU);
  CHECK_EQ(lookup(t, "add.Scalar"), FLAGOS_BACKEND_CUDA);
  CHECK_EQ(lookup(t, "add"), FLAGOS_BACKEND_CUDA);
  /* NULL origin is allowed */
  CHECK_OK(flagos_routing_load_string(t, "div = cpu", NULL));
  CHECK_ENTRY(t, 5, "div", FLAGOS_BACKEND_CPU, "<string>", 1);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_precedence_and_order(void) {
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_load_string(t, "a = cuda\nb = cpu\na = metax\nc = flagos\nb = ascend\n", "p"));
  CHECK_EQ(count_of(t), 3);
  CHECK_EQ(lookup(t, "a"), FLAGOS_BACKEND_METAX);
  CHECK_EQ(lookup(t, "b"), FLAGOS_BACKEND_ASCEND);
  /* an entry keeps its first place; origin and line are those of the last setting */
  CHECK_ENTRY(t, 0, "a", FLAGOS_BACKEND_METAX, "p", 3);
  CHECK_ENTRY(t, 1, "b", FLAGOS_BACKEND_ASCEND, "p", 5);
  CHECK_ENTRY(t, 2, "c", FLAGOS_BACKEND_FLAGOS, "p", 4);
  /* a later load overrides an earlier one */
  CHECK_OK(flagos_routing_load_string(t, "c = cpu", "q"));
  CHECK_ENTRY(t, 2, "c", FLAGOS_BACKEND_CPU, "q", 1);
  /* aten::x and x are the same entry */
  CHECK_OK(flagos_routing_load_string(t, "aten::a = flaggems", "r"));
  CHECK_EQ(count_of(t), 3);
  CHECK_ENTRY(t, 0, "a", FLAGOS_BACKEND_FLAGGEMS, "r", 1);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_syntax(void) {
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_load_string(t,
                                      "# whole-line comment\n"
                                      "\n"
                                      "   \t  \n"
                                      "  \t mm\t=\tcuda  \t\n"
                                      "add = cpu # trailing comment\n"
                                      "sub=flagos#tight comment\n"
                                      "   # indented comment = cuda\n"
                                      "mul = flaggems   \n"
                                      "include = ascend\n" /* an op named include */
                                      "div = metax",       /* no final newline */
                                      "syn"));
  CHECK_EQ(count_of(t), 6);
  CHECK_ENTRY(t, 0, "mm", FLAGOS_BACKEND_CUDA, "syn", 4);
  CHECK_ENTRY(t, 1, "add", FLAGOS_BACKEND_CPU, "syn", 5);
  CHECK_ENTRY(t, 2, "sub", FLAGOS_BACKEND_FLAGOS, "syn", 6);
  CHECK_ENTRY(t, 3, "mul", FLAGOS_BACKEND_FLAGGEMS, "syn", 8);
  CHECK_ENTRY(t, 4, "include", FLAGOS_BACKEND_ASCEND, "syn", 9);
  CHECK_ENTRY(t, 5, "div", FLAGOS_BACKEND_METAX, "syn", 10);
  /* empty and comment-only inputs change nothing */
  CHECK_OK(flagos_routing_load_string(t, "", "empty"));
  CHECK_OK(flagos_routing_load_string(t, "# nothing\n\n#", "comments"));
  CHECK_EQ(count_of(t), 6);
  /* CR LF line ends; a CR elsewhere is whitespace at the edges */
  CHECK_OK(flagos_routing_load_string(t, "a = cuda\r\nb = cpu # x\r\n\r\nc = metax\r", "crlf"));
  CHECK_ENTRY(t, 6, "a", FLAGOS_BACKEND_CUDA, "crlf", 1);
  CHECK_ENTRY(t, 7, "b", FLAGOS_BACKEND_CPU, "crlf", 2);
  CHECK_ENTRY(t, 8, "c", FLAGOS_BACKEND_METAX, "crlf", 4);
  CHECK_MSG(flagos_routing_load_string(t, "a = cuda\r\n\r\nb = cudaa\r\n", "crlf2"), FLAGOS_ERROR_CONFIG,
            "crlf2:3: unknown backend 'cudaa' for op 'b' " ALLOWED);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_errors(void) {
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_load_string(t, "mm = cuda\nadd = cpu\n", "base"));
  const char *origin = "/path/backends.conf";
  /* the exact message of the design */
  CHECK_MSG(flagos_routing_load_string(
                t, "a=cpu\nb=cpu\nc=cpu\nd=cpu\ne=cpu\nf=cpu\ng=cpu\nh=cpu\ni=cpu\nj=cpu\nk=cpu\nmm = cudaa\n",
                origin),
            FLAGOS_ERROR_CONFIG,
            "/path/backends.conf:12: unknown backend 'cudaa' for op 'mm' " ALLOWED);
  CHECK_MSG(flagos_routing_load_string(t, "x = cpu\n\nmm cuda\n", origin), FLAGOS_ERROR_CONFIG,
            "/path/backends.conf:3: malformed line (expected 'op = backend'): 'mm cuda'");
  CHECK_MSG(flagos_routing_load_string(t, "= cuda", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: malformed line (expected 'op = backend'): '= cuda'");
  CHECK_MSG(flagos_routing_load_string(t, "mm =   # nothing", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: malformed line (expected 'op = backend'): 'mm ='");
  CHECK_MSG(flagos_routing_load_string(t, "mm = cuda = cpu", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: malformed line (expected 'op = backend'): 'mm = cuda = cpu'");
  CHECK_MSG(flagos_routing_load_string(t, "include", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: malformed line (expected 'op = backend'): 'include'");
  CHECK_MSG(flagos_routing_load_string(t, "mm = CUDA", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: unknown backend 'CUDA' for op 'mm' " ALLOWED);
  CHECK_MSG(flagos_routing_load_string(t, "aten::mm.out = cu da", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: unknown backend 'cu da' for op 'mm.out' " ALLOWED);
  CHECK_MSG(flagos_routing_load_string(t, "a.b.c = cuda", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: malformed line (invalid op name 'a.b.c'; expected an ATen name like 'add' or "
            "'add.Tensor'): 'a.b.c = cuda'");
  static const char *const bad_ops[] = {"add. = cuda",  ".out = cuda",       "m-m = cuda",
                                        "aten:: = cuda", "aten::aten::mm = cuda", "a b = cuda",
                                        "a..b = cuda",  "torch.mm = cuda x", "mm\xc3\xa9 = cuda",
                                        "ns::mm = cuda", "a.b.c.d = cpu",    "mm.out. = cpu"};
  for (size_t i = 0; i < sizeof bad_ops / sizeof bad_ops[0]; ++i)
    CHECK_ERR(flagos_routing_load_string(t, bad_ops[i], "o"), FLAGOS_ERROR_CONFIG, "o:1: ");
  CHECK_ERR(flagos_routing_load_string(t, "mm\xc3\xa9 = cuda", "o"), FLAGOS_ERROR_CONFIG,
            "invalid op name 'mm\\xc3\\xa9'");
  /* invalid bytes are shown escaped */
  CHECK_MSG(flagos_routing_load_string(t, "mm = cu\xff\x01", "o"), FLAGOS_ERROR_CONFIG,
            "o:1: unknown backend 'cu\\xff\\x01' for op 'mm' " ALLOWED);
  /* the table is unchanged by every failed load above */
  CHECK_EQ(count_of(t), 2);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CUDA);
  CHECK_EQ(lookup(t, "add"), FLAGOS_BACKEND_CPU);
  CHECK_EQ(lookup(t, "a"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "x"), FLAGOS_BACKEND_DEFAULT);
  /* good lines before the bad one are not applied either */
  CHECK_ERR(flagos_routing_load_string(t, "mm = cpu\nnew_op = cuda\nadd = flagos\nbad line\n", "o"),
            FLAGOS_ERROR_CONFIG, "o:4: malformed line");
  CHECK_EQ(count_of(t), 2);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CUDA);
  CHECK_EQ(lookup(t, "new_op"), FLAGOS_BACKEND_DEFAULT);
  CHECK_ENTRY(t, 0, "mm", FLAGOS_BACKEND_CUDA, "base", 1);
  /* argument checks */
  flagos_backend_t b;
  size_t n;
  CHECK_ERR(flagos_routing_load_string(t, NULL, "o"), FLAGOS_ERROR_INVALID_ARGUMENT, "text is NULL");
  CHECK_ERR(flagos_routing_load_string(NULL, "mm = cpu", "o"), FLAGOS_ERROR_INVALID_ARGUMENT,
            "table is NULL");
  CHECK_ERR(flagos_routing_load_file(t, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "path is NULL");
  CHECK_ERR(flagos_routing_load_environ(t, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "environ_vars is NULL");
  CHECK_ERR(flagos_routing_lookup(t, NULL, &b), FLAGOS_ERROR_INVALID_ARGUMENT, "op is NULL");
  CHECK_ERR(flagos_routing_lookup(t, "mm", NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "backend is NULL");
  CHECK_ERR(flagos_routing_count(t, NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "count is NULL");
  CHECK_ERR(flagos_routing_count(NULL, &n), FLAGOS_ERROR_INVALID_ARGUMENT, "table is NULL");
  CHECK_ERR(flagos_routing_entry(t, 2, NULL, NULL, NULL, NULL), FLAGOS_ERROR_INVALID_ARGUMENT,
            "index 2 out of range (table has 2 entries)");
  CHECK_OK(flagos_routing_entry(t, 1, NULL, &b, NULL, NULL)); /* optional outputs */
  CHECK_EQ(b, FLAGOS_BACKEND_CPU);
  CHECK_ERR(flagos_routing_create(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "table is NULL");
  CHECK_ERR(flagos_routing_destroy(NULL), FLAGOS_ERROR_INVALID_ARGUMENT, "table is NULL");
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_set(void) {
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_set(t, "aten::add.Tensor", FLAGOS_BACKEND_CPU));
  CHECK_OK(flagos_routing_set(t, "mm", FLAGOS_BACKEND_CUDA));
  CHECK_ENTRY(t, 0, "add.Tensor", FLAGOS_BACKEND_CPU, "flagos_routing_set", 0);
  CHECK_EQ(lookup(t, "add.Tensor"), FLAGOS_BACKEND_CPU);
  CHECK_OK(flagos_routing_set(t, "mm", FLAGOS_BACKEND_FLAGOS_PYTHON));
  CHECK_EQ(lookup(t, "mm.out"), FLAGOS_BACKEND_FLAGOS_PYTHON);
  /* DEFAULT is an explicit "built-in default" entry */
  CHECK_OK(flagos_routing_set(t, "mm.out", FLAGOS_BACKEND_DEFAULT));
  CHECK_EQ(lookup(t, "mm.out"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_FLAGOS_PYTHON);
  CHECK_EQ(count_of(t), 3);
  CHECK_ERR(flagos_routing_set(t, "mm", (flagos_backend_t)99), FLAGOS_ERROR_INVALID_ARGUMENT,
            "invalid backend value 99 for op 'mm'");
  CHECK_ERR(flagos_routing_set(t, "mm", FLAGOS_BACKEND_COUNT_), FLAGOS_ERROR_INVALID_ARGUMENT,
            "invalid backend value 8");
  CHECK_ERR(flagos_routing_set(t, "m m", FLAGOS_BACKEND_CPU), FLAGOS_ERROR_INVALID_ARGUMENT,
            "invalid op name 'm m'");
  CHECK_ERR(flagos_routing_set(t, "", FLAGOS_BACKEND_CPU), FLAGOS_ERROR_INVALID_ARGUMENT,
            "invalid op name ''");
  CHECK_ERR(flagos_routing_set(t, NULL, FLAGOS_BACKEND_CPU), FLAGOS_ERROR_INVALID_ARGUMENT,
            "op is NULL");
  CHECK_EQ(count_of(t), 3);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_environ(void) {
  flagos_routing_table_t t = new_table();
  char *env[] = {"PATH=/usr/bin:/bin",
                 "FLAGOS_OP_mm__out=cuda",
                 "FLAGOS_OP_add=flaggems_python",
                 "FLAGOS_OPX=cpu", /* not FLAGOS_OP_ */
                 "FLAGOS_OP_sum= cpu ",
                 "FLAGOS_OP_NO_EQUALS_SIGN",
                 "flagos_op_mul=cpu", /* case matters */
                 "FLAGOS_OP_add=metax", /* later wins */
                 "FLAGOS_OP_softmax__int=\tflagos",
                 NULL};
  CHECK_OK(flagos_routing_load_environ(t, env));
  CHECK_EQ(count_of(t), 4);
  CHECK_EQ(lookup(t, "softmax.int"), FLAGOS_BACKEND_FLAGOS);
  CHECK_EQ(lookup(t, "mm.out"), FLAGOS_BACKEND_CUDA);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_DEFAULT);
  CHECK_EQ(lookup(t, "add.Tensor"), FLAGOS_BACKEND_METAX);
  CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_CPU);
  CHECK_EQ(lookup(t, "mul"), FLAGOS_BACKEND_DEFAULT);
  CHECK_ENTRY(t, 0, "mm.out", FLAGOS_BACKEND_CUDA, "FLAGOS_OP_mm__out", 0);
  CHECK_ENTRY(t, 1, "add", FLAGOS_BACKEND_METAX, "FLAGOS_OP_add", 0);
  CHECK_ENTRY(t, 2, "sum", FLAGOS_BACKEND_CPU, "FLAGOS_OP_sum", 0);
  CHECK_ENTRY(t, 3, "softmax.int", FLAGOS_BACKEND_FLAGOS, "FLAGOS_OP_softmax__int", 0);
  /* errors */
  char *bad1[] = {"FLAGOS_OP_mm=cpu", "FLAGOS_OP_mm__out=cudaa", NULL};
  CHECK_MSG(flagos_routing_load_environ(t, bad1), FLAGOS_ERROR_CONFIG,
            "FLAGOS_OP_mm__out: unknown backend 'cudaa' for op 'mm.out' " ALLOWED);
  char *bad2[] = {"FLAGOS_OP_a-b=cpu", NULL};
  CHECK_ERR(flagos_routing_load_environ(t, bad2), FLAGOS_ERROR_CONFIG,
            "FLAGOS_OP_a-b: malformed variable name (expected FLAGOS_OP_<op>");
  char *bad3[] = {"FLAGOS_OP_=cpu", NULL};
  CHECK_ERR(flagos_routing_load_environ(t, bad3), FLAGOS_ERROR_CONFIG, "FLAGOS_OP_: malformed");
  /* The last "__" separates the overload, so op names with "__" survive. */
  {
    flagos_routing_table_t d = NULL;
    CHECK_OK(flagos_routing_create(&d));
    char *dunder[] = {"FLAGOS_OP__foreach_add___List=cpu", "FLAGOS_OP___or____Tensor=cuda",
                      "FLAGOS_OP___and__=metax", "FLAGOS_OP_a__b__c=cpu", NULL};
    CHECK_OK(flagos_routing_load_environ(d, dunder));
    CHECK_EQ(lookup(d, "_foreach_add_.List"), FLAGOS_BACKEND_CPU);
    CHECK_EQ(lookup(d, "__or__.Tensor"), FLAGOS_BACKEND_CUDA);
    CHECK_EQ(lookup(d, "__and__.Scalar"), FLAGOS_BACKEND_METAX);
    CHECK_EQ(lookup(d, "a__b.c"), FLAGOS_BACKEND_CPU);
    flagos_routing_destroy(d);
  }
  char *bad5[] = {"FLAGOS_OP_mm=", NULL};
  CHECK_ERR(flagos_routing_load_environ(t, bad5), FLAGOS_ERROR_CONFIG,
            "FLAGOS_OP_mm: unknown backend '' for op 'mm'");
  char *bad6[] = {"FLAGOS_OP_mm x=cpu", NULL};
  CHECK_ERR(flagos_routing_load_environ(t, bad6), FLAGOS_ERROR_CONFIG, "FLAGOS_OP_mm x: malformed");
  /* nothing changed */
  CHECK_EQ(count_of(t), 4);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_DEFAULT);
  char *empty[] = {NULL};
  CHECK_OK(flagos_routing_load_environ(t, empty));
  CHECK_EQ(count_of(t), 4);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_files(void) {
  mkdir(path_of("sub"), 0700);
  mkdir(path_of("sub/deeper"), 0700);
  write_text("main.conf",
             "# main\n"
             "mm = cpu\n"
             "include sub/a.conf   # trailing comment\n"
             "mm = cuda\n");
  write_text("sub/a.conf",
             "add = cpu\n"
             "include b.conf\n" /* relative to sub/ */
             "include deeper/c.conf\n");
  write_text("sub/b.conf", "sum = metax\nmm = flagos\nadd = ascend\n");
  write_text("sub/deeper/c.conf", "include ../b.conf\ndiv = cpu\n"); /* diamond: b twice */
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_load_file(t, path_of("main.conf")));
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CUDA);   /* main's line 4 comes last */
  CHECK_EQ(lookup(t, "add"), FLAGOS_BACKEND_ASCEND); /* b.conf after a.conf's line 1 */
  CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_METAX);
  CHECK_EQ(lookup(t, "div"), FLAGOS_BACKEND_CPU);
  CHECK_EQ(count_of(t), 4);
  CHECK_ENTRY(t, 0, "mm", FLAGOS_BACKEND_CUDA, path_of("main.conf"), 4);
  CHECK_ENTRY(t, 1, "add", FLAGOS_BACKEND_ASCEND, path_of("sub/deeper/../b.conf"), 3);
  CHECK_ENTRY(t, 2, "sum", FLAGOS_BACKEND_METAX, path_of("sub/deeper/../b.conf"), 1);
  CHECK_ENTRY(t, 3, "div", FLAGOS_BACKEND_CPU, path_of("sub/deeper/c.conf"), 2);
  CHECK_OK(flagos_routing_destroy(t));

  /* an error inside an include names that file and line, and changes nothing */
  write_text("bad_inc.conf", "mm = cuda\ninclude sub/bad.conf\n");
  write_text("sub/bad.conf", "ok = cpu\n\nbroken = nope\n");
  t = new_table();
  CHECK_OK(flagos_routing_load_string(t, "x = cpu", "x"));
  char want[2048];
  snprintf(want, sizeof want, "%s:3: unknown backend 'nope' for op 'broken' " ALLOWED,
           path_of("sub/bad.conf"));
  CHECK_MSG(flagos_routing_load_file(t, path_of("bad_inc.conf")), FLAGOS_ERROR_CONFIG, want);
  CHECK_EQ(count_of(t), 1);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_DEFAULT);

  /* missing include, include of a directory, missing file */
  write_text("missing_inc.conf", "\ninclude nowhere.conf\n");
  snprintf(want, sizeof want, "%s:2: cannot read included file '%s': No such file or directory",
           path_of("missing_inc.conf"), path_of("nowhere.conf"));
  CHECK_MSG(flagos_routing_load_file(t, path_of("missing_inc.conf")), FLAGOS_ERROR_CONFIG, want);
  write_text("dir_inc.conf", "include sub\n");
  CHECK_ERR(flagos_routing_load_file(t, path_of("dir_inc.conf")), FLAGOS_ERROR_CONFIG,
            "Is a directory");
  snprintf(want, sizeof want, "cannot read routing config '%s': No such file or directory",
           path_of("absent.conf"));
  CHECK_MSG(flagos_routing_load_file(t, path_of("absent.conf")), FLAGOS_ERROR_CONFIG, want);
  CHECK_ERR(flagos_routing_load_file(t, g_dir), FLAGOS_ERROR_CONFIG, "Is a directory");
  CHECK_ERR(flagos_routing_load_file(t, "/dev/null"), FLAGOS_ERROR_CONFIG, "not a regular file");
  write_text("zero_inc.conf", "include /dev/zero\n");
  CHECK_ERR(flagos_routing_load_file(t, path_of("zero_inc.conf")), FLAGOS_ERROR_CONFIG,
            "not a regular file");
  /* absolute include path */
  char text[1200];
  snprintf(text, sizeof text, "include %s\n", path_of("sub/b.conf"));
  write_text("abs_inc.conf", text);
  CHECK_OK(flagos_routing_load_file(t, path_of("abs_inc.conf")));
  CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_METAX);
  CHECK_OK(flagos_routing_destroy(t));

  /* load_string: includes relative to the directory of origin when it has one */
  t = new_table();
  CHECK_OK(flagos_routing_load_string(t, "include sub/b.conf\nmm = cpu\n", path_of("virtual.conf")));
  CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_METAX);
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CPU);
  CHECK_OK(flagos_routing_destroy(t));

  /* relative paths with no directory: the current directory */
  char cwd[1024];
  if (getcwd(cwd, sizeof cwd) && chdir(g_dir) == 0) {
    write_text("rel_top.conf", "include rel_other.conf\n");
    write_text("rel_other.conf", "neg = cuda\n");
    t = new_table();
    CHECK_OK(flagos_routing_load_file(t, "rel_top.conf"));
    CHECK_ENTRY(t, 0, "neg", FLAGOS_BACKEND_CUDA, "rel_other.conf", 1);
    CHECK_OK(flagos_routing_load_string(t, "include sub/b.conf", "no_dir_origin"));
    CHECK_EQ(lookup(t, "sum"), FLAGOS_BACKEND_METAX);
    CHECK_OK(flagos_routing_destroy(t));
    CHECK(chdir(cwd) == 0);
  } else {
    CHECK(!"chdir");
  }
}

static void test_include_cycle_and_depth(void) {
  flagos_routing_table_t t = new_table();
  CHECK_OK(flagos_routing_load_string(t, "keep = cpu", "k"));
  write_text("cyc_a.conf", "a = cpu\ninclude cyc_b.conf\n");
  write_text("cyc_b.conf", "b = cpu\n\ninclude cyc_a.conf\n");
  char want[4096];
  snprintf(want, sizeof want, "%s:3: include cycle: %s -> %s -> %s", path_of("cyc_b.conf"),
           path_of("cyc_a.conf"), path_of("cyc_b.conf"), path_of("cyc_a.conf"));
  CHECK_MSG(flagos_routing_load_file(t, path_of("cyc_a.conf")), FLAGOS_ERROR_CONFIG, want);
  write_text("self.conf", "include ./self.conf\n");
  CHECK_ERR(flagos_routing_load_file(t, path_of("self.conf")), FLAGOS_ERROR_CONFIG,
            "self.conf:1: include cycle: ");
  CHECK_EQ(count_of(t), 1);
  CHECK_EQ(lookup(t, "a"), FLAGOS_BACKEND_DEFAULT);

  /* depth: d0 includes d1 ... ; a chain of 9 files (8 nested includes) is fine */
  for (int i = 0; i <= 9; ++i) {
    char name[32], body[64];
    snprintf(name, sizeof name, "d%d.conf", i);
    if (i < 9) snprintf(body, sizeof body, "op%d = cpu\ninclude d%d.conf\n", i, i + 1);
    else snprintf(body, sizeof body, "op%d = cpu\n", i);
    write_text(name, body);
  }
  CHECK_OK(flagos_routing_load_file(t, path_of("d1.conf"))); /* d1..d9: 8 nested includes */
  CHECK_EQ(lookup(t, "op9"), FLAGOS_BACKEND_CPU);
  CHECK_EQ(lookup(t, "op1"), FLAGOS_BACKEND_CPU);
  flagos_routing_table_t t2 = new_table();
  CHECK_ERR(flagos_routing_load_file(t2, path_of("d0.conf")), FLAGOS_ERROR_CONFIG,
            "d8.conf:2: include depth limit (8) exceeded: ");
  CHECK_ERR(flagos_routing_load_file(t2, path_of("d0.conf")), FLAGOS_ERROR_CONFIG,
            "d0.conf -> ");
  CHECK_EQ(count_of(t2), 0);
  CHECK_OK(flagos_routing_destroy(t2));
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_odd_bytes(void) {
  flagos_routing_table_t t = new_table();
  /* NUL bytes in a file: the line is malformed, and the message shows them escaped */
  static const char nul_file[] = "mm = cuda\n\0\0 = cpu\nadd = cpu\n";
  write_bytes("nul.conf", nul_file, sizeof nul_file - 1);
  char want[2048];
  snprintf(want, sizeof want, "%s:2: malformed line (invalid op name '\\x00\\x00'; expected an ATen "
           "name like 'add' or 'add.Tensor'): '\\x00\\x00 = cpu'", path_of("nul.conf"));
  CHECK_MSG(flagos_routing_load_file(t, path_of("nul.conf")), FLAGOS_ERROR_CONFIG, want);
  static const char nul_comment[] = "mm = cuda # \0 comment with NUL\nadd = cpu\n";
  write_bytes("nulc.conf", nul_comment, sizeof nul_comment - 1);
  CHECK_OK(flagos_routing_load_file(t, path_of("nulc.conf")));
  CHECK_EQ(lookup(t, "add"), FLAGOS_BACKEND_CPU);
  static const char nul_backend[] = "mm = cu\0da\n";
  write_bytes("nulb.conf", nul_backend, sizeof nul_backend - 1);
  CHECK_ERR(flagos_routing_load_file(t, path_of("nulb.conf")), FLAGOS_ERROR_CONFIG,
            ":1: unknown backend 'cu\\x00da' for op 'mm'");
  static const char nul_inc[] = "include a\0b\n";
  write_bytes("nuli.conf", nul_inc, sizeof nul_inc - 1);
  CHECK_ERR(flagos_routing_load_file(t, path_of("nuli.conf")), FLAGOS_ERROR_CONFIG,
            ":1: include path contains a NUL byte: 'a\\x00b'");
  /* invalid UTF-8 and control bytes in comments are fine */
  write_text("utf.conf", "# \xff\xfe\xc3\x28 comment\nmm = cpu # \x80\x81\n\x1b\n");
  CHECK_ERR(flagos_routing_load_file(t, path_of("utf.conf")), FLAGOS_ERROR_CONFIG,
            ":3: malformed line (expected 'op = backend'): '\\x1b'");
  write_text("utf2.conf", "# \xff\xfe\xc3\x28 comment\nmm = cpu # \x80\x81\n");
  CHECK_OK(flagos_routing_load_file(t, path_of("utf2.conf")));
  CHECK_EQ(lookup(t, "mm"), FLAGOS_BACKEND_CPU);
  /* an empty file */
  write_bytes("empty.conf", "", 0);
  CHECK_OK(flagos_routing_load_file(t, path_of("empty.conf")));
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_long_lines(void) {
  flagos_routing_table_t t = new_table();
  size_t n = 1u << 20;
  char *text = malloc(n + 64);
  CHECK(text != NULL);
  if (!text) return;
  /* a 1 MiB op name is valid */
  memset(text, 'a', n);
  memcpy(text + n, " = cuda\n", 9);
  CHECK_OK(flagos_routing_load_string(t, text, "long"));
  text[n] = '\0';
  CHECK_EQ(lookup(t, text), FLAGOS_BACKEND_CUDA);
  memcpy(text + n, ".out", 5);
  CHECK_EQ(lookup(t, text), FLAGOS_BACKEND_CUDA);
  /* a 1 MiB malformed line: the message quotes a bounded prefix */
  memset(text, 'x', n);
  memcpy(text + 10, " - ", 3);
  text[n] = '\0';
  CHECK_ERR(flagos_routing_load_string(t, text, "long"), FLAGOS_ERROR_CONFIG,
            "long:1: malformed line (expected 'op = backend'): 'xxxxxxxxxx - xxx");
  CHECK_ERR(flagos_routing_load_string(t, text, "long"), FLAGOS_ERROR_CONFIG, "...'");
  CHECK(strlen(flagos_last_error()) < 400);
  /* a 1 MiB unknown backend, as a file with CR LF */
  memcpy(text, "mm = ", 5);
  memset(text + 5, '\xfe', n - 5);
  memcpy(text + n, "\r\n", 3);
  write_text("long.conf", text);
  CHECK_ERR(flagos_routing_load_file(t, path_of("long.conf")), FLAGOS_ERROR_CONFIG,
            ":1: unknown backend '\\xfe\\xfe");
  CHECK_ERR(flagos_routing_load_file(t, path_of("long.conf")), FLAGOS_ERROR_CONFIG, ALLOWED);
  free(text);
  CHECK_EQ(count_of(t), 1);
  CHECK_OK(flagos_routing_destroy(t));
}

static void test_many_entries(void) {
  flagos_routing_table_t t = new_table();
  size_t cap = 20000 * 40;
  char *text = malloc(cap);
  CHECK(text != NULL);
  if (!text) return;
  static const char *const words[] = {"flagos", "flaggems", "flagos_python", "cuda",
                                      "metax",  "ascend",   "cpu"};
  size_t o = 0;
  for (int i = 0; i < 20000; ++i)
    o += (size_t)snprintf(text + o, cap - o, "op_%d%s = %s\n", i / 2, (i % 2) ? ".out" : "",
                          words[i % 7]);
  CHECK_OK(flagos_routing_load_string(t, text, "many"));
  CHECK_EQ(count_of(t), 20000);
  int bad = 0;
  for (int i = 0; i < 20000; ++i) {
    char op[64];
    snprintf(op, sizeof op, "op_%d%s", i / 2, (i % 2) ? ".out" : "");
    flagos_backend_t b, want;
    flagos_backend_parse(words[i % 7], &want);
    if (flagos_routing_lookup(t, op, &b) != FLAGOS_SUCCESS || b != want) bad++;
    snprintf(op, sizeof op, "op_%d.other", i / 2);
    flagos_backend_parse(words[(i / 2 * 2) % 7], &want);
    if (flagos_routing_lookup(t, op, &b) != FLAGOS_SUCCESS || b != want) bad++;
  }
  CHECK_EQ(bad, 0);
  /* a second load of the same ops overrides in place */
  CHECK_OK(flagos_routing_load_string(t, text, "many2"));
  CHECK_EQ(count_of(t), 20000);
  CHECK_ENTRY(t, 19999, "op_9999.out", FLAGOS_BACKEND_FLAGOS, "many2", 20000); /* 19999 % 7 == 0 */
  free(text);
  CHECK_OK(flagos_routing_destroy(t));
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/flagos_routing_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) {
    fprintf(stderr, "mkdtemp(%s): %s\n", g_dir, strerror(errno));
    return 2;
  }
  test_backend_words();
  test_basic_lookup();
  test_precedence_and_order();
  test_syntax();
  test_errors();
  test_set();
  test_environ();
  test_files();
  test_include_cycle_and_depth();
  test_odd_bytes();
  test_long_lines();
  test_many_entries();
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", g_dir);
  return check_report();
}
