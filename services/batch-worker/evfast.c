/* evfast.c — single-pass decoding of the fold's view of an event (see evfast.h).
 *
 * Every branch that meets something outside the accepted subset, or a value the codec would
 * reject, returns 0 (not handled); the caller then uses qs_event_from_json, which accepts or
 * rejects with its own reason. So this file can only make decoding faster, never change its
 * outcome, provided each accepted value is decoded exactly as event.c does (numbers by strtod on
 * the same text, as cJSON; integers only when integral and within 2^53; nulls, booleans and enum
 * names as in event.c's decode_field) and every check of qs_event_validate is made here too:
 * lengths, ranges, id characters, the superseded_by rule, the ids limits. Printable ASCII without
 * escapes is always valid UTF-8, so the codec's UTF-8 check holds for every string accepted here.
 */
#include "evfast.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The members, in the order producers (qs_event_to_json) write them: the scanner expects the
 * member after the one it just read first and only searches when the guess is wrong. */
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

/* Each name with its quotes, so a guess is one compare at the cursor. */
static const struct {
  const char *quoted;
  unsigned char len; /* of quoted */
} keys[K_COUNT] = {
#define KEY(s)                                                                                     \
  { "\"" s "\"", sizeof s + 1 }
    KEY("event_id"),      KEY("magnitude"),   KEY("mag_type"),  KEY("place"),
    KEY("time"),          KEY("updated"),     KEY("longitude"), KEY("latitude"),
    KEY("depth_km"),      KEY("event_type"),  KEY("status"),    KEY("tsunami_flag"),
    KEY("alert_level"),   KEY("net"),         KEY("sig"),       KEY("region"),
    KEY("source"),        KEY("ingested_at"), KEY("ids"),       KEY("change"),
    KEY("superseded_by"),
#undef KEY
};

/* keys[k].quoted as two words and the mask of its bytes (built before main). */
static uint64_t key_words[K_COUNT][2], key_masks[K_COUNT][2];

__attribute__((constructor)) static void key_words_init(void) {
  for (int k = 0; k < K_COUNT; k++) {
    uint8_t b[16] = {0}, m[16] = {0};
    memcpy(b, keys[k].quoted, keys[k].len);
    memset(m, 0xff, keys[k].len);
    memcpy(key_words[k], b, 16);
    memcpy(key_masks[k], m, 16);
  }
}

#define REQUIRED (((1u << K_COUNT) - 1) & ~(1u << K_CHANGE) & ~(1u << K_SUPERSEDED_BY))

typedef struct scan {
  const char *p, *end;
  bw_str superseded_by;
  size_t n_ids, ids_bytes; /* distinct ids as qs_event_ids_add keeps them */
  bw_str ids[QS_EVENT_IDS_MAX];
} scan;

static inline void ws(scan *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

/* A string of printable ASCII without escapes: *s, *n point into the input. 16 bytes at a time
 * (SSE2, part of x86-64; byte by byte elsewhere and near the end of the input): the first byte
 * that is '"', '\\' or outside 0x20..0x7e ends the plain run, and only a '"' ends the string. */
static int str(scan *c, const char **s, size_t *n) {
  if (c->p >= c->end || *c->p != '"')
    return 0;
  const char *a = ++c->p;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
  while (c->end - c->p >= 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)c->p);
    /* signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them too */
    __m128i special =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                     _mm_or_si128(_mm_cmplt_epi8(x, space), _mm_cmpeq_epi8(x, del)));
    unsigned m = (unsigned)_mm_movemask_epi8(special);
    if (m) {
      c->p += __builtin_ctz(m);
      break;
    }
    c->p += 16;
  }
#endif
  while (c->p < c->end) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') {
      *s = a;
      *n = (size_t)(c->p - a);
      c->p++;
      return 1;
    }
    if (ch == '\\' || ch < 0x20 || ch > 0x7e)
      return 0;
    c->p++;
  }
  return 0;
}

/* A string of at most max bytes (the codec's array size less the NUL). */
static int text(scan *c, size_t max, bw_str *out) {
  const char *s;
  size_t n;
  if (!str(c, &s, &n) || n > max)
    return 0;
  out->p = s;
  out->len = n;
  return 1;
}

static int literal(scan *c, const char *lit, size_t n) {
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
    return 0;
  c->p += n;
  return 1;
}

static int is_null(scan *c) { return literal(c, "null", 4); }

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* qs_event_id_is_valid, as a table. */
static const unsigned char id_char[256] = {
    ['-'] = 1, ['.'] = 1, [':'] = 1, ['_'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1};

static int id_ok(const char *s, size_t n) {
  if (n == 0 || n > QS_EVENT_ID_MAX)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!id_char[(unsigned char)s[i]])
      return 0;
  return 1;
}

