/* cron.c — cron expression parsing and next-time search (see cron.h). The search walks forward
 * skipping whole months, days and hours that cannot match, so it takes at most a few thousand
 * steps for any expression. */
#include "cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/timeutil.h"

static int parse_int(const char **s, long *out) {
  char *end;
  if (**s < '0' || **s > '9')
    return -1;
  *out = strtol(*s, &end, 10);
  *s = end;
  return 0;
}

/* One field into a bit set over [lo, hi]. */
static int parse_field(const char *f, size_t len, long lo, long hi, uint64_t *bits, int *star) {
  char buf[128];
  if (len == 0 || len >= sizeof buf)
    return -1;
  memcpy(buf, f, len);
  buf[len] = '\0';
  *bits = 0;
  *star = strcmp(buf, "*") == 0;
  if (strstr(buf, ",,") || buf[0] == ',' || buf[len - 1] == ',')
    return -1; /* strtok_r would skip the empty item */
  char *save = NULL;
  for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
    const char *s = item;
    long a, b, step = 1;
    if (*s == '*') {
      a = lo;
      b = hi;
      s++;
    } else {
      if (parse_int(&s, &a))
        return -1;
      b = a;
      if (*s == '-') {
        s++;
        if (parse_int(&s, &b))
          return -1;
      }
    }
    if (*s == '/') {
      s++;
      if (parse_int(&s, &step) || step < 1 || step > hi)
        return -1;
      if (item[0] != '*' && strchr(item, '-') == NULL)
        b = hi; /* "a/n" means a-hi/n */
    }
    if (*s || a < lo || b > hi || a > b)
      return -1;
    for (long v = a; v <= b; v += step)
      *bits |= UINT64_C(1) << v;
  }
  return 0;
}

int bw_cron_parse(bw_cron *c, const char *expr, char *err, size_t errlen) {
  static const struct {
    const char *name, *expr;
  } macros[] = {{"@hourly", "0 * * * *"},  {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
                {"@weekly", "0 0 * * 0"},  {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
                {"@annually", "0 0 1 1 *"}};
  for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
    if (strcmp(expr, macros[i].name) == 0)
      expr = macros[i].expr;
  static const char *names[] = {"minute", "hour", "day-of-month", "month", "day-of-week"};
  static const long lo[] = {0, 0, 1, 1, 0}, hi[] = {59, 23, 31, 12, 7};
  uint64_t bits[5];
  int star[5];
  const char *s = expr;
  for (int i = 0; i < 5; i++) {
    while (*s == ' ' || *s == '\t')
      s++;
    size_t n = strcspn(s, " \t");
    if (parse_field(s, n, lo[i], hi[i], &bits[i], &star[i])) {
      qs_set_reason(err, errlen, "cron \"%s\": bad %s field", expr, names[i]);
      return QS_ERR_INVALID;
    }
    s += n;
  }
  while (*s == ' ' || *s == '\t')
    s++;
  if (*s) {
    qs_set_reason(err, errlen, "cron \"%s\": expected 5 fields", expr);
    return QS_ERR_INVALID;
  }
  c->minute = bits[0];
  c->hour = (uint32_t)bits[1];
  c->dom = (uint32_t)bits[2];
  c->month = (uint32_t)bits[3];
  c->dow = (uint32_t)(bits[4] & 0x7f) | (uint32_t)((bits[4] >> 7) & 1); /* 7 is Sunday */
  c->dom_star = star[2];
  c->dow_star = star[4];
  return 0;
}

static int day_matches(const bw_cron *c, int64_t days, unsigned mday) {
  int wd = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
  int dom_ok = (c->dom >> mday) & 1, dow_ok = (c->dow >> wd) & 1;
  if (c->dom_star || c->dow_star)
    return dom_ok && dow_ok;
  return dom_ok || dow_ok;
}

int64_t bw_cron_next(const bw_cron *c, int64_t after_ms) {
  int64_t t = qs_window_start(after_ms, QS_MS_PER_MIN) + QS_MS_PER_MIN;
  int64_t limit = t + 5 * 366 * QS_MS_PER_DAY;
  while (t < limit) {
    int64_t days = qs_window_start(t, QS_MS_PER_DAY) / QS_MS_PER_DAY;
    int64_t y;
    unsigned m, d;
    qs_civil_from_days(days, &y, &m, &d);
    if (!((c->month >> m) & 1)) {
      unsigned nm = m == 12 ? 1 : m + 1;
      int64_t ny = m == 12 ? y + 1 : y;
      t = qs_days_from_civil(ny, nm, 1) * QS_MS_PER_DAY;
      continue;
    }
    if (!day_matches(c, days, d)) {
      t = (days + 1) * QS_MS_PER_DAY;
      continue;
    }
    int64_t in_day = t - days * QS_MS_PER_DAY;
    int h = (int)(in_day / QS_MS_PER_HOUR), mi = (int)(in_day % QS_MS_PER_HOUR / QS_MS_PER_MIN);
    if (!((c->hour >> h) & 1)) {
      t = days * QS_MS_PER_DAY + (int64_t)(h + 1) * QS_MS_PER_HOUR;
      continue;
    }
    if (!((c->minute >> mi) & 1)) {
      t += QS_MS_PER_MIN;
      continue;
    }
    return t;
  }
  return -1;
}
