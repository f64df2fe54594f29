/* params.c — query-string decoding and parameter validation (see params.h). */
#include "params.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/timeutil.h"

static int fail(api_query *q, const char *name, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(api_query *q, const char *name, int rc, const char *fmt, ...) {
  snprintf(q->bad_param, sizeof q->bad_param, "%s", name);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->err, sizeof q->err, fmt, ap);
  va_end(ap);
  return rc;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes s[0..len) into q->buf at *pos, NUL-terminated; returns the start or NULL. */
static const char *decode(api_query *q, const char *s, size_t len, size_t *pos) {
  size_t start = *pos;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (i + 2 >= len)
        return NULL;
      int a = hexval(s[i + 1]), b = hexval(s[i + 2]);
      if (a < 0 || b < 0)
        return NULL;
      c = (char)(a * 16 + b);
      i += 2;
    }
    if (c == '\0')
      return NULL;
    if (*pos + 1 >= sizeof q->buf)
      return NULL;
    q->buf[(*pos)++] = c;
  }
  if (*pos + 1 > sizeof q->buf)
    return NULL;
  q->buf[(*pos)++] = '\0';
  return q->buf + start;
}

int api_query_parse(api_query *q, const char *s, size_t len) {
  q->n = 0;
  q->err[0] = q->bad_param[0] = '\0';
  if (len >= sizeof q->buf)
    return fail(q, "query", QS_ERR_TOOBIG, "query string longer than %zu bytes", sizeof q->buf - 1);
  size_t pos = 0, i = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && s[j] != '&')
      j++;
    if (j > i) {
      const char *eq = memchr(s + i, '=', j - i);
      size_t nl = eq ? (size_t)(eq - (s + i)) : j - i;
      if (q->n == API_QUERY_MAX)
        return fail(q, "query", QS_ERR_TOOBIG, "more than %d query parameters", API_QUERY_MAX);
      const char *name = decode(q, s + i, nl, &pos);
      const char *value =
          eq ? decode(q, eq + 1, (size_t)(s + j - eq - 1), &pos) : decode(q, "", 0, &pos);
      if (!name || !value || !name[0])
        return fail(q, "query", QS_ERR_PARSE,
                    "malformed query parameter (bad %%-escape or empty name)");
      if (api_query_get(q, name))
        return fail(q, name, QS_ERR_PARSE, "%s: given more than once", name);
      q->p[q->n].name = name;
      q->p[q->n].value = value;
      q->n++;
    }
    i = j + 1;
  }
  return 0;
}

const char *api_query_get(const api_query *q, const char *name) {
  for (size_t i = 0; i < q->n; i++)
    if (strcmp(q->p[i].name, name) == 0)
      return q->p[i].value;
  return NULL;
}

int api_query_only(api_query *q, const char *const *allowed) {
  for (size_t i = 0; i < q->n; i++) {
    bool ok = false;
    for (const char *const *a = allowed; *a; a++)
      ok = ok || strcmp(*a, q->p[i].name) == 0;
    if (!ok) {
      char list[160] = "";
      size_t off = 0;
      for (const char *const *a = allowed; *a && off < sizeof list - 1; a++)
        off +=
            (size_t)snprintf(list + off, sizeof list - off, "%s%s", a == allowed ? "" : ", ", *a);
      return fail(q, q->p[i].name, QS_ERR_INVALID, "%.40s: unknown parameter (allowed: %s)",
                  q->p[i].name, allowed[0] ? list : "none");
    }
  }
  return 0;
}

int api_param_int(api_query *q, const char *name, int64_t def, int64_t min, int64_t max,
                  int64_t *out) {
  const char *v = api_query_get(q, name);
  if (!v) {
    *out = def;
    return 0;
  }
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!v[0] || *end || errno || v[0] == ' ' || v[0] == '+' || x < min || x > max)
    return fail(q, name, QS_ERR_INVALID, "%s=\"%.40s\": must be an integer %lld..%lld", name, v,
                (long long)min, (long long)max);
  *out = x;
  return 0;
}

int api_param_double(api_query *q, const char *name, double def, double min, double max,
                     double *out) {
  const char *v = api_query_get(q, name);
  if (!v) {
    *out = def;
    return 0;
  }
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (!v[0] || *end || errno || !isfinite(x) || v[0] == ' ' || x < min || x > max)
    return fail(q, name, QS_ERR_INVALID, "%s=\"%.40s\": must be a number %g..%g", name, v, min,
                max);
  *out = x;
  return 0;
}

/* A duration that carries a unit: a bare number is refused here (seconds or milliseconds would be
 * a guess). */
static bool has_unit(const char *v) {
  size_t n = strlen(v);
  return n > 0 && (v[n - 1] < '0' || v[n - 1] > '9');
}

