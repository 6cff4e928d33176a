/* util.c - byte-size formatting/parsing and environment flags. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/internal.h"

const char *flagos_format_bytes(char *buf, size_t len, unsigned long long bytes) {
  static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) {
    snprintf(buf, len, "%llu bytes", bytes);
    return buf;
  }
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    u++;
  }
  snprintf(buf, len, "%.2f %s", v, units[u]);
  return buf;
}

bool flagos_parse_bytes(const char *text, unsigned long long *out) {
  if (!text) return false;
  while (isspace((unsigned char)*text)) text++;
  if (!isdigit((unsigned char)*text)) return false; /* strtoull accepts "-1" */
  errno = 0;
  char *end = NULL;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text) return false;
  unsigned shift = 0;
  switch (toupper((unsigned char)*end)) {
  case 'K': shift = 10; end++; break;
  case 'M': shift = 20; end++; break;
  case 'G': shift = 30; end++; break;
  case 'T': shift = 40; end++; break;
  default: break;
  }
  if (shift && (toupper((unsigned char)*end) == 'I')) end++;   /* "MiB" */
  if (shift && (toupper((unsigned char)*end) == 'B')) end++;   /* "MB" */
  while (isspace((unsigned char)*end)) end++;
  if (*end) return false;
  if (shift && v > (~0ULL >> shift)) return false;
  *out = v << shift;
  return true;
}

bool flagos_env_flag(const char *name, bool default_value) {
  const char *s = getenv(name);
  if (!s || !*s) return default_value;
  if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
    return true;
  if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))
    return false;
  return default_value;
}
