/* event_fast.c — qs_event_from_json's single-pass, allocation-free decoder for the plain shape
 * producers write (see qs/event.h).
 *
 * Every branch that meets something outside the accepted subset returns 0 (not handled); the
 * caller then uses the cJSON decoder (qs_event_from_json_tree). So this file can only make
 * decoding faster, never change its outcome, provided each accepted value is decoded exactly as
 * event.c does: strings copied byte for byte, numbers by strtod on the same text (as cJSON),
 * integers accepted only when integral and within 2^53, nulls, booleans and enum names as in
 * event.c's decode_field. tests/unit/test_event.c checks that equivalence on valid and mutated
 * bodies.
 */
#include "qs/event.h"

#include "event_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
  K_EVENT_ID,
  K_MAGNITUDE,
  K_MAG_TYPE,
  K_PLACE,
  K_TIME,
  K_UPDATED,
  K_LONGITUDE,
  K_LATITUDE,
  K_DEPTH_KM,
  K_EVENT_TYPE,
  K_STATUS,
  K_TSUNAMI_FLAG,
  K_ALERT_LEVEL,
  K_NET,
  K_SIG,
  K_REGION,
  K_SOURCE,
  K_INGESTED_AT,
  K_IDS,
  K_CHANGE,
  K_SUPERSEDED_BY,
  K_COUNT
};

static const char *const names[K_COUNT] = {
    "event_id",    "magnitude", "mag_type",     "place",      "time",   "updated",
    "longitude",   "latitude",  "depth_km",     "event_type", "status", "tsunami_flag",
    "alert_level", "net",       "sig",          "region",     "source", "ingested_at",
    "ids",         "change",    "superseded_by"};

#define REQUIRED (((1u << K_COUNT) - 1) & ~(1u << K_CHANGE) & ~(1u << K_SUPERSEDED_BY))

typedef struct cur {
  const char *p, *end;
  uint64_t high; /* a string had a byte >= 0x80 (its UTF-8 must then be checked) */
} cur;

static void ws(cur *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Any byte of w that ends or escapes a plain string, or is a control character (< 0x20, '"',
 * '\\')? The usual exact SWAR tests: has-zero-byte and has-less-than. */
static inline int word_special(uint64_t w) {
  uint64_t less = (w - ONES * 0x20) & ~w & HIGHS;
  uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
  uint64_t quote = (q - ONES) & ~q & HIGHS, bslash = (b - ONES) & ~b & HIGHS;
  return (less | quote | bslash) != 0;
}

/* A string without escapes or control characters: *s, *n point into the input. Bytes >= 0x7f are
 * copied as they are, as cJSON does; whether they are valid UTF-8 is qs_event_validate's check
 * (the same one the cJSON path applies), and the id fields allow only [A-Za-z0-9_.:-]. */
static int str(cur *c, const char **s, size_t *n) {
  if (c->p >= c->end || *c->p != '"')
    return 0;
  const char *a = ++c->p;
  for (;;) { /* 8 plain bytes at a time, then byte by byte from the first special one */
    uint64_t w;
    if (c->end - c->p < 8)
      break;
    memcpy(&w, c->p, 8);
    if (word_special(w))
      break;
    c->high |= w & HIGHS;
    c->p += 8;
  }
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p;
    c->high |= ch & 0x80;
    if (ch == '"') {
      *s = a;
      *n = (size_t)(c->p - a);
      c->p++;
      return 1;
    }
    if (ch == '\\' || ch < 0x20)
      return 0;
    c->p++;
  }
  return 0;
}

static int copy_str(cur *c, char *dst, size_t cap) {
  const char *s;
  size_t n;
  if (!str(c, &s, &n) || n >= cap)
    return 0;
  memcpy(dst, s, n);
  dst[n] = '\0';
  return 1;
}

