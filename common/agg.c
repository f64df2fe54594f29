/* agg.c — window and aggregate arithmetic shared by the speed, batch and serving layers.
 *
 * Invariants kept by every function here:
 * - An aggregate holds integers only; magnitudes and depths are rounded once, in
 *   qs_contrib_init, to micro-units. So add, retract and merge commute exactly.
 * - 0 <= significant_count <= mag_count <= event_count <= QS_AGG_MAX_COUNT,
 *   0 <= depth_count, tsunami_count <= event_count.
 * - mag_min_micro / mag_max_micro are 0 whenever mag_count == 0 or minmax_stale, so that
 *   structural equality (qs_agg_equal) is the equality of the multiset's aggregate.
 * - A failing call changes nothing.
 * - Doubles are produced in exactly one place per quantity (micro_avg, qs_agg_micro_to_double).
 */
#include "qs/agg.h"

#include "qs/buf.h"
#include "qs/timeutil.h"

#include "qs/error.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAG_MIN_MICRO INT64_C(-2000000)
#define MAG_MAX_MICRO INT64_C(10500000)
#define DEPTH_MIN_MICRO INT64_C(-10000000)
#define DEPTH_MAX_MICRO INT64_C(1000000000)

/* ---- contributions ---- */

/* Rounds v to micro-units if it lies in [lo, hi] (units); NaN and infinities are rejected. */
static int to_micro(double v, int64_t lo_micro, int64_t hi_micro, int64_t *out) {
  if (!isfinite(v))
    return QS_ERR_RANGE;
  /* Compare before llround so a huge value cannot overflow the conversion. */
  if (v < (double)lo_micro / QS_AGG_MICRO - 1.0 || v > (double)hi_micro / QS_AGG_MICRO + 1.0)
    return QS_ERR_RANGE;
  int64_t m = llround(v * QS_AGG_MICRO);
  if (m < lo_micro || m > hi_micro)
    return QS_ERR_RANGE;
  *out = m;
  return 0;
}

int qs_contrib_init(qs_contrib *c, int64_t time_ms, double magnitude, double depth_km, bool tsunami,
                    double significant_threshold) {
  qs_contrib n = {.time_ms = time_ms, .tsunami = tsunami};
  int64_t thr;
  int rc;
  if (time_ms < QS_AGG_TIME_MIN_MS || time_ms > QS_AGG_TIME_MAX_MS)
    return QS_ERR_RANGE;
  if ((rc = to_micro(significant_threshold, MAG_MIN_MICRO, MAG_MAX_MICRO, &thr)) < 0)
    return rc;
  if (!isnan(magnitude)) {
    if ((rc = to_micro(magnitude, MAG_MIN_MICRO, MAG_MAX_MICRO, &n.mag_micro)) < 0)
      return rc;
    n.has_mag = true;
    n.significant = n.mag_micro >= thr;
  }
  if (!isnan(depth_km)) {
    if ((rc = to_micro(depth_km, DEPTH_MIN_MICRO, DEPTH_MAX_MICRO, &n.depth_micro)) < 0)
      return rc;
    n.has_depth = true;
  }
  *c = n;
  return 0;
}

/* A contribution built by hand must still respect the bounds the overflow argument rests on. */
static bool contrib_valid(const qs_contrib *c) {
  if (c->has_mag ? (c->mag_micro < MAG_MIN_MICRO || c->mag_micro > MAG_MAX_MICRO)
                 : (c->mag_micro != 0 || c->significant))
    return false;
  if (c->has_depth ? (c->depth_micro < DEPTH_MIN_MICRO || c->depth_micro > DEPTH_MAX_MICRO)
                   : c->depth_micro != 0)
    return false;
  return true;
}

/* ---- aggregates ---- */

void qs_agg_init(qs_agg *a) { memset(a, 0, sizeof *a); }

