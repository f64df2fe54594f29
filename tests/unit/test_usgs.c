/* test_usgs.c — the USGS feed parser against real feeds and fixtures.
 *
 * Expected values were read off the files independently of this parser, with
 * jq 1.6, e.g. for each file F:
 *   jq -c '[(.features|length), .features[0].id, .features[-1].id,
 *           .features[0].properties.mag, .features[0].geometry.coordinates[2],
 *           .features[0].properties.time, .features[-1].properties.updated,
 *           .metadata.generated]' F
 *   jq -c '[.features[] | select((.properties.ids|split(",")|map(select(.!=""))
 *           |length) > 1)][0] | [.id, .properties.ids]' F
 * and a jq filter applying the id pattern / sig / alert rules showed no
 * feature in these files breaks them (so skipped is 0 for each).
 * Real feeds live in $QS_SHARED_DIR/data/usgs (cases skip when that folder is
 * absent: a user's clone has none) and $QS_NODE_DIR (default <repo>/tests/node)
 * /node_modules/vega-datasets/data/earthquakes.json, which ./quakestream deps
 * installs: its absence is a failure, not a skip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/event.h"
#include "qs/usgs.h"

/* Reads a whole file into an exact-size heap buffer (no NUL: the parser must
 * respect len). NULL if absent. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc(n > 0 ? (size_t)n : 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static void path_in(char *out, size_t cap, const char *env, const char *fallback_rel,
                    const char *rel) {
  const char *base = getenv(env);
  if (base && *base) {
    snprintf(out, cap, "%s/%s", base, rel);
    return;
  }
  const char *src = getenv("QS_SOURCE_DIR");
  snprintf(out, cap, "%s/%s/%s", src ? src : ".", fallback_rel, rel);
}

/* Collected events: a copy of the first and last one, a few picked by id. */
typedef struct collect {
  size_t n;
  qs_event first, last, picked;
  const char *pick_id;
  bool have_picked;
  int stop_after; /* > 0: return an error from the callback after this many */
} collect;

static int on_event(const qs_event *ev, void *data) {
  collect *c = data;
  char why[256];
  assert_int_equal(qs_event_validate(ev, why, sizeof why), 0);
  assert_string_equal(ev->region, "");
  if (c->n == 0)
    c->first = *ev;
  c->last = *ev;
  if (c->pick_id && strcmp(ev->event_id, c->pick_id) == 0) {
    c->picked = *ev;
    c->have_picked = true;
  }
  c->n++;
  if (c->stop_after > 0 && (int)c->n >= c->stop_after)
    return QS_ERR_FULL;
  return 0;
}

typedef struct feed_case {
  const char *file; /* under $QS_SHARED_DIR/data/usgs */
  size_t features;
  const char *first_id, *last_id;
  double first_mag, first_depth;
  int64_t first_time, last_updated, generated;
  const char *multi_id;  /* first feature with more than one id */
  const char *multi_ids; /* its ids, joined with ',' */
} feed_case;

static const feed_case shared_feeds[] = {
    {"usgs_4.5_month_utero.geojson", 409, "usc000njtg", "usb000n0sk", 5, 10, 1395413151830,
     1394734032000, 1395415303000, "usc000nj7v", "usc000nj7v,gcmt20140320211511"},
    {"usgs_all_day_abruzzi.geojson", 146, "nc72199065", "ak11225695", 1.7, 4.3, 1397474951100,
     1397417916415, 1397476327000, "usc000pjnq", "usc000pjnq,ak11227688"},
    {"usgs_all_hour_lhayesgolding.geojson", 8, "nc72934355", "us1000bknk", 1.93, 7.93,
     1512342790490, 1512340670040, 1512342950000, NULL, NULL},
    {"usgs_significant_week_lhayesgolding.geojson", 4, "us2000c1zn", "us1000bm9m", 6.4, 20.27,
     1512726670300, 1512943321958, 1513014846000, "us2000c1zn", "pt17342002,at00p0mzdc,us2000c1zn"},
};

static void join_ids(const qs_event *ev, char *out, size_t cap) {
  out[0] = '\0';
  for (size_t i = 0; i < qs_event_ids_count(ev); i++) {
    if (i)
      strncat(out, ",", cap - strlen(out) - 1);
    strncat(out, qs_event_ids_at(ev, i), cap - strlen(out) - 1);
  }
}