static int str_eq(bw_str a, const char *b, size_t n) { return a.len == n && !memcmp(a.p, b, n); }

/* The value of 8 ASCII digits at p, or -1 when they are not all digits (the SWAR tests and
 * multiplies of simdjson / fast_float; the first digit is the lowest byte on little-endian). */
static inline int64_t eight_digits(const char *p) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t w;
  memcpy(&w, p, 8);
  if (((w + UINT64_C(0x4646464646464646)) | (w - UINT64_C(0x3030303030303030))) &
      UINT64_C(0x8080808080808080))
    return -1;
  w -= UINT64_C(0x3030303030303030);
  w = (w * 10) + (w >> 8);
  w = (((w & UINT64_C(0x000000FF000000FF)) * (100 + (UINT64_C(1000000) << 32))) +
       (((w >> 16) & UINT64_C(0x000000FF000000FF)) * (1 + (UINT64_C(10000) << 32)))) >>
      32;
  return (int64_t)w;
#else
  (void)p;
  return -1;
#endif
}

/* A number token in strict JSON grammar: its text, sign, the first 19 significant digits as an
 * integer (m), how many significant digits there are, and the decimal exponent of m's last
 * digit (fraction digits only; an exponent part sets has_exp and is left to strtod). */
typedef struct numtok {
  const char *a, *end;
  uint64_t m;
  int neg, digits, exp10, has_exp, has_frac;
} numtok;

