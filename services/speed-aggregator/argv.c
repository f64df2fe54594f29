/* argv.c — arena-backed argument lists (see argv.h). Strings are stored back to back; a string
 * replaced by sa_argv_set_i is appended anew and its offset moved, so indexes stay stable (in RESP
 * mode a count placeholder is rewritten in place instead). */
#include "argv.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/buf.h"
#include "qs/error.h"

/* Room kept before the first string of a RESP-mode list for "*<argc>\r\n". */
#define RESP_HDR 32
/* Width of a count placeholder in RESP mode (zero-padded decimal, rewritten in place). */
#define COUNT_WIDTH 10

void sa_argv_init(sa_argv *a) { memset(a, 0, sizeof *a); }

void sa_argv_init_resp(sa_argv *a) {
  memset(a, 0, sizeof *a);
  a->resp_mode = true;
  a->used = RESP_HDR;
}

void sa_argv_free(sa_argv *a) {
  bool mode = a->resp_mode;
  free(a->arena);
  free(a->off);
  free(a->len);
  free(a->argv);
  free(a->resp);
  memset(a, 0, sizeof *a);
  a->resp_mode = mode;
  a->used = mode ? RESP_HDR : 0;
}

void sa_argv_reset(sa_argv *a) {
  a->used = a->resp_mode ? RESP_HDR : 0;
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

/* Appends a string of len bytes and returns where its bytes go: after "$<len>\r\n" and before
 * "\r\n" in RESP mode, before a NUL otherwise. */
static char *slot(sa_argv *a, size_t len) {
  reserve(a, len + 26);
  char *p = a->arena + a->used;
  if (a->resp_mode) {
    *p++ = '$';
    if (len < 10) { /* most arguments are short: ids, numbers, small keys */
      *p++ = (char)('0' + len);
    } else if (len < 100) {
      *p++ = (char)('0' + len / 10);
      *p++ = (char)('0' + len % 10);
    } else {
      p += qs_i64_str((int64_t)len, p);
    }
    *p++ = '\r';
    *p++ = '\n';
    p[len] = '\r';
    p[len + 1] = '\n';
  } else {
    p[len] = '\0';
  }
  a->off[a->n] = (size_t)(p - a->arena);
  a->len[a->n] = len;
  a->used = a->off[a->n] + len + (a->resp_mode ? 2 : 1);
  a->n++;
  return p;
}

void sa_argv_add(sa_argv *a, const char *s, size_t len) { memcpy(slot(a, len), s, len); }

void sa_argv_adds(sa_argv *a, const char *s) { sa_argv_add(a, s, strlen(s)); }

void sa_argv_add3(sa_argv *a, const char *s1, size_t l1, const char *s2, size_t l2, const char *s3,
                  size_t l3) {
  char *d = slot(a, l1 + l2 + l3);
  memcpy(d, s1, l1);
  memcpy(d + l1, s2, l2);
  memcpy(d + l1 + l2, s3, l3);
}

void sa_argv_addi(sa_argv *a, int64_t v) {
  char b[24];
  size_t n = qs_i64_str(v, b);
  reserve(a, 64); /* room for the fixed-size copy below (a call to memmove per number showed) */
  char *p = slot(a, n);
  memcpy(p, b, sizeof b);
  if (a->resp_mode) {
    p[n] = '\r';
    p[n + 1] = '\n';
  } else {
    p[n] = '\0';
  }
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

void sa_argv_add_count(sa_argv *a) {
  if (!a->resp_mode) {
    sa_argv_addi(a, 0);
    return;
  }
  memset(slot(a, COUNT_WIDTH), '0', COUNT_WIDTH);
}

void sa_argv_set_i(sa_argv *a, size_t i, int64_t v) {
  char b[32];
  size_t n = qs_i64_str(v, b);
  if (a->resp_mode) {
    /* In place, zero-padded: the list stays one contiguous command. */
    if (a->len[i] != COUNT_WIDTH || v < 0 || n > COUNT_WIDTH)
      QS_FATAL("sa_argv_set_i: string %zu is not a count placeholder (or %zu digits)", i, n);
    char *d = a->arena + a->off[i];
    memset(d, '0', COUNT_WIDTH - n);
    memcpy(d + COUNT_WIDTH - n, b, n);
    return;
  }
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
  if (a->resp_mode) {
    /* The strings are framed already: only "*<n>\r\n" goes in front, in the room kept. */
    char h[32];
    size_t hl = 0;
    h[hl++] = '*';
    hl += qs_i64_str((int64_t)a->n, h + hl);
    h[hl++] = '\r';
    h[hl++] = '\n';
    reserve(a, 0);
    char *start = a->arena + RESP_HDR - hl;
    memcpy(start, h, hl);
    *len = a->used - (RESP_HDR - hl);
    return start;
  }
  /* "*<n>\r\n", then "$<len>\r\n<bytes>\r\n" per string: at most 26 bytes of framing each. */
  size_t need = 24 + a->used + a->n * 26;
  if (need > a->resp_cap) {
    a->resp_cap = need + need / 4;
    free(a->resp);
    a->resp = qs_xmalloc(a->resp_cap);
  }
  char *p = a->resp;
  *p++ = '*';
  p += qs_i64_str((int64_t)a->n, p);
  *p++ = '\r';
  *p++ = '\n';
  for (size_t i = 0; i < a->n; i++) {
    *p++ = '$';
    p += qs_i64_str((int64_t)a->len[i], p);
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