int qs_agg_add(qs_agg *a, const qs_contrib *c) {
  if (!contrib_valid(c))
    return QS_ERR_INVALID;
  if (a->event_count >= QS_AGG_MAX_COUNT)
    return QS_ERR_RANGE;
  a->event_count++;
  if (c->has_mag) {
    if (!a->minmax_stale) {
      if (a->mag_count == 0 || c->mag_micro < a->mag_min_micro)
        a->mag_min_micro = c->mag_micro;
      if (a->mag_count == 0 || c->mag_micro > a->mag_max_micro)
        a->mag_max_micro = c->mag_micro;
    }
    a->mag_count++;
    a->mag_sum_micro += c->mag_micro;
    a->significant_count += c->significant;
  }
  if (c->has_depth) {
    a->depth_count++;
    a->depth_sum_micro += c->depth_micro;
  }
  a->tsunami_count += c->tsunami;
  return 0;
}

int qs_agg_retract(qs_agg *a, const qs_contrib *c) {
  if (!contrib_valid(c))
    return QS_ERR_INVALID;
  if (a->event_count < 1 || (c->has_mag && a->mag_count < 1) ||
      (c->significant && a->significant_count < 1) || (c->has_depth && a->depth_count < 1) ||
      (c->tsunami && a->tsunami_count < 1))
    return QS_ERR_STATE;
  if (c->has_mag && !a->minmax_stale &&
      (c->mag_micro < a->mag_min_micro || c->mag_micro > a->mag_max_micro))
    return QS_ERR_STATE;

  bool was_extreme = false;
  a->event_count--;
  if (c->has_mag) {
    was_extreme = c->mag_micro == a->mag_min_micro || c->mag_micro == a->mag_max_micro;
    a->mag_count--;
    a->mag_sum_micro -= c->mag_micro;
    a->significant_count -= c->significant;
  }
  if (c->has_depth) {
    a->depth_count--;
    a->depth_sum_micro -= c->depth_micro;
  }
  a->tsunami_count -= c->tsunami;

  if (a->mag_count == 0) {
    /* Nothing left to be extreme: min/max are null, never stale. */
    a->mag_min_micro = a->mag_max_micro = 0;
    a->minmax_stale = false;
    return 0;
  }
  if (a->minmax_stale || was_extreme) {
    a->mag_min_micro = a->mag_max_micro = 0;
    a->minmax_stale = true;
    return QS_AGG_MINMAX_STALE;
  }
  return 0;
}

int qs_agg_recompute_minmax(qs_agg *a, const qs_contrib *members, size_t n) {
  qs_agg fresh;
  qs_agg_init(&fresh);
  for (size_t i = 0; i < n; i++) {
    if (qs_agg_add(&fresh, &members[i]) < 0)
      return QS_ERR_INVALID;
  }
  /* The member list must be exactly the aggregate's members, or the min/max would be wrong. */
  if (fresh.event_count != a->event_count || fresh.mag_count != a->mag_count ||
      fresh.mag_sum_micro != a->mag_sum_micro || fresh.depth_count != a->depth_count ||
      fresh.depth_sum_micro != a->depth_sum_micro ||
      fresh.significant_count != a->significant_count || fresh.tsunami_count != a->tsunami_count)
    return QS_ERR_INVALID;
  a->mag_min_micro = fresh.mag_min_micro;
  a->mag_max_micro = fresh.mag_max_micro;
  a->minmax_stale = false;
  return 0;
}

int qs_agg_merge(qs_agg *dst, const qs_agg *src) {
  if (src->event_count > QS_AGG_MAX_COUNT - dst->event_count)
    return QS_ERR_RANGE;
  bool stale = dst->minmax_stale || src->minmax_stale;
  if (stale) {
    dst->mag_min_micro = dst->mag_max_micro = 0;
  } else if (src->mag_count > 0) {
    if (dst->mag_count == 0 || src->mag_min_micro < dst->mag_min_micro)
      dst->mag_min_micro = src->mag_min_micro;
    if (dst->mag_count == 0 || src->mag_max_micro > dst->mag_max_micro)
      dst->mag_max_micro = src->mag_max_micro;
  }
  dst->event_count += src->event_count;
  dst->mag_count += src->mag_count;
  dst->mag_sum_micro += src->mag_sum_micro;
  dst->depth_count += src->depth_count;
  dst->depth_sum_micro += src->depth_sum_micro;
  dst->significant_count += src->significant_count;
  dst->tsunami_count += src->tsunami_count;
  /* Stale only matters while magnitudes remain (see qs_agg_retract). */
  dst->minmax_stale = stale && dst->mag_count > 0;
  return 0;
}

