/* log.c — JSON-line logging: format into a stack buffer, one write(2) per line.
 *
 * Invariants: a line is always valid JSON and ends with '\n'; nothing here allocates; a string
 * value longer than QS_LOG_VALUE_MAX (or than the room left) is cut and ends with QS_LOG_CUT_MARK,
 * any other field that does not fit is dropped whole, and then the line ends with
 * "truncated":true; that marker and the closing "}\n" always fit because the formatter reserves
 * room for them (TAIL_RESERVE).
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
  bool full;       /* the last put did not fit (the caller rolls the field back) */
  bool truncated;  /* a value was cut or a field dropped: the line says so */
} linebuf;

#define CUT_MARK_LEN (sizeof QS_LOG_CUT_MARK - 1)

static void put(linebuf *b, const char *s, size_t n) {
  if (b->full)
    return;
  if (b->len + n > b->cap) {
    b->full = true;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void put_str(linebuf *b, const char *s) { put(b, s, strlen(s)); }

/* Escaped text that must appear whole (keys, the service name): does not fit = full. */
static void put_escaped(linebuf *b, const char *s) {
  if (b->full)
    return;
  size_t n = strlen(s), consumed;
  b->len += qs_json_escape(b->p + b->len, b->cap - b->len, s, n, &consumed);
  if (consumed < n)
    b->full = true;
}

/* A quoted string value, cut at QS_LOG_VALUE_MAX escaped bytes or at the room left, whichever is
 * less; a cut value ends with QS_LOG_CUT_MARK. Full only when not even the marker fits. */
static void put_string_value(linebuf *b, const char *s) {
  if (b->full || b->cap - b->len < 2 + CUT_MARK_LEN) {
    b->full = true;
    return;
  }
  size_t limit = b->cap - b->len - 2 - CUT_MARK_LEN, n = strlen(s), consumed;
  if (limit > QS_LOG_VALUE_MAX)
    limit = QS_LOG_VALUE_MAX;
  b->p[b->len++] = '"';
  b->len += qs_json_escape(b->p + b->len, limit, s, n, &consumed);
  if (consumed < n) {
    memcpy(b->p + b->len, QS_LOG_CUT_MARK, CUT_MARK_LEN);
    b->len += CUT_MARK_LEN;
    b->truncated = true;
  }
  b->p[b->len++] = '"';
}

static void put_key(linebuf *b, const char *key) {
  put(b, ",\"", 2);
  put_escaped(b, key);
  put(b, "\":", 2);
}

static void put_value(linebuf *b, const qs_log_field *f) {
  char num[40];
  switch (f->type) {
  case QS_LF_STR:
    if (f->v.s)
      put_string_value(b, f->v.s);
    else
      put_str(b, "null");
    break;
  case QS_LF_INT:
    put(b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)f->v.i));
    break;
  case QS_LF_DBL:
    if (isfinite(f->v.d))
      put(b, num, qs_double_shortest(num, sizeof num, f->v.d));
    else
      put_str(b, "null");
    break;
  case QS_LF_BOOL:
    put_str(b, f->v.b ? "true" : "false");
    break;
  case QS_LF_RAW: /* already JSON: cannot be cut, only dropped */
    put_str(b, f->v.s ? f->v.s : "null");
    break;
  }
}

size_t qs_log_format(char *buf, size_t cap, const qs_log *log, int64_t now_ms, qs_log_level level,
                     const char *msg, const qs_log_field *fields, size_t n) {
  if (cap < 512) /* the head: timestamp, level, a fully escaped 47-byte service name, a cut msg */
    QS_FATAL("log buffer too small (%zu)", cap);
  linebuf b = {.p = buf, .cap = cap - TAIL_RESERVE};
  char ts[40];
  qs_time_format_iso8601(now_ms, ts, sizeof ts);
  /* The head always fits: the service name is short (qs_log_init bounds it) and the message is
   * cut to the room left. */
  put_str(&b, "{\"ts\":\"");
  put_str(&b, ts);
  put_str(&b, "\",\"level\":\"");
  put_str(&b, qs_log_level_name(level));
  put_str(&b, "\",\"service\":\"");
  put_escaped(&b, log->service);
  put_str(&b, "\",\"msg\":");
  put_string_value(&b, msg ? msg : "");
  if (b.full)
    QS_FATAL("log line head does not fit in %zu bytes", cap);
  for (size_t i = 0; i < n; i++) {
    if (!fields[i].key)
      continue;
    size_t mark = b.len;
    put_key(&b, fields[i].key);
    put_value(&b, &fields[i]);
    if (b.full) { /* drop the half-written field; a smaller later one may still fit */
      b.len = mark;
      b.full = false;
      b.truncated = true;
    }
  }
  if (b.truncated) {
    static const char marker[] = ",\"truncated\":true";
    memcpy(buf + b.len, marker, sizeof marker - 1); /* inside TAIL_RESERVE */
    b.len += sizeof marker - 1;
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
