/* event.c — the earthquake event: validation and the JSON codec.
 *
 * Decoding parses with cJSON once, then walks the object's members a single
 * time, dispatching each known name through a table (so lookups stay linear in
 * the member count, and duplicates are caught by a seen-bitmask). Type errors
 * are reported while walking; range errors by qs_event_validate afterwards, so
 * both paths share one set of rules. Encoding writes straight into the
 * caller's buffer with snprintf semantics; doubles use the shortest of
 * %.15g/%.16g/%.17g that reads back to the same value, which makes the JSON
 * round trip lossless.
 */
#include "qs/event.h"

#include "qs/buf.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"

#include "event_internal.h"

void qs_event_init(qs_event *ev) {
  ev->event_id[0] = '\0';
  ev->has_magnitude = false;
  ev->magnitude = 0.0;
  ev->mag_type[0] = '\0';
  ev->place[0] = '\0';
  ev->time = 0;
  ev->updated = 0;
  ev->longitude = 0.0;
  ev->latitude = 0.0;
  ev->has_depth = false;
  ev->depth_km = 0.0;
  ev->event_type[0] = '\0';
  ev->status[0] = '\0';
  ev->tsunami_flag = false;
  ev->alert_level = QS_ALERT_NONE;
  ev->net[0] = '\0';
  ev->sig = 0;
  ev->region[0] = '\0';
  ev->source[0] = '\0';
  ev->ingested_at = 0;
  ev->change = QS_EVENT_NEW;
  ev->superseded_by[0] = '\0';
  ev->ids_count = 0;
  ev->ids_used = 0;
}

/* ---- names ------------------------------------------------------------ */

static const char *const change_names[] = {"new", "revision", "deleted", "superseded", "moved"};
static const char *const alert_names[] = {NULL, "green", "yellow", "orange", "red"};

const char *qs_event_change_name(qs_event_change c) {
  if ((unsigned)c < sizeof change_names / sizeof change_names[0])
    return change_names[c];
  return "unknown";
}

int qs_event_change_parse(const char *s, qs_event_change *out) {
  for (size_t i = 0; i < sizeof change_names / sizeof change_names[0]; i++) {
    if (strcmp(s, change_names[i]) == 0) {
      *out = (qs_event_change)i;
      return 0;
    }
  }
  return QS_ERR_INVALID;
}

const char *qs_alert_level_name(qs_alert_level a) {
  if ((unsigned)a < sizeof alert_names / sizeof alert_names[0])
    return alert_names[a];
  return NULL;
}

int qs_alert_level_parse(const char *s, qs_alert_level *out) {
  for (size_t i = 1; i < sizeof alert_names / sizeof alert_names[0]; i++) {
    if (strcmp(s, alert_names[i]) == 0) {
      *out = (qs_alert_level)i;
      return 0;
    }
  }
  return QS_ERR_INVALID;
}

bool qs_event_change_is_retraction(qs_event_change c) {
  return c == QS_EVENT_DELETED || c == QS_EVENT_SUPERSEDED;
}

bool qs_event_is_retraction(const qs_event *ev) {
  return qs_event_change_is_retraction(ev->change);
}

/* ---- strings and ids -------------------------------------------------- */

int qs_event_set_str(char *dst, size_t dstsize, const char *src, size_t len) {
  if (dstsize == 0)
    return QS_ERR_TOOBIG;
  if (len >= dstsize) {
    dst[0] = '\0';
    return QS_ERR_TOOBIG;
  }
  memcpy(dst, src, len);
  dst[len] = '\0';
  return 0;
}

