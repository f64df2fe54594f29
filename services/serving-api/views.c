/* views.c — merged views over batch and speed rows (see views.h). */
#include "views.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "qs/error.h"

void view_rows_add_json(view_rows *r, const char *json, size_t len) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 64;
    r->v = qs_xrealloc(r->v, r->cap * sizeof *r->v);
  }
  if (qs_agg_row_from_json(&r->v[r->n], json, len) == 0)
    r->n++;
  else
    r->rejected++;
}

void view_rows_free(view_rows *r) {
  free(r->v);
  memset(r, 0, sizeof *r);
}

static void put_double(qs_buf *b, double v) {
  char tmp[40];
  size_t n = qs_double_shortest(tmp, sizeof tmp, v);
  qs_buf_append(b, tmp, n);
}

static void put_opt(qs_buf *b, int rc, double v) {
  if (rc == 0)
    put_double(b, v);
  else
    qs_buf_puts(b, "null");
}

void view_time(qs_buf *b, int64_t ms) {
  char iso[32];
  if (ms == INT64_MIN || qs_agg_format_iso8601(ms, iso, sizeof iso) != 0) {
    qs_buf_puts(b, "null");
    return;
  }
  qs_buf_printf(b, "\"%s\"", iso);
}

void view_agg_fields(qs_buf *b, const qs_agg *a) {
  double v = 0;
  int rc;
  qs_buf_printf(b, "\"event_count\":%lld,\"avg_magnitude\":", (long long)a->event_count);
  rc = qs_agg_avg_magnitude(a, &v);
  put_opt(b, rc, v);
  qs_buf_puts(b, ",\"min_magnitude\":");
  rc = qs_agg_min_magnitude(a, &v);
  put_opt(b, rc, v);
  qs_buf_puts(b, ",\"max_magnitude\":");
  rc = qs_agg_max_magnitude(a, &v);
  put_opt(b, rc, v);
  qs_buf_puts(b, ",\"avg_depth_km\":");
  rc = qs_agg_avg_depth_km(a, &v);
  put_opt(b, rc, v);
  qs_buf_printf(b,
                ",\"significant_count\":%lld,\"tsunami_count\":%lld,\"mag_sum_micro\":%lld,"
                "\"mag_count\":%lld,\"depth_sum_micro\":%lld,\"depth_count\":%lld",
                (long long)a->significant_count, (long long)a->tsunami_count,
                (long long)a->mag_sum_micro, (long long)a->mag_count, (long long)a->depth_sum_micro,
                (long long)a->depth_count);
}

static int64_t floor_hour(int64_t ms) {
  int64_t s = 0, e = 0;
  if (ms <= 0 || qs_agg_window_of(ms, QS_AGG_HOUR_MS, &s, &e) != 0)
    return ms <= 0 ? 0 : ms;
  return s;
}

static void put_cutoff(qs_buf *out, int64_t cutoff_ms) {
  int64_t c = floor_hour(cutoff_ms);
  qs_buf_puts(out, ",\"batch_cutoff\":");
  view_time(out, c > 0 ? c : INT64_MIN);
  qs_buf_printf(out, ",\"batch_cutoff_ms\":%lld", (long long)c);
}

static int cmp_row_region(const void *a, const void *b) {
  return strcmp(((const qs_agg_row *)a)->region, ((const qs_agg_row *)b)->region);
}

/* End of the run of rows of v[from].region in v sorted by region. */
static size_t region_end(const qs_agg_row *v, size_t n, size_t from, const char *region) {
  while (from < n && strcmp(v[from].region, region) == 0)
    from++;
  return from;
}

