/* buf.c — growable buffer; see buf.h for the invariants. */
#include "qs/buf.h"

#include "qs/error.h"
#include "qs/log.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
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

static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
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

/* The reference: what cJSON 1.7 does, through printf and strtod. */
static size_t cjson_number_printf(double d, char *out) {
  snprintf(out, 40, "%1.15g", d);
  double test = strtod(out, NULL);
  double max = fabs(test) > fabs(d) ? fabs(test) : fabs(d);
  if (!(fabs(test - d) <= max * DBL_EPSILON))
    snprintf(out, 40, "%1.17g", d);
  size_t n = 0;
  for (char *q = out; *q; q++, n++)
    if (!((*q >= '0' && *q <= '9') || *q == '-' || *q == '+' || *q == 'e' || *q == 'E'))
      *q = '.';
  return n;
}

/* Exact powers of ten in a long double (64-bit significand: 10^k = 5^k 2^k is exact for k <= 27).
 */
static const long double p10l[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,
                                   1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
                                   1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L,
                                   1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

/* |d| rounded to prec (15 or 17) significant digits as an integer *m of exactly prec digits and
 * the decimal exponent *x of its first digit, for 1e-4 <= |d| < 1e14; false when |d| is too close
 * to a rounding tie to decide here (the long double product is off by at most 2^-64 relative:
 * under 0.006 units of the last digit). */
static bool round_sig(double ad, int prec, uint64_t *m, int *x) {
  static const double p10neg[] = {1e0, 1e-1, 1e-2, 1e-3, 1e-4};
  int e; /* a guess of floor(log10(ad)), corrected below when off by one */
  if (ad >= 1.0) {
    e = 0;
    while (e < 13 && ad >= (double)p10l[e + 1])
      e++;
  } else {
    e = -1;
    while (e > -4 && ad < p10neg[-e])
      e--;
  }
  uint64_t lo = (uint64_t)p10l[prec - 1], hi = (uint64_t)p10l[prec];
  for (int tries = 0; tries < 3; tries++) {
    int k = prec - 1 - e;
    if (k < 0 || k > 27)
      return false;
    long double v = (long double)ad * p10l[k];
    long double f = floorl(v), frac = v - f;
    if (f >= (long double)hi) {
      e++;
      continue;
    }
    if (f < (long double)lo) {
      e--;
      continue;
    }
    if (fabsl(frac - 0.5L) < 0.01L)
      return false;
    uint64_t r = (uint64_t)f + (frac > 0.5L);
    if (r == hi) { /* 9.99... rounded up into the next decade */
      *m = lo;
      *x = e + 1;
    } else {
      *m = r;
      *x = e;
    }
    return true;
  }
  return false;
}

/* The %g text of m (prec digits) * 10^(x - prec + 1), fixed notation (-4 <= x < prec): trailing
 * zeros and a bare point dropped. */
static size_t g_fixed(bool neg, uint64_t m, int x, int prec, char *out) {
  char dig[24];
  for (int i = prec - 1; i >= 0; i--, m /= 10)
    dig[i] = (char)('0' + m % 10);
  int last = prec - 1;
  while (last > 0 && dig[last] == '0')
    last--;
  size_t n = 0;
  if (neg)
    out[n++] = '-';
  if (x >= 0) {
    for (int i = 0; i <= x; i++)
      out[n++] = dig[i];
    if (last > x) {
      out[n++] = '.';
      for (int i = x + 1; i <= last; i++)
        out[n++] = dig[i];
    }
  } else {
    out[n++] = '0';
    out[n++] = '.';
    for (int i = -1; i > x; i--)
      out[n++] = '0';
    for (int i = 0; i <= last; i++)
      out[n++] = dig[i];
  }
  out[n] = '\0';
  return n;
}

size_t qs_cjson_number(double d, char *out) {
  if (isnan(d) || isinf(d)) {
    memcpy(out, "null", 5);
    return 4;
  }
  int vi = d >= (double)INT32_MAX ? INT32_MAX : d <= (double)INT32_MIN ? INT32_MIN : (int)d;
  if (d == (double)vi)
    return qs_i64_str(vi, out);
  double ad = fabs(d);
  if (!(ad >= 1e-4 && ad < 1e14))
    return cjson_number_printf(d, out);
  /* A value that is exactly the double nearest to m / 10^6 (min and max magnitudes always are):
   * %1.15g prints that decimal (at most 15 digits, zeros trimmed) and it reads back to d. */
  if (ad < 1e9) {
    int64_t m6 = llround(d * 1e6);
    if ((double)m6 / 1e6 == d)
      return qs_micro_str(m6, out);
  }
  uint64_t m;
  int x;
  if (!round_sig(ad, 15, &m, &x))
    return cjson_number_printf(d, out);
  /* Does the 15-digit decimal D read back within one ulp of d (what the DBL_EPSILON test accepts)?
   * D is r ulps from d: the nearest double is d itself or a neighbour when r < 1.5, farther when
   * r > 1.5. Near 1.5, or when D and d straddle a power of two (ulps change size), printf
   * decides. */
  int e2;
  double mant = frexp(ad, &e2);
  long double D = x >= 14 ? (long double)m * p10l[x - 14] : (long double)m / p10l[14 - x];
  long double ulp = ldexpl(1.0L, e2 - 53);
  long double r = fabsl(D - (long double)ad) / ulp;
  if (mant == 0.5 || D >= ldexpl(1.0L, e2) || D < ldexpl(1.0L, e2 - 1) || fabsl(r - 1.5L) < 0.01L)
    return cjson_number_printf(d, out);
  if (r < 1.5L)
    return g_fixed(d < 0, m, x, 15, out);
  if (!round_sig(ad, 17, &m, &x) || x >= 17)
    return cjson_number_printf(d, out);
  return g_fixed(d < 0, m, x, 17, out);
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