bool qs_agg_equal(const qs_agg *a, const qs_agg *b) {
  return a->event_count == b->event_count && a->mag_count == b->mag_count &&
         a->mag_sum_micro == b->mag_sum_micro && a->mag_min_micro == b->mag_min_micro &&
         a->mag_max_micro == b->mag_max_micro && a->depth_count == b->depth_count &&
         a->depth_sum_micro == b->depth_sum_micro && a->significant_count == b->significant_count &&
         a->tsunami_count == b->tsunami_count && a->minmax_stale == b->minmax_stale;
}

double qs_agg_micro_to_double(int64_t micro) { return (double)micro / 1e6; }

/* THE average formula. Same integers -> same double, in every layer. */
static double micro_avg(int64_t sum, int64_t count) { return (double)sum / (double)count / 1e6; }

int qs_agg_avg_magnitude(const qs_agg *a, double *out) {
  if (a->mag_count == 0)
    return QS_ERR_NOTFOUND;
  *out = micro_avg(a->mag_sum_micro, a->mag_count);
  return 0;
}

int qs_agg_avg_depth_km(const qs_agg *a, double *out) {
  if (a->depth_count == 0)
    return QS_ERR_NOTFOUND;
  *out = micro_avg(a->depth_sum_micro, a->depth_count);
  return 0;
}

int qs_agg_min_magnitude(const qs_agg *a, double *out) {
  if (a->mag_count == 0)
    return QS_ERR_NOTFOUND;
  if (a->minmax_stale)
    return QS_ERR_STATE;
  *out = qs_agg_micro_to_double(a->mag_min_micro);
  return 0;
}

int qs_agg_max_magnitude(const qs_agg *a, double *out) {
  if (a->mag_count == 0)
    return QS_ERR_NOTFOUND;
  if (a->minmax_stale)
    return QS_ERR_STATE;
  *out = qs_agg_micro_to_double(a->mag_max_micro);
  return 0;
}

/* ---- windows ---- */

int qs_agg_window_of(int64_t t_ms, int64_t len_ms, int64_t *start_ms, int64_t *end_ms) {
  if (t_ms < QS_AGG_TIME_MIN_MS || t_ms > QS_AGG_TIME_MAX_MS || len_ms < 1 ||
      len_ms > QS_AGG_WINDOW_MAX_MS)
    return QS_ERR_RANGE;
  int64_t s = qs_window_start(t_ms, len_ms);
  *start_ms = s;
  *end_ms = s + len_ms;
  return 0;
}

/* ---- rows ---- */

static bool region_valid(const char *r) {
  size_t n = 0;
  if (!r)
    return false;
  for (; r[n]; n++) {
    char ch = r[n];
    if (n >= QS_AGG_REGION_MAX)
      return false;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == ':' || ch == '-'))
      return false;
  }
  return n > 0;
}

static bool time_valid(int64_t t) { return t >= QS_AGG_TIME_MIN_MS && t <= QS_AGG_TIME_MAX_MS; }

int qs_agg_row_init(qs_agg_row *row, const char *region, int64_t window_start_ms,
                    int64_t window_end_ms) {
  if (!region_valid(region))
    return QS_ERR_INVALID;
  if (!time_valid(window_start_ms) || !time_valid(window_end_ms) ||
      window_start_ms >= window_end_ms)
    return QS_ERR_RANGE;
  memset(row, 0, sizeof *row);
  row->window_start_ms = window_start_ms;
  row->window_end_ms = window_end_ms;
  strcpy(row->region, region); /* length checked by region_valid */
  qs_agg_init(&row->agg);
  return 0;
}

