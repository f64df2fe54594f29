/* error.c — qs_strerror, the fatal path and the never-NULL allocators. */
#include "qs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char *const qs_err_names[] = {
    [0] = "invalid input",
    [1] = "parse error",
    [2] = "value out of range",
    [3] = "out of memory",
    [4] = "not found",
    [5] = "too big",
    [6] = "I/O error",
    [7] = "authentication failed",
    [8] = "expired",
    [9] = "not supported",
    [10] = "invalid state",
    [11] = "closed",
    [12] = "queue full",
    [13] = "timed out",
    [14] = "rejected by peer",
    [15] = "ownership lost",
};

const char *qs_strerror(int code) {
  if (code == 0)
    return "ok";
  if (code < QS_ERR_BASE && code > QS_ERR_LAST)
    return qs_err_names[QS_ERR_BASE - code - 1];
  if (code < 0 && code > -4096)
    return uv_strerror(code);
  return "unknown error";
}

void qs_fatal_at(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "{\"level\":\"fatal\",\"where\":\"%s:%d\",\"msg\":\"", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs("\"}\n", stderr);
  fflush(stderr);
  abort();
}

void qs_set_reason(char *buf, size_t cap, const char *fmt, ...) {
  if (!buf || cap == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, cap, fmt, ap);
  va_end(ap);
}

void *qs_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    QS_FATAL("out of memory allocating %zu bytes", n);
  return p;
}

void *qs_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p)
    QS_FATAL("out of memory allocating %zu x %zu bytes", n, size);
  return p;
}

void *qs_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q)
    QS_FATAL("out of memory reallocating %zu bytes", n);
  return q;
}

char *qs_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = qs_xmalloc(n);
  memcpy(d, s, n);
  return d;
}
