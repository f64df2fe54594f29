/* test_serving.c — serving-api's pure parts: query parameters (params.c), the merged views at the
 * batch cutoff (views.c), and the WebSocket wire format (ws_frame.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <cjson/cJSON.h>

#include "qs/agg.h"
#include "qs/error.h"

#include "params.h"
#include "views.h"
#include "ws_frame.h"

#define HOUR QS_AGG_HOUR_MS
#define MIN5 QS_AGG_WINDOW_5MIN_MS
#define T0 INT64_C(1795586400000) /* 2026-11-25T06:00:00Z */

static int parse(api_query *q, const char *s) { return api_query_parse(q, s, strlen(s)); }

static void test_query_decodes_escapes_and_refuses_repeats_and_bad_escapes(void **state) {
  (void)state;
  api_query q;
  assert_int_equal(parse(&q, "a=1&b=x%20y+z&&c"), 0);
  assert_string_equal(api_query_get(&q, "a"), "1");
  assert_string_equal(api_query_get(&q, "b"), "x y z");
  assert_string_equal(api_query_get(&q, "c"), "");
  assert_null(api_query_get(&q, "d"));
  assert_int_equal(parse(&q, "a=1&a=2"), QS_ERR_PARSE);
  assert_string_equal(q.bad_param, "a");
  assert_int_equal(parse(&q, "a=%4"), QS_ERR_PARSE);
  assert_int_equal(parse(&q, "a=%00"), QS_ERR_PARSE);
  assert_int_equal(parse(&q, "=1"), QS_ERR_PARSE);
  char big[3000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(parse(&q, big), QS_ERR_TOOBIG);
  assert_int_equal(parse(&q, "a=1&zz=2"), 0);
  const char *allowed[] = {"a", "b", NULL};
  assert_int_equal(api_query_only(&q, allowed), QS_ERR_INVALID);
  assert_string_equal(q.bad_param, "zz");
  assert_non_null(strstr(q.err, "allowed: a, b"));
}

static void test_params_validate_ranges_and_name_the_parameter(void **state) {
  (void)state;
  api_query q;
  int64_t i;
  double d;
  assert_int_equal(parse(&q, "limit=20&k=2.5&window=24h&region=us-west&bbox=170,-20,-150,40"), 0);
  assert_int_equal(api_param_int(&q, "limit", 5, 1, 1000, &i), 0);
  assert_int_equal(i, 20);
  assert_int_equal(api_param_int(&q, "absent", 5, 1, 1000, &i), 0);
  assert_int_equal(i, 5);
  assert_int_equal(api_param_double(&q, "k", 2, 0, 10, &d), 0);
  assert_true(d == 2.5);
  assert_int_equal(api_param_duration(&q, "window", 0, 60000, 90 * QS_AGG_DAY_MS, &i), 0);
  assert_int_equal(i, 24 * HOUR);
  char region[API_REGION_MAX + 1];
  assert_int_equal(api_param_region(&q, "region", region), 0);
  assert_string_equal(region, "us-west");
  api_bbox bb;
  assert_int_equal(api_param_bbox(&q, "bbox", &bb), 0);
  assert_true(bb.set && bb.min_lon == 170 && bb.max_lon == -150);

  const struct {
    const char *qs, *name;
  } bad[] = {{"limit=0", "limit"},
             {"limit=1e3", "limit"},
             {"limit=+5", "limit"},
             {"limit=99999999999999999999", "limit"},
             {"k=inf", "k"},
             {"k=11", "k"},
             {"window=24", "window"},
             {"window=1s", "window"},
             {"region=a%20b", "region"},
             {"bbox=1,2,3", "bbox"},
             {"bbox=0,50,10,40", "bbox"},
             {"bbox=0,0,0,0,0", "bbox"},
             {"since=tomorrow", "since"}};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    assert_int_equal(parse(&q, bad[k].qs), 0);
    int rc = api_param_int(&q, "limit", 1, 1, 1000, &i);
    if (!rc)
      rc = api_param_double(&q, "k", 2, 0, 10, &d);
    if (!rc)
      rc = api_param_duration(&q, "window", HOUR, 60000, 90 * QS_AGG_DAY_MS, &i);
    if (!rc)
      rc = api_param_region(&q, "region", region);
    if (!rc)
      rc = api_param_bbox(&q, "bbox", &bb);
    if (!rc)
      rc = api_param_since(&q, "since", T0, -1, 7 * QS_AGG_DAY_MS, &i);
    if (rc != QS_ERR_INVALID || strcmp(q.bad_param, bad[k].name) != 0 ||
        !strstr(q.err, bad[k].name))
      fail_msg("%s: rc %d param %s err %s", bad[k].qs, rc, q.bad_param, q.err);
  }
}