int view_summary_json(qs_buf *out, int64_t cutoff_ms, int64_t since_ms, const view_rows *batch,
                      const view_rows *speed) {
  qs_agg_cutoff_merge m;
  /* Sorted copies by region: each region's rows are one slice, merged once (O(n log n), not
   * regions x rows). */
  qs_agg_row *b = qs_xmalloc((batch->n + 1) * sizeof *b);
  qs_agg_row *s = qs_xmalloc((speed->n + 1) * sizeof *s);
  memcpy(b, batch->v, batch->n * sizeof *b);
  memcpy(s, speed->v, speed->n * sizeof *s);
  qsort(b, batch->n, sizeof *b, cmp_row_region);
  qsort(s, speed->n, sizeof *s, cmp_row_region);
  qs_buf body = QS_BUF_INIT;
  size_t shown = 0, ib = 0, is = 0;
  int rc = 0;
  while (ib < batch->n || is < speed->n) {
    const char *region =
        ib < batch->n && (is >= speed->n || strcmp(b[ib].region, s[is].region) <= 0) ? b[ib].region
                                                                                     : s[is].region;
    size_t jb = region_end(b, batch->n, ib, region), js = region_end(s, speed->n, is, region);
    rc = qs_agg_cutoff_merge_rows(&m, cutoff_ms, NULL, b + ib, jb - ib, s + is, js - is);
    if (rc != 0)
      goto done;
    if (m.source != QS_AGG_SOURCE_NONE) {
      qs_buf_puts(&body, shown++ ? ",{\"region\":\"" : "{\"region\":\"");
      qs_buf_json_str(&body, region, strlen(region));
      qs_buf_puts(&body, "\",");
      view_agg_fields(&body, &m.agg);
      qs_buf_printf(&body,
                    ",\"data_freshness\":\"%s\",\"batch_hours\":%zu,\"realtime_windows\":%zu}",
                    qs_agg_source_name(m.source), m.batch_used, m.speed_used);
    }
    ib = jb;
    is = js;
  }
  rc = qs_agg_cutoff_merge_rows(&m, cutoff_ms, NULL, batch->v, batch->n, speed->v, speed->n);
  if (rc != 0)
    goto done;
  qs_buf_puts(out, "{\"since\":");
  view_time(out, since_ms);
  qs_buf_puts(out, ",\"since_ms\":");
  if (since_ms == INT64_MIN)
    qs_buf_puts(out, "null");
  else
    qs_buf_printf(out, "%lld", (long long)since_ms);
  put_cutoff(out, cutoff_ms);
  qs_buf_puts(out, ",\"regions\":[");
  if (body.len)
    qs_buf_append(out, body.p, body.len);
  qs_buf_puts(out, "],\"total\":{");
  view_agg_fields(out, &m.agg);
  qs_buf_printf(out, ",\"data_freshness\":\"%s\",\"batch_hours\":%zu,\"realtime_windows\":%zu}}",
                m.source == QS_AGG_SOURCE_NONE ? "none" : qs_agg_source_name(m.source),
                m.batch_used, m.speed_used);
done:
  qs_buf_free(&body);
  free(b);
  free(s);
  return rc;
}

/* Rows of one bin [lo, hi): the rows are not sorted, so the bin's rows are gathered first. */
static size_t gather(const view_rows *r, int64_t lo, int64_t hi, qs_agg_row *dst) {
  size_t k = 0;
  for (size_t i = 0; i < r->n; i++)
    if (r->v[i].window_start_ms >= lo && r->v[i].window_start_ms < hi)
      dst[k++] = r->v[i];
  return k;
}

static int cmp_row_start(const void *a, const void *b) {
  const qs_agg_row *x = a, *y = b;
  return (x->window_start_ms > y->window_start_ms) - (x->window_start_ms < y->window_start_ms);
}

