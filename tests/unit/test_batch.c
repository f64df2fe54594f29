/* Unit tests of the batch worker's core (services/batch-worker): cron, the fold, path and URL
 * parsing. The end-to-end checks against an independent computation are in
 * tests/integration/test_batch_worker.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "event_corpus.h"

#include "qs/error.h"
#include "qs/timeutil.h"

#include "blob.h"
#include "cron.h"
#include "evfast.h"
#include "fold.h"
#include "job.h"

static int64_t at(int y, unsigned mo, unsigned d, int h, int mi) {
  return qs_days_from_civil(y, mo, d) * QS_MS_PER_DAY + h * QS_MS_PER_HOUR + mi * QS_MS_PER_MIN;
}

static void test_cron_default_schedule_fires_every_six_hours(void **state) {
  (void)state;
  bw_cron c;
  assert_int_equal(bw_cron_parse(&c, "0 */6 * * *", NULL, 0), 0);
  assert_int_equal(bw_cron_next(&c, at(2026, 11, 25, 5, 59)), at(2026, 11, 25, 6, 0));
  assert_int_equal(bw_cron_next(&c, at(2026, 11, 25, 6, 0)), at(2026, 11, 25, 12, 0));
  assert_int_equal(bw_cron_next(&c, at(2026, 12, 31, 18, 1)), at(2027, 1, 1, 0, 0));
}

static void test_cron_fields_ranges_lists_and_weekdays(void **state) {
  (void)state;
  bw_cron c;
  /* 2026-11-25 is a Wednesday. */
  assert_int_equal(bw_cron_parse(&c, "30 2 * * 1-5", NULL, 0), 0);
  assert_int_equal(bw_cron_next(&c, at(2026, 11, 27, 3, 0)), at(2026, 11, 30, 2, 30));
  assert_int_equal(bw_cron_parse(&c, "15,45 1 29 2 *", NULL, 0), 0);
  assert_int_equal(bw_cron_next(&c, at(2026, 3, 1, 0, 0)), at(2028, 2, 29, 1, 15));
  assert_int_equal(bw_cron_parse(&c, "@daily", NULL, 0), 0);
  assert_int_equal(bw_cron_next(&c, at(2026, 11, 25, 0, 0)), at(2026, 11, 26, 0, 0));
  assert_int_equal(bw_cron_parse(&c, "0 0 * * 7", NULL, 0), 0); /* 7 = Sunday */
  assert_int_equal(bw_cron_next(&c, at(2026, 11, 25, 0, 0)), at(2026, 11, 29, 0, 0));
}