int qs_agg_row_add(qs_agg_row *row, const qs_contrib *c) {
  if (c->time_ms < row->window_start_ms || c->time_ms >= row->window_end_ms)
    return QS_ERR_RANGE;
  return qs_agg_add(&row->agg, c);
}

int qs_agg_row_rollup(qs_agg_row *dst, const qs_agg_row *src) {
  if (strcmp(dst->region, src->region) != 0 || src->window_start_ms < dst->window_start_ms ||
      src->window_end_ms > dst->window_end_ms)
    return QS_ERR_INVALID;
  return qs_agg_merge(&dst->agg, &src->agg);
}

/* ---- ISO-8601 ---- */

int qs_agg_format_iso8601(int64_t t_ms, char *buf, size_t size) {
  if (!time_valid(t_ms) || size < 25)
    return QS_ERR_RANGE;
  qs_time_format_iso8601(t_ms, buf, size);
  return 0;
}

/* ---- JSON ---- */

static bool json_int_ok(int64_t v) { return v >= -QS_AGG_JSON_INT_MAX && v <= QS_AGG_JSON_INT_MAX; }

/* The row is written directly, byte for byte what the cJSON object of earlier versions printed
 * (tests/unit/test_agg.c keeps that cJSON construction as the reference): members in a fixed
 * order, no spaces; integers as raw text (PRId64) so they never take a float form like 1e+15;
 * the region and the timestamps need no escaping (region_valid); the four derived doubles (or
 * null) the way cJSON prints a number. It runs once per changed window per commit, where the
 * cJSON tree's allocations and printf calls showed in the speed aggregator's profile. */
typedef struct rowbuf {
  char *p;
  size_t len, cap;
} rowbuf;

static void rb_put(rowbuf *b, const char *s, size_t n) {
  if (b->len + n < b->cap)
    memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void rb_puts(rowbuf *b, const char *s) { rb_put(b, s, strlen(s)); }

static void rb_int(rowbuf *b, int64_t v) {
  char o[24];
  rb_put(b, o, qs_i64_str(v, o));
}

static void rb_cjson_number(rowbuf *b, double d) {
  char num[40];
  rb_put(b, num, qs_cjson_number(d, num));
}

static void rb_member_int(rowbuf *b, const char *name, int64_t v) {
  rb_puts(b, name);
  rb_int(b, v);
}

static void rb_member_opt(rowbuf *b, const char *name, int rc, double v) {
  rb_puts(b, name);
  if (rc == 0)
    rb_cjson_number(b, v);
  else
    rb_puts(b, "null");
}

int qs_agg_row_to_json_buf(const qs_agg_row *row, char *buf, size_t cap, size_t *out_len) {
  const qs_agg *a = &row->agg;
  char ws[32], we[32];
  double avg_mag = 0, min_mag = 0, max_mag = 0, avg_depth = 0;
  if (a->minmax_stale)
    return QS_ERR_STATE;
  if (!region_valid(row->region) || row->window_start_ms >= row->window_end_ms)
    return QS_ERR_INVALID;
  if (!json_int_ok(a->mag_sum_micro) || !json_int_ok(a->depth_sum_micro) ||
      !json_int_ok(a->event_count))
    return QS_ERR_RANGE;
  if (qs_agg_format_iso8601(row->window_start_ms, ws, sizeof ws) < 0 ||
      qs_agg_format_iso8601(row->window_end_ms, we, sizeof we) < 0)
    return QS_ERR_RANGE;
  int rc_avg = qs_agg_avg_magnitude(a, &avg_mag);
  int rc_min = qs_agg_min_magnitude(a, &min_mag);
  int rc_max = qs_agg_max_magnitude(a, &max_mag);
  int rc_depth = qs_agg_avg_depth_km(a, &avg_depth);
  rowbuf b = {buf, 0, cap};
  rb_puts(&b, "{\"window_start\":\"");
  rb_puts(&b, ws);
  rb_puts(&b, "\",\"window_end\":\"");
  rb_puts(&b, we);
  rb_member_int(&b, "\",\"window_start_ms\":", row->window_start_ms);
  rb_member_int(&b, ",\"window_end_ms\":", row->window_end_ms);
  rb_puts(&b, ",\"region\":\"");
  rb_puts(&b, row->region);
  rb_member_int(&b, "\",\"event_count\":", a->event_count);
  rb_member_opt(&b, ",\"avg_magnitude\":", rc_avg, avg_mag);
  rb_member_opt(&b, ",\"min_magnitude\":", rc_min, min_mag);
  rb_member_opt(&b, ",\"max_magnitude\":", rc_max, max_mag);
  rb_member_opt(&b, ",\"avg_depth_km\":", rc_depth, avg_depth);
  rb_member_int(&b, ",\"significant_count\":", a->significant_count);
  rb_member_int(&b, ",\"tsunami_count\":", a->tsunami_count);
  rb_member_int(&b, ",\"tsunami_alerts\":", a->tsunami_count);
  rb_member_int(&b, ",\"mag_sum_micro\":", a->mag_sum_micro);
  rb_member_int(&b, ",\"mag_count\":", a->mag_count);
  rb_member_int(&b, ",\"depth_sum_micro\":", a->depth_sum_micro);
  rb_member_int(&b, ",\"depth_count\":", a->depth_count);
  rb_put(&b, "}", 1);
  if (b.len >= cap)
    return QS_ERR_TOOBIG;
  buf[b.len] = '\0';
  if (out_len)
    *out_len = b.len;
  return 0;
}

int qs_agg_row_to_json(const qs_agg_row *row, char **out, size_t *out_len) {
  char text[QS_AGG_JSON_MAX];
  size_t n;
  int rc = qs_agg_row_to_json_buf(row, text, sizeof text, &n);
  if (rc == QS_ERR_TOOBIG)
    QS_FATAL("an aggregate row over %d bytes", QS_AGG_JSON_MAX);
  if (rc != 0)
    return rc;
  char *copy = qs_xmalloc(n + 1);
  memcpy(copy, text, n + 1);
  *out = copy;
  if (out_len)
    *out_len = n;
  return 0;
}

/* Reads an integer field: present, a number, integral, within [lo, hi]. */
static bool get_int(const cJSON *o, const char *name, int64_t lo, int64_t hi, int64_t *out) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!cJSON_IsNumber(it))
    return false;
  double v = it->valuedouble;
  if (!isfinite(v) || v != floor(v) || v < (double)lo || v > (double)hi)
    return false;
  *out = (int64_t)v;
  return true;
}

