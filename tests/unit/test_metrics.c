/* test_metrics.c — exact Prometheus text for each metric type, label escaping, histogram buckets,
 * the series cap, and process metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "qs/metrics.h"

/* The text of one family, from its HELP line up to the next HELP line. */
static char *family_text(const qs_buf *b, const char *name, char *out, size_t cap) {
  char key[128];
  snprintf(key, sizeof key, "# HELP %s ", name);
  const char *start = strstr(b->p, key);
  assert_non_null(start);
  const char *end = strstr(start + 1, "# HELP ");
  size_t n = end ? (size_t)(end - start) : strlen(start);
  assert_true(n < cap);
  memcpy(out, start, n);
  out[n] = '\0';
  return out;
}

static void test_counter_and_gauge_render_exactly(void **state) {
  (void)state;
  qs_metrics m;
  qs_metrics_init(&m, "hub", "1.2.3");
  static const char *const labels[] = {"hub", "partition", NULL};
  qs_metric_family *in = qs_metrics_counter(&m, "hub_events_in_total", "Events appended", labels);
  qs_metric *p0 = qs_metric_get(in, (const char *[]){"earthquake-events", "0"});
  qs_metric *p1 = qs_metric_get(in, (const char *[]){"earthquake-events", "1"});
  qs_metric_inc(p0);
  qs_metric_add(p0, 41);
  qs_metric_add(p1, 0.5);
  qs_metric_add(p1, -3); /* counters never go down */
  assert_ptr_equal(qs_metric_get(in, (const char *[]){"earthquake-events", "0"}), p0);
  qs_metric *g =
      qs_metric_series(qs_metrics_gauge(&m, "hub_connections", "Open connections", NULL));
  qs_metric_set(g, 3);
  qs_buf b = QS_BUF_INIT;
  qs_metrics_render(&m, &b);
  char t[1024];
  assert_string_equal(family_text(&b, "hub_events_in_total", t, sizeof t),
                      "# HELP hub_events_in_total Events appended\n"
                      "# TYPE hub_events_in_total counter\n"
                      "hub_events_in_total{hub=\"earthquake-events\",partition=\"0\"} 42\n"
                      "hub_events_in_total{hub=\"earthquake-events\",partition=\"1\"} 0.5\n");
  assert_string_equal(family_text(&b, "hub_connections", t, sizeof t),
                      "# HELP hub_connections Open connections\n"
                      "# TYPE hub_connections gauge\nhub_connections 3\n");
  assert_non_null(strstr(b.p, "quakestream_build_info{service=\"hub\",version=\"1.2.3\"} 1\n"));
  assert_non_null(strstr(b.p, "\nprocess_resident_memory_bytes "));
  assert_non_null(strstr(b.p, "\nprocess_open_fds "));
  assert_non_null(strstr(b.p, "\nprocess_cpu_seconds_total "));
  qs_buf_free(&b);
  qs_metrics_free(&m);
}

static void test_label_values_and_help_are_escaped(void **state) {
  (void)state;
  qs_metrics m;
  qs_metrics_init(&m, "s", "v");
  static const char *const labels[] = {"reason", NULL};
  qs_metric_family *f = qs_metrics_counter(&m, "errs_total", "Help with \\ and\nnewline", labels);
  qs_metric_inc(qs_metric_get(f, (const char *[]){"a\"b\\c\nd"}));
  qs_buf b = QS_BUF_INIT;
  qs_metrics_render(&m, &b);
  char t[512];
  assert_string_equal(family_text(&b, "errs_total", t, sizeof t),
                      "# HELP errs_total Help with \\\\ and\\nnewline\n"
                      "# TYPE errs_total counter\n"
                      "errs_total{reason=\"a\\\"b\\\\c\\nd\"} 1\n");
  qs_buf_free(&b);
  qs_metrics_free(&m);
}

static void test_histogram_buckets_are_cumulative_with_inf_sum_and_count(void **state) {
  (void)state;
  qs_metrics m;
  qs_metrics_init(&m, "s", "v");
  const double bounds[] = {0.001, 0.01, 0.1};
  qs_metric *h =
      qs_metric_series(qs_metrics_histogram(&m, "fsync_seconds", "fsync latency", NULL, bounds, 3));
  qs_metric_observe(h, 0.0005);
  qs_metric_observe(h, 0.001); /* on the bound: le is inclusive */
  qs_metric_observe(h, 0.05);
  qs_metric_observe(h, 2);
  qs_buf b = QS_BUF_INIT;
  qs_metrics_render(&m, &b);
  char t[1024];
  assert_string_equal(family_text(&b, "fsync_seconds", t, sizeof t),
                      "# HELP fsync_seconds fsync latency\n"
                      "# TYPE fsync_seconds histogram\n"
                      "fsync_seconds_bucket{le=\"0.001\"} 2\n"
                      "fsync_seconds_bucket{le=\"0.01\"} 2\n"
                      "fsync_seconds_bucket{le=\"0.1\"} 3\n"
                      "fsync_seconds_bucket{le=\"+Inf\"} 4\n"
                      "fsync_seconds_sum 2.0515\n"
                      "fsync_seconds_count 4\n");
  assert_true(qs_metric_value(h) == 4);
  qs_buf_free(&b);
  qs_metrics_free(&m);
}

static void test_series_beyond_the_cap_go_to_the_sink_and_are_counted(void **state) {
  (void)state;
  qs_metrics m;
  qs_metrics_init(&m, "s", "v");
  static const char *const labels[] = {"id", NULL};
  qs_metric_family *f = qs_metrics_counter(&m, "per_id_total", "one series per id", labels);
  char id[32];
  for (int i = 0; i < QS_METRICS_MAX_SERIES + 500; i++) {
    snprintf(id, sizeof id, "id-%d", i);
    qs_metric_inc(qs_metric_get(f, (const char *[]){id}));
  }
  qs_buf b = QS_BUF_INIT;
  qs_metrics_render(&m, &b);
  int series = 0;
  for (const char *p = b.p; (p = strstr(p, "\nper_id_total{")); p++)
    series++;
  assert_int_equal(series, QS_METRICS_MAX_SERIES);
  assert_non_null(strstr(b.p, "\nquakestream_metrics_dropped_series_total 500\n"));
  qs_buf_free(&b);
  qs_metrics_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge_render_exactly),
      cmocka_unit_test(test_label_values_and_help_are_escaped),
      cmocka_unit_test(test_histogram_buckets_are_cumulative_with_inf_sum_and_count),
      cmocka_unit_test(test_series_beyond_the_cap_go_to_the_sink_and_are_counted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
