/* buf.h — a growable, length-carrying byte buffer (sds-style) for building responses and files.
 *
 * Invariant: p is NUL-terminated at len whenever p != NULL, so text can be passed to C string APIs;
 * the length is authoritative (binary content may contain NULs). Growth is geometric; allocation
 * failure is fatal (QS_FATAL), so appends cannot fail.
 */
#ifndef QS_BUF_H
#define QS_BUF_H

#include <stddef.h>

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
void qs_buf_reset(qs_buf *b); /* len = 0, keeps memory */
void qs_buf_free(qs_buf *b);

#endif