static void test_cron_rejects_bad_expressions(void **state) {
  (void)state;
  bw_cron c;
  char err[128];
  const char *bad[] = {"",          "* * * *",     "60 * * * *",  "* 24 * * *",
                       "* * 0 * *", "* * * 13 *",  "*/0 * * * *", "5-1 * * * *",
                       "a * * * *", "* * * * * *", "1,,2 * * * *"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(bw_cron_parse(&c, bad[i], err, sizeof err), QS_ERR_INVALID);
  assert_non_null(strstr(err, "cron"));
}

static char *ev_json(char *buf, size_t cap, const char *id, int64_t time, int64_t updated,
                     const char *mag, const char *region, const char *extra) {
  snprintf(buf, cap,
           "{\"event_id\":\"%s\",\"magnitude\":%s,\"mag_type\":\"ml\",\"place\":\"x\","
           "\"time\":%lld,\"updated\":%lld,\"longitude\":1,\"latitude\":2,\"depth_km\":10,"
           "\"event_type\":\"earthquake\",\"status\":\"reviewed\",\"tsunami_flag\":false,"
           "\"alert_level\":null,\"net\":\"us\",\"sig\":1,\"region\":\"%s\",\"source\":\"t\","
           "\"ingested_at\":%lld,\"ids\":[\"%s\"]%s}",
           id, mag, (long long)time, (long long)updated, region, (long long)updated, id, extra);
  return buf;
}

static int add(bw_fold *f, const char *json) {
  return bw_fold_add_body(f, (const uint8_t *)json, strlen(json), NULL, 0);
}

#define T0 INT64_C(1764028800000) /* 2025-11-25T00:00:00Z */

static void test_latest_revision_wins_in_any_order(void **state) {
  (void)state;
  char a[1024], b[1024];
  ev_json(a, sizeof a, "us1", T0, T0 + 1000, "4.5", "japan", "");
  ev_json(b, sizeof b, "us1", T0 + QS_MS_PER_HOUR, T0 + 2000, "5.5", "chile",
          ",\"change\":\"revision\"");
  for (int order = 0; order < 2; order++) {
    bw_fold f;
    bw_fold_init(&f, 5.0);
    assert_int_equal(add(&f, order ? b : a), 0);
    assert_int_equal(add(&f, order ? a : b), 0);
    bw_fold_result r;
    assert_int_equal(bw_fold_finish(&f, &r), 0);
    assert_int_equal(r.n_hourly, 1);
    assert_string_equal(r.hourly[0].region, "chile");
    assert_int_equal(r.hourly[0].window_start_ms, T0 + QS_MS_PER_HOUR);
    assert_int_equal(r.hourly[0].agg.mag_sum_micro, 5500000);
    assert_int_equal(r.hourly[0].agg.significant_count, 1);
    assert_int_equal(f.stats.revisions_folded, 1);
    bw_fold_result_free(&r);
    bw_fold_free(&f);
  }
}

/* A region move reaches the hub as `moved` (old region) + `revision` (new region) with the same
 * `updated` (docs/changes.md): the fold counts the event once, in the new region, in any order. */
static void test_moved_messages_are_not_versions(void **state) {
  (void)state;
  char a[1024], m[1024], b[1024];
  ev_json(a, sizeof a, "ev1", T0, T0 + 1000, "4.1", "alaska", "");
  ev_json(m, sizeof m, "ev1", T0, T0 + 2000, "4.3", "alaska", ",\"change\":\"moved\"");
  ev_json(b, sizeof b, "ev1", T0, T0 + 2000, "4.3", "hawaii", ",\"change\":\"revision\"");
  const char *orders[][3] = {{a, m, b}, {a, b, m}, {b, m, a}, {m, b, a}};
  for (size_t o = 0; o < 4; o++) {
    bw_fold f;
    bw_fold_init(&f, 5.0);
    for (int i = 0; i < 3; i++)
      assert_int_equal(add(&f, orders[o][i]), 0);
    bw_fold_result r;
    assert_int_equal(bw_fold_finish(&f, &r), 0);
    assert_int_equal(f.stats.kind_moved, 1);
    assert_int_equal(r.events_live, 1);
    assert_int_equal(r.n_hourly, 1);
    assert_string_equal(r.hourly[0].region, "hawaii");
    assert_int_equal(r.hourly[0].agg.mag_sum_micro, 4300000);
    bw_fold_result_free(&r);
    bw_fold_free(&f);
  }
}

static void test_deleted_and_associated_ids_are_not_counted(void **state) {
  (void)state;
  char j[1024];
  bw_fold f;
  bw_fold_init(&f, 5.0);
  assert_int_equal(add(&f, ev_json(j, sizeof j, "d1", T0, T0 + 1, "3", "japan", "")), 0);
  assert_int_equal(
      add(&f, ev_json(j, sizeof j, "d1", T0, T0 + 2, "3", "japan", ",\"change\":\"deleted\"")), 0);
  assert_int_equal(add(&f, ev_json(j, sizeof j, "ci1", T0, T0 + 1, "3", "japan", "")), 0);
  /* us2 lists ci1 among its ids: ci1 is superseded. */
  snprintf(j, sizeof j,
           "{\"event_id\":\"us2\",\"magnitude\":3.2,\"mag_type\":\"ml\",\"place\":\"x\","
           "\"time\":%lld,\"updated\":%lld,\"longitude\":1,\"latitude\":2,\"depth_km\":10,"
           "\"event_type\":\"earthquake\",\"status\":\"reviewed\",\"tsunami_flag\":false,"
           "\"alert_level\":null,\"net\":\"us\",\"sig\":1,\"region\":\"japan\",\"source\":\"t\","
           "\"ingested_at\":1,\"ids\":[\"ci1\",\"us2\"]}",
           (long long)T0, (long long)T0 + 5);
  assert_int_equal(add(&f, j), 0);
  bw_fold_result r;
  assert_int_equal(bw_fold_finish(&f, &r), 0);
  assert_int_equal(r.events, 3);
  assert_int_equal(r.events_live, 1);
  assert_int_equal(r.excluded_deleted, 1);
  assert_int_equal(r.excluded_superseded, 1);
  assert_int_equal(r.n_hourly, 1);
  assert_int_equal(r.hourly[0].agg.mag_sum_micro, 3200000);
  bw_fold_result_free(&r);
  bw_fold_free(&f);
}

static void test_rollback_forgets_a_failed_file(void **state) {
  (void)state;
  char j[1024];
  bw_fold f;
  bw_fold_init(&f, 5.0);
  assert_int_equal(add(&f, ev_json(j, sizeof j, "a1", T0, T0 + 1, "2", "japan", "")), 0);
  bw_fold_mark(&f);
  assert_int_equal(add(&f, ev_json(j, sizeof j, "a1", T0, T0 + 9, "7", "japan", "")), 0);
  for (int i = 0; i < 5000; i++) { /* forces index growth inside the marked span */
    char id[32];
    snprintf(id, sizeof id, "n%d", i);
    assert_int_equal(add(&f, ev_json(j, sizeof j, id, T0, T0 + 1, "1", "newregion", "")), 0);
  }
  assert_int_equal(add(&f, "garbage"), QS_ERR_PARSE);
  assert_int_equal(f.n_regions, 2);
  bw_fold_rollback(&f);
  assert_int_equal(f.stats.bodies, 1);
  assert_int_equal(f.stats.invalid, 0);
  /* The region the failed file brought is forgotten, by name too: it comes back as a new one. */
  assert_int_equal(f.n_regions, 1);
  assert_int_equal(bw_fold_add_region(&f, "japan"), 0);
  assert_int_equal(bw_fold_add_region(&f, "newregion"), 1);
  assert_int_equal(f.n_regions, 2);
  assert_int_equal(bw_fold_add_region(&f, "otherregion"), 2);
  assert_string_equal(f.regions[2], "otherregion");
  bw_fold_result r;
  assert_int_equal(bw_fold_finish(&f, &r), 0);
  assert_int_equal(r.events, 1);
  assert_int_equal(r.n_hourly, 1);
  assert_int_equal(r.hourly[0].agg.mag_sum_micro, 2000000);
  bw_fold_result_free(&r);
  bw_fold_free(&f);
}

static void test_memory_grows_with_distinct_ids_not_with_revisions(void **state) {
  (void)state;
  char j[1024];
  bw_fold f;
  bw_fold_init(&f, 5.0);
  size_t before = 0;
  for (int i = 0; i < 200000; i++) {
    if (i % 1000 == 0)
      bw_fold_mark(&f); /* file boundaries: where replaced ids lists are reclaimed */
    snprintf(j, sizeof j,
             "{\"event_id\":\"us1\",\"magnitude\":3,\"mag_type\":\"ml\",\"place\":\"x\","
             "\"time\":%lld,\"updated\":%lld,\"longitude\":1,\"latitude\":2,\"depth_km\":10,"
             "\"event_type\":\"earthquake\",\"status\":\"reviewed\",\"tsunami_flag\":false,"
             "\"alert_level\":null,\"net\":\"us\",\"sig\":1,\"region\":\"japan\","
             "\"source\":\"t\",\"ingested_at\":1,\"ids\":[\"us1\",\"ci%d\",\"nc%d\"]}",
             (long long)T0, (long long)T0 + i, i, i);
    assert_int_equal(add(&f, j), 0);
    if (i == 10000)
      before = bw_fold_memory(&f);
  }
  assert_int_equal(f.n, 1);
  assert_true(bw_fold_memory(&f) <= before * 2);
  assert_true(bw_fold_memory(&f) < ((size_t)4 << 20));
  bw_fold_free(&f);
}

static void test_invalid_bodies_are_counted_not_fatal(void **state) {
  (void)state;
  bw_fold f;
  bw_fold_init(&f, 5.0);
  char why[256];
  assert_int_equal(bw_fold_add_body(&f, (const uint8_t *)"Message 1", 9, why, sizeof why),
                   QS_ERR_PARSE);
  assert_true(why[0] != '\0');
  assert_int_equal(add(&f, "{\"event_id\":\"x\"}"), QS_ERR_INVALID);
  assert_int_equal(f.stats.invalid, 2);
  bw_fold_free(&f);
}

static void test_capture_path_gives_partition_and_time(void **state) {
  (void)state;
  char key[256];
  int64_t t;
  bw_job_path_info("ns/hub/p=3/2026/11/25/06/40/05.avro", key, sizeof key, &t);
  assert_string_equal(key, "ns/hub/p=3");
  assert_int_equal(t, at(2026, 11, 25, 6, 40) + 5000);
  bw_job_path_info("dir/eventhub_capture.avro", key, sizeof key, &t);
  assert_string_equal(key, "dir");
  assert_int_equal(t, -1);
  bw_job_path_info("ns/hub/p=0/2026/13/25/06/40/05.avro", key, sizeof key, &t);
  assert_int_equal(t, -1);
  assert_true(bw_job_hub_matches("ns/earthquake-events/p=0/x.avro", "earthquake-events"));
  assert_true(bw_job_hub_matches("earthquake-events/p=0/x.avro", "earthquake-events"));
  assert_false(bw_job_hub_matches("ns/clickstream-events/p=0/x.avro", "earthquake-events"));
  assert_false(bw_job_hub_matches("ns/xearthquake-events/p=0/x.avro", "earthquake-events"));
  assert_true(bw_job_hub_matches("flat.avro", "earthquake-events"));
  assert_true(bw_job_hub_matches("ns/other/p=1/x.avro", ""));
}

static void test_blob_urls_path_style_host_style_and_abfss(void **state) {
  (void)state;
  bw_blob b;
  char err[256];
  assert_int_equal(bw_blob_init(&b,
                                "http://127.0.0.1:10000/devstoreaccount1/capture/a/b?sv=1&sig=x",
                                NULL, NULL, err, sizeof err),
                   0);
  assert_string_equal(b.account, "devstoreaccount1");
  assert_string_equal(b.path_base, "/devstoreaccount1/capture");
  assert_string_equal(b.prefix, "a/b");
  assert_string_equal(b.sas, "sv=1&sig=x");
  bw_blob_free(&b);
  assert_int_equal(
      bw_blob_init(&b, "abfss://cont@acct.dfs.core.windows.net/x/y", "AAAA", NULL, err, sizeof err),
      0);
  assert_string_equal(b.base, "https://acct.blob.core.windows.net");
  assert_string_equal(b.path_base, "/cont");
  assert_string_equal(b.prefix, "x/y");
  assert_int_equal(b.key_len, 3);
  bw_blob_free(&b);
  assert_int_equal(bw_blob_init(&b, "https://nocontainer.example", NULL, NULL, err, sizeof err),
                   QS_ERR_INVALID);
  assert_int_equal(bw_blob_init(&b, "https://a.b/c", "not base64!", NULL, err, sizeof err),
                   QS_ERR_INVALID);
}

static int str_same(bw_str a, bw_str b) { return a.len == b.len && !memcmp(a.p, b.p, a.len); }

/* The fold's view of both decodings is the same, doubles bit for bit. */
static int views_same(const bw_event_view *a, const bw_event_view *b) {
  if (!str_same(a->event_id, b->event_id) || !str_same(a->region, b->region) ||
      a->time != b->time || a->updated != b->updated || a->ingested_at != b->ingested_at ||
      a->has_magnitude != b->has_magnitude || a->has_depth != b->has_depth ||
      memcmp(&a->magnitude, &b->magnitude, 8) || memcmp(&a->depth_km, &b->depth_km, 8) ||
      a->tsunami_flag != b->tsunami_flag || a->status_deleted != b->status_deleted ||
      a->change != b->change || a->n_other_ids != b->n_other_ids)
    return 0;
  for (size_t i = 0; i < a->n_other_ids; i++)
    if (!str_same(a->other_ids[i], b->other_ids[i]))
      return 0;
  return 1;
}

/* The fast path accepts only what the codec accepts, and decodes it to the same view. */
static void check_same_as_codec(const char *json, size_t len, int *accepted) {
  static qs_event ev;
  static bw_event_view a, b;
  int fast = bw_event_decode_fast(&a, json, len);
  int rc = qs_event_from_json(&ev, json, len, NULL, 0);
  if (!fast)
    return;
  (*accepted)++;
  if (rc != 0)
    fail_msg("fast path accepts what qs_event_from_json rejects: %.*s", (int)len, json);
  bw_event_view_of(&b, &ev);
  if (!views_same(&a, &b))
    fail_msg("fast path disagrees with qs_event_from_json on: %.*s", (int)len, json);
}

static void test_fast_decoder_agrees_with_the_codec_on_numbers(void **state) {
  (void)state;
  int accepted = 0;
  event_corpus_run_numbers(check_same_as_codec, &accepted);
  assert_true(accepted > 10);
}

/* A compact body with one member's raw JSON value replaced (name NULL: none). */
static size_t body_with(char *out, size_t cap, const char *name, const char *raw) {
  static const char *const fields[][2] = {{"event_id", "\"us1\""},
                                          {"magnitude", "4.5"},
                                          {"mag_type", "\"ml\""},
                                          {"place", "\"x\""},
                                          {"time", "1764028800000"},
                                          {"updated", "1764028800001"},
                                          {"longitude", "-120.5"},
                                          {"latitude", "35.25"},
                                          {"depth_km", "10"},
                                          {"event_type", "\"earthquake\""},
                                          {"status", "\"reviewed\""},
                                          {"tsunami_flag", "false"},
                                          {"alert_level", "null"},
                                          {"net", "\"us\""},
                                          {"sig", "100"},
                                          {"region", "\"japan\""},
                                          {"source", "\"t\""},
                                          {"ingested_at", "1764028801000"},
                                          {"ids", "[\"us1\"]"}};
  size_t n = (size_t)snprintf(out, cap, "{");
  int replaced = 0;
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    int here = name && strcmp(name, fields[i][0]) == 0;
    replaced |= here;
    n += (size_t)snprintf(out + n, cap - n, "%s\"%s\":%s", i ? "," : "", fields[i][0],
                          here ? raw : fields[i][1]);
  }
  if (name && !replaced)
    n += (size_t)snprintf(out + n, cap - n, ",\"%s\":%s", name, raw);
  n += (size_t)snprintf(out + n, cap - n, "}");
  return n;
}