/* Reads a nullable number field; *is_null tells which. Missing or other types fail. */
static bool get_opt_number(const cJSON *o, const char *name, bool *is_null, double *out) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
  if (cJSON_IsNull(it)) {
    *is_null = true;
    return true;
  }
  if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
    return false;
  *is_null = false;
  *out = it->valuedouble;
  return true;
}

static bool iso_matches(const cJSON *o, const char *name, int64_t t_ms) {
  char buf[32];
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(it) && qs_agg_format_iso8601(t_ms, buf, sizeof buf) == 0 &&
         strcmp(buf, it->valuestring) == 0;
}

/* Checks the cross-field invariants of a decoded row; true when consistent. */
static bool decode_fields(const cJSON *o, qs_agg_row *r) {
  qs_agg *a = &r->agg;
  const int64_t T0 = QS_AGG_TIME_MIN_MS, T1 = QS_AGG_TIME_MAX_MS, N = QS_AGG_MAX_COUNT;
  const int64_t J = QS_AGG_JSON_INT_MAX;
  bool null_avg, null_min, null_max, null_depth;
  double avg, mn, mx, avg_depth;
  int64_t alerts;

  const cJSON *region = cJSON_GetObjectItemCaseSensitive(o, "region");
  if (!cJSON_IsString(region) || !region_valid(region->valuestring))
    return false;
  if (!get_int(o, "window_start_ms", T0, T1, &r->window_start_ms) ||
      !get_int(o, "window_end_ms", T0, T1, &r->window_end_ms) ||
      r->window_start_ms >= r->window_end_ms ||
      !iso_matches(o, "window_start", r->window_start_ms) ||
      !iso_matches(o, "window_end", r->window_end_ms))
    return false;
  strcpy(r->region, region->valuestring);
  if (!get_int(o, "event_count", 0, N, &a->event_count) ||
      !get_int(o, "mag_count", 0, a->event_count, &a->mag_count) ||
      !get_int(o, "depth_count", 0, a->event_count, &a->depth_count) ||
      !get_int(o, "significant_count", 0, a->mag_count, &a->significant_count) ||
      !get_int(o, "tsunami_count", 0, a->event_count, &a->tsunami_count) ||
      !get_int(o, "mag_sum_micro", -J, J, &a->mag_sum_micro) ||
      !get_int(o, "depth_sum_micro", -J, J, &a->depth_sum_micro))
    return false;
  if (cJSON_GetObjectItemCaseSensitive(o, "tsunami_alerts") &&
      (!get_int(o, "tsunami_alerts", 0, N, &alerts) || alerts != a->tsunami_count))
    return false;
  if (!get_opt_number(o, "avg_magnitude", &null_avg, &avg) ||
      !get_opt_number(o, "min_magnitude", &null_min, &mn) ||
      !get_opt_number(o, "max_magnitude", &null_max, &mx) ||
      !get_opt_number(o, "avg_depth_km", &null_depth, &avg_depth))
    return false;
  bool no_mag = a->mag_count == 0;
  if (null_avg != no_mag || null_min != no_mag || null_max != no_mag ||
      null_depth != (a->depth_count == 0))
    return false;
  /* Sums must be reachable from count values within the bounds. */
  if (a->depth_sum_micro < a->depth_count * DEPTH_MIN_MICRO ||
      a->depth_sum_micro > a->depth_count * DEPTH_MAX_MICRO)
    return false;
  if (no_mag)
    return a->mag_sum_micro == 0;
  if (to_micro(mn, MAG_MIN_MICRO, MAG_MAX_MICRO, &a->mag_min_micro) < 0 ||
      to_micro(mx, MAG_MIN_MICRO, MAG_MAX_MICRO, &a->mag_max_micro) < 0 ||
      a->mag_min_micro > a->mag_max_micro)
    return false;
  if (a->mag_count == 1 && a->mag_min_micro != a->mag_max_micro)
    return false;
  return a->mag_sum_micro >= a->mag_count * a->mag_min_micro &&
         a->mag_sum_micro <= a->mag_count * a->mag_max_micro;
}

