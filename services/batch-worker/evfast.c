/* evfast.c — single-pass decoding of the fold's view of an event (see evfast.h).
 *
 * Every branch that meets something outside the accepted subset, or a value the codec would
 * reject, returns NULL / 0 (not handled); the caller then uses qs_event_from_json, which accepts
 * or rejects with its own reason. So this file can only make decoding faster, never change its
 * outcome, provided each accepted value is decoded exactly as event.c does (numbers by strtod on
 * the same text, as cJSON; integers only when integral and within 2^53; nulls, booleans and enum
 * names as in event.c's decode_field) and every check of qs_event_validate is made here too:
 * lengths, ranges, id characters, the superseded_by rule, the ids limits. Printable ASCII without
 * escapes is always valid UTF-8, so the codec's UTF-8 check holds for every string accepted here.
 *
 * The scanners take the cursor by value and return the new one (NULL = not handled), so it stays
 * in a register instead of going through memory at every byte.
 */
#include "evfast.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define HOT static inline __attribute__((always_inline))

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

/* Each name with its quotes and the colon of compact JSON, so a right guess is one compare of
 * at most 16 bytes at the cursor. */
static const struct {
  const char *text;
  unsigned char len; /* of text */
} keys[K_COUNT] = {
#define KEY(s)                                                                                     \
  { "\"" s "\":", sizeof s + 2 }
    KEY("event_id"),      KEY("magnitude"),   KEY("mag_type"),  KEY("place"),
    KEY("time"),          KEY("updated"),     KEY("longitude"), KEY("latitude"),
    KEY("depth_km"),      KEY("event_type"),  KEY("status"),    KEY("tsunami_flag"),
    KEY("alert_level"),   KEY("net"),         KEY("sig"),       KEY("region"),
    KEY("source"),        KEY("ingested_at"), KEY("ids"),       KEY("change"),
    KEY("superseded_by"),
#undef KEY
};

/* keys[k].text as two words and the mask of its bytes (built before main). */
static uint64_t key_words[K_COUNT][2], key_masks[K_COUNT][2];

__attribute__((constructor)) static void key_words_init(void) {
  for (int k = 0; k < K_COUNT; k++) {
    uint8_t b[16] = {0}, m[16] = {0};
    memcpy(b, keys[k].text, keys[k].len);
    memset(m, 0xff, keys[k].len);
    memcpy(key_words[k], b, 16);
    memcpy(key_masks[k], m, 16);
  }
}

#define REQUIRED (((1u << K_COUNT) - 1) & ~(1u << K_CHANGE) & ~(1u << K_SUPERSEDED_BY))

/* What the scan keeps besides the view: superseded_by (only checked) and the distinct ids as
 * qs_event_ids_add keeps them (the view takes those other than event_id at the end). */
typedef struct extra {
  bw_str superseded_by;
  size_t n_ids, ids_bytes;
  bw_str ids[QS_EVENT_IDS_MAX];
} extra;

HOT int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

HOT const char *ws(const char *p, const char *e) {
  while (p < e && is_ws(*p))
    p++;
  return p;
}

/* A string of printable ASCII without escapes at p: out points into the input. 16 bytes at a
 * time (SSE2, part of x86-64; byte by byte elsewhere and near the end of the input): the first
 * byte that is '"', '\\' or outside 0x20..0x7e ends the plain run; only a '"' ends the string. */
HOT const char *str(const char *p, const char *e, bw_str *out) {
  if (p >= e || *p != '"')
    return NULL;
  const char *a = ++p;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
  while (e - p >= 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    /* signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them too */
    __m128i special =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, bslash)),
                     _mm_or_si128(_mm_cmplt_epi8(x, space), _mm_cmpeq_epi8(x, del)));
    unsigned m = (unsigned)_mm_movemask_epi8(special);
    if (m) {
      p += __builtin_ctz(m);
      break;
    }
    p += 16;
  }