int view_timeseries_json(qs_buf *out, int64_t cutoff_ms, int64_t since_ms, int64_t until_ms,
                         int64_t bin_ms, const char *region, const view_rows *batch,
                         const view_rows *speed) {
  if (bin_ms <= 0 || bin_ms % QS_AGG_HOUR_MS != 0 || until_ms < since_ms)
    return QS_ERR_INVALID;
  int64_t start = 0, end = 0;
  if (qs_agg_window_of(since_ms, bin_ms, &start, &end) != 0)
    return QS_ERR_RANGE;
  /* Sort copies by start so each bin is one contiguous slice. */
  qs_agg_row *b = qs_xmalloc((batch->n + 1) * sizeof *b);
  qs_agg_row *s = qs_xmalloc((speed->n + 1) * sizeof *s);
  size_t nb = gather(batch, INT64_MIN, INT64_MAX, b), ns = gather(speed, INT64_MIN, INT64_MAX, s);
  qsort(b, nb, sizeof *b, cmp_row_start);
  qsort(s, ns, sizeof *s, cmp_row_start);
  qs_buf_puts(out, "{\"since\":");
  view_time(out, start);
  qs_buf_printf(out, ",\"since_ms\":%lld,\"bin_ms\":%lld,\"region\":", (long long)start,
                (long long)bin_ms);
  if (region && region[0]) {
    qs_buf_puts(out, "\"");
    qs_buf_json_str(out, region, strlen(region));
    qs_buf_puts(out, "\"");
  } else {
    qs_buf_puts(out, "null");
  }
  put_cutoff(out, cutoff_ms);
  qs_buf_puts(out, ",\"points\":[");
  size_t ib = 0, is = 0;
  int rc = 0;
  for (int64_t t = start; t <= until_ms; t += bin_ms) {
    while (ib < nb && b[ib].window_start_ms < t)
      ib++;
    while (is < ns && s[is].window_start_ms < t)
      is++;
    size_t jb = ib, js = is;
    while (jb < nb && b[jb].window_start_ms < t + bin_ms)
      jb++;
    while (js < ns && s[js].window_start_ms < t + bin_ms)
      js++;
    qs_agg_cutoff_merge m;
    rc = qs_agg_cutoff_merge_rows(&m, cutoff_ms, region && region[0] ? region : NULL, b + ib,
                                  jb - ib, s + is, js - is);
    if (rc != 0)
      break;
    qs_buf_puts(out, t == start ? "{\"t\":" : ",{\"t\":");
    view_time(out, t);
    qs_buf_printf(out, ",\"t_ms\":%lld,", (long long)t);
    view_agg_fields(out, &m.agg);
    qs_buf_printf(out, ",\"data_freshness\":\"%s\"}",
                  m.source == QS_AGG_SOURCE_NONE ? "none" : qs_agg_source_name(m.source));
    ib = jb;
    is = js;
  }
  qs_buf_puts(out, "]}");
  free(b);
  free(s);
  return rc;
}

static int get_int(const cJSON *o, const char *name, int64_t max, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
      v->valuedouble != floor(v->valuedouble))
    return QS_ERR_INVALID;
  *out = (int64_t)v->valuedouble;
  return 0;
}

int view_baseline_parse(view_baseline *vb, const char *region, const char *json, size_t len) {
  memset(vb, 0, sizeof *vb);
  size_t rl = strlen(region);
  if (rl == 0 || rl > QS_AGG_REGION_MAX || len > QS_AGG_JSON_MAX)
    return QS_ERR_INVALID;
  memcpy(vb->region, region, rl + 1);
  cJSON *o = cJSON_ParseWithLength(json, len);
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return QS_ERR_PARSE;
  }
  qs_agg_baseline_init(&vb->b);
  int rc = get_int(o, "hours", QS_AGG_BASELINE_MAX_HOURS, &vb->b.hours);
  if (!rc)
    rc = get_int(o, "count_sum", QS_AGG_JSON_INT_MAX, &vb->b.count_sum);
  if (!rc)
    rc = get_int(o, "count_sq_sum", QS_AGG_JSON_INT_MAX, &vb->b.count_sq_sum);
  if (!rc && vb->b.count_sum > vb->b.hours * QS_AGG_BASELINE_MAX_HOURLY)
    rc = QS_ERR_INVALID;
  cJSON_Delete(o);
  return rc;
}

