/* The ingestor's change classifier (services/ingestor/changes.c): docs/changes.md, case by case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "changes.h"
#include "qs/error.h"

typedef struct msg {
  qs_event ev;
  char key[QS_EVENT_SHORT_MAX + 1];
  ch_kind kind;
} msg;

typedef struct fixture {
  qs_regions regions;
  ch_store *st;
  msg msgs[16];
  size_t nmsgs;
  size_t nwrites;
} fixture;

static void on_send(void *ud, char *json, size_t len, const char *key, ch_kind kind) {
  fixture *f = ud;
  assert_true(f->nmsgs < 16);
  msg *m = &f->msgs[f->nmsgs++];
  char why[200];
  assert_int_equal(qs_event_from_json(&m->ev, json, len, why, sizeof why), 0);
  snprintf(m->key, sizeof m->key, "%s", key);
  assert_string_equal(m->key, m->ev.region); /* the partition key is the message's region */
  m->kind = kind;
  free(json);
}

static void on_write(void *ud, const char *id, const ch_rec *r) {
  (void)id, (void)r;
  ((fixture *)ud)->nwrites++;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  char why[200];
  qs_regions_init(&f->regions);
  assert_int_equal(qs_regions_load_default(&f->regions, why, sizeof why), 0);
  f->st = ch_store_new();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  ch_store_free(f->st);
  qs_regions_close(&f->regions);
  free(f);
  return 0;
}

/* Classifies one feature; returns its kind. */
static ch_kind feature(fixture *f, const char *id, const char *ids, double lat, double lon,
                       double mag, int64_t updated, const char *status, bool *folded) {
  char doc[1024];
  snprintf(doc, sizeof doc,
           "{\"type\":\"FeatureCollection\",\"features\":[{\"type\":\"Feature\",\"id\":\"%s\","
           "\"properties\":{\"mag\":%g,\"time\":1764000000000,\"updated\":%lld,\"status\":\"%s\","
           "\"ids\":\"%s\"},\"geometry\":{\"type\":\"Point\",\"coordinates\":[%g,%g,10]}}]}",
           id, mag, (long long)updated, status, ids, lon, lat);
  feed_list l = {0};
  size_t skipped = 0;
  char why[200];
  assert_int_equal(
      feed_list_parse(&l, doc, strlen(doc), &f->regions, "test", 1, &skipped, why, sizeof why), 0);
  assert_int_equal(l.n, 1);
  f->nmsgs = 0;
  ch_sink sink = {.send = on_send, .write = on_write, .ud = f};
  ch_kind kind;
  bool fo;
  assert_int_equal(ch_classify(f->st, &l.v[0], &sink, &kind, &fo), 0);
  assert_null(l.v[0].json);
  if (folded)
    *folded = fo;
  feed_list_free(&l);
  return kind;
}

#define ALASKA 61.0, -150.0
#define HAWAII 19.4, -155.3
#define JAPAN 35.7, 139.7

static void test_records_round_trip(void **state) {
  (void)state;
  ch_rec r = {.updated = 42, .state = 'S', .region = "alaska", .pref = "us7000abc"}, back;
  char buf[CH_REC_MAX];
  size_t n = ch_rec_format(&r, buf, sizeof buf);
  assert_string_equal(buf, "42|S|alaska|us7000abc");
  assert_int_equal(ch_rec_parse(&back, buf, n), 0);
  assert_int_equal(back.updated, 42);
  assert_int_equal(back.state, 'S');
  assert_string_equal(back.region, "alaska");
  assert_string_equal(back.pref, "us7000abc");
  assert_int_equal(ch_rec_parse(&back, "1700000000000", 13), 0); /* an older ingestor's value */
  assert_int_equal(back.state, 'L');
  assert_string_equal(back.region, "");
  const char *bad[] = {"", "x", "12|Q|a|", "12|S|alaska|", "12|L|alaska", "12|S|a|bad id"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_not_equal(ch_rec_parse(&back, bad[i], strlen(bad[i])), 0);
}

static void test_new_duplicate_revision(void **state) {
  fixture *f = *state;
  assert_int_equal(feature(f, "ak1", ",ak1,", ALASKA, 4.1, 1000, "automatic", NULL), CH_NEW);
  assert_int_equal(f->nmsgs, 1);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_NEW);
  assert_int_equal(feature(f, "ak1", ",ak1,", ALASKA, 4.1, 1000, "automatic", NULL), CH_DUPLICATE);
  assert_int_equal(f->nmsgs, 0);
  assert_int_equal(feature(f, "ak1", ",ak1,", ALASKA, 4.3, 900, "reviewed", NULL), CH_DUPLICATE);
  assert_int_equal(feature(f, "ak1", ",ak1,", ALASKA, 4.3, 2000, "reviewed", NULL), CH_REVISION);
  assert_int_equal(f->nmsgs, 1);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_REVISION);
  assert_true(f->msgs[0].ev.magnitude == 4.3);
}