static void fmt_dur(char *buf, size_t cap, int64_t ms) {
  if (ms % QS_MS_PER_DAY == 0)
    snprintf(buf, cap, "%lldd", (long long)(ms / QS_MS_PER_DAY));
  else if (ms % QS_MS_PER_HOUR == 0)
    snprintf(buf, cap, "%lldh", (long long)(ms / QS_MS_PER_HOUR));
  else if (ms % QS_MS_PER_MIN == 0)
    snprintf(buf, cap, "%lldm", (long long)(ms / QS_MS_PER_MIN));
  else if (ms % 1000 == 0)
    snprintf(buf, cap, "%llds", (long long)(ms / 1000));
  else
    snprintf(buf, cap, "%lldms", (long long)ms);
}

int api_param_duration(api_query *q, const char *name, int64_t def_ms, int64_t min_ms,
                       int64_t max_ms, int64_t *out_ms) {
  const char *v = api_query_get(q, name);
  if (!v) {
    *out_ms = def_ms;
    return 0;
  }
  int64_t ms;
  if (!has_unit(v) || qs_duration_parse_ms(v, &ms) != 0 || ms < min_ms || ms > max_ms) {
    char lo[32], hi[32];
    fmt_dur(lo, sizeof lo, min_ms);
    fmt_dur(hi, sizeof hi, max_ms);
    return fail(q, name, QS_ERR_INVALID,
                "%s=\"%.40s\": must be a duration with a unit (ms, s, m, h, d) from %s to %s", name,
                v, lo, hi);
  }
  *out_ms = ms;
  return 0;
}

int api_param_since(api_query *q, const char *name, int64_t now_ms, int64_t def_back_ms,
                    int64_t max_back_ms, int64_t *out_ms) {
  const char *v = api_query_get(q, name);
  if (!v) {
    *out_ms = def_back_ms < 0 ? INT64_MIN : now_ms - def_back_ms;
    return 0;
  }
  int64_t ms;
  char hi[32];
  fmt_dur(hi, sizeof hi, max_back_ms);
  if (has_unit(v) && qs_duration_parse_ms(v, &ms) == 0) {
    if (ms > max_back_ms)
      return fail(q, name, QS_ERR_INVALID, "%s=\"%.40s\": at most %s back", name, v, hi);
    *out_ms = now_ms - ms;
    return 0;
  }
  if (qs_time_parse_iso8601(v, &ms) == 0) {
    if (ms < now_ms - max_back_ms || ms > now_ms)
      return fail(q, name, QS_ERR_INVALID, "%s=\"%.40s\": must lie within the last %s", name, v,
                  hi);
    *out_ms = ms;
    return 0;
  }
  return fail(q, name, QS_ERR_INVALID,
              "%s=\"%.40s\": must be a duration back from now (e.g. 24h, 7d) or an ISO-8601 time",
              name, v);
}

int api_param_region(api_query *q, const char *name, char out[API_REGION_MAX + 1]) {
  const char *v = api_query_get(q, name);
  out[0] = '\0';
  if (!v)
    return 0;
  size_t n = strlen(v);
  bool ok = n >= 1 && n <= API_REGION_MAX;
  for (size_t i = 0; ok && i < n; i++) {
    char c = v[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
  }
  if (!ok)
    return fail(q, name, QS_ERR_INVALID,
                "%s=\"%.40s\": must be a region name, 1..63 characters of [A-Za-z0-9._:-]", name,
                v);
  memcpy(out, v, n + 1);
  return 0;
}

int api_param_enum(api_query *q, const char *name, const char *allowed, const char *def,
                   const char **out) {
  const char *v = api_query_get(q, name);
  if (!v) {
    *out = def;
    return 0;
  }
  size_t n = strlen(v);
  for (const char *a = allowed; *a;) {
    const char *e = strchr(a, '|');
    size_t al = e ? (size_t)(e - a) : strlen(a);
    if (al == n && memcmp(a, v, n) == 0) {
      *out = a; /* points into allowed: the caller compares by prefix */
      return 0;
    }
    a = e ? e + 1 : a + al;
  }
  return fail(q, name, QS_ERR_INVALID, "%s=\"%.40s\": must be one of %s", name, v, allowed);
}

int api_param_bbox(api_query *q, const char *name, api_bbox *out) {
  const char *v = api_query_get(q, name);
  memset(out, 0, sizeof *out);
  if (!v)
    return 0;
  double x[4];
  const char *p = v;
  for (int i = 0; i < 4; i++) {
    char *end;
    errno = 0;
    x[i] = strtod(p, &end);
    if (end == p || errno || !isfinite(x[i]) || *p == ' ' || (i < 3 && *end != ',') ||
        (i == 3 && *end))
      goto bad;
    p = end + 1;
  }
  if (x[0] < -180 || x[0] > 180 || x[2] < -180 || x[2] > 180 || x[1] < -90 || x[1] > 90 ||
      x[3] < -90 || x[3] > 90 || x[1] > x[3])
    goto bad;
  out->set = true;
  out->min_lon = x[0];
  out->min_lat = x[1];
  out->max_lon = x[2];
  out->max_lat = x[3];
  return 0;
bad:
  return fail(q, name, QS_ERR_INVALID,
              "%s=\"%.60s\": must be minLon,minLat,maxLon,maxLat in degrees (longitudes -180..180, "
              "latitudes -90..90, minLat <= maxLat; minLon > maxLon crosses the antimeridian)",
              name, v);
}