static int literal(cur *c, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
    return 0;
  c->p += n;
  return 1;
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* A number in strict JSON grammar, with the value strtod gives (cJSON's conversion). When the
 * decimal significand has at most 15 digits and the decimal exponent is within ±22, both the
 * significand and the power of ten are exact doubles, so one IEEE multiply or divide is the
 * correctly rounded result — the value strtod returns (Clinger's fast path); otherwise strtod. */
static int num(cur *c, double *out) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  const char *a = c->p, *p = c->p, *e = c->end;
  int neg = 0, digits = 0, exp10 = 0;
  uint64_t m = 0;
  if (p < e && *p == '-') {
    neg = 1;
    p++;
  }
  if (p >= e || !is_digit(*p))
    return 0;
  if (*p == '0') {
    p++;
  } else {
    while (p < e && is_digit(*p)) {
      if (digits < 19)
        m = m * 10 + (uint64_t)(*p - '0');
      digits++;
      p++;
    }
  }
  if (p < e && *p == '.') {
    p++;
    if (p >= e || !is_digit(*p))
      return 0;
    while (p < e && is_digit(*p)) {
      if (digits < 19) {
        m = m * 10 + (uint64_t)(*p - '0');
        exp10--;
      }
      if (m != 0 || *p != '0')
        digits++;
      p++;
    }
  }
  int has_exp = 0;
  if (p < e && (*p == 'e' || *p == 'E')) {
    has_exp = 1;
    p++;
    if (p < e && (*p == '+' || *p == '-'))
      p++;
    if (p >= e || !is_digit(*p))
      return 0;
    while (p < e && is_digit(*p))
      p++;
  }
  size_t n = (size_t)(p - a);
  if (!has_exp && digits <= 15 && exp10 >= -22) {
    double d = (double)m;
    d = exp10 < 0 ? d / pow10[-exp10] : d;
    *out = neg ? -d : d;
    c->p = p;
    return 1;
  }
  char buf[64];
  if (n >= sizeof buf)
    return 0;
  memcpy(buf, a, n);
  buf[n] = '\0';
  *out = strtod(buf, NULL);
  if (!isfinite(*out))
    return 0;
  c->p = p;
  return 1;
}

static int integer(cur *c, int64_t *out) {
  double d;
  if (!num(c, &d) || d != floor(d) || fabs(d) > 9007199254740992.0)
    return 0;
  *out = (int64_t)d;
  return 1;
}

static int nullable_num(cur *c, bool *has, double *out) {
  if (literal(c, "null")) {
    *has = false;
    *out = 0.0;
    return 1;
  }
  *has = true;
  return num(c, out);
}

static const unsigned char name_len[K_COUNT] = {8,  9,  8, 5, 4, 7, 9,  8, 8, 10, 6,
                                                12, 11, 3, 3, 6, 6, 11, 3, 6, 13};

static int key_of(const char *s, size_t n) {
  for (int k = 0; k < K_COUNT; k++)
    if (name_len[k] == n && s[0] == names[k][0] && memcmp(s, names[k], n) == 0)
      return k;
  return -1;
}

static int value(cur *c, int k, qs_event *ev) {
  char tmp[QS_EVENT_SHORT_MAX + 1];
  int64_t i64;
  const char *s;
  size_t n;
  switch (k) {
  case K_EVENT_ID:
    return copy_str(c, ev->event_id, sizeof ev->event_id);
  case K_MAGNITUDE:
    return nullable_num(c, &ev->has_magnitude, &ev->magnitude);
  case K_MAG_TYPE:
    return copy_str(c, ev->mag_type, sizeof ev->mag_type);
  case K_PLACE:
    return copy_str(c, ev->place, sizeof ev->place);
  case K_TIME:
    return integer(c, &ev->time);
  case K_UPDATED:
    return integer(c, &ev->updated);
  case K_INGESTED_AT:
    return integer(c, &ev->ingested_at);
  case K_LONGITUDE:
    return num(c, &ev->longitude);
  case K_LATITUDE:
    return num(c, &ev->latitude);
  case K_DEPTH_KM:
    return nullable_num(c, &ev->has_depth, &ev->depth_km);
  case K_EVENT_TYPE:
    return copy_str(c, ev->event_type, sizeof ev->event_type);
  case K_STATUS:
    return copy_str(c, ev->status, sizeof ev->status);
  case K_NET:
    return copy_str(c, ev->net, sizeof ev->net);
  case K_REGION:
    return copy_str(c, ev->region, sizeof ev->region);
  case K_SOURCE:
    return copy_str(c, ev->source, sizeof ev->source);
  case K_SUPERSEDED_BY:
    if (literal(c, "null")) {
      ev->superseded_by[0] = '\0';
      return 1;
    }
    return copy_str(c, ev->superseded_by, sizeof ev->superseded_by);
  case K_TSUNAMI_FLAG:
    if (literal(c, "true"))
      ev->tsunami_flag = true;
    else if (literal(c, "false"))
      ev->tsunami_flag = false;
    else
      return 0;
    return 1;
  case K_ALERT_LEVEL:
    if (literal(c, "null")) {
      ev->alert_level = QS_ALERT_NONE;
      return 1;
    }
    return copy_str(c, tmp, sizeof tmp) && qs_alert_level_parse(tmp, &ev->alert_level) == 0;
  case K_SIG:
    if (!integer(c, &i64) || i64 < 0 || i64 > QS_EVENT_SIG_MAX)
      return 0;
    ev->sig = (int32_t)i64;
    return 1;
  case K_CHANGE:
    return copy_str(c, tmp, sizeof tmp) && qs_event_change_parse(tmp, &ev->change) == 0;
  case K_IDS:
    if (c->p >= c->end || *c->p != '[')
      return 0;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == ']') {
      c->p++;
      return 1;
    }
    for (;;) {
      ws(c);
      if (!str(c, &s, &n) || qs_event_ids_add(ev, s, n) != 0)
        return 0;
      ws(c);
      if (c->p < c->end && *c->p == ',') {
        c->p++;
        continue;
      }
      if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 1;
      }
      return 0;
    }
  }
  return 0;
}