/* Each limit the codec checks, just inside and just outside: the fast path takes the inside
 * values (so the limit is really its own, not a fallback) and never the outside ones. */
static void test_fast_decoder_keeps_every_limit_of_the_codec(void **state) {
  (void)state;
  char id64[80], id65[80], s64[96], s65[96], s512[600], s513[600], ids64[2048], ids65[2048];
  char idsbig[2048];
  memset(id64, 'a', 64), id64[64] = 0;
  memset(id65, 'a', 65), id65[65] = 0;
  snprintf(s64, sizeof s64, "\"%s\"", id64);
  snprintf(s65, sizeof s65, "\"%s\"", id65);
  memset(s512, 'p', 514), s512[0] = s512[513] = '"', s512[514] = 0;
  memset(s513, 'p', 515), s513[0] = s513[514] = '"', s513[515] = 0;
  size_t n = (size_t)snprintf(ids64, sizeof ids64, "[\"us1\"");
  for (int i = 1; i < 64; i++)
    n += (size_t)snprintf(ids64 + n, sizeof ids64 - n, ",\"i%d\"", i);
  snprintf(ids64 + n, sizeof ids64 - n, ",\"us1\"]"); /* duplicates do not count */
  snprintf(ids65, sizeof ids65, "%.*s,\"i64\"]", (int)n, ids64);
  n = (size_t)snprintf(idsbig, sizeof idsbig, "[\"us1\"");
  for (int i = 0; i < 16; i++) /* 16 ids of 64 bytes: over the 1024-byte arena */
    n += (size_t)snprintf(idsbig + n, sizeof idsbig - n, ",\"%.60s%04d\"", id64, i);
  snprintf(idsbig + n, sizeof idsbig - n, "]");
  char sup_id[100], sup_self[100];
  snprintf(sup_id, sizeof sup_id, "\"%s\"", id64);
  snprintf(sup_self, sizeof sup_self, "\"us1\"");
  const struct {
    const char *name, *raw;
    int valid;
  } cases[] = {
      {NULL, NULL, 1},
      {"magnitude", "-2", 1},
      {"magnitude", "-2.0000001", 0},
      {"magnitude", "10.5", 1},
      {"magnitude", "10.50000001", 0},
      {"magnitude", "null", 1},
      {"depth_km", "-10", 1},
      {"depth_km", "-10.001", 0},
      {"depth_km", "1000", 1},
      {"depth_km", "1000.5", 0},
      {"depth_km", "null", 1},
      {"longitude", "-180", 1},
      {"longitude", "-180.0001", 0},
      {"longitude", "180", 1},
      {"longitude", "180.0001", 0},
      {"latitude", "-90", 1},
      {"latitude", "-90.0001", 0},
      {"latitude", "90", 1},
      {"latitude", "90.0001", 0},
      {"longitude", "null", 0},
      {"time", "1", 1},
      {"time", "0", 0},
      {"time", "32503680000000", 1},
      {"time", "32503680000001", 0},
      {"time", "1.5", 0},
      {"time", "-5", 0},
      {"updated", "0", 0},
      {"ingested_at", "0", 1},
      {"ingested_at", "-0", 1},
      {"ingested_at", "-1", 0},
      {"ingested_at", "1e3", 1},
      {"sig", "0", 1},
      {"sig", "100000", 1},
      {"sig", "100001", 0},
      {"sig", "-1", 0},
      {"event_id", s64, 1},
      {"event_id", s65, 0},
      {"event_id", "\"\"", 0},
      {"event_id", "\"a b\"", 0},
      {"event_id", "\"a/b\"", 0},
      {"region", s64, 1},
      {"region", s65, 0},
      {"place", s512, 1},
      {"place", s513, 0},
      {"mag_type", s65, 0},
      {"net", s64, 1},
      {"status", "\"deleted\"", 1},
      {"tsunami_flag", "true", 1},
      {"tsunami_flag", "1", 0},
      {"alert_level", "\"red\"", 1},
      {"alert_level", "\"purple\"", 0},
      {"change", "\"moved\"", 1},
      {"change", "\"gone\"", 0},
      {"change", "\"superseded\"", 0},
      {"superseded_by", "\"us2\"", 0},
      {"superseded_by", "null", 1},
      {"superseded_by", "\"\"", 1},
      {"ids", "[]", 1},
      {"ids", ids64, 1},
      {"ids", ids65, 0},
      {"ids", idsbig, 0},
      {"ids", "[\"a b\"]", 0},
      {"ids", "[1]", 0},
      {"ids", "[\"us1\",\"us2\",\"us1\",\"us3\",\"us2\"]", 1},
      {"unknown", "1", 1},
  };
  char j[8192];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len = body_with(j, sizeof j, cases[i].name, cases[i].raw);
    int accepted = 0;
    check_same_as_codec(j, len, &accepted);
    static qs_event ev;
    int codec_ok = qs_event_from_json(&ev, j, len, NULL, 0) == 0;
    if (codec_ok != cases[i].valid)
      fail_msg("codec: case %zu (%s) %s", i, cases[i].name, codec_ok ? "accepted" : "rejected");
    /* Unknown members are left to the codec, which ignores them. */
    int fast_expected = cases[i].valid && !(cases[i].name && !strcmp(cases[i].name, "unknown"));
    if (accepted != fast_expected)
      fail_msg("fast path: case %zu (%s = %.40s) %s", i, cases[i].name, cases[i].raw,
               accepted ? "accepted" : "not handled");
  }
  /* superseded_by with change superseded: an id, never the event's own. */
  const char *sup_cases[][2] = {{sup_id, "1"}, {sup_self, "0"}, {"\"\"", "0"}, {"null", "0"}};
  for (size_t i = 0; i < 4; i++) {
    size_t len = body_with(j, sizeof j, "change", "\"superseded\"");
    snprintf(j + len - 1, sizeof j - len + 1, ",\"superseded_by\":%s}", sup_cases[i][0]);
    len = strlen(j);
    int accepted = 0;
    check_same_as_codec(j, len, &accepted);
    assert_int_equal(accepted, sup_cases[i][1][0] == '1');
  }
}