static bool id_char_ok(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

bool qs_event_id_is_valid(const char *s, size_t len) {
  if (len == 0 || len > QS_EVENT_ID_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if (!id_char_ok((unsigned char)s[i]))
      return false;
  return true;
}

size_t qs_event_ids_count(const qs_event *ev) { return ev->ids_count; }

const char *qs_event_ids_at(const qs_event *ev, size_t i) {
  if (i >= ev->ids_count)
    return NULL;
  return ev->ids_buf + ev->ids_off[i];
}

bool qs_event_ids_contains(const qs_event *ev, const char *id) {
  for (size_t i = 0; i < ev->ids_count; i++)
    if (strcmp(ev->ids_buf + ev->ids_off[i], id) == 0)
      return true;
  return false;
}

void qs_event_ids_clear(qs_event *ev) {
  ev->ids_count = 0;
  ev->ids_used = 0;
}

int qs_event_ids_add(qs_event *ev, const char *id, size_t len) {
  if (!qs_event_id_is_valid(id, len))
    return len > QS_EVENT_ID_MAX ? QS_ERR_TOOBIG : QS_ERR_INVALID;
  for (size_t i = 0; i < ev->ids_count; i++) {
    const char *have = ev->ids_buf + ev->ids_off[i];
    if (strncmp(have, id, len) == 0 && have[len] == '\0')
      return 0;
  }
  if (ev->ids_count >= QS_EVENT_IDS_MAX || (size_t)ev->ids_used + len + 1 > QS_EVENT_IDS_BYTES)
    return QS_ERR_TOOBIG;
  ev->ids_off[ev->ids_count++] = ev->ids_used;
  memcpy(ev->ids_buf + ev->ids_used, id, len);
  ev->ids_buf[ev->ids_used + len] = '\0';
  ev->ids_used = (uint16_t)(ev->ids_used + len + 1);
  return 0;
}

/* ---- validation ------------------------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t need;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i <= need)
      return false;
    for (size_t k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += need + 1;
  }
  return true;
}

static int check_text(const char *name, const char *s, size_t cap, char *why, size_t whylen) {
  size_t n = strnlen(s, cap);
  if (n == cap) {
    qs_set_reason(why, whylen, "%s: not terminated within %zu bytes", name, cap - 1);
    return QS_ERR_INVALID;
  }
  if (!utf8_valid((const unsigned char *)s, n)) {
    qs_set_reason(why, whylen, "%s: not valid UTF-8", name);
    return QS_ERR_INVALID;
  }
  return 0;
}

static int check_range(const char *name, double v, double lo, double hi, char *why, size_t whylen) {
  if (!isfinite(v)) {
    qs_set_reason(why, whylen, "%s: not a finite number", name);
    return QS_ERR_INVALID;
  }
  if (v < lo || v > hi) {
    qs_set_reason(why, whylen, "%s: %.17g out of range [%g, %g]", name, v, lo, hi);
    return QS_ERR_INVALID;
  }
  return 0;
}

static int check_time(const char *name, int64_t v, int64_t lo, char *why, size_t whylen) {
  if (v < lo || v > QS_EVENT_TIME_MAX) {
    qs_set_reason(why, whylen, "%s: %" PRId64 " out of range [%" PRId64 ", %" PRId64 "]", name, v,
                  lo, QS_EVENT_TIME_MAX);
    return QS_ERR_INVALID;
  }
  return 0;
}

/* texts: also check the strings (decoding already checked them while copying). */
static int validate(const qs_event *ev, bool texts, char *why, size_t whylen) {
  int rc;
  size_t idlen = strnlen(ev->event_id, sizeof ev->event_id);
  if (idlen == 0) {
    qs_set_reason(why, whylen, "event_id: empty");
    return QS_ERR_INVALID;
  }
  if (!qs_event_id_is_valid(ev->event_id, idlen)) {
    qs_set_reason(why, whylen, "event_id: must be 1..%d characters of [A-Za-z0-9_.:-]",
                  QS_EVENT_ID_MAX);
    return QS_ERR_INVALID;
  }
  if (ev->has_magnitude && (rc = check_range("magnitude", ev->magnitude, -2.0, 10.5, why, whylen)))
    return rc;
  if ((rc = check_time("time", ev->time, 1, why, whylen)) ||
      (rc = check_time("updated", ev->updated, 1, why, whylen)) ||
      (rc = check_time("ingested_at", ev->ingested_at, 0, why, whylen)))
    return rc;
  if ((rc = check_range("longitude", ev->longitude, -180.0, 180.0, why, whylen)) ||
      (rc = check_range("latitude", ev->latitude, -90.0, 90.0, why, whylen)))
    return rc;
  if (ev->has_depth && (rc = check_range("depth_km", ev->depth_km, -10.0, 1000.0, why, whylen)))
    return rc;
  if (texts &&
      ((rc = check_text("mag_type", ev->mag_type, sizeof ev->mag_type, why, whylen)) ||
       (rc = check_text("place", ev->place, sizeof ev->place, why, whylen)) ||
       (rc = check_text("event_type", ev->event_type, sizeof ev->event_type, why, whylen)) ||
       (rc = check_text("status", ev->status, sizeof ev->status, why, whylen)) ||
       (rc = check_text("net", ev->net, sizeof ev->net, why, whylen)) ||
       (rc = check_text("region", ev->region, sizeof ev->region, why, whylen)) ||
       (rc = check_text("source", ev->source, sizeof ev->source, why, whylen))))
    return rc;
  if ((unsigned)ev->alert_level > QS_ALERT_RED) {
    qs_set_reason(why, whylen, "alert_level: unknown value %d", (int)ev->alert_level);
    return QS_ERR_INVALID;
  }
  if (ev->sig < 0 || ev->sig > QS_EVENT_SIG_MAX) {
    qs_set_reason(why, whylen, "sig: %d out of range [0, %d]", (int)ev->sig, QS_EVENT_SIG_MAX);
    return QS_ERR_INVALID;
  }
  if ((unsigned)ev->change > QS_EVENT_CHANGE_LAST) {
    qs_set_reason(why, whylen, "change: unknown value %d", (int)ev->change);
    return QS_ERR_INVALID;
  }
  size_t suplen = strnlen(ev->superseded_by, sizeof ev->superseded_by);
  if (ev->change == QS_EVENT_SUPERSEDED) {
    if (suplen == 0) {
      qs_set_reason(why, whylen, "superseded_by: required when change is superseded");
      return QS_ERR_INVALID;
    }
    if (!qs_event_id_is_valid(ev->superseded_by, suplen)) {
      qs_set_reason(why, whylen, "superseded_by: must be 1..%d characters of [A-Za-z0-9_.:-]",
                    QS_EVENT_ID_MAX);
      return QS_ERR_INVALID;
    }
    if (strcmp(ev->superseded_by, ev->event_id) == 0) {
      qs_set_reason(why, whylen, "superseded_by: equals event_id");
      return QS_ERR_INVALID;
    }
  } else if (suplen != 0) {
    qs_set_reason(why, whylen, "superseded_by: only allowed when change is superseded");
    return QS_ERR_INVALID;
  }
  if (ev->ids_count > QS_EVENT_IDS_MAX || ev->ids_used > QS_EVENT_IDS_BYTES) {
    qs_set_reason(why, whylen, "ids: more than %d entries", QS_EVENT_IDS_MAX);
    return QS_ERR_INVALID;
  }
  for (size_t i = 0; i < ev->ids_count; i++) {
    if (ev->ids_off[i] >= ev->ids_used) {
      qs_set_reason(why, whylen, "ids[%zu]: corrupt offset", i);
      return QS_ERR_INVALID;
    }
    const char *id = ev->ids_buf + ev->ids_off[i];
    size_t n = strnlen(id, (size_t)(ev->ids_used - ev->ids_off[i]));
    if (!qs_event_id_is_valid(id, n)) {
      qs_set_reason(why, whylen, "ids[%zu]: must be 1..%d characters of [A-Za-z0-9_.:-]", i,
                    QS_EVENT_ID_MAX);
      return QS_ERR_INVALID;
    }
  }
  return 0;
}

int qs_event_validate(const qs_event *ev, char *why, size_t whylen) {
  return validate(ev, true, why, whylen);
}

int qs_event_validate_values(const qs_event *ev, char *why, size_t whylen) {
  return validate(ev, false, why, whylen);
}

/* ---- decoding --------------------------------------------------------- */

enum field {
  F_EVENT_ID,
  F_MAGNITUDE,
  F_MAG_TYPE,
  F_PLACE,
  F_TIME,
  F_UPDATED,
  F_LONGITUDE,
  F_LATITUDE,
  F_DEPTH_KM,
  F_EVENT_TYPE,
  F_STATUS,
  F_TSUNAMI_FLAG,
  F_ALERT_LEVEL,
  F_NET,
  F_SIG,
  F_REGION,
  F_SOURCE,
  F_INGESTED_AT,
  F_IDS,
  F_CHANGE,
  F_SUPERSEDED_BY,
  F_COUNT
};

static const char *const field_names[F_COUNT] = {
    [F_EVENT_ID] = "event_id",
    [F_MAGNITUDE] = "magnitude",
    [F_MAG_TYPE] = "mag_type",
    [F_PLACE] = "place",
    [F_TIME] = "time",
    [F_UPDATED] = "updated",
    [F_LONGITUDE] = "longitude",
    [F_LATITUDE] = "latitude",
    [F_DEPTH_KM] = "depth_km",
    [F_EVENT_TYPE] = "event_type",
    [F_STATUS] = "status",
    [F_TSUNAMI_FLAG] = "tsunami_flag",
    [F_ALERT_LEVEL] = "alert_level",
    [F_NET] = "net",
    [F_SIG] = "sig",
    [F_REGION] = "region",
    [F_SOURCE] = "source",
    [F_INGESTED_AT] = "ingested_at",
    [F_IDS] = "ids",
    [F_CHANGE] = "change",
    [F_SUPERSEDED_BY] = "superseded_by",
};

/* Every field but change (default "new") and superseded_by (only with
 * superseded) must be present. */
#define REQUIRED_MASK (((1u << F_COUNT) - 1) & ~(1u << F_CHANGE) & ~(1u << F_SUPERSEDED_BY))

static int field_lookup(const char *name) {
  for (int f = 0; f < F_COUNT; f++)
    if (name[0] == field_names[f][0] && strcmp(name, field_names[f]) == 0)
      return f;
  return -1;
}

static int get_text(const cJSON *it, const char *name, char *dst, size_t dstsize, char *why,
                    size_t whylen) {
  if (!cJSON_IsString(it)) {
    qs_set_reason(why, whylen, "%s: must be a string", name);
    return QS_ERR_INVALID;
  }
  size_t n = strlen(it->valuestring);
  if (n >= dstsize) {
    qs_set_reason(why, whylen, "%s: longer than %zu bytes", name, dstsize - 1);
    return QS_ERR_INVALID;
  }
  if (!utf8_valid((const unsigned char *)it->valuestring, n)) {
    qs_set_reason(why, whylen, "%s: not valid UTF-8", name);
    return QS_ERR_INVALID;
  }
  memcpy(dst, it->valuestring, n + 1);
  return 0;
}

static int get_number(const cJSON *it, const char *name, double *out, char *why, size_t whylen) {
  if (!cJSON_IsNumber(it)) {
    qs_set_reason(why, whylen, "%s: must be a number", name);
    return QS_ERR_INVALID;
  }
  if (!isfinite(it->valuedouble)) {
    qs_set_reason(why, whylen, "%s: not a finite number", name);
    return QS_ERR_INVALID;
  }
  *out = it->valuedouble;
  return 0;
}

static int get_nullable_number(const cJSON *it, const char *name, bool *has, double *out, char *why,
                               size_t whylen) {
  if (cJSON_IsNull(it)) {
    *has = false;
    *out = 0.0;
    return 0;
  }
  if (!cJSON_IsNumber(it)) {
    qs_set_reason(why, whylen, "%s: must be a number or null", name);
    return QS_ERR_INVALID;
  }
  *has = true;
  return get_number(it, name, out, why, whylen);
}

/* An integral JSON number within [-2^53, 2^53] (exact in a double). */
static int get_integer(const cJSON *it, const char *name, int64_t *out, char *why, size_t whylen) {
  double d;
  int rc = get_number(it, name, &d, why, whylen);
  if (rc)
    return rc;
  if (d != floor(d) || fabs(d) > 9007199254740992.0) {
    qs_set_reason(why, whylen, "%s: must be an integer", name);
    return QS_ERR_INVALID;
  }
  *out = (int64_t)d;
  return 0;
}

static int get_ids(const cJSON *it, qs_event *ev, char *why, size_t whylen) {
  if (!cJSON_IsArray(it)) {
    qs_set_reason(why, whylen, "ids: must be an array of strings");
    return QS_ERR_INVALID;
  }
  size_t i = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, it) {
    if (!cJSON_IsString(e)) {
      qs_set_reason(why, whylen, "ids[%zu]: must be a string", i);
      return QS_ERR_INVALID;
    }
    int rc = qs_event_ids_add(ev, e->valuestring, strlen(e->valuestring));
    if (rc == QS_ERR_TOOBIG) {
      qs_set_reason(why, whylen, "ids: more than %d entries or %d bytes, or an entry over %d bytes",
                    QS_EVENT_IDS_MAX, QS_EVENT_IDS_BYTES, QS_EVENT_ID_MAX);
      return QS_ERR_INVALID;
    }
    if (rc) {
      qs_set_reason(why, whylen, "ids[%zu]: must be 1..%d characters of [A-Za-z0-9_.:-]", i,
                    QS_EVENT_ID_MAX);
      return QS_ERR_INVALID;
    }
    i++;
  }
  return 0;
}

static int decode_field(qs_event *ev, int f, const cJSON *it, char *why, size_t whylen) {
  const char *name = field_names[f];
  int64_t i64;
  int rc;
  switch ((enum field)f) {
  case F_EVENT_ID:
    return get_text(it, name, ev->event_id, sizeof ev->event_id, why, whylen);
  case F_MAGNITUDE:
    return get_nullable_number(it, name, &ev->has_magnitude, &ev->magnitude, why, whylen);
  case F_MAG_TYPE:
    return get_text(it, name, ev->mag_type, sizeof ev->mag_type, why, whylen);
  case F_PLACE:
    return get_text(it, name, ev->place, sizeof ev->place, why, whylen);
  case F_TIME:
    return get_integer(it, name, &ev->time, why, whylen);
  case F_UPDATED:
    return get_integer(it, name, &ev->updated, why, whylen);
  case F_INGESTED_AT:
    return get_integer(it, name, &ev->ingested_at, why, whylen);
  case F_LONGITUDE:
    return get_number(it, name, &ev->longitude, why, whylen);
  case F_LATITUDE:
    return get_number(it, name, &ev->latitude, why, whylen);
  case F_DEPTH_KM:
    return get_nullable_number(it, name, &ev->has_depth, &ev->depth_km, why, whylen);
  case F_EVENT_TYPE:
    return get_text(it, name, ev->event_type, sizeof ev->event_type, why, whylen);
  case F_STATUS:
    return get_text(it, name, ev->status, sizeof ev->status, why, whylen);
  case F_NET:
    return get_text(it, name, ev->net, sizeof ev->net, why, whylen);
  case F_REGION:
    return get_text(it, name, ev->region, sizeof ev->region, why, whylen);
  case F_SOURCE:
    return get_text(it, name, ev->source, sizeof ev->source, why, whylen);
  case F_SUPERSEDED_BY:
    if (cJSON_IsNull(it)) {
      ev->superseded_by[0] = '\0';
      return 0;
    }
    return get_text(it, name, ev->superseded_by, sizeof ev->superseded_by, why, whylen);
  case F_TSUNAMI_FLAG:
    if (!cJSON_IsBool(it)) {
      qs_set_reason(why, whylen, "%s: must be true or false", name);
      return QS_ERR_INVALID;
    }
    ev->tsunami_flag = cJSON_IsTrue(it);
    return 0;
  case F_ALERT_LEVEL:
    if (cJSON_IsNull(it)) {
      ev->alert_level = QS_ALERT_NONE;
      return 0;
    }
    if (!cJSON_IsString(it) || qs_alert_level_parse(it->valuestring, &ev->alert_level) != 0) {
      qs_set_reason(why, whylen, "%s: must be null, \"green\", \"yellow\", \"orange\" or \"red\"",
                    name);
      return QS_ERR_INVALID;
    }
    return 0;
  case F_SIG:
    if ((rc = get_integer(it, name, &i64, why, whylen)))
      return rc;
    if (i64 < 0 || i64 > QS_EVENT_SIG_MAX) {
      qs_set_reason(why, whylen, "sig: %" PRId64 " out of range [0, %d]", i64, QS_EVENT_SIG_MAX);
      return QS_ERR_INVALID;
    }
    ev->sig = (int32_t)i64;
    return 0;
  case F_CHANGE:
    if (!cJSON_IsString(it) || qs_event_change_parse(it->valuestring, &ev->change) != 0) {
      qs_set_reason(
          why, whylen,
          "change: must be \"new\", \"revision\", \"deleted\", \"superseded\" or \"moved\"");
      return QS_ERR_INVALID;
    }
    return 0;
  case F_IDS:
    return get_ids(it, ev, why, whylen);
  case F_COUNT:
    break;
  }
  return QS_ERR_INVALID;
}

static int decode_object(qs_event *ev, const cJSON *root, char *why, size_t whylen) {
  unsigned seen = 0;
  const cJSON *it;
  cJSON_ArrayForEach(it, root) {
    int f = field_lookup(it->string);
    if (f < 0)
      continue; /* unknown members are ignored: newer producers may add fields */
    if (seen & (1u << f)) {
      qs_set_reason(why, whylen, "%s: duplicate member", field_names[f]);
      return QS_ERR_INVALID;
    }
    seen |= 1u << f;
    int rc = decode_field(ev, f, it, why, whylen);
    if (rc)
      return rc;
  }
  if ((seen & REQUIRED_MASK) != REQUIRED_MASK) {
    for (int f = 0; f < F_COUNT; f++) {
      if ((REQUIRED_MASK & (1u << f)) && !(seen & (1u << f))) {
        qs_set_reason(why, whylen, "%s: missing", field_names[f]);
        break;
      }
    }
    return QS_ERR_INVALID;
  }
  return validate(ev, false, why, whylen);
}

int qs_event_from_json(qs_event *ev, const char *json, size_t len, char *why, size_t whylen) {
  if (qs_event_from_json_fast(ev, json, len)) {
    if (why && whylen)
      why[0] = '\0';
    return 0;
  }
  return qs_event_from_json_tree(ev, json, len, why, whylen);
}

int qs_event_from_json_tree(qs_event *ev, const char *json, size_t len, char *why, size_t whylen) {
  if (why && whylen)
    why[0] = '\0';
  qs_event_init(ev);
  if (len > QS_EVENT_JSON_MAX) {
    qs_set_reason(why, whylen, "event: %zu bytes, over the %d byte limit", len, QS_EVENT_JSON_MAX);
    return QS_ERR_TOOBIG;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (!root) {
    size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
    qs_set_reason(why, whylen, "event: not valid JSON (near byte %zu)", at);
    return QS_ERR_PARSE;
  }
  int rc = 0;
  for (const char *p = end; p && p < json + len; p++) {
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
      qs_set_reason(why, whylen, "event: trailing data after the JSON value (byte %zu)",
                    (size_t)(p - json));
      rc = QS_ERR_PARSE;
      break;
    }
  }
  if (rc == 0 && !cJSON_IsObject(root)) {
    qs_set_reason(why, whylen, "event: must be a JSON object");
    rc = QS_ERR_PARSE;
  }
  if (rc == 0)
    rc = decode_object(ev, root, why, whylen);
  cJSON_Delete(root);
  return rc;
}

/* ---- encoding --------------------------------------------------------- */

typedef struct writer {
  char *buf;
  size_t cap;
  size_t len; /* bytes the full output needs so far; may exceed cap */
} writer;

static void put(writer *w, const char *s, size_t n) {
  if (w->len < w->cap) {
    size_t room = w->cap - w->len;
    memcpy(w->buf + w->len, s, n < room ? n : room);
  }
  w->len += n;
}

static void put_c(writer *w, char c) { put(w, &c, 1); }

static void put_s(writer *w, const char *s) { put(w, s, strlen(s)); }

static void put_str(writer *w, const char *s) {
  static const char hex[] = "0123456789abcdef";
  put_c(w, '"');
  const char *run = s;
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    put(w, run, (size_t)(p - run));
    run = p + 1;
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    switch (c) {
    case '"':
    case '\\':
      esc[1] = (char)c;
      put(w, esc, 2);
      break;
    case '\n':
      put(w, "\\n", 2);
      break;
    case '\r':
      put(w, "\\r", 2);
      break;
    case '\t':
      put(w, "\\t", 2);
      break;
    default:
      esc[1] = 'u';
      esc[2] = '0';
      esc[3] = '0';
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      put(w, esc, 6);
      break;
    }
  }
  put(w, run, strlen(run));
  put_c(w, '"');
}