static bool check_feed(const char *path, const feed_case *fc) {
  size_t len;
  char *doc = slurp(path, &len);
  if (!doc) {
    printf("# skipped: %s not present\n", path);
    return false;
  }
  collect c = {0};
  c.pick_id = fc->multi_id;
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why), 0);
  assert_int_equal(st.features, fc->features);
  assert_int_equal(st.parsed, fc->features);
  assert_int_equal(st.skipped, 0);
  assert_int_equal(c.n, fc->features);
  assert_int_equal(st.generated, fc->generated);
  assert_string_equal(c.first.event_id, fc->first_id);
  assert_string_equal(c.last.event_id, fc->last_id);
  assert_true(c.first.has_magnitude && c.first.magnitude == fc->first_mag);
  assert_true(c.first.has_depth && c.first.depth_km == fc->first_depth);
  assert_int_equal(c.first.time, fc->first_time);
  assert_int_equal(c.last.updated, fc->last_updated);
  assert_string_equal(c.first.source, "usgs");
  if (fc->multi_id) {
    char ids[512];
    assert_true(c.have_picked);
    join_ids(&c.picked, ids, sizeof ids);
    assert_string_equal(ids, fc->multi_ids);
  }
  free(doc);
  return true;
}

static void test_every_shared_usgs_feed_parses_with_exact_counts(void **state) {
  (void)state;
  int found = 0;
  for (size_t i = 0; i < sizeof shared_feeds / sizeof shared_feeds[0]; i++) {
    char path[1024];
    char rel[256];
    snprintf(rel, sizeof rel, "data/usgs/%s", shared_feeds[i].file);
    path_in(path, sizeof path, "QS_SHARED_DIR", "../shared", rel);
    found += check_feed(path, &shared_feeds[i]);
  }
  if (found == 0)
    skip();
}

static void test_shared_feed_details_match_the_file(void **state) {
  (void)state;
  char path[1024];
  path_in(path, sizeof path, "QS_SHARED_DIR", "../shared",
          "data/usgs/usgs_4.5_month_utero.geojson");
  size_t len;
  char *doc = slurp(path, &len);
  if (!doc)
    skip();
  /* jq -c '.features[] | select(.properties.alert=="yellow") |
   *        [.id,.properties.mag,.properties.place]' -> usc000ndnj, 6.7,
   * "60km WNW of Iquique, Chile" (the first of the two yellow alerts). */
  collect c = {0};
  c.pick_id = "usc000ndnj";
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why), 0);
  assert_true(c.have_picked);
  assert_true(c.picked.magnitude == 6.7);
  assert_int_equal(c.picked.alert_level, QS_ALERT_YELLOW);
  assert_string_equal(c.picked.place, "60km WNW of Iquique, Chile");
  free(doc);
}

static void test_vega_datasets_earthquakes_parse_with_exact_counts(void **state) {
  (void)state;
  char path[1024];
  path_in(path, sizeof path, "QS_NODE_DIR", "tests/node",
          "node_modules/vega-datasets/data/earthquakes.json");
  size_t len;
  char *doc = slurp(path, &len);
  if (!doc)
    fail_msg("%s not present: run ./quakestream deps (npm package vega-datasets)", path);
  /* jq: 1707 features; first ci37868143 (M2, depth 26.49, time 1517966773840);
   * last uw61345682 (updated 1517942380200); ak18383983 ids
   * ",ak18383983,us1000chw0,"; ci38101128 depth -0.21; 4 with tsunami 1. */
  collect c = {0};
  c.pick_id = "ci38101128";
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why), 0);
  assert_int_equal(st.features, 1707);
  assert_int_equal(st.parsed, 1707);
  assert_int_equal(st.skipped, 0);
  assert_int_equal(st.generated, 1517968154000);
  assert_string_equal(c.first.event_id, "ci37868143");
  assert_true(c.first.magnitude == 2.0);
  assert_true(c.first.depth_km == 26.49);
  assert_int_equal(c.first.time, 1517966773840);
  assert_true(c.first.longitude == -118.6671667 && c.first.latitude == 34.4945);
  assert_string_equal(c.first.place, "4km W of Castaic, CA");
  assert_string_equal(c.first.mag_type, "ml");
  assert_string_equal(c.first.status, "automatic");
  assert_string_equal(c.first.net, "ci");
  assert_int_equal(c.first.sig, 62);
  assert_string_equal(c.last.event_id, "uw61345682");
  assert_int_equal(c.last.updated, 1517942380200);
  assert_true(c.have_picked);
  assert_true(c.picked.depth_km == -0.21);

  /* second pass: the association example */
  collect c2 = {0};
  c2.pick_id = "ak18383983";
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c2, &st, why, sizeof why), 0);
  char ids[256];
  join_ids(&c2.picked, ids, sizeof ids);
  assert_string_equal(ids, "ak18383983,us1000chw0");
  free(doc);
}

