/* buf.h — a growable, length-carrying byte buffer (sds-style) for building responses and files.
 *
 * Invariant: p is NUL-terminated at len whenever p != NULL, so text can be passed to C string APIs;
 * the length is authoritative (binary content may contain NULs). Growth is geometric; allocation
 * failure is fatal (QS_FATAL), so appends cannot fail.
 */
#ifndef QS_BUF_H
#define QS_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct qs_buf {
  char *p;
  size_t len, cap;
} qs_buf;

#define QS_BUF_INIT                                                                                \
  { NULL, 0, 0 }

void qs_buf_reserve(qs_buf *b, size_t extra);
void qs_buf_append(qs_buf *b, const void *data, size_t n);
void qs_buf_puts(qs_buf *b, const char *s);
void qs_buf_printf(qs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as the inside of a JSON string (escaped, no quotes). */
void qs_buf_json_str(qs_buf *b, const char *s, size_t n);
/* The shortest %.15g/%.16g/%.17g text that reads back as exactly v (finite v), into out (>= 32
 * bytes); returns its length. Shared by every JSON and Prometheus writer. */
size_t qs_double_shortest(char *out, size_t cap, double v);
/* Decimal text of v into out (>= 21 bytes), NUL-terminated; returns its length. The one integer
 * formatter of the hot paths (printf's cost showed in profiles). */
size_t qs_i64_str(int64_t v, char *out);
/* m / 10^6 as a decimal (fixed notation, trailing zeros and a bare point dropped: 6250000 ->
 * "6.25", -1000000 -> "-1") into out (>= 29 bytes), NUL-terminated; returns its length. For a
 * double that is exactly the nearest to m / 10^6 with |m / 10^6| < 1e9, this is also its
 * shortest round-trip text (%.15g's). */
size_t qs_micro_str(int64_t m, char *out);
/* cJSON 1.7's print_number text of d into out (>= 40 bytes), NUL-terminated; returns its length:
 * "null" for NaN/inf, "%d" when d equals its int conversion (saturated at INT_MIN/INT_MAX), else
 * "%1.15g" if that reads back within DBL_EPSILON (relative), else "%1.17g", with '.' as the
 * decimal point. Byte for byte the same, without printf/strtod in the common cases (aggregate
 * rows print averages on every commit). */
size_t qs_cjson_number(double d, char *out);
void qs_buf_reset(qs_buf *b); /* len = 0, keeps memory */
void qs_buf_free(qs_buf *b);

#endif