static void test_since_accepts_durations_and_iso_within_bounds(void **state) {
  (void)state;
  api_query q;
  int64_t ms;
  assert_int_equal(parse(&q, "since=2h"), 0);
  assert_int_equal(api_param_since(&q, "since", T0, -1, QS_AGG_DAY_MS, &ms), 0);
  assert_int_equal(ms, T0 - 2 * HOUR);
  assert_int_equal(parse(&q, "since=2026-11-25T05:30:00Z"), 0);
  assert_int_equal(api_param_since(&q, "since", T0, -1, QS_AGG_DAY_MS, &ms), 0);
  assert_int_equal(ms, T0 - 30 * 60000);
  assert_int_equal(parse(&q, "since=2026-11-27T00:00:00Z"), 0); /* the future */
  assert_int_equal(api_param_since(&q, "since", T0, -1, QS_AGG_DAY_MS, &ms), QS_ERR_INVALID);
  assert_int_equal(parse(&q, "since=2d"), 0); /* too far back */
  assert_int_equal(api_param_since(&q, "since", T0, -1, QS_AGG_DAY_MS, &ms), QS_ERR_INVALID);
  assert_int_equal(parse(&q, ""), 0);
  assert_int_equal(api_param_since(&q, "since", T0, -1, QS_AGG_DAY_MS, &ms), 0);
  assert_true(ms == INT64_MIN);
  assert_int_equal(api_param_since(&q, "since", T0, HOUR, QS_AGG_DAY_MS, &ms), 0);
  assert_int_equal(ms, T0 - HOUR);
}

/* A row JSON with n events of magnitude mag (micro-exact) and depth 10 km. */
static void add_row(view_rows *r, const char *region, int64_t start, int64_t len, int n,
                    double mag) {
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, region, start, start + len), 0);
  for (int i = 0; i < n; i++) {
    qs_contrib c;
    assert_int_equal(qs_contrib_init(&c, start + i, mag, 10.0, false, 5.0), 0);
    assert_int_equal(qs_agg_row_add(&row, &c), 0);
  }
  char *json;
  size_t jl;
  assert_int_equal(qs_agg_row_to_json(&row, &json, &jl), 0);
  view_rows_add_json(r, json, jl);
  free(json);
}

static cJSON *region_of(cJSON *doc, const char *name) {
  cJSON *x;
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(doc, "regions")) {
    if (strcmp(cJSON_GetObjectItem(x, "region")->valuestring, name) == 0)
      return x;
  }
  return NULL;
}

static void test_summary_counts_the_cutoff_hour_once_from_each_side(void **state) {
  (void)state;
  int64_t C = T0; /* cutoff */
  view_rows b = {0}, s = {0};
  add_row(&b, "japan", C - HOUR, HOUR, 2, 4.0); /* batch: before the cutoff */
  add_row(&b, "japan", C, HOUR, 5, 9.0);        /* batch row after the cutoff: ignored */
  add_row(&s, "japan", C - MIN5, MIN5, 7, 9.0); /* speed before the cutoff: ignored */
  add_row(&s, "japan", C, MIN5, 1, 6.0);        /* speed from the cutoff on */
  add_row(&s, "fiji", C + HOUR, MIN5, 3, 5.0);
  add_row(&b, "chile", C - 2 * HOUR, HOUR, 1, 7.0);
  view_rows_add_json(&b, "{broken", 7);
  assert_int_equal(b.rejected, 1);
  qs_buf out = QS_BUF_INIT;
  assert_int_equal(view_summary_json(&out, C, INT64_MIN, &b, &s), 0);
  cJSON *doc = cJSON_Parse(out.p);
  assert_non_null(doc);
  cJSON *j = region_of(doc, "japan");
  assert_int_equal(cJSON_GetObjectItem(j, "event_count")->valueint, 3);
  assert_true(cJSON_GetObjectItem(j, "avg_magnitude")->valuedouble == 14.0 / 3.0);
  assert_string_equal(cJSON_GetObjectItem(j, "data_freshness")->valuestring, "batch+realtime");
  assert_string_equal(cJSON_GetObjectItem(region_of(doc, "fiji"), "data_freshness")->valuestring,
                      "realtime-only");
  assert_string_equal(cJSON_GetObjectItem(region_of(doc, "chile"), "data_freshness")->valuestring,
                      "batch-only");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "total"), "event_count")->valueint,
                   7);
  /* same inputs, same bytes (ETags depend on it) */
  qs_buf again = QS_BUF_INIT;
  assert_int_equal(view_summary_json(&again, C, INT64_MIN, &b, &s), 0);
  assert_int_equal(again.len, out.len);
  assert_memory_equal(again.p, out.p, out.len);
  cJSON_Delete(doc);
  qs_buf_free(&out);
  qs_buf_free(&again);
  view_rows_free(&b);
  view_rows_free(&s);
}

