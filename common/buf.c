/* buf.c — growable buffer; see buf.h for the invariants. */
#include "qs/buf.h"

#include "qs/error.h"
#include "qs/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void qs_buf_reserve(qs_buf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) {
    if (cap > SIZE_MAX / 2)
      QS_FATAL("buffer size overflow");
    cap *= 2;
  }
  b->p = qs_xrealloc(b->p, cap);
  b->cap = cap;
}

void qs_buf_append(qs_buf *b, const void *data, size_t n) {
  qs_buf_reserve(b, n);
  if (n)
    memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void qs_buf_puts(qs_buf *b, const char *s) { qs_buf_append(b, s, strlen(s)); }

void qs_buf_printf(qs_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0)
    QS_FATAL("vsnprintf failed for format %s", fmt);
  if ((size_t)n < sizeof small) {
    qs_buf_append(b, small, (size_t)n);
    return;
  }
  qs_buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void qs_buf_json_str(qs_buf *b, const char *s, size_t n) {
  /* Worst case: every byte becomes \u00XX (6 bytes) or U+FFFD (3 bytes). */
  qs_buf_reserve(b, n * 6);
  b->len += qs_json_escape(b->p + b->len, b->cap - b->len - 1, s, n, NULL);
  b->p[b->len] = '\0';
}

static const char digit_pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                                  "34353637383940414243444546474849505152535455565758596061626364656667"
                                  "6869707172737475767778798081828384858687888990919293949596979899";

size_t qs_i64_str(int64_t v, char *out) {
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  static const uint64_t pow10[] = {10ULL,
                                   100ULL,
                                   1000ULL,
                                   10000ULL,
                                   100000ULL,
                                   1000000ULL,
                                   10000000ULL,
                                   100000000ULL,
                                   1000000000ULL,
                                   10000000000ULL,
                                   100000000000ULL,
                                   1000000000000ULL,
                                   10000000000000ULL,
                                   100000000000000ULL,
                                   1000000000000000ULL,
                                   10000000000000000ULL,
                                   100000000000000000ULL,
                                   1000000000000000000ULL,
                                   10000000000000000000ULL};
  size_t digits = 1;
  while (digits < 20 && u >= pow10[digits - 1])
    digits++;
  size_t n = (v < 0) + digits;
  /* Written in place from the end (a copy through a temporary showed as a memmove call). */
  char *p = out + n;
  *p = '\0';
  while (u >= 100) {
    unsigned d = (unsigned)(u % 100) * 2;
    u /= 100;
    *--p = digit_pairs[d + 1];
    *--p = digit_pairs[d];
  }
  if (u >= 10) {
    *--p = digit_pairs[u * 2 + 1];
    *--p = digit_pairs[u * 2];
  } else {
    *--p = (char)('0' + u);
  }
  if (v < 0)
    *--p = '-';
  return n;
}

size_t qs_micro_str(int64_t m, char *out) {
  uint64_t um = m < 0 ? (uint64_t)0 - (uint64_t)m : (uint64_t)m;
  uint64_t fp = um % 1000000;
  size_t n = 0;
  if (m < 0)
    out[n++] = '-';
  n += qs_i64_str((int64_t)(um / 1000000), out + n);
  if (fp) {
    char fr[6];
    int fl = 6;
    for (int k = 5; k >= 0; k--, fp /= 10)
      fr[k] = (char)('0' + fp % 10);
    while (fr[fl - 1] == '0')
      fl--;
    out[n++] = '.';
    memcpy(out + n, fr, (size_t)fl);
    n += (size_t)fl;
  }
  out[n] = '\0';
  return n;
}

size_t qs_double_shortest(char *out, size_t cap, double v) {
  /* A value that is exactly the double nearest to m / 10^6 (magnitudes, depths and coordinates
   * with up to six decimals) with 1e-4 <= |v| < 1e9: "%.15g" prints that decimal (fixed
   * notation, zeros trimmed) and it reads back to v, so it is written directly. */
  double av = fabs(v);
  if (cap >= 32 && av >= 1e-4 && av < 1e9) { /* (a shorter buffer keeps the printf behaviour) */
    int64_t m = llround(v * 1e6);
    if ((double)m / 1e6 == v)
      return qs_micro_str(m, out);
  }
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(out, cap, "%.*g", prec, v);
    if (prec == 17 || strtod(out, NULL) == v)
      break;
  }
  return n < 0 ? 0 : (size_t)n;
}

void qs_buf_reset(qs_buf *b) {
  b->len = 0;
  if (b->p)
    b->p[0] = '\0';
}

void qs_buf_free(qs_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}
