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

#include "qs/error.h"
#include "qs/timeutil.h"

#include "blob.h"
#include "cron.h"
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
  bw_fold_rollback(&f);
  assert_int_equal(f.stats.bodies, 1);
  assert_int_equal(f.stats.invalid, 0);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cron_default_schedule_fires_every_six_hours),
      cmocka_unit_test(test_cron_fields_ranges_lists_and_weekdays),
      cmocka_unit_test(test_cron_rejects_bad_expressions),
      cmocka_unit_test(test_latest_revision_wins_in_any_order),
      cmocka_unit_test(test_deleted_and_associated_ids_are_not_counted),
      cmocka_unit_test(test_rollback_forgets_a_failed_file),
      cmocka_unit_test(test_invalid_bodies_are_counted_not_fatal),
      cmocka_unit_test(test_memory_grows_with_distinct_ids_not_with_revisions),
      cmocka_unit_test(test_capture_path_gives_partition_and_time),
      cmocka_unit_test(test_blob_urls_path_style_host_style_and_abfss),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
