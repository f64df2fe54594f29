/* log.c — JSON-line logging: format into a stack buffer, one write(2) per line.
 *
 * Invariants: a line is always valid JSON and ends with '\n'; nothing here allocates; a value that
 * does not fit is dropped and the line ends with "truncated":true; the closing '}' always fits
 * because the formatter reserves room for it.
 */
#include "qs/log.h"

#include "qs/buf.h"
#include "qs/error.h"
#include "qs/timeutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error", "fatal"};
#define TAIL_RESERVE 24 /* room for ,"truncated":true and "}\n" */

void qs_log_init(qs_log *log, const char *service, qs_log_level level, int fd) {
  snprintf(log->service, sizeof log->service, "%s", service ? service : "");
  log->level = level;
  log->fd = fd;
}

int qs_log_level_parse(const char *s, qs_log_level *out) {
  for (int i = QS_LOG_DEBUG; i <= QS_LOG_ERROR; i++) {
    if (s && strcasecmp(s, level_names[i]) == 0) {
      *out = (qs_log_level)i;
      return 0;
    }
  }
  return QS_ERR_INVALID;
}

const char *qs_log_level_name(qs_log_level level) {
  return (level >= QS_LOG_DEBUG && level <= QS_LOG_FATAL) ? level_names[level] : "unknown";
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned min;
  unsigned cp;
  if (c < 0x80)
    return 1;
  if ((c & 0xE0) == 0xC0) {
    len = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

size_t qs_json_escape(char *out, size_t cap, const char *str, size_t n, size_t *consumed_out) {
  const unsigned char *s = (const unsigned char *)str;
  size_t o = 0;
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    char esc[8];
    const char *piece = esc;
    size_t plen;
    size_t consumed = 1;
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c, plen = 2;
    } else if (c == '\n') {
      piece = "\\n", plen = 2;
    } else if (c == '\r') {
      piece = "\\r", plen = 2;
    } else if (c == '\t') {
      piece = "\\t", plen = 2;
    } else if (c < 0x20 || c == 0x7F) {
      plen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
    } else if (c < 0x80) {
      esc[0] = (char)c, plen = 1;
    } else {
      size_t len = utf8_seq(s + i, n - i);
      if (len == 0) {
        piece = "\xef\xbf\xbd", plen = 3; /* U+FFFD for a byte that is not valid UTF-8 */
      } else {
        piece = (const char *)s + i, plen = len, consumed = len;
      }
    }
    if (o + plen > cap)
      break; /* never split an escape or a character */
    memcpy(out + o, piece, plen);
    o += plen;
    i += consumed;
  }
  if (consumed_out)
    *consumed_out = i;
  return o;
}

typedef struct linebuf {
  char *p;
  size_t len, cap; /* cap excludes TAIL_RESERVE */
  bool truncated;
} linebuf;

static void put(linebuf *b, const char *s, size_t n) {
  if (b->truncated)
    return;
  if (b->len + n > b->cap) {
    b->truncated = true;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void put_str(linebuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_escaped(linebuf *b, const char *s) {
  if (b->truncated)
    return;
  size_t n = strlen(s), consumed;
  b->len += qs_json_escape(b->p + b->len, b->cap - b->len, s, n, &consumed);
  if (consumed < n)
    b->truncated = true;
}

static void put_key(linebuf *b, const char *key) {
  put(b, ",\"", 2);
  put_escaped(b, key);
  put(b, "\":", 2);
}

size_t qs_log_format(char *buf, size_t cap, const qs_log *log, int64_t now_ms, qs_log_level level,
                     const char *msg, const qs_log_field *fields, size_t n) {
  if (cap < TAIL_RESERVE + 64)
    QS_FATAL("log buffer too small (%zu)", cap);
  linebuf b = {.p = buf, .len = 0, .cap = cap - TAIL_RESERVE, .truncated = false};
  char ts[40];
  qs_time_format_iso8601(now_ms, ts, sizeof ts);
  put_str(&b, "{\"ts\":\"");
  put_str(&b, ts);
  put_str(&b, "\",\"level\":\"");
  put_str(&b, qs_log_level_name(level));
  put_str(&b, "\",\"service\":\"");
  put_escaped(&b, log->service);
  put_str(&b, "\",\"msg\":\"");
  put_escaped(&b, msg ? msg : "");
  put(&b, "\"", 1);
  for (size_t i = 0; i < n && !b.truncated; i++) {
    const qs_log_field *f = &fields[i];
    if (!f->key)
      continue;
    size_t mark = b.len;
    char num[40];
    put_key(&b, f->key);
    switch (f->type) {
    case QS_LF_STR:
      if (!f->v.s) {
        put_str(&b, "null");
      } else {
        put(&b, "\"", 1);
        put_escaped(&b, f->v.s);
        put(&b, "\"", 1);
      }
      break;
    case QS_LF_INT:
      put(&b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)f->v.i));
      break;
    case QS_LF_DBL:
      if (isfinite(f->v.d))
        put(&b, num, qs_double_shortest(num, sizeof num, f->v.d));
      else
        put_str(&b, "null");
      break;
    case QS_LF_BOOL:
      put_str(&b, f->v.b ? "true" : "false");
      break;
    case QS_LF_RAW:
      put_str(&b, f->v.s ? f->v.s : "null");
      break;
    }
    if (b.truncated) {
      /* Drop the half-written field; say so in a final marker field. */
      b.len = mark;
      b.truncated = false;
      b.cap += TAIL_RESERVE - 4; /* use the reserve for the marker only */
      put_str(&b, ",\"truncated\":true");
      b.truncated = true;
    }
  }
  memcpy(buf + b.len, "}\n", 3);
  return b.len + 2;
}

void qs_log_write(const qs_log *log, qs_log_level level, const char *msg,
                  const qs_log_field *fields, size_t n) {
  if (level < log->level)
    return;
  int64_t now_ms = qs_time_now_ms();
  char line[QS_LOG_LINE_MAX];
  size_t len = qs_log_format(line, sizeof line, log, now_ms, level, msg, fields, n);
  const char *p = line;
  while (len > 0) {
    ssize_t w = write(log->fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return; /* nowhere to report a failing log; drop the line */
    p += w;
    len -= (size_t)w;
  }
}