static int num_scan(scan *c, numtok *t) {
  const char *p = c->p, *e = c->end;
  t->a = p;
  t->m = 0;
  t->neg = t->digits = t->exp10 = t->has_exp = t->has_frac = 0;
  if (p < e && *p == '-') {
    t->neg = 1;
    p++;
  }
  if (p >= e || !is_digit(*p))
    return 0;
  if (*p == '0') {
    p++;
  } else {
    int64_t v;
    while (e - p >= 8 && t->digits <= 11 && (v = eight_digits(p)) >= 0) {
      t->m = t->m * 100000000 + (uint64_t)v;
      t->digits += 8;
      p += 8;
    }
    while (p < e && is_digit(*p)) {
      if (t->digits < 19)
        t->m = t->m * 10 + (uint64_t)(*p - '0');
      t->digits++;
      p++;
    }
  }
  if (p < e && *p == '.') {
    t->has_frac = 1;
    p++;
    if (p >= e || !is_digit(*p))
      return 0;
    while (p < e && is_digit(*p)) {
      if (t->digits < 19) {
        t->m = t->m * 10 + (uint64_t)(*p - '0');
        t->exp10--;
      }
      if (t->m != 0 || *p != '0')
        t->digits++;
      p++;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    t->has_exp = 1;
    p++;
    if (p < e && (*p == '+' || *p == '-'))
      p++;
    if (p >= e || !is_digit(*p))
      return 0;
    while (p < e && is_digit(*p))
      p++;
  }
  t->end = p;
  return 1;
}

/* A token's value as strtod gives it (cJSON's conversion). When the decimal significand has at
 * most 15 digits and the decimal exponent is within ±22, both the significand and the power of
 * ten are exact doubles, so one IEEE multiply or divide is the correctly rounded result — the
 * value strtod returns (Clinger's fast path); otherwise strtod on the text. */
static int num_value(const numtok *t, double *out) {
  static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  if (!t->has_exp && t->digits <= 15 && t->exp10 >= -22) {
    double d = (double)t->m;
    d = t->exp10 < 0 ? d / pow10[-t->exp10] : d;
    *out = t->neg ? -d : d;
    return 1;
  }
  char buf[64];
  size_t n = (size_t)(t->end - t->a);
  if (n >= sizeof buf)
    return 0;
  memcpy(buf, t->a, n);
  buf[n] = '\0';
  *out = strtod(buf, NULL);
  return isfinite(*out);
}

static int num(scan *c, double *out) {
  numtok t;
  if (!num_scan(c, &t) || !num_value(&t, out))
    return 0;
  c->p = t.end;
  return 1;
}

/* A number within [lo, hi] (the codec's check_range). */
static int num_in(scan *c, double *out, double lo, double hi) {
  return num(c, out) && *out >= lo && *out <= hi;
}

static int nullable_num_in(scan *c, bool *has, double *out, double lo, double hi) {
  if (is_null(c)) {
    *has = false;
    *out = 0.0;
    return 1;
  }
  *has = true;
  return num_in(c, out, lo, hi);
}

/* An integral number within [lo, hi] (0 <= lo, hi <= 2^53: the codec's get_integer and range
 * checks). Plain digits up to 15 of them are their own value, exactly as a double; anything
 * else goes through the double as the codec does. */
static int integer_in(scan *c, int64_t *out, int64_t lo, int64_t hi) {
  numtok t;
  if (!num_scan(c, &t))
    return 0;
  if (!t.has_frac && !t.has_exp && t.digits <= 15) {
    int64_t v = t.neg ? -(int64_t)t.m : (int64_t)t.m;
    if (v < lo || v > hi)
      return 0;
    *out = v;
    c->p = t.end;
    return 1;
  }
  double d;
  if (!num_value(&t, &d) || d != floor(d) || d < (double)lo || d > (double)hi)
    return 0;
  *out = (int64_t)d;
  c->p = t.end;
  return 1;
}

static int one_of(bw_str s, const char *const *names, size_t n, size_t first) {
  for (size_t i = first; i < n; i++)
    if (names[i] && str_eq(s, names[i], strlen(names[i])))
      return (int)i;
  return -1;
}

static int ids(scan *c) {
  const char *s;
  size_t n;
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
    if (!str(c, &s, &n) || !id_ok(s, n))
      return 0;
    size_t i = 0; /* qs_event_ids_add: an id already present is a no-op */
    while (i < c->n_ids && !str_eq(c->ids[i], s, n))
      i++;
    if (i == c->n_ids) {
      if (c->n_ids >= QS_EVENT_IDS_MAX || c->ids_bytes + n + 1 > QS_EVENT_IDS_BYTES)
        return 0;
      c->ids[c->n_ids].p = s;
      c->ids[c->n_ids].len = n;
      c->n_ids++;
      c->ids_bytes += n + 1;
    }
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

static int value(scan *c, int k, bw_event_view *v) {
  static const char *const alerts[] = {"green", "yellow", "orange", "red"};
  static const char *const changes[] = {"new", "revision", "deleted", "superseded", "moved"};
  bw_str s;
  int64_t i64;
  int i;
  switch (k) {
  case K_EVENT_ID:
    return text(c, QS_EVENT_ID_MAX, &v->event_id) && id_ok(v->event_id.p, v->event_id.len);
  case K_MAGNITUDE:
    return nullable_num_in(c, &v->has_magnitude, &v->magnitude, -2.0, 10.5);
  case K_PLACE:
    return text(c, QS_EVENT_PLACE_MAX, &s);
  case K_MAG_TYPE:
  case K_EVENT_TYPE:
  case K_NET:
  case K_SOURCE:
    return text(c, QS_EVENT_SHORT_MAX, &s);
  case K_STATUS:
    if (!text(c, QS_EVENT_SHORT_MAX, &s))
      return 0;
    v->status_deleted = str_eq(s, "deleted", 7);
    return 1;
  case K_REGION:
    return text(c, QS_EVENT_SHORT_MAX, &v->region);
  case K_TIME:
    return integer_in(c, &v->time, 1, QS_EVENT_TIME_MAX);
  case K_UPDATED:
    return integer_in(c, &v->updated, 1, QS_EVENT_TIME_MAX);
  case K_INGESTED_AT:
    return integer_in(c, &v->ingested_at, 0, QS_EVENT_TIME_MAX);
  case K_LONGITUDE:
    return num_in(c, &(double){0}, -180.0, 180.0);
  case K_LATITUDE:
    return num_in(c, &(double){0}, -90.0, 90.0);
  case K_DEPTH_KM:
    return nullable_num_in(c, &v->has_depth, &v->depth_km, -10.0, 1000.0);
  case K_SUPERSEDED_BY:
    if (is_null(c)) {
      c->superseded_by.len = 0;
      return 1;
    }
    return text(c, QS_EVENT_ID_MAX, &c->superseded_by);
  case K_TSUNAMI_FLAG:
    if (literal(c, "true", 4))
      v->tsunami_flag = true;
    else if (literal(c, "false", 5))
      v->tsunami_flag = false;
    else
      return 0;
    return 1;
  case K_ALERT_LEVEL:
    return is_null(c) || (text(c, QS_EVENT_SHORT_MAX, &s) && one_of(s, alerts, 4, 0) >= 0);
  case K_SIG:
    return integer_in(c, &i64, 0, QS_EVENT_SIG_MAX);
  case K_CHANGE:
    if (!text(c, QS_EVENT_SHORT_MAX, &s) || (i = one_of(s, changes, 5, 0)) < 0)
      return 0;
    v->change = (qs_event_change)i;
    return 1;
  case K_IDS:
    return ids(c);
  }
  return 0;
}

/* The member name at the cursor: the guess first, else a search. -1 = not a known name. */
static int key(scan *c, int guess) {
  if (guess < K_COUNT && c->end - c->p >= 16) { /* every quoted name fits 16 bytes */
    uint64_t w[2];
    memcpy(w, c->p, 16);
    if (((w[0] ^ key_words[guess][0]) & key_masks[guess][0]) == 0 &&
        ((w[1] ^ key_words[guess][1]) & key_masks[guess][1]) == 0) {
      c->p += keys[guess].len;
      return guess;
    }
  } else if (guess < K_COUNT && (size_t)(c->end - c->p) >= keys[guess].len &&
             memcmp(c->p, keys[guess].quoted, keys[guess].len) == 0) {
    c->p += keys[guess].len;
    return guess;
  }
  const char *s;
  size_t n;
  if (!str(c, &s, &n))
    return -1;
  for (int k = 0; k < K_COUNT; k++)
    if (keys[k].len == n + 2 && memcmp(s, keys[k].quoted + 1, n) == 0)
      return k;
  return -1;
}

int bw_event_decode_fast(bw_event_view *v, const char *json, size_t len) {
  if (len > QS_EVENT_JSON_MAX)
    return 0;
  scan c; /* not zeroed whole: ids[] is 1 KiB and only n_ids of it is ever read */
  c.p = json;
  c.end = json + len;
  c.superseded_by.p = NULL;
  c.superseded_by.len = 0;
  c.n_ids = c.ids_bytes = 0;
  v->has_magnitude = v->has_depth = v->tsunami_flag = v->status_deleted = false;
  v->magnitude = v->depth_km = 0.0;
  v->change = QS_EVENT_NEW;
  unsigned seen = 0;
  int k = -1;
  ws(&c);
  if (c.p >= c.end || *c.p != '{')
    return 0;
  c.p++;
  ws(&c);
  if (c.p < c.end && *c.p == '}')
    return 0; /* empty object: let the codec name the missing field */
  for (;;) {
    ws(&c);
    k = key(&c, k + 1);
    if (k < 0 || (seen & (1u << k)))
      return 0;
    seen |= 1u << k;
    ws(&c);
    if (c.p >= c.end || *c.p != ':')
      return 0;
    c.p++;
    ws(&c);
    if (!value(&c, k, v))
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
  /* qs_event_validate's superseded_by rule. */
  if (v->change == QS_EVENT_SUPERSEDED) {
    if (!id_ok(c.superseded_by.p, c.superseded_by.len) ||
        str_eq(c.superseded_by, v->event_id.p, v->event_id.len))
      return 0;
  } else if (c.superseded_by.len != 0) {
    return 0;
  }
  v->n_other_ids = 0;
  for (size_t i = 0; i < c.n_ids; i++)
    if (!str_eq(c.ids[i], v->event_id.p, v->event_id.len))
      v->other_ids[v->n_other_ids++] = c.ids[i];
  return 1;
}

void bw_event_view_of(bw_event_view *v, const qs_event *ev) {
  v->event_id.p = ev->event_id;
  v->event_id.len = strlen(ev->event_id);
  v->region.p = ev->region;
  v->region.len = strlen(ev->region);
  v->time = ev->time;
  v->updated = ev->updated;
  v->ingested_at = ev->ingested_at;
  v->has_magnitude = ev->has_magnitude;
  v->magnitude = ev->has_magnitude ? ev->magnitude : 0.0;
  v->has_depth = ev->has_depth;
  v->depth_km = ev->has_depth ? ev->depth_km : 0.0;
  v->tsunami_flag = ev->tsunami_flag;
  v->status_deleted = strcmp(ev->status, "deleted") == 0;
  v->change = ev->change;
  v->n_other_ids = 0;
  for (size_t i = 0; i < qs_event_ids_count(ev); i++) {
    const char *id = qs_event_ids_at(ev, i);
    if (strcmp(id, ev->event_id) != 0) {
      v->other_ids[v->n_other_ids].p = id;
      v->other_ids[v->n_other_ids].len = strlen(id);
      v->n_other_ids++;
    }
  }
}

int bw_event_decode(bw_event_view *v, qs_event *scratch, const char *json, size_t len, char *why,
                    size_t whylen) {
  if (bw_event_decode_fast(v, json, len)) {
    if (why && whylen)
      why[0] = '\0';
    return 0;
  }
  int rc = qs_event_from_json(scratch, json, len, why, whylen);
  if (rc == 0)
    bw_event_view_of(v, scratch);
  return rc;
}