static char *fixture(const char *name, size_t *len) {
  char path[1024];
  const char *src = getenv("QS_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/data/%s", src ? src : ".", name);
  char *doc = slurp(path, len);
  if (!doc)
    fail_msg("fixture %s missing (is QS_SOURCE_DIR set?)", path);
  return doc;
}

static void test_malformed_features_are_skipped_and_counted(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_malformed_features.geojson", &len);
  collect c = {0};
  c.pick_id = "ok2";
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why), 0);
  assert_int_equal(st.features, 12);
  assert_int_equal(st.parsed, 3);
  assert_int_equal(st.skipped, 9);
  assert_int_equal(st.skips_kept, QS_USGS_SKIPS_KEPT);
  static const struct {
    size_t index;
    const char *reason;
  } want[QS_USGS_SKIPS_KEPT] = {
      {1, "feature 1: id: missing or not a string"},
      {2, "feature 2 (nocoords): geometry.coordinates: missing or not [lon, lat, depth]"},
      {3, "feature 3 (badlat): latitude: 95 out of range [-90, 90]"},
      {4, "feature 4 (strmag): properties.mag: must be a number or null"},
      {5, "feature 5 (notime): properties.time: missing or not an integer (epoch ms)"},
      {6, "feature 6: feature: not an object"},
      {8, "feature 8 (deep): depth_km: 1200 out of range [-10, 1000]"},
      {9, "feature 9 (purple): properties.alert: must be null, green, yellow, orange or red"},
  };
  for (size_t i = 0; i < QS_USGS_SKIPS_KEPT; i++) {
    assert_int_equal(st.first_skips[i].index, want[i].index);
    assert_string_equal(st.first_skips[i].reason, want[i].reason);
  }
  /* the good ones, including null/absent optional members */
  assert_string_equal(c.first.event_id, "ok1");
  assert_string_equal(c.last.event_id, "ok3");
  assert_true(c.have_picked);
  assert_false(c.picked.has_magnitude);
  assert_false(c.picked.has_depth);
  assert_string_equal(c.picked.place, "");
  assert_string_equal(c.picked.status, "deleted");
  assert_int_equal(c.picked.change, QS_EVENT_DELETED);
  assert_int_equal(qs_event_ids_count(&c.picked), 1);
  assert_string_equal(qs_event_ids_at(&c.picked, 0), "ok2");
  assert_true(c.last.tsunami_flag);
  assert_int_equal(c.last.alert_level, QS_ALERT_ORANGE);
  assert_true(c.last.depth_km == -2.5);
  char ids[128];
  join_ids(&c.last, ids, sizeof ids);
  assert_string_equal(ids, "ok3,us7000abc");
  assert_int_equal(c.first.change, QS_EVENT_NEW);
  free(doc);
}

static void test_not_json_document_is_an_error_with_a_reason(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_not_json.html", &len);
  qs_usgs_stats st;
  char why[256] = "";
  collect c = {0};
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why),
                   QS_ERR_PARSE);
  assert_true(strncmp(why, "not valid JSON", 14) == 0);
  assert_int_equal(c.n, 0);
  assert_int_equal(st.features, 0);
  free(doc);
}

static void test_json_that_is_not_a_feature_collection_is_an_error(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_not_a_collection.json", &len);
  qs_usgs_stats st;
  char why[256] = "";
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, NULL, &st, why, sizeof why),
                   QS_ERR_PARSE);
  assert_string_equal(why, "not a GeoJSON FeatureCollection with a features array");
  static const char *others[] = {"[]", "{\"type\":\"FeatureCollection\"}",
                                 "{\"type\":\"FeatureCollection\",\"features\":{}}"};
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
    assert_int_equal(
        qs_usgs_parse_feed(others[i], strlen(others[i]), NULL, NULL, NULL, &st, why, sizeof why),
        QS_ERR_PARSE);
  free(doc);
}

static void test_document_over_the_size_limit_is_refused(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_malformed_features.geojson", &len);
  qs_usgs_opts opts;
  qs_usgs_opts_init(&opts);
  opts.max_bytes = len - 1;
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, &opts, on_event, NULL, &st, why, sizeof why),
                   QS_ERR_TOOBIG);
  assert_non_null(strstr(why, "over the"));
  opts.max_bytes = len;
  collect c = {0};
  assert_int_equal(qs_usgs_parse_feed(doc, len, &opts, on_event, &c, &st, why, sizeof why), 0);
  free(doc);
}