/* Random edits of valid bodies: every one the fast path accepts must decode as the codec does. */
static void test_fast_decoder_agrees_with_the_codec_on_mutated_bodies(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof event_corpus_bases / sizeof event_corpus_bases[0]; i++) {
    int accepted = 0;
    check_same_as_codec(event_corpus_bases[i], strlen(event_corpus_bases[i]), &accepted);
    assert_int_equal(accepted, 1);
    event_corpus_mutate(event_corpus_bases[i], 88172645463325252ull + i, 20000, check_same_as_codec,
                        &accepted);
    assert_true(accepted > 100); /* many harmless edits (digits in numbers, whitespace) pass */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cron_default_schedule_fires_every_six_hours),
      cmocka_unit_test(test_cron_fields_ranges_lists_and_weekdays),
      cmocka_unit_test(test_cron_rejects_bad_expressions),
      cmocka_unit_test(test_latest_revision_wins_in_any_order),
      cmocka_unit_test(test_moved_messages_are_not_versions),
      cmocka_unit_test(test_deleted_and_associated_ids_are_not_counted),
      cmocka_unit_test(test_rollback_forgets_a_failed_file),
      cmocka_unit_test(test_invalid_bodies_are_counted_not_fatal),
      cmocka_unit_test(test_memory_grows_with_distinct_ids_not_with_revisions),
      cmocka_unit_test(test_capture_path_gives_partition_and_time),
      cmocka_unit_test(test_blob_urls_path_style_host_style_and_abfss),
      cmocka_unit_test(test_fast_decoder_agrees_with_the_codec_on_numbers),
      cmocka_unit_test(test_fast_decoder_agrees_with_the_codec_on_mutated_bodies),
      cmocka_unit_test(test_fast_decoder_keeps_every_limit_of_the_codec),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