static void test_timeseries_bins_and_refuses_sub_hour_bins(void **state) {
  (void)state;
  int64_t C = T0;
  view_rows b = {0}, s = {0};
  add_row(&b, "japan", C - HOUR, HOUR, 2, 4.0);
  add_row(&s, "japan", C - MIN5, MIN5, 9, 4.0); /* before the cutoff: batch has it */
  add_row(&s, "japan", C + 10 * MIN5, MIN5, 1, 4.0);
  add_row(&s, "alaska", C + 11 * MIN5, MIN5, 4, 4.0);
  qs_buf out = QS_BUF_INIT;
  assert_int_equal(view_timeseries_json(&out, C, C - 2 * HOUR, C + HOUR, HOUR, NULL, &b, &s), 0);
  cJSON *doc = cJSON_Parse(out.p);
  cJSON *pts = cJSON_GetObjectItem(doc, "points");
  assert_int_equal(cJSON_GetArraySize(pts), 4);
  int expect[] = {0, 2, 5, 0};
  for (int i = 0; i < 4; i++)
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(pts, i), "event_count")->valueint,
                     expect[i]);
  cJSON_Delete(doc);
  qs_buf_reset(&out);
  assert_int_equal(view_timeseries_json(&out, C, C - 2 * HOUR, C + HOUR, HOUR, "japan", &b, &s), 0);
  doc = cJSON_Parse(out.p);
  pts = cJSON_GetObjectItem(doc, "points");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(pts, 2), "event_count")->valueint, 1);
  cJSON_Delete(doc);
  assert_int_equal(view_timeseries_json(&out, C, C, C, MIN5, NULL, &b, &s), QS_ERR_INVALID);
  qs_buf_free(&out);
  view_rows_free(&b);
  view_rows_free(&s);
}

static void test_anomaly_needs_a_count_strictly_above_the_threshold(void **state) {
  (void)state;
  view_baseline bl[2];
  const char *b1 = "{\"hours\":10,\"count_sum\":120,\"count_sq_sum\":1440}"; /* 12/h, sigma 0 */
  assert_int_equal(view_baseline_parse(&bl[0], "hawaii", b1, strlen(b1)), 0);
  const char *b2 = "{\"hours\":10,\"count_sum\":10,\"count_sq_sum\":10}";
  assert_int_equal(view_baseline_parse(&bl[1], "japan", b2, strlen(b2)), 0);
  const char *bad = "{\"hours\":-1,\"count_sum\":1,\"count_sq_sum\":1}";
  view_baseline junk;
  assert_int_equal(view_baseline_parse(&junk, "x", bad, strlen(bad)), QS_ERR_INVALID);
  view_rows s = {0};
  add_row(&s, "hawaii", T0, MIN5, 1, 3.0);        /* == threshold 1: not anomalous */
  add_row(&s, "hawaii", T0 + MIN5, MIN5, 2, 3.0); /* above */
  add_row(&s, "japan", T0, MIN5, 1, 3.0);         /* above 1/12 */
  add_row(&s, "nobaseline", T0, MIN5, 50, 3.0);
  qs_buf out = QS_BUF_INIT;
  assert_int_equal(view_anomalies_json(&out, T0, 2.0, &s, bl, 2), 0);
  cJSON *doc = cJSON_Parse(out.p);
  cJSON *an = cJSON_GetObjectItem(doc, "anomalies");
  assert_int_equal(cJSON_GetArraySize(an), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(an, 0), "region")->valuestring,
                      "hawaii");
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(an, 0), "event_count")->valueint, 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(an, 1), "region")->valuestring,
                      "japan");
  cJSON_Delete(doc);
  qs_buf_free(&out);
  view_rows_free(&s);
}