static void test_options_set_source_and_ingest_time(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_malformed_features.geojson", &len);
  qs_usgs_opts opts;
  qs_usgs_opts_init(&opts);
  opts.source = "usgs-all_hour";
  opts.ingested_at = 1700000009000;
  collect c = {0};
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, &opts, on_event, &c, &st, why, sizeof why), 0);
  assert_string_equal(c.first.source, "usgs-all_hour");
  assert_int_equal(c.last.ingested_at, 1700000009000);
  free(doc);
}

static void test_callback_error_stops_delivery_and_is_returned(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_malformed_features.geojson", &len);
  collect c = {0};
  c.stop_after = 2;
  qs_usgs_stats st;
  char why[256];
  assert_int_equal(qs_usgs_parse_feed(doc, len, NULL, on_event, &c, &st, why, sizeof why),
                   QS_ERR_FULL);
  assert_int_equal(c.n, 2);
  assert_int_equal(st.parsed, 2);
  free(doc);
}

static void test_single_feature_parses(void **state) {
  (void)state;
  static const char feat[] =
      "{\"type\":\"Feature\",\"id\":\"us7000abc\",\"properties\":{\"mag\":5.2,\"time\":1,"
      "\"updated\":2,\"status\":\"reviewed\",\"ids\":\",us7000abc,ci123,\"},"
      "\"geometry\":{\"type\":\"Point\",\"coordinates\":[179.9,-17.5,600]}}";
  qs_event ev;
  char why[256];
  assert_int_equal(qs_usgs_parse_feature(feat, strlen(feat), NULL, &ev, why, sizeof why), 0);
  assert_string_equal(ev.event_id, "us7000abc");
  assert_true(qs_event_ids_contains(&ev, "ci123"));
  assert_true(ev.depth_km == 600);
  assert_int_equal(qs_usgs_parse_feature("{}", 2, NULL, &ev, why, sizeof why), QS_ERR_INVALID);
  assert_string_equal(why, "id: missing or not a string");
}

static int count_event(const qs_event *ev, void *data) {
  char why[256];
  assert_int_equal(qs_event_validate(ev, why, sizeof why), 0);
  (*(size_t *)data)++;
  return 0;
}

/* Deterministic mutation smoke test: damaged feeds never crash the parser
 * (ASan build) and its counts always add up. */
static void test_mutated_feeds_never_crash_and_counts_add_up(void **state) {
  (void)state;
  size_t len;
  char *doc = fixture("usgs_malformed_features.geojson", &len);
  uint32_t seed = 777;
  static const char alphabet[] = "{}[],:\"0123456789.-enul \x01\xff";
  for (int iter = 0; iter < 3000; iter++) {
    char *m = malloc(len);
    assert_non_null(m);
    memcpy(m, doc, len);
    size_t n = len;
    for (int e = 0; e < 3 && n > 1; e++) {
      seed = seed * 1103515245u + 12345u;
      size_t at = (seed >> 4) % n;
      if ((seed >> 30) == 0)
        n = at + 1; /* truncate */
      else
        m[at] = alphabet[(seed >> 20) % (sizeof alphabet - 1)];
    }
    size_t delivered = 0;
    qs_usgs_stats st;
    char why[256];
    int rc = qs_usgs_parse_feed(m, n, NULL, count_event, &delivered, &st, why, sizeof why);
    if (rc == 0) {
      assert_int_equal(st.parsed + st.skipped, st.features);
      assert_int_equal(delivered, st.parsed);
      assert_true(st.skips_kept <= QS_USGS_SKIPS_KEPT && st.skips_kept <= st.skipped);
    } else {
      assert_int_equal(rc, QS_ERR_PARSE);
      assert_int_equal(delivered, 0);
    }
    free(m);
  }
  free(doc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_shared_usgs_feed_parses_with_exact_counts),
      cmocka_unit_test(test_shared_feed_details_match_the_file),
      cmocka_unit_test(test_vega_datasets_earthquakes_parse_with_exact_counts),
      cmocka_unit_test(test_malformed_features_are_skipped_and_counted),
      cmocka_unit_test(test_not_json_document_is_an_error_with_a_reason),
      cmocka_unit_test(test_json_that_is_not_a_feature_collection_is_an_error),
      cmocka_unit_test(test_document_over_the_size_limit_is_refused),
      cmocka_unit_test(test_options_set_source_and_ingest_time),
      cmocka_unit_test(test_callback_error_stops_delivery_and_is_returned),
      cmocka_unit_test(test_single_feature_parses),
      cmocka_unit_test(test_mutated_feeds_never_crash_and_counts_add_up),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