int qs_agg_row_from_json(qs_agg_row *row, const char *json, size_t len) {
  qs_agg_row r;
  if (len > QS_AGG_JSON_MAX)
    return QS_ERR_TOOBIG;
  cJSON *o = cJSON_ParseWithLength(json, len);
  if (!o)
    return QS_ERR_PARSE;
  memset(&r, 0, sizeof r);
  bool ok = cJSON_IsObject(o) && decode_fields(o, &r);
  cJSON_Delete(o);
  if (!ok)
    return QS_ERR_INVALID;
  *row = r;
  return 0;
}

/* ---- serving-layer cutoff merge ---- */

const char *qs_agg_source_name(qs_agg_source s) {
  switch (s) {
  case QS_AGG_SOURCE_BATCH_ONLY:
    return "batch-only";
  case QS_AGG_SOURCE_REALTIME_ONLY:
    return "realtime-only";
  case QS_AGG_SOURCE_BATCH_REALTIME:
    return "batch+realtime";
  case QS_AGG_SOURCE_NONE:
  default:
    return "none";
  }
}

static bool straddles(const qs_agg_row *r, int64_t cutoff) {
  return r->window_start_ms < cutoff && r->window_end_ms > cutoff;
}

static bool region_selected(const qs_agg_row *r, const char *region) {
  return region == NULL || strcmp(r->region, region) == 0;
}