int qs_event_from_json_fast(qs_event *ev, const char *json, size_t len) {
  if (len > QS_EVENT_JSON_MAX)
    return 0;
  qs_event_init(ev);
  cur c = {json, json + len, 0};
  unsigned seen = 0;
  int hint = 0; /* producers write the members in one order: try the next one first */
  ws(&c);
  if (c.p >= c.end || *c.p != '{')
    return 0;
  c.p++;
  ws(&c);
  if (c.p < c.end && *c.p == '}')
    return 0; /* empty object: let the codec name the missing field */
  for (;;) {
    const char *s;
    size_t n;
    ws(&c);
    int k;
    size_t hl = hint < K_COUNT ? name_len[hint] : 0;
    if (hl && (size_t)(c.end - c.p) > hl + 2 && c.p[0] == '"' && c.p[hl + 1] == '"' &&
        memcmp(c.p + 1, names[hint], hl) == 0) {
      k = hint; /* the expected member: no scan of its name */
      c.p += hl + 2;
    } else {
      if (!str(&c, &s, &n) || n == 0)
        return 0;
      k = key_of(s, n);
    }
    hint = k + 1;
    if (k < 0 || (seen & (1u << k)))
      return 0;
    seen |= 1u << k;
    ws(&c);
    if (c.p >= c.end || *c.p != ':')
      return 0;
    c.p++;
    ws(&c);
    if (!value(&c, k, ev))
      return 0;
    ws(&c);
    if (c.p < c.end && *c.p == ',') {
      c.p++;
      continue;
    }
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      break;
    }
    return 0;
  }
  for (; c.p < c.end; c.p++)
    if (*c.p != ' ' && *c.p != '\t' && *c.p != '\n' && *c.p != '\r' && *c.p != '\0')
      return 0;
  if ((seen & REQUIRED) != REQUIRED)
    return 0;
  /* Strings of ASCII only need no UTF-8 check (their lengths were checked while copying). */
  return (c.high ? qs_event_validate(ev, NULL, 0) : qs_event_validate_values(ev, NULL, 0)) == 0;
}
