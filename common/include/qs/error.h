/* error.h — the one error scheme of libqs.
 *
 * Functions return 0 on success or a negative qs_err (or a negative libuv
 * code, which never collides: libuv codes are -errno values below
 * QS_ERR_BASE's range). qs_strerror() names either kind.
 * QS_FATAL is for out-of-memory and broken invariants only: it logs file and
 * line to stderr and aborts. Library code never calls exit().
 */
#ifndef QS_ERROR_H
#define QS_ERROR_H

#include <stddef.h>

typedef enum qs_err {
  QS_OK = 0,
  QS_ERR_BASE = -10000,
  QS_ERR_INVALID = -10001,     /* input failed validation */
  QS_ERR_PARSE = -10002,       /* input is not well-formed */
  QS_ERR_RANGE = -10003,       /* value out of the allowed range */
  QS_ERR_NOMEM = -10004,       /* allocation failed (recoverable paths) */
  QS_ERR_NOTFOUND = -10005,    /* no such thing */
  QS_ERR_TOOBIG = -10006,      /* input exceeds a configured limit */
  QS_ERR_IO = -10007,          /* file or socket I/O failed */
  QS_ERR_AUTH = -10008,        /* authentication or signature failure */
  QS_ERR_EXPIRED = -10009,     /* token or lease expired */
  QS_ERR_UNSUPPORTED = -10010, /* explicitly not supported */
  QS_ERR_STATE = -10011,       /* call not valid in the object's state */
  QS_ERR_CLOSED = -10012,      /* object is closing or closed */
  QS_ERR_FULL = -10013,        /* bounded queue is full (back-pressure) */
  QS_ERR_TIMEOUT = -10014,
  QS_ERR_REJECTED = -10015, /* the peer refused it (e.g. AMQP rejected disposition) */
  QS_ERR_STOLEN = -10016,   /* ownership taken over by another owner (epoch, lease) */
  QS_ERR_LAST = -10017
} qs_err;

/* Name of a qs_err or of a libuv/errno-style negative code. Never NULL. */
const char *qs_strerror(int code);

/* Aborts with file:line and the message. For OOM and broken invariants. */
#define QS_FATAL(...) qs_fatal_at(__FILE__, __LINE__, __VA_ARGS__)
_Noreturn void qs_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Format a reason into a caller's buffer (NULL or 0-sized buffers are fine: nothing is written).
 * The one helper behind every "why"/"err" out-parameter. */
void qs_set_reason(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Allocation that never returns NULL (QS_FATAL on OOM). */
void *qs_xmalloc(size_t n);
void *qs_xcalloc(size_t n, size_t size);
void *qs_xrealloc(void *p, size_t n);
char *qs_xstrdup(const char *s);

#endif