static const view_baseline *find_baseline(const view_baseline *bl, size_t n, const char *region) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(bl[i].region, region) == 0)
      return &bl[i];
  return NULL;
}

/* {"hours","mean","stddev","k","threshold"} for a window length; null threshold under 2 hours. */
static void put_baseline(qs_buf *b, const view_baseline *vb, int64_t window_ms, double k) {
  double mean = 0, sd = 0, thr = 0;
  int rc = qs_agg_baseline_hourly(&vb->b, &mean, &sd);
  qs_buf_printf(b, "{\"hours\":%lld,\"mean_per_hour\":", (long long)vb->b.hours);
  put_opt(b, rc, mean);
  qs_buf_puts(b, ",\"stddev_per_hour\":");
  put_opt(b, rc, sd);
  qs_buf_puts(b, ",\"k\":");
  put_double(b, k);
  qs_buf_printf(b, ",\"window_ms\":%lld,\"threshold\":", (long long)window_ms);
  rc = qs_agg_baseline_threshold(&vb->b, window_ms, k, &thr);
  put_opt(b, rc, thr);
  qs_buf_puts(b, "}");
}

static int cmp_row_newest(const void *a, const void *b) {
  const qs_agg_row *x = a, *y = b;
  if (x->window_start_ms != y->window_start_ms)
    return (x->window_start_ms < y->window_start_ms) - (x->window_start_ms > y->window_start_ms);
  return strcmp(x->region, y->region);
}

int view_anomalies_json(qs_buf *out, int64_t since_ms, double k_sigma, const view_rows *speed,
                        const view_baseline *bl, size_t nbl) {
  qs_agg_row *s = qs_xmalloc((speed->n + 1) * sizeof *s);
  size_t ns = gather(speed, since_ms, INT64_MAX, s);
  qsort(s, ns, sizeof *s, cmp_row_newest);
  qs_buf_puts(out, "{\"since\":");
  view_time(out, since_ms);
  qs_buf_puts(out, ",\"k\":");
  put_double(out, k_sigma);
  qs_buf_puts(out, ",\"anomalies\":[");
  size_t shown = 0;
  for (size_t i = 0; i < ns; i++) {
    const view_baseline *vb = find_baseline(bl, nbl, s[i].region);
    double thr;
    int64_t len = s[i].window_end_ms - s[i].window_start_ms;
    if (!vb || qs_agg_baseline_threshold(&vb->b, len, k_sigma, &thr) != 0 ||
        !((double)s[i].agg.event_count > thr))
      continue;
    qs_buf_puts(out, shown++ ? ",{\"region\":\"" : "{\"region\":\"");
    qs_buf_json_str(out, s[i].region, strlen(s[i].region));
    qs_buf_puts(out, "\",\"window_start\":");
    view_time(out, s[i].window_start_ms);
    qs_buf_puts(out, ",\"window_end\":");
    view_time(out, s[i].window_end_ms);
    qs_buf_printf(out, ",\"window_start_ms\":%lld,\"window_end_ms\":%lld,",
                  (long long)s[i].window_start_ms, (long long)s[i].window_end_ms);
    view_agg_fields(out, &s[i].agg);
    qs_buf_puts(out, ",\"threshold\":");
    put_double(out, thr);
    qs_buf_puts(out, ",\"baseline\":");
    put_baseline(out, vb, len, k_sigma);
    qs_buf_puts(out, "}");
  }
  qs_buf_puts(out, "],\"baselines\":{");
  for (size_t i = 0; i < nbl; i++) {
    qs_buf_puts(out, i ? ",\"" : "\"");
    qs_buf_json_str(out, bl[i].region, strlen(bl[i].region));
    qs_buf_puts(out, "\":");
    put_baseline(out, &bl[i], QS_AGG_WINDOW_5MIN_MS, k_sigma);
  }
  qs_buf_puts(out, "}}");
  free(s);
  return 0;
}