static void test_ws_accept_key_matches_rfc6455_example(void **state) {
  (void)state;
  char out[29];
  ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_ws_frames_parse_masked_and_refuse_bad_ones(void **state) {
  (void)state;
  uint8_t h[WS_HEADER_MAX];
  assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 5), 2);
  assert_int_equal(h[0], 0x81);
  assert_int_equal(h[1], 5);
  assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 300), 4);
  assert_int_equal(h[1], 126);
  assert_int_equal((h[2] << 8) | h[3], 300);
  assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 70000), 10);
  assert_int_equal(h[1], 127);

  /* RFC 6455 5.7: a masked "Hello" */
  uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  ws_frame f;
  for (size_t cut = 0; cut < sizeof hello; cut++)
    assert_int_equal(ws_frame_parse(hello, cut, 100, &f), 0);
  assert_int_equal(ws_frame_parse(hello, sizeof hello, 100, &f), (long)sizeof hello);
  assert_int_equal(f.opcode, WS_OP_TEXT);
  assert_int_equal(f.len, 5);
  assert_memory_equal(f.payload, "Hello", 5);

  uint8_t unmasked[] = {0x81, 0x05, 'H', 'e', 'l', 'l', 'o'};
  assert_int_equal(ws_frame_parse(unmasked, sizeof unmasked, 100, &f), QS_ERR_PARSE);
  uint8_t rsv[] = {0xC1, 0x80, 0, 0, 0, 0};
  assert_int_equal(ws_frame_parse(rsv, sizeof rsv, 100, &f), QS_ERR_PARSE);
  uint8_t fragment[] = {0x01, 0x80, 0, 0, 0, 0};
  assert_int_equal(ws_frame_parse(fragment, sizeof fragment, 100, &f), QS_ERR_UNSUPPORTED);
  uint8_t bigping[] = {0x89, 0xFE, 0x00, 0x80};
  assert_int_equal(ws_frame_parse(bigping, sizeof bigping, 1000, &f), QS_ERR_PARSE);
  uint8_t huge[] = {0x81, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0};
  assert_int_equal(ws_frame_parse(huge, sizeof huge, 4096, &f), QS_ERR_TOOBIG);
  uint8_t badop[] = {0x83, 0x80, 0, 0, 0, 0};
  assert_int_equal(ws_frame_parse(badop, sizeof badop, 100, &f), QS_ERR_PARSE);
}

/* Random bytes through every parser that takes outside input: no crash, no out-of-bounds access
 * (the ASan build checks), and every answer within its contract. Fixed seed: reproducible. */
static void test_parsers_survive_random_input(void **state) {
  (void)state;
  uint64_t x = 0x9E3779B97F4A7C15ULL;
  uint8_t buf[512];
  api_query q;
  for (int iter = 0; iter < 200000; iter++) {
    size_t n = 0;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    n = (size_t)(x % sizeof buf);
    for (size_t i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      /* bias towards the characters that matter to the parsers */
      static const char interesting[] = "%=&+,.-:0123456789abcdefXYZ \x80\xff";
      buf[i] =
          (x & 3) ? (uint8_t)interesting[(x >> 8) % (sizeof interesting - 1)] : (uint8_t)(x >> 16);
    }
    ws_frame f;
    long r = ws_frame_parse(buf, n, 4096, &f);
    assert_true(r <= (long)n);
    if (r > 0)
      assert_true(f.payload >= buf && f.payload + f.len <= buf + n);
    if (api_query_parse(&q, (const char *)buf, n) == 0) {
      int64_t i64;
      double d;
      api_bbox bb;
      char region[API_REGION_MAX + 1];
      const char *e;
      for (size_t k = 0; k < q.n; k++) {
        const char *name = q.p[k].name;
        (void)api_param_int(&q, name, 0, -5, 5, &i64);
        (void)api_param_double(&q, name, 0, -5, 5, &d);
        (void)api_param_duration(&q, name, 0, 0, QS_AGG_DAY_MS, &i64);
        (void)api_param_since(&q, name, T0, -1, QS_AGG_DAY_MS, &i64);
        (void)api_param_bbox(&q, name, &bb);
        (void)api_param_region(&q, name, region);
        (void)api_param_enum(&q, name, "a|bb|ccc", NULL, &e);
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_decodes_escapes_and_refuses_repeats_and_bad_escapes),
      cmocka_unit_test(test_params_validate_ranges_and_name_the_parameter),
      cmocka_unit_test(test_since_accepts_durations_and_iso_within_bounds),
      cmocka_unit_test(test_summary_counts_the_cutoff_hour_once_from_each_side),
      cmocka_unit_test(test_timeseries_bins_and_refuses_sub_hour_bins),
      cmocka_unit_test(test_anomaly_needs_a_count_strictly_above_the_threshold),
      cmocka_unit_test(test_ws_accept_key_matches_rfc6455_example),
      cmocka_unit_test(test_ws_frames_parse_masked_and_refuse_bad_ones),
      cmocka_unit_test(test_parsers_survive_random_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
