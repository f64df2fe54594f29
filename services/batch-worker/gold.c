/* gold.c — gold Avro files and daily JSON rows (see gold.h). */
#include "gold.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qs/capture.h"
#include "qs/error.h"
#include "qs/fsutil.h"
#include "qs/timeutil.h"

/* Avro binary: zig-zag varint longs, doubles little-endian, unions as branch index + value. */
static void put_long(qs_buf *b, int64_t v) {
  uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
  uint8_t tmp[10];
  size_t n = 0;
  while (z >= 0x80) {
    tmp[n++] = (uint8_t)(z | 0x80);
    z >>= 7;
  }
  tmp[n++] = (uint8_t)z;
  qs_buf_append(b, tmp, n);
}

static void put_string(qs_buf *b, const char *s) {
  size_t n = strlen(s);
  put_long(b, (int64_t)n);
  qs_buf_append(b, s, n);
}

static void put_opt_double(qs_buf *b, int rc, double v) {
  if (rc != 0) {
    put_long(b, 0);
    return;
  }
  put_long(b, 1);
  uint8_t tmp[8];
  uint64_t u;
  memcpy(&u, &v, 8);
  for (int i = 0; i < 8; i++)
    tmp[i] = (uint8_t)(u >> (8 * i));
  qs_buf_append(b, tmp, 8);
}

static void put_stats(qs_buf *b, const qs_agg *a) {
  double v;
  int rc = qs_agg_avg_magnitude(a, &v);
  put_opt_double(b, rc, v);
  rc = qs_agg_max_magnitude(a, &v);
  put_opt_double(b, rc, v);
  rc = qs_agg_min_magnitude(a, &v);
  put_opt_double(b, rc, v);
  rc = qs_agg_avg_depth_km(a, &v);
  put_opt_double(b, rc, v);
  put_long(b, a->significant_count);
  put_long(b, a->tsunami_count);
  put_long(b, a->mag_sum_micro);
  put_long(b, a->mag_count);
  put_long(b, a->depth_sum_micro);
  put_long(b, a->depth_count);
}

void bw_gold_encode_hourly(qs_buf *b, const qs_agg_row *row) {
  put_long(b, row->window_start_ms);
  put_long(b, row->window_end_ms);
  put_string(b, row->region);
  put_long(b, row->agg.event_count);
  put_stats(b, &row->agg);
}

void bw_gold_date(const qs_agg_row *day, char *buf, size_t cap) {
  int64_t y;
  unsigned m, d;
  qs_civil_from_days(qs_window_start(day->window_start_ms, QS_MS_PER_DAY) / QS_MS_PER_DAY, &y, &m,
                     &d);
  snprintf(buf, cap, "%04lld-%02u-%02u", (long long)y, m, d);
}

void bw_gold_encode_daily(qs_buf *b, const qs_agg_row *row) {
  char date[16];
  bw_gold_date(row, date, sizeof date);
  put_string(b, date);
  put_long(b, row->window_start_ms);
  put_string(b, row->region);
  put_long(b, row->agg.event_count);
  put_stats(b, &row->agg);
}

static void json_opt_double(qs_buf *out, const char *key, int rc, double v) {
  qs_buf_printf(out, ",\"%s\":", key);
  if (rc != 0) {
    qs_buf_puts(out, "null");
    return;
  }
  char num[32];
  qs_double_shortest(num, sizeof num, v);
  qs_buf_puts(out, num);
}

void bw_gold_daily_json(qs_buf *out, const qs_agg_row *day) {
  char date[16];
  double v;
  bw_gold_date(day, date, sizeof date);
  qs_buf_printf(out, "{\"date\":\"%s\",\"region\":\"%s\",\"event_count\":%lld", date, day->region,
                (long long)day->agg.event_count);
  int rc = qs_agg_avg_magnitude(&day->agg, &v);
  json_opt_double(out, "avg_magnitude", rc, v);
  rc = qs_agg_max_magnitude(&day->agg, &v);
  json_opt_double(out, "max_magnitude", rc, v);
  qs_buf_printf(out,
                ",\"tsunami_events\":%lld,\"mag_sum_micro\":%lld,\"mag_count\":%lld,"
                "\"depth_sum_micro\":%lld,\"depth_count\":%lld}",
                (long long)day->agg.tsunami_count, (long long)day->agg.mag_sum_micro,
                (long long)day->agg.mag_count, (long long)day->agg.depth_sum_micro,
                (long long)day->agg.depth_count);
}

static int write_file(const char *dir, const char *name, const char *schema, const qs_agg_row *rows,
                      size_t n, int daily, char *err, size_t errlen) {
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
    qs_set_reason(err, errlen, "gold path too long");
    return QS_ERR_TOOBIG;
  }
  qs_capture_writer w;
  qs_capture_writer_opts o = {.codec = QS_CAPTURE_CODEC_DEFLATE, .deflate_level = 6};
  int rc = qs_capture_writer_open_schema(&w, path, schema, &o);
  if (rc) {
    qs_set_reason(err, errlen, "%s: cannot create: %s", path, qs_strerror(rc));
    return rc;
  }
  qs_buf b = QS_BUF_INIT;
  for (size_t i = 0; i < n; i++) {
    qs_buf_reset(&b);
    if (daily)
      bw_gold_encode_daily(&b, &rows[i]);
    else
      bw_gold_encode_hourly(&b, &rows[i]);
    rc = qs_capture_writer_append_datum(&w, b.p, b.len);
    if (rc) {
      qs_buf_free(&b);
      qs_capture_writer_abort(&w);
      qs_set_reason(err, errlen, "%s: write failed: %s", path, qs_strerror(rc));
      return rc;
    }
  }
  qs_buf_free(&b);
  rc = qs_capture_writer_close(&w);
  if (rc)
    qs_set_reason(err, errlen, "%s: close failed: %s", path, qs_strerror(rc));
  return rc;
}

int bw_gold_write(const char *dir, const qs_agg_row *hourly, size_t n_hourly,
                  const qs_agg_row *daily, size_t n_daily, char *err, size_t errlen) {
  int rc = qs_mkdir_p(dir);
  if (rc) {
    qs_set_reason(err, errlen, "%s: cannot create directory: %s", dir, qs_strerror(rc));
    return rc;
  }
  rc =
      write_file(dir, BW_GOLD_HOURLY_FILE, bw_gold_hourly_schema, hourly, n_hourly, 0, err, errlen);
  if (rc == 0)
    rc = write_file(dir, BW_GOLD_DAILY_FILE, bw_gold_daily_schema, daily, n_daily, 1, err, errlen);
  return rc;
}