static void put_i64(writer *w, int64_t v) {
  char tmp[24];
  int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
  put(w, tmp, (size_t)n);
}

static void put_double(writer *w, double v) {
  if (!isfinite(v)) {
    put(w, "null", 4);
    return;
  }
  char tmp[40];
  put(w, tmp, qs_double_shortest(tmp, sizeof tmp, v));
}

static void put_key(writer *w, const char *key) {
  put_c(w, ',');
  put_c(w, '"');
  put_s(w, key);
  put_c(w, '"');
  put_c(w, ':');
}

size_t qs_event_to_json(const qs_event *ev, char *buf, size_t cap) {
  writer w = {buf, cap, 0};
  put_s(&w, "{\"event_id\":");
  put_str(&w, ev->event_id);
  put_key(&w, "magnitude");
  if (ev->has_magnitude)
    put_double(&w, ev->magnitude);
  else
    put_s(&w, "null");
  put_key(&w, "mag_type");
  put_str(&w, ev->mag_type);
  put_key(&w, "place");
  put_str(&w, ev->place);
  put_key(&w, "time");
  put_i64(&w, ev->time);
  put_key(&w, "updated");
  put_i64(&w, ev->updated);
  put_key(&w, "longitude");
  put_double(&w, ev->longitude);
  put_key(&w, "latitude");
  put_double(&w, ev->latitude);
  put_key(&w, "depth_km");
  if (ev->has_depth)
    put_double(&w, ev->depth_km);
  else
    put_s(&w, "null");
  put_key(&w, "event_type");
  put_str(&w, ev->event_type);
  put_key(&w, "status");
  put_str(&w, ev->status);
  put_key(&w, "tsunami_flag");
  put_s(&w, ev->tsunami_flag ? "true" : "false");
  put_key(&w, "alert_level");
  const char *alert = qs_alert_level_name(ev->alert_level);
  if (alert) {
    put_str(&w, alert);
  } else {
    put_s(&w, "null");
  }
  put_key(&w, "net");
  put_str(&w, ev->net);
  put_key(&w, "sig");
  put_i64(&w, ev->sig);
  put_key(&w, "region");
  put_str(&w, ev->region);
  put_key(&w, "source");
  put_str(&w, ev->source);
  put_key(&w, "ingested_at");
  put_i64(&w, ev->ingested_at);
  put_key(&w, "ids");
  put_c(&w, '[');
  for (size_t i = 0; i < ev->ids_count; i++) {
    if (i)
      put_c(&w, ',');
    put_str(&w, ev->ids_buf + ev->ids_off[i]);
  }
  put_c(&w, ']');
  put_key(&w, "change");
  put_str(&w, qs_event_change_name(ev->change));
  if (ev->change == QS_EVENT_SUPERSEDED || ev->superseded_by[0]) {
    put_key(&w, "superseded_by");
    put_str(&w, ev->superseded_by);
  }
  put_c(&w, '}');
  if (cap > 0)
    buf[w.len < cap ? w.len : cap - 1] = '\0';
  return w.len;
}

