/* argv.c — arena-backed argument lists (see argv.h). Strings are stored back to back; a string
 * replaced by sa_argv_set_i is appended anew and its offset moved, so indexes stay stable. */
#include "argv.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"

void sa_argv_init(sa_argv *a) { memset(a, 0, sizeof *a); }

void sa_argv_free(sa_argv *a) {
  free(a->arena);
  free(a->off);
  free(a->len);
  free(a->argv);
  free(a->resp);
  memset(a, 0, sizeof *a);
}

void sa_argv_reset(sa_argv *a) {
  a->used = 0;
  a->n = 0;
}

static void reserve(sa_argv *a, size_t bytes) {
  if (a->used + bytes > a->cap) {
    size_t ncap = a->cap ? a->cap : 4096;
    while (ncap < a->used + bytes)
      ncap *= 2;
    a->arena = qs_xrealloc(a->arena, ncap);
    a->cap = ncap;
  }
  if (a->n == a->ncap) {
    a->ncap = a->ncap ? a->ncap * 2 : 256;
    a->off = qs_xrealloc(a->off, a->ncap * sizeof *a->off);
    a->len = qs_xrealloc(a->len, a->ncap * sizeof *a->len);
  }
}

void sa_argv_add(sa_argv *a, const char *s, size_t len) {
  reserve(a, len + 1);
  memcpy(a->arena + a->used, s, len);
  a->arena[a->used + len] = '\0';
  a->off[a->n] = a->used;
  a->len[a->n] = len;
  a->used += len + 1;
  a->n++;
}

void sa_argv_adds(sa_argv *a, const char *s) { sa_argv_add(a, s, strlen(s)); }

void sa_argv_add3(sa_argv *a, const char *s1, size_t l1, const char *s2, size_t l2, const char *s3,
                  size_t l3) {
  size_t len = l1 + l2 + l3;
  reserve(a, len + 1);
  char *d = a->arena + a->used;
  memcpy(d, s1, l1);
  memcpy(d + l1, s2, l2);
  memcpy(d + l1 + l2, s3, l3);
  d[len] = '\0';
  a->off[a->n] = a->used;
  a->len[a->n] = len;
  a->used += len + 1;
  a->n++;
}

/* Decimal of v into b (>= 21 bytes); returns the length. */
static size_t i64_str(int64_t v, char *b) {
  char t[24];
  size_t n = 0, len = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    t[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    b[len++] = '-';
  while (n)
    b[len++] = t[--n];
  return len;
}

void sa_argv_addi(sa_argv *a, int64_t v) {
  char b[24];
  sa_argv_add(a, b, i64_str(v, b));
}

void sa_argv_addf(sa_argv *a, const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0)
    QS_FATAL("vsnprintf failed");
  if ((size_t)n < sizeof small) {
    sa_argv_add(a, small, (size_t)n);
    return;
  }
  char *big = qs_xmalloc((size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sa_argv_add(a, big, (size_t)n);
  free(big);
}

size_t sa_argv_count(const sa_argv *a) { return a->n; }

void sa_argv_set_i(sa_argv *a, size_t i, int64_t v) {
  char b[32];
  size_t n = i64_str(v, b);
  size_t saved_n = a->n;
  sa_argv_add(a, b, (size_t)n);
  a->n = saved_n;
  a->off[i] = a->off[saved_n];
  a->len[i] = (size_t)n;
}

size_t sa_argv_finish(sa_argv *a) {
  if (a->argv_cap < a->n + 1) {
    a->argv_cap = a->n + 1;
    a->argv = qs_xrealloc(a->argv, a->argv_cap * sizeof *a->argv);
  }
  for (size_t i = 0; i < a->n; i++)
    a->argv[i] = a->arena + a->off[i];
  return a->n;
}

const char *sa_argv_at(const sa_argv *a, size_t i, size_t *len) {
  if (len)
    *len = a->len[i];
  return a->arena + a->off[i];
}

const char *sa_argv_resp(sa_argv *a, size_t *len) {
  /* "*<n>\r\n", then "$<len>\r\n<bytes>\r\n" per string: at most 26 bytes of framing each. */
  size_t need = 24 + a->used + a->n * 26;
  if (need > a->resp_cap) {
    a->resp_cap = need + need / 4;
    free(a->resp);
    a->resp = qs_xmalloc(a->resp_cap);
  }
  char *p = a->resp;
  *p++ = '*';
  p += i64_str((int64_t)a->n, p);
  *p++ = '\r';
  *p++ = '\n';
  for (size_t i = 0; i < a->n; i++) {
    *p++ = '$';
    p += i64_str((int64_t)a->len[i], p);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, a->arena + a->off[i], a->len[i]);
    p += a->len[i];
    *p++ = '\r';
    *p++ = '\n';
  }
  *len = (size_t)(p - a->resp);
  return a->resp;
}