#endif
  for (; p < e; p++) {
    unsigned char ch = (unsigned char)*p;
    if (ch == '"') {
      out->p = a;
      out->len = (size_t)(p - a);
      return p + 1;
    }
    if (ch == '\\' || ch < 0x20 || ch > 0x7e)
      return NULL;
  }
  return NULL;
}

/* A string of at most max bytes (the codec's array size less the NUL). */
HOT const char *text(const char *p, const char *e, size_t max, bw_str *out) {
  p = str(p, e, out);
  return p && out->len <= max ? p : NULL;
}

HOT const char *literal(const char *p, const char *e, const char *lit, size_t n) {
  return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

HOT const char *null_at(const char *p, const char *e) { return literal(p, e, "null", 4); }

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

static int id_ok(bw_str s) {
  if (s.len == 0 || s.len > QS_EVENT_ID_MAX)
    return 0;
  for (size_t i = 0; i < s.len; i++)
    if (!id_char[(unsigned char)s.p[i]])
      return 0;
  return 1;
}

static int str_eq(bw_str a, const char *b, size_t n) { return a.len == n && !memcmp(a.p, b, n); }

/* The value of 8 ASCII digits at p, or -1 when they are not all digits (the SWAR tests and
 * multiplies of simdjson / fast_float; the first digit is the lowest byte on little-endian). */
HOT int64_t eight_digits(const char *p) {
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

HOT const char *num_scan(const char *p, const char *e, numtok *t) {
  uint64_t m = 0;
  int digits = 0, exp10 = 0;
  t->a = p;
  t->neg = t->has_exp = t->has_frac = 0;
  if (p < e && *p == '-') {
    t->neg = 1;
    p++;
  }
  if (p >= e || !is_digit(*p))
    return NULL;
  if (*p == '0') {
    p++;
  } else {
    int64_t v;
    while (e - p >= 8 && digits <= 11 && (v = eight_digits(p)) >= 0) {
      m = m * 100000000 + (uint64_t)v;
      digits += 8;
      p += 8;
    }
    for (; p < e && is_digit(*p); p++) {
      if (digits < 19)
        m = m * 10 + (uint64_t)(*p - '0');
      digits++;
    }
  }
  if (p < e && *p == '.') {
    t->has_frac = 1;
    p++;
    if (p >= e || !is_digit(*p))
      return NULL;
    for (; p < e && is_digit(*p); p++) {
      if (digits < 19) {
        m = m * 10 + (uint64_t)(*p - '0');
        exp10--;
      }
      if (m != 0 || *p != '0')
        digits++;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    t->has_exp = 1;
    p++;
    if (p < e && (*p == '+' || *p == '-'))
      p++;
    if (p >= e || !is_digit(*p))
      return NULL;
    while (p < e && is_digit(*p))
      p++;
  }
  t->m = m;
  t->digits = digits;
  t->exp10 = exp10;
  t->end = p;
  return p;
}

/* A token's value as strtod gives it (cJSON's conversion). When the decimal significand has at
 * most 15 digits and the decimal exponent is within ±22, both the significand and the power of
 * ten are exact doubles, so one IEEE multiply or divide is the correctly rounded result — the
 * value strtod returns (Clinger's fast path); otherwise strtod on the text. */
HOT int num_value(const numtok *t, double *out) {
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

/* A number within [lo, hi] (the codec's finite and check_range tests). */
HOT const char *num_in(const char *p, const char *e, double *out, double lo, double hi) {
  numtok t;
  p = num_scan(p, e, &t);
  return p && num_value(&t, out) && *out >= lo && *out <= hi ? p : NULL;
}

HOT const char *nullable_num_in(const char *p, const char *e, bool *has, double *out, double lo,
                                double hi) {
  const char *q = null_at(p, e);
  if (q) {
    *has = false;
    *out = 0.0;
    return q;
  }
  *has = true;
  return num_in(p, e, out, lo, hi);
}

/* An integral number within [lo, hi] (0 <= lo, hi <= 2^53: the codec's get_integer and range
 * checks). Plain digits, at most 15 of them, are their own value, exactly as a double; anything
 * else goes through the double as the codec does. */
HOT const char *integer_in(const char *p, const char *e, int64_t *out, int64_t lo, int64_t hi) {
  numtok t;
  if (!(p = num_scan(p, e, &t)))
    return NULL;
  if (!t.has_frac && !t.has_exp && t.digits <= 15) {
    int64_t v = t.neg ? -(int64_t)t.m : (int64_t)t.m;
    if (v < lo || v > hi)
      return NULL;
    *out = v;
    return p;
  }
  double d;
  if (!num_value(&t, &d) || d != floor(d) || d < (double)lo || d > (double)hi)
    return NULL;
  *out = (int64_t)d;
  return p;
}

static int one_of(bw_str s, const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (str_eq(s, names[i], strlen(names[i])))
      return (int)i;
  return -1;
}

static const char *ids(const char *p, const char *e, extra *x) {
  bw_str s;
  if (p >= e || *p != '[')
    return NULL;
  p = ws(p + 1, e);
  if (p < e && *p == ']')
    return p + 1;
  for (;;) {
    p = ws(p, e);
    if (!(p = str(p, e, &s)) || !id_ok(s))
      return NULL;
    size_t i = 0; /* qs_event_ids_add: an id already present is a no-op */
    while (i < x->n_ids && !str_eq(x->ids[i], s.p, s.len))
      i++;
    if (i == x->n_ids) {
      if (x->n_ids >= QS_EVENT_IDS_MAX || x->ids_bytes + s.len + 1 > QS_EVENT_IDS_BYTES)
        return NULL;
      x->ids[x->n_ids++] = s;
      x->ids_bytes += s.len + 1;
    }
    p = ws(p, e);
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    return p < e && *p == ']' ? p + 1 : NULL;
  }
}

HOT const char *value(const char *p, const char *e, int k, bw_event_view *v, extra *x) {
  static const char *const alerts[] = {"green", "yellow", "orange", "red"};
  static const char *const changes[] = {"new", "revision", "deleted", "superseded", "moved"};
  bw_str s;
  int64_t i64;
  double d;
  int i;
  const char *q;
  switch (k) {
  case K_EVENT_ID:
    p = text(p, e, QS_EVENT_ID_MAX, &v->event_id);
    return p && id_ok(v->event_id) ? p : NULL;
  case K_MAGNITUDE:
    return nullable_num_in(p, e, &v->has_magnitude, &v->magnitude, -2.0, 10.5);
  case K_PLACE:
    return text(p, e, QS_EVENT_PLACE_MAX, &s);
  case K_MAG_TYPE:
  case K_EVENT_TYPE:
  case K_NET:
  case K_SOURCE:
    return text(p, e, QS_EVENT_SHORT_MAX, &s);
  case K_STATUS:
    if ((p = text(p, e, QS_EVENT_SHORT_MAX, &s)))
      v->status_deleted = str_eq(s, "deleted", 7);
    return p;
  case K_REGION:
    return text(p, e, QS_EVENT_SHORT_MAX, &v->region);
  case K_TIME:
    return integer_in(p, e, &v->time, 1, QS_EVENT_TIME_MAX);
  case K_UPDATED:
    return integer_in(p, e, &v->updated, 1, QS_EVENT_TIME_MAX);
  case K_INGESTED_AT:
    return integer_in(p, e, &v->ingested_at, 0, QS_EVENT_TIME_MAX);
  case K_LONGITUDE:
    return num_in(p, e, &d, -180.0, 180.0);
  case K_LATITUDE:
    return num_in(p, e, &d, -90.0, 90.0);
  case K_DEPTH_KM:
    return nullable_num_in(p, e, &v->has_depth, &v->depth_km, -10.0, 1000.0);
  case K_SUPERSEDED_BY:
    if ((q = null_at(p, e))) {
      x->superseded_by.len = 0;
      return q;
    }
    return text(p, e, QS_EVENT_ID_MAX, &x->superseded_by);
  case K_TSUNAMI_FLAG:
    if ((q = literal(p, e, "true", 4)))
      v->tsunami_flag = true;
    else if ((q = literal(p, e, "false", 5)))
      v->tsunami_flag = false;
    return q;
  case K_ALERT_LEVEL:
    if ((q = null_at(p, e)))
      return q;
    p = text(p, e, QS_EVENT_SHORT_MAX, &s);
    return p && one_of(s, alerts, 4) >= 0 ? p : NULL;
  case K_SIG:
    return integer_in(p, e, &i64, 0, QS_EVENT_SIG_MAX);
  case K_CHANGE:
    if (!(p = text(p, e, QS_EVENT_SHORT_MAX, &s)) || (i = one_of(s, changes, 5)) < 0)
      return NULL;
    v->change = (qs_event_change)i;
    return p;
  case K_IDS:
    return ids(p, e, x);
  }
  return NULL;
}

/* The member name and colon at p: the guess first, else a search. Sets *k (-1 = not a known
 * name) and returns the cursor after the colon. */
HOT const char *key(const char *p, const char *e, int guess, int *k) {
  if (guess < K_COUNT && e - p >= 16) { /* every name, quoted, with its colon fits 16 bytes */
    uint64_t w[2];
    memcpy(w, p, 16);
    if (((w[0] ^ key_words[guess][0]) & key_masks[guess][0]) == 0 &&
        ((w[1] ^ key_words[guess][1]) & key_masks[guess][1]) == 0) {
      *k = guess;
      return p + keys[guess].len;
    }
  }
  bw_str s;
  *k = -1;
  if (!(p = str(p, e, &s)))
    return NULL;
  for (int i = 0; i < K_COUNT; i++) {
    if (keys[i].len == s.len + 3 && memcmp(s.p, keys[i].text + 1, s.len) == 0) {
      p = ws(p, e);
      if (p >= e || *p != ':')
        return NULL;
      *k = i;
      return p + 1;
    }
  }
  return NULL;
}

int bw_event_decode_fast(bw_event_view *v, const char *json, size_t len) {
  if (len > QS_EVENT_JSON_MAX)
    return 0;
  const char *p = json, *e = json + len;
  extra x; /* not zeroed whole: ids[] is 1 KiB and only n_ids of it is ever read */
  x.superseded_by.p = NULL;
  x.superseded_by.len = 0;
  x.n_ids = x.ids_bytes = 0;
  v->has_magnitude = v->has_depth = v->tsunami_flag = v->status_deleted = false;
  v->magnitude = v->depth_km = 0.0;
  v->change = QS_EVENT_NEW;
  unsigned seen = 0;
  int k = -1;
  p = ws(p, e);
  if (p >= e || *p != '{')
    return 0;
  p = ws(p + 1, e);
  if (p < e && *p == '}')
    return 0; /* empty object: let the codec name the missing field */
  for (;;) {  /* compact JSON first: whitespace is skipped only where it is found */
    if (p < e && *p != '"')
      p = ws(p, e);
    p = key(p, e, k + 1, &k);
    if (!p || (seen & (1u << k)))
      return 0;
    seen |= 1u << k;
    if (p < e && is_ws(*p))
      p = ws(p, e);
    if (!(p = value(p, e, k, v, &x)))
      return 0;
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    p = ws(p, e);
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    if (p < e && *p == '}') {
      p++;
      break;
    }
    return 0;
  }
  for (; p < e; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0')
      return 0;
  if ((seen & REQUIRED) != REQUIRED)
    return 0;
  /* qs_event_validate's superseded_by rule. */
  if (v->change == QS_EVENT_SUPERSEDED) {
    if (!id_ok(x.superseded_by) || str_eq(x.superseded_by, v->event_id.p, v->event_id.len))
      return 0;
  } else if (x.superseded_by.len != 0) {
    return 0;
  }
  v->n_other_ids = 0;
  for (size_t i = 0; i < x.n_ids; i++)
    if (!str_eq(x.ids[i], v->event_id.p, v->event_id.len))
      v->other_ids[v->n_other_ids++] = x.ids[i];
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