static void test_region_move_sends_moved_on_the_old_key_first(void **state) {
  fixture *f = *state;
  feature(f, "ev1", "", ALASKA, 4.1, 1000, "automatic", NULL);
  assert_string_equal(f->msgs[0].key, "alaska");
  assert_int_equal(feature(f, "ev1", "", HAWAII, 4.2, 2000, "reviewed", NULL), CH_REVISION);
  assert_int_equal(f->nmsgs, 2);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_MOVED);
  assert_string_equal(f->msgs[0].key, "alaska");
  assert_int_equal(f->msgs[0].ev.updated, 2000);
  assert_int_equal(f->msgs[1].ev.change, QS_EVENT_REVISION);
  assert_string_equal(f->msgs[1].key, "hawaii");
  /* a deletion goes where the event was last counted */
  assert_int_equal(feature(f, "ev1", "", JAPAN, 4.2, 3000, "deleted", NULL), CH_DELETED);
  assert_int_equal(f->nmsgs, 1);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_DELETED);
  assert_string_equal(f->msgs[0].key, "hawaii");
  /* deleted again: nothing more; un-deleted later: new again, where it is now */
  assert_int_equal(feature(f, "ev1", "", JAPAN, 4.2, 4000, "deleted", NULL), CH_DUPLICATE);
  assert_int_equal(f->nmsgs, 0);
  assert_int_equal(feature(f, "ev1", "", JAPAN, 4.2, 5000, "reviewed", NULL), CH_NEW);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_NEW);
  assert_string_equal(f->msgs[0].key, "east-asia");
}

static void test_deletion_of_an_unknown_id_is_sent(void **state) {
  fixture *f = *state;
  assert_int_equal(feature(f, "zz9", "", JAPAN, 2.0, 1000, "deleted", NULL), CH_DELETED);
  assert_int_equal(f->nmsgs, 1);
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_DELETED);
}

static void test_association_supersedes_before_the_survivor(void **state) {
  fixture *f = *state;
  feature(f, "ci1", ",ci1,", ALASKA, 3.9, 1000, "automatic", NULL);
  feature(f, "us1", ",us1,", HAWAII, 4.0, 1500, "automatic", NULL);
  bool folded;
  assert_int_equal(feature(f, "us1", ",us1,ci1,", HAWAII, 4.1, 2000, "reviewed", &folded),
                   CH_REVISION);
  assert_false(folded);
  assert_int_equal(f->nmsgs, 2);
  assert_int_equal(f->msgs[0].kind, CH_SUPERSEDED);
  assert_string_equal(f->msgs[0].ev.event_id, "ci1");
  assert_string_equal(f->msgs[0].ev.superseded_by, "us1");
  assert_string_equal(f->msgs[0].key, "alaska"); /* where ci1 was counted */
  assert_string_equal(f->msgs[1].ev.event_id, "us1");
  /* a later version under the old id is the survivor's version, never counted as ci1 */
  assert_int_equal(feature(f, "ci1", ",ci1,", HAWAII, 4.4, 3000, "reviewed", &folded), CH_REVISION);
  assert_true(folded);
  assert_int_equal(f->nmsgs, 1);
  assert_string_equal(f->msgs[0].ev.event_id, "us1");
  assert_true(f->msgs[0].ev.magnitude == 4.4);
  /* an older one is a duplicate; a deletion under the old id leaves the survivor alone */
  assert_int_equal(feature(f, "ci1", ",ci1,", HAWAII, 4.0, 2500, "reviewed", NULL), CH_DUPLICATE);
  assert_int_equal(feature(f, "ci1", ",ci1,", HAWAII, 4.0, 4000, "deleted", NULL), CH_DUPLICATE);
  assert_int_equal(f->nmsgs, 0);
  /* the survivor listing the old id again sends nothing more for it */
  assert_int_equal(feature(f, "us1", ",us1,ci1,", HAWAII, 4.5, 5000, "reviewed", NULL),
                   CH_REVISION);
  assert_int_equal(f->nmsgs, 1);
}

