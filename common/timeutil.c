/* timeutil.c — calendar arithmetic (Howard Hinnant's days-from-civil algorithm), ISO-8601 and
 * Capture timestamp codecs, windows, durations. No TZ state, no locale, no allocation.
 */
#include "qs/timeutil.h"

#include "qs/error.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t qs_time_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t qs_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

void qs_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

int64_t qs_window_start(int64_t t, int64_t len) {
  int64_t r = t % len;
  return r < 0 ? t - r - len : t - r;
}

static void split(int64_t ms, int64_t *y, unsigned *mo, unsigned *d, unsigned *h, unsigned *mi,
                  unsigned *s, unsigned *msec) {
  int64_t day = qs_window_start(ms, QS_MS_PER_DAY);
  int64_t rem = ms - day;
  qs_civil_from_days(day / QS_MS_PER_DAY, y, mo, d);
  *h = (unsigned)(rem / QS_MS_PER_HOUR);
  *mi = (unsigned)(rem / QS_MS_PER_MIN % 60);
  *s = (unsigned)(rem / 1000 % 60);
  *msec = (unsigned)(rem % 1000);
}

static char *put2(char *p, unsigned v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
  return p + 2;
}

size_t qs_time_format_iso8601(int64_t ms, char *buf, size_t cap) {
  int64_t y;
  unsigned mo, d, h, mi, s, msec;
  split(ms, &y, &mo, &d, &h, &mi, &s, &msec);
  if (y >= 0 && y <= 9999 && cap >= 25) {
    /* The common case without snprintf (a window row formats two of these per commit). */
    char *p = buf;
    p = put2(p, (unsigned)(y / 100));
    p = put2(p, (unsigned)(y % 100));
    *p++ = '-';
    p = put2(p, mo);
    *p++ = '-';
    p = put2(p, d);
    *p++ = 'T';
    p = put2(p, h);
    *p++ = ':';
    p = put2(p, mi);
    *p++ = ':';
    p = put2(p, s);
    *p++ = '.';
    *p++ = (char)('0' + msec / 100);
    p = put2(p, msec % 100);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - buf);
  }
  int n = snprintf(buf, cap, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, mo, d, h, mi, s,
                   msec);
  return n < 0 ? 0 : (size_t)n;
}

size_t qs_time_format_capture(int64_t ms, char *buf, size_t cap) {
  int64_t y;
  unsigned mo, d, h, mi, s, msec;
  split(ms, &y, &mo, &d, &h, &mi, &s, &msec);
  unsigned h12 = h % 12 == 0 ? 12 : h % 12;
  int n = snprintf(buf, cap, "%u/%u/%lld %u:%02u:%02u %s", mo, d, (long long)y, h12, mi, s,
                   h < 12 ? "AM" : "PM");
  return n < 0 ? 0 : (size_t)n;
}

/* Read exactly `width` digits (width > 0) or 1..max digits (width == 0). */
static bool digits(const char **p, unsigned width, unsigned max, int64_t *out) {
  const char *s = *p;
  int64_t v = 0;
  unsigned n = 0;
  while (*s >= '0' && *s <= '9' && (width ? n < width : n < max)) {
    v = v * 10 + (*s - '0');
    s++, n++;
  }
  if (n == 0 || (width && n != width))
    return false;
  *p = s;
  *out = v;
  return true;
}

static int compose(int64_t y, int64_t mo, int64_t d, int64_t h, int64_t mi, int64_t s, int64_t msec,
                   int64_t off_min, int64_t *ms) {
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, (unsigned)mo) || h > 23 || mi > 59 ||
      s > 59)
    return QS_ERR_PARSE;
  int64_t days = qs_days_from_civil(y, (unsigned)mo, (unsigned)d);
  *ms = days * QS_MS_PER_DAY + h * QS_MS_PER_HOUR + mi * QS_MS_PER_MIN + s * 1000 + msec -
        off_min * QS_MS_PER_MIN;
  return 0;
}