int qs_agg_cutoff_merge_rows(qs_agg_cutoff_merge *res, int64_t cutoff_ms, const char *region,
                             const qs_agg_row *batch, size_t n_batch, const qs_agg_row *speed,
                             size_t n_speed) {
  qs_agg_cutoff_merge m;
  int rc;
  if (!time_valid(cutoff_ms))
    return QS_ERR_RANGE;
  memset(&m, 0, sizeof m);
  qs_agg_init(&m.agg);
  m.effective_cutoff_ms = qs_window_start(cutoff_ms, QS_AGG_HOUR_MS);
  const int64_t cut = m.effective_cutoff_ms;

  for (size_t i = 0; i < n_batch; i++) {
    const qs_agg_row *r = &batch[i];
    if (!region_selected(r, region))
      continue;
    if (straddles(r, cut))
      return QS_ERR_INVALID;
    if (r->window_end_ms <= cut) {
      if ((rc = qs_agg_merge(&m.agg, &r->agg)) < 0)
        return rc;
      m.batch_used++;
    } else {
      m.batch_skipped++;
    }
  }
  for (size_t i = 0; i < n_speed; i++) {
    const qs_agg_row *r = &speed[i];
    if (!region_selected(r, region))
      continue;
    if (straddles(r, cut))
      return QS_ERR_INVALID;
    if (r->window_start_ms >= cut) {
      if ((rc = qs_agg_merge(&m.agg, &r->agg)) < 0)
        return rc;
      m.speed_used++;
    } else {
      m.speed_skipped++;
    }
  }
  m.source = m.batch_used && m.speed_used ? QS_AGG_SOURCE_BATCH_REALTIME
             : m.batch_used               ? QS_AGG_SOURCE_BATCH_ONLY
             : m.speed_used               ? QS_AGG_SOURCE_REALTIME_ONLY
                                          : QS_AGG_SOURCE_NONE;
  *res = m;
  return 0;
}

/* ---- ANOMALY baseline ---- */

void qs_agg_baseline_init(qs_agg_baseline *b) { memset(b, 0, sizeof *b); }

int qs_agg_baseline_add_hour(qs_agg_baseline *b, int64_t count) {
  if (count < 0 || count > QS_AGG_BASELINE_MAX_HOURLY || b->hours >= QS_AGG_BASELINE_MAX_HOURS)
    return QS_ERR_RANGE;
  /* hours <= 1e6 and count <= 1e6: count_sq_sum <= 1e18 < INT64_MAX. */
  b->hours++;
  b->count_sum += count;
  b->count_sq_sum += count * count;
  return 0;
}

int qs_agg_baseline_add_empty_hours(qs_agg_baseline *b, int64_t n) {
  if (n < 0 || n > QS_AGG_BASELINE_MAX_HOURS - b->hours)
    return QS_ERR_RANGE;
  b->hours += n;
  return 0;
}

int qs_agg_baseline_hourly(const qs_agg_baseline *b, double *mean, double *stddev) {
  if (b->hours < 2)
    return QS_ERR_NOTFOUND;
  /* n * sum(x^2) - (sum x)^2 exactly in 128 bits (<= 1e6 * 1e18), then one division. */
  __extension__ typedef __int128 i128;
  i128 n = b->hours;
  i128 num = n * (i128)b->count_sq_sum - (i128)b->count_sum * (i128)b->count_sum;
  if (num < 0) /* only for a hand-edited struct; the sums of real counts cannot do this */
    return QS_ERR_INVALID;
  *mean = (double)b->count_sum / (double)b->hours;
  *stddev = sqrt((double)num / ((double)b->hours * (double)(b->hours - 1)));
  return 0;
}

int qs_agg_baseline_threshold(const qs_agg_baseline *b, int64_t window_len_ms, double k_sigma,
                              double *threshold) {
  double mean, sd;
  int rc;
  if (window_len_ms < 1 || window_len_ms > QS_AGG_WINDOW_MAX_MS || !isfinite(k_sigma) ||
      k_sigma < 0)
    return QS_ERR_RANGE;
  if ((rc = qs_agg_baseline_hourly(b, &mean, &sd)) < 0)
    return rc;
  double r = (double)window_len_ms / (double)QS_AGG_HOUR_MS;
  *threshold = mean * r + k_sigma * sd * sqrt(r);
  return 0;
}
