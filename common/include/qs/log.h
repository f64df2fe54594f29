/* log.h — structured JSON-line logs.
 *
 * One line per call, written with a single write(2) so lines from one process never interleave:
 *   {"ts":"2026-11-25T06:40:00.123Z","level":"info","service":"hub","msg":"started","port":5672}
 * Fields are typed (string, int64, double, bool) and JSON-escaped; invalid UTF-8 becomes U+FFFD.
 * A line is built in a fixed stack buffer (QS_LOG_LINE_MAX), so logging never allocates and never
 * fails. Bounds: a string value (msg included) longer than QS_LOG_VALUE_MAX escaped bytes, or than
 * the room left, is cut and ends with QS_LOG_CUT_MARK; any other field that does not fit (a number
 * at the very end, a QS_LJSON value) is left out whole; either way the line then ends with
 * "truncated":true.
 *
 * Usage:
 *   qs_log_info(&log, "listening", QS_LSTR("addr", a), QS_LINT("port", p));
 *   qs_log_error(&log, "redis down");
 */
#ifndef QS_LOG_H
#define QS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QS_LOG_LINE_MAX 8192
#define QS_LOG_VALUE_MAX 2048            /* escaped bytes of one string value before it is cut */
#define QS_LOG_CUT_MARK "...(truncated)" /* ends a cut string value */

typedef enum qs_log_level {
  QS_LOG_DEBUG = 0,
  QS_LOG_INFO = 1,
  QS_LOG_WARN = 2,
  QS_LOG_ERROR = 3,
  QS_LOG_FATAL = 4,
} qs_log_level;

typedef enum qs_log_ftype { QS_LF_STR, QS_LF_INT, QS_LF_DBL, QS_LF_BOOL, QS_LF_RAW } qs_log_ftype;

typedef struct qs_log_field {
  const char *key;
  qs_log_ftype type;
  union {
    const char *s; /* QS_LF_STR (NULL logs null); QS_LF_RAW: already valid JSON */
    int64_t i;
    double d; /* NaN/Inf log as null */
    bool b;
  } v;
} qs_log_field;

#define QS_LSTR(k, x) ((qs_log_field){.key = (k), .type = QS_LF_STR, .v.s = (x)})
#define QS_LINT(k, x) ((qs_log_field){.key = (k), .type = QS_LF_INT, .v.i = (int64_t)(x)})
#define QS_LDBL(k, x) ((qs_log_field){.key = (k), .type = QS_LF_DBL, .v.d = (double)(x)})
#define QS_LBOOL(k, x) ((qs_log_field){.key = (k), .type = QS_LF_BOOL, .v.b = (x)})
#define QS_LJSON(k, x) ((qs_log_field){.key = (k), .type = QS_LF_RAW, .v.s = (x)})

typedef struct qs_log {
  char service[48];
  qs_log_level level; /* lines below this level are dropped */
  int fd;             /* 2 (stderr) unless a test redirects it */
} qs_log;

/* Initialise: service name (truncated to 47 bytes), threshold, output fd. */
void qs_log_init(qs_log *log, const char *service, qs_log_level level, int fd);

/* "debug" | "info" | "warn" | "error" (case-insensitive) -> level. -QS_ERR_INVALID otherwise. */
int qs_log_level_parse(const char *s, qs_log_level *out);
const char *qs_log_level_name(qs_log_level level);

/* Format one line into buf (cap >= 512; always NUL-terminated, ends with '\n'); returns its
 * length. The clock value is epoch ms (tests pass a fixed one). Exposed for tests; qs_log_write
 * uses it. */
size_t qs_log_format(char *buf, size_t cap, const qs_log *log, int64_t now_ms, qs_log_level level,
                     const char *msg, const qs_log_field *fields, size_t n);

/* Write one line if level >= log->level. */
void qs_log_write(const qs_log *log, qs_log_level level, const char *msg,
                  const qs_log_field *fields, size_t n);

/* The field list is given as a compound literal with a leading placeholder, so calls with no
 * fields are valid C: qs_log_info(&log, "msg"). */
#define QS_LOG_AT(log, level, msg, ...)                                                            \
  qs_log_write((log), (level), (msg), ((const qs_log_field[]){{0}, __VA_ARGS__}) + 1,              \
               sizeof((const qs_log_field[]){{0}, __VA_ARGS__}) / sizeof(qs_log_field) - 1)
#define qs_log_debug(log, msg, ...) QS_LOG_AT(log, QS_LOG_DEBUG, msg, __VA_ARGS__)
#define qs_log_info(log, msg, ...) QS_LOG_AT(log, QS_LOG_INFO, msg, __VA_ARGS__)
#define qs_log_warn(log, msg, ...) QS_LOG_AT(log, QS_LOG_WARN, msg, __VA_ARGS__)
#define qs_log_error(log, msg, ...) QS_LOG_AT(log, QS_LOG_ERROR, msg, __VA_ARGS__)

/* JSON-escape the n bytes at s into out (not NUL-terminated); returns bytes written. Stops before
 * an escape or character that would not fit; *consumed (may be NULL) says how many input bytes made
 * it. Control characters become \uXXXX, invalid UTF-8 becomes U+FFFD. */
size_t qs_json_escape(char *out, size_t cap, const char *s, size_t n, size_t *consumed);

#endif