/* ---- equality --------------------------------------------------------- */

static bool same_double(bool has_a, double a, bool has_b, double b) {
  if (has_a != has_b)
    return false;
  return !has_a || a == b;
}

bool qs_event_equal(const qs_event *a, const qs_event *b) {
  if (strcmp(a->event_id, b->event_id) || strcmp(a->mag_type, b->mag_type) ||
      strcmp(a->place, b->place) || strcmp(a->event_type, b->event_type) ||
      strcmp(a->status, b->status) || strcmp(a->net, b->net) || strcmp(a->region, b->region) ||
      strcmp(a->source, b->source) || strcmp(a->superseded_by, b->superseded_by))
    return false;
  if (!same_double(a->has_magnitude, a->magnitude, b->has_magnitude, b->magnitude) ||
      !same_double(a->has_depth, a->depth_km, b->has_depth, b->depth_km) ||
      a->longitude != b->longitude || a->latitude != b->latitude)
    return false;
  if (a->time != b->time || a->updated != b->updated || a->ingested_at != b->ingested_at ||
      a->tsunami_flag != b->tsunami_flag || a->alert_level != b->alert_level || a->sig != b->sig ||
      a->change != b->change || a->ids_count != b->ids_count)
    return false;
  for (size_t i = 0; i < a->ids_count; i++)
    if (strcmp(a->ids_buf + a->ids_off[i], b->ids_buf + b->ids_off[i]))
      return false;
  return true;
}