static void test_one_survivor_supersedes_two_live_ids(void **state) {
  fixture *f = *state;
  feature(f, "ci3", "", ALASKA, 2.5, 1000, "automatic", NULL);
  feature(f, "nc3", "", HAWAII, 2.6, 1100, "automatic", NULL);
  assert_int_equal(feature(f, "us3", ",us3,ci3,nc3,", ALASKA, 2.7, 2000, "reviewed", NULL), CH_NEW);
  assert_int_equal(f->nmsgs, 3);
  assert_string_equal(f->msgs[0].ev.event_id, "ci3");
  assert_string_equal(f->msgs[0].key, "alaska");
  assert_string_equal(f->msgs[1].ev.event_id, "nc3");
  assert_string_equal(f->msgs[1].key, "hawaii");
  assert_int_equal(f->msgs[1].ev.change, QS_EVENT_SUPERSEDED);
  assert_string_equal(f->msgs[2].ev.event_id, "us3");
}

static void test_unknown_ids_become_aliases(void **state) {
  fixture *f = *state;
  assert_int_equal(feature(f, "us2", ",us2,nc2,", ALASKA, 4.0, 1000, "reviewed", NULL), CH_NEW);
  assert_int_equal(f->nmsgs, 1);
  assert_int_equal(f->nwrites, 2); /* us2 live, nc2 an alias of it */
  bool folded;
  assert_int_equal(feature(f, "nc2", ",nc2,", ALASKA, 4.0, 900, "automatic", &folded),
                   CH_DUPLICATE);
  assert_true(folded);
  assert_int_equal(f->nmsgs, 0);
}

static void test_chained_association(void **state) {
  fixture *f = *state;
  feature(f, "a1", "", ALASKA, 3.0, 1000, "automatic", NULL);
  feature(f, "b1", ",b1,a1,", ALASKA, 3.1, 2000, "automatic", NULL); /* supersedes a1 */
  feature(f, "c1", "", HAWAII, 3.2, 2100, "automatic", NULL);
  /* c1 becomes preferred over b1's group: it lists a1 only; a1 -> b1 is live: superseded */
  assert_int_equal(feature(f, "c1", ",c1,a1,", HAWAII, 3.3, 3000, "reviewed", NULL), CH_REVISION);
  assert_int_equal(f->nmsgs, 2);
  assert_string_equal(f->msgs[0].ev.event_id, "b1");
  assert_int_equal(f->msgs[0].ev.change, QS_EVENT_SUPERSEDED);
  assert_string_equal(f->msgs[0].ev.superseded_by, "c1");
}

static void test_needed_ids_follow_chains(void **state) {
  fixture *f = *state;
  feature(f, "x1", "", ALASKA, 3.0, 1000, "automatic", NULL);
  feature(f, "y1", ",y1,x1,", ALASKA, 3.0, 2000, "automatic", NULL);
  feed_entry e = {.id = "x1"};
  size_t calls = 0;
  void count_fn(const char *id, void *ud) { /* nested: gnu11 */
    (void)id;
    (*(size_t *)ud)++;
  }
  assert_int_equal(ch_needed_ids(f->st, &e, count_fn, &calls), 0); /* x1 -> y1, both loaded */
  feed_entry g = {.id = "new9"};
  assert_int_equal(ch_needed_ids(f->st, &g, count_fn, &calls), 1);
}

static void test_the_malformed_fixture_keeps_its_three_events_one_deleted(void **state) {
  fixture *f = *state;
  char path[1024];
  const char *src = getenv("QS_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/data/usgs_malformed_features.geojson", src ? src : ".");
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  static char doc[1 << 16];
  size_t n = fread(doc, 1, sizeof doc, fp);
  fclose(fp);
  feed_list l = {0};
  size_t skipped = 0;
  char why[200];
  assert_int_equal(feed_list_parse(&l, doc, n, &f->regions, "test", 1, &skipped, why, sizeof why),
                   0);
  ch_sink sink = {.send = on_send, .write = on_write, .ud = f};
  size_t news = 0, dels = 0;
  for (size_t i = 0; i < l.n; i++) {
    ch_kind kind;
    bool fo;
    f->nmsgs = 0;
    assert_int_equal(ch_classify(f->st, &l.v[i], &sink, &kind, &fo), 0);
    news += kind == CH_NEW;
    dels += kind == CH_DELETED;
  }
  assert_int_equal(news, 2);
  assert_int_equal(dels, 1); /* ok2 says status DELETED */
  assert_int_equal(l.n + skipped, 12);
  feed_list_free(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_records_round_trip),
      cmocka_unit_test_setup_teardown(test_new_duplicate_revision, setup, teardown),
      cmocka_unit_test_setup_teardown(test_region_move_sends_moved_on_the_old_key_first, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_deletion_of_an_unknown_id_is_sent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_association_supersedes_before_the_survivor, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_one_survivor_supersedes_two_live_ids, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unknown_ids_become_aliases, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chained_association, setup, teardown),
      cmocka_unit_test_setup_teardown(test_needed_ids_follow_chains, setup, teardown),
      cmocka_unit_test_setup_teardown(test_the_malformed_fixture_keeps_its_three_events_one_deleted,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