int qs_time_parse_iso8601(const char *str, int64_t *ms) {
  const char *p = str;
  int64_t y, mo, d, h = 0, mi = 0, s = 0, msec = 0, off = 0;
  if (!str || !digits(&p, 4, 0, &y) || *p++ != '-' || !digits(&p, 2, 0, &mo) || *p++ != '-' ||
      !digits(&p, 2, 0, &d))
    return QS_ERR_PARSE;
  if (*p == '\0')
    return compose(y, mo, d, 0, 0, 0, 0, 0, ms);
  if (*p != 'T' && *p != 't' && *p != ' ')
    return QS_ERR_PARSE;
  p++;
  if (!digits(&p, 2, 0, &h) || *p++ != ':' || !digits(&p, 2, 0, &mi))
    return QS_ERR_PARSE;
  if (*p == ':') {
    p++;
    if (!digits(&p, 2, 0, &s))
      return QS_ERR_PARSE;
    if (*p == '.' || *p == ',') {
      p++;
      int64_t scale = 100;
      if (!(*p >= '0' && *p <= '9'))
        return QS_ERR_PARSE;
      for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
        msec += (*p - '0') * scale;
    }
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1;
    int64_t oh, om;
    if (!digits(&p, 2, 0, &oh))
      return QS_ERR_PARSE;
    if (*p == ':')
      p++;
    if (!digits(&p, 2, 0, &om) || oh > 23 || om > 59)
      return QS_ERR_PARSE;
    off = sign * (oh * 60 + om);
  } else {
    return QS_ERR_PARSE; /* a time without a zone is ambiguous */
  }
  if (*p != '\0')
    return QS_ERR_PARSE;
  return compose(y, mo, d, h, mi, s, msec, off, ms);
}

int qs_time_parse_capture(const char *str, int64_t *ms) {
  const char *p = str;
  int64_t mo, d, y, h, mi, s;
  if (!str || !digits(&p, 0, 2, &mo) || *p++ != '/' || !digits(&p, 0, 2, &d) || *p++ != '/' ||
      !digits(&p, 4, 0, &y) || *p++ != ' ' || !digits(&p, 0, 2, &h) || *p++ != ':' ||
      !digits(&p, 2, 0, &mi) || *p++ != ':' || !digits(&p, 2, 0, &s) || *p++ != ' ')
    return QS_ERR_PARSE;
  bool pm;
  if ((p[0] == 'A' || p[0] == 'P') && p[1] == 'M' && p[2] == '\0')
    pm = p[0] == 'P';
  else
    return QS_ERR_PARSE;
  if (h < 1 || h > 12)
    return QS_ERR_PARSE;
  h = h % 12 + (pm ? 12 : 0);
  return compose(y, mo, d, h, mi, s, 0, 0, ms);
}

int qs_time_parse_any(const char *s, int64_t *ms) {
  if (s && strchr(s, '/'))
    return qs_time_parse_capture(s, ms);
  return qs_time_parse_iso8601(s, ms);
}

int qs_duration_parse_ms(const char *str, int64_t *ms) {
  const char *p = str;
  int64_t v = 0;
  if (!str || !(*p >= '0' && *p <= '9'))
    return QS_ERR_PARSE;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (INT64_MAX - 9) / 10)
      return QS_ERR_PARSE;
    v = v * 10 + (*p - '0');
  }
  int64_t unit;
  if (*p == '\0' || strcmp(p, "s") == 0)
    unit = 1000;
  else if (strcmp(p, "ms") == 0)
    unit = 1;
  else if (strcmp(p, "m") == 0)
    unit = QS_MS_PER_MIN;
  else if (strcmp(p, "h") == 0)
    unit = QS_MS_PER_HOUR;
  else if (strcmp(p, "d") == 0)
    unit = QS_MS_PER_DAY;
  else
    return QS_ERR_PARSE;
  if (v > INT64_MAX / unit)
    return QS_ERR_PARSE;
  *ms = v * unit;
  return 0;
}
