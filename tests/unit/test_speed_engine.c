/* test_speed_engine.c — the speed aggregator's engine without sockets: window assignment,
 * watermark and lateness, revisions and retractions, duplicates, alerts, dead letters, and the
 * commit ops it produces. Missing state is "loaded" as absent (an empty Redis) unless a test
 * hands over stored state itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/agg.h"
#include "qs/error.h"

#include "engine.h"

#define T0 INT64_C(1764051900000) /* 2025-11-25T06:25:00Z, a 5-minute boundary */
#define MIN INT64_C(60000)
#define MINUTE MIN

static sa_engine *new_engine(void) {
  sa_engine *e = malloc(sizeof *e);
  sa_engine_opts o;
  sa_engine_opts_default(&o);
  o.tolerance_ms = MIN;
  o.lateness_ms = 5 * MIN;
  o.idle_ms = 30000;
  sa_engine_init(e, &o);
  return e;
}

static void free_engine(sa_engine *e) {
  sa_engine_free(e);
  free(e);
}

static sa_item *mk_raw(int part, int64_t seq, const char *body) {
  sa_item *it = calloc(1, sizeof *it);
  it->partition = part;
  it->sequence = seq;
  snprintf(it->offset, sizeof it->offset, "%lld", (long long)seq * 100);
  it->body = strdup(body);
  it->len = strlen(body);
  sa_item_parse(it);
  return it;
}

/* mag NAN = null. change: "new", "revision", "deleted". */
static sa_item *mk(int part, int64_t seq, const char *id, double mag, int64_t t, int64_t updated,
                   const char *region, const char *change, bool tsunami) {
  char body[2048], m[32];
  if (isnan(mag))
    strcpy(m, "null");
  else
    snprintf(m, sizeof m, "%.2f", mag);
  snprintf(body, sizeof body,
           "{\"event_id\":\"%s\",\"magnitude\":%s,\"mag_type\":\"ml\",\"place\":\"somewhere\","
           "\"time\":%lld,\"updated\":%lld,\"longitude\":-117.5,\"latitude\":35.7,"
           "\"depth_km\":8.25,\"event_type\":\"earthquake\",\"status\":\"reviewed\","
           "\"tsunami_flag\":%s,\"alert_level\":null,\"net\":\"ci\",\"sig\":100,"
           "\"region\":\"%s\",\"source\":\"test\",\"ingested_at\":%lld,\"ids\":[\"%s\"],"
           "\"change\":\"%s\"}",
           id, m, (long long)t, (long long)updated, tsunami ? "true" : "false", region,
           (long long)updated, id, change);
  sa_item *it = mk_raw(part, seq, body);
  assert_int_equal(it->parse_rc, 0);
  return it;
}

/* Applies it, loading whatever is missing as absent. */
static void run(sa_engine *e, sa_item *it, int64_t now) {
  sa_needs n;
  sa_needs_init(&n);
  for (int round = 0; round < 3 && !sa_engine_ready_for(e, it, &n); round++) {
    for (size_t i = 0; i < n.ev_ids.n; i++)
      sa_engine_load_evstate(e, sa_argv_at(&n.ev_ids, i, NULL), NULL, 0);
    for (size_t i = 0; i < n.win_keys.n; i++)
      assert_int_equal(
          sa_engine_load_window(e, sa_argv_at(&n.win_keys, i, NULL), NULL, 0, NULL, NULL, NULL, 0),
          0);
    sa_needs_reset(&n);
  }
  assert_true(sa_engine_ready_for(e, it, &n));
  sa_needs_free(&n);
  sa_engine_apply(e, it, now);
  free(it->body);
  free(it);
}

static const sa_window *win(sa_engine *e, const char *region, int64_t t) {
  int64_t s, end;
  assert_int_equal(qs_agg_window_of(t, QS_AGG_WINDOW_5MIN_MS, &s, &end), 0);
  return sa_engine_window(e, region, s);
}

static double minmag(const sa_window *w) {
  double v;
  assert_int_equal(qs_agg_min_magnitude(&w->row.agg, &v), 0);
  return v;
}
static double maxmag(const sa_window *w) {
  double v;
  assert_int_equal(qs_agg_max_magnitude(&w->row.agg, &v), 0);
  return v;
}

/* Counts ops of a take that start with the given command (and key, if not NULL). */
/* Takes the engine's changes into ops (emptied first). */
static void take(sa_engine *e, sa_argv *ops) {
  int parts[SA_PARTITIONS_MAX];
  size_t np;
  sa_argv_reset(ops);
  sa_engine_take(e, ops, parts, &np, T0);
}

/* Index of the op after the one at i: a command ("<n> word..."), or "0 @EV|@EVDEL k tuple..."
 * (four words a tuple), "0 @ALERT ..." (7 words), "0 @RETRACT ..." (5), "0 @FINAL ..." (4). */
static size_t next_op(const sa_argv *ops, size_t i) {
  int c = atoi(sa_argv_at(ops, i, NULL));
  if (c > 0)
    return i + (size_t)c + 1;
  const char *op = sa_argv_at(ops, i + 1, NULL);
  if (strcmp(op, "@EV") == 0 || strcmp(op, "@EVDEL") == 0)
    return i + 3 + 4 * (size_t)atoi(sa_argv_at(ops, i + 2, NULL));
  return i + (strcmp(op, "@ALERT") == 0 ? 7 : strcmp(op, "@RETRACT") == 0 ? 5 : 4);
}

/* Ops named cmd (a command on key, or a special "@..." op when key is NULL). */
static int count_ops(const sa_argv *ops, const char *cmd, const char *key) {
  int n = 0;
  for (size_t i = 0; i < ops->n; i = next_op(ops, i)) {
    bool special = atoi(sa_argv_at(ops, i, NULL)) == 0;
    if (strcmp(sa_argv_at(ops, i + 1, NULL), cmd) == 0 &&
        (special || !key || strcmp(sa_argv_at(ops, i + 2, NULL), key) == 0))
      n++;
  }
  return n;
}

static void test_event_on_boundary_opens_the_window_that_starts_there(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 1, "us-west", "new", false), T0);
  run(e, mk(0, 2, "a2", 3.0, T0 - 1, 1, "us-west", "new", false), T0);
  const sa_window *w = sa_engine_window(e, "us-west", T0);
  assert_non_null(w);
  assert_int_equal(w->row.agg.event_count, 1);
  assert_int_equal(w->row.window_end_ms, T0 + 5 * MIN);
  const sa_window *prev = sa_engine_window(e, "us-west", T0 - 5 * MIN);
  assert_non_null(prev);
  assert_int_equal(prev->row.agg.event_count, 1);
  free_engine(e);
}

static void test_null_magnitude_counts_but_is_not_averaged(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", NAN, T0, 1, "japan", "new", false), T0);
  run(e, mk(0, 2, "a2", 5.0, T0 + 1, 1, "japan", "new", false), T0);
  const sa_window *w = win(e, "japan", T0);
  assert_int_equal(w->row.agg.event_count, 2);
  assert_int_equal(w->row.agg.mag_count, 1);
  assert_int_equal(w->row.agg.significant_count, 1);
  free_engine(e);
}

static void test_watermark_is_max_event_time_minus_tolerance(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(2, 1, "a1", 2.0, T0 + 10 * MIN, 1, "japan", "new", false), T0);
  run(e, mk(2, 2, "a2", 2.0, T0 + 3 * MIN, 1, "japan", "new", false), T0);
  assert_int_equal(sa_engine_partition(e, 2)->watermark, T0 + 9 * MIN);
  assert_int_equal(sa_engine_partition(e, 2)->max_time, T0 + 10 * MIN);
  free_engine(e);
}

static void test_idle_partition_watermark_advances_by_wall_clock(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  int64_t wall = 1000000;
  run(e, mk(1, 1, "a1", 2.0, T0, 1, "japan", "new", false), wall);
  sa_engine_tick(e, wall + 10000); /* not idle yet */
  assert_int_equal(sa_engine_partition(e, 1)->watermark, T0 - MIN);
  sa_engine_tick(e, wall + 40000); /* idle: +30 s since the last tick */
  assert_int_equal(sa_engine_partition(e, 1)->watermark, T0 - MIN + 30000);
  sa_engine_tick(e, wall + 50000);
  assert_int_equal(sa_engine_partition(e, 1)->watermark, T0 - MIN + 40000);
  free_engine(e);
}

static void test_late_event_updates_final_window_and_counts_late(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 1, "japan", "new", false), T0);
  /* Watermark to T0 + 11 min - 1 min = T0 + 10 min = end (T0+5) + lateness (5): final. */
  run(e, mk(0, 2, "a2", 2.0, T0 + 11 * MIN, 1, "japan", "new", false), T0);
  const sa_window *w = win(e, "japan", T0);
  assert_false(w->final);
  run(e, mk(0, 3, "late", 4.0, T0 + 2 * MIN, 1, "japan", "new", false), T0);
  assert_true(w->final);
  assert_int_equal(w->late_count, 1);
  assert_int_equal(w->row.agg.event_count, 2);
  assert_int_equal(e->stats.late, 1);
  /* Not yet past end + lateness: not late. */
  run(e, mk(0, 4, "ontime", 4.0, T0 + 6 * MIN, 1, "japan", "new", false), T0);
  assert_int_equal(win(e, "japan", T0 + 6 * MIN)->late_count, 0);
  free_engine(e);
}

static void test_revision_retracts_old_magnitude_and_recomputes_minmax(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(0, 2, "a2", 6.5, T0 + 1000, 1, "alaska", "new", false), T0);
  run(e, mk(0, 3, "a3", 3.0, T0 + 2000, 1, "alaska", "new", false), T0);
  const sa_window *w = win(e, "alaska", T0);
  assert_true(maxmag(w) == 6.5);
  /* The max is revised down: retracted, and max recomputed from the other members. */
  run(e, mk(0, 4, "a2", 2.5, T0 + 1000, 2, "alaska", "revision", false), T0);
  assert_int_equal(w->row.agg.event_count, 3);
  assert_true(maxmag(w) == 3.0);
  assert_true(minmag(w) == 2.0);
  assert_int_equal(w->row.agg.mag_sum_micro, 7500000);
  assert_int_equal(w->row.agg.significant_count, 0);
  /* The min is revised up. */
  run(e, mk(0, 5, "a1", 4.0, T0, 2, "alaska", "revision", false), T0);
  assert_true(minmag(w) == 2.5);
  assert_true(maxmag(w) == 4.0);
  assert_int_equal(e->stats.revisions, 2);
  free_engine(e);
}

static void test_revision_moving_event_to_another_window_retracts_it_there(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(0, 2, "a1", 2.0, T0 + 7 * MIN, 2, "alaska", "revision", false), T0);
  assert_int_equal(win(e, "alaska", T0)->row.agg.event_count, 0);
  assert_int_equal(win(e, "alaska", T0 + 7 * MIN)->row.agg.event_count, 1);
  free_engine(e);
}

static void test_exact_duplicate_changes_nothing(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 5, "alaska", "new", false), T0);
  sa_argv ops;
  sa_argv_init(&ops);
  int parts[SA_PARTITIONS_MAX];
  size_t np;
  sa_engine_take(e, &ops, parts, &np, T0);
  sa_argv_reset(&ops);
  run(e, mk(0, 2, "a1", 2.0, T0, 5, "alaska", "new", false), T0);
  /* An older revision is stale: nothing either. */
  run(e, mk(0, 3, "a1", 9.0, T0, 4, "alaska", "revision", false), T0);
  assert_int_equal(win(e, "alaska", T0)->row.agg.event_count, 1);
  assert_int_equal(e->stats.duplicates, 1);
  assert_int_equal(e->stats.stale, 1);
  sa_engine_take(e, &ops, parts, &np, T0);
  /* Only the checkpoint moves. */
  assert_int_equal(count_ops(&ops, "HSET", "qs:rt:win"), 0);
  assert_int_equal(count_ops(&ops, "@EV", NULL), 0);
  assert_int_equal(count_ops(&ops, "HSET", "qs:ckpt:earthquake-events:$Default:0"), 1);
  assert_int_equal(np, 1);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_deletion_retracts_and_blocks_older_revisions(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a1", 2.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(0, 2, "a2", 3.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(0, 3, "a1", 2.0, T0, 3, "alaska", "deleted", false), T0);
  const sa_window *w = win(e, "alaska", T0);
  assert_int_equal(w->row.agg.event_count, 1);
  assert_true(minmag(w) == 3.0);
  /* A revision older than the deletion arrives late: ignored. */
  run(e, mk(0, 4, "a1", 2.2, T0, 2, "alaska", "revision", false), T0);
  assert_int_equal(w->row.agg.event_count, 1);
  assert_false(sa_engine_evrec(e, "alaska", "a1")->live);
  free_engine(e);
}

static void test_superseded_event_is_retracted(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "ci1", 2.0, T0, 1, "us-west", "new", false), T0);
  sa_item *it =
      mk_raw(0, 2,
             "{\"event_id\":\"ci1\",\"magnitude\":2.0,\"mag_type\":\"ml\",\"place\":\"x\","
             "\"time\":1764051900000,\"updated\":2,\"longitude\":-117.5,\"latitude\":35.7,"
             "\"depth_km\":1,\"event_type\":\"earthquake\",\"status\":\"reviewed\","
             "\"tsunami_flag\":false,\"alert_level\":null,\"net\":\"ci\",\"sig\":1,"
             "\"region\":\"us-west\",\"source\":\"t\",\"ingested_at\":2,\"ids\":[\"ci1\"],"
             "\"change\":\"superseded\",\"superseded_by\":\"us7000abc\"}");
  assert_int_equal(it->parse_rc, 0);
  run(e, it, T0);
  assert_int_equal(win(e, "us-west", T0)->row.agg.event_count, 0);
  assert_int_equal(sa_engine_evrec(e, "us-west", "ci1")->change, 'S');
  free_engine(e);
}

static void test_poison_goes_to_dead_letters_with_reason(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  sa_item *bad = mk_raw(3, 42, "{not json");
  assert_int_not_equal(bad->parse_rc, 0);
  run(e, bad, T0);
  sa_item *inv = mk_raw(3, 43, "{\"event_id\":\"x\"}");
  assert_int_not_equal(inv->parse_rc, 0);
  run(e, inv, T0);
  assert_int_equal(e->stats.poison, 2);
  sa_argv ops;
  sa_argv_init(&ops);
  int parts[SA_PARTITIONS_MAX];
  size_t np;
  sa_engine_take(e, &ops, parts, &np, T0);
  assert_int_equal(count_ops(&ops, "LPUSH", "qs:rt:dlq"), 2);
  assert_int_equal(count_ops(&ops, "LTRIM", "qs:rt:dlq"), 1);
  bool found = false;
  for (size_t i = 0; i < ops.n; i++)
    if (strstr(sa_argv_at(&ops, i, NULL), "\"sequence\":42") &&
        strstr(sa_argv_at(&ops, i, NULL), "\"reason\""))
      found = true;
  assert_true(found);
  assert_int_equal(np, 1);
  assert_int_equal(parts[0], 3);
  assert_int_equal(sa_engine_partition(e, 3)->sequence, 43);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_alert_thresholds(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "m599", 5.99, T0, 1, "japan", "new", false), T0);
  assert_int_equal(e->stats.alerts, 0);
  run(e, mk(0, 2, "m600", 6.0, T0, 1, "japan", "new", false), T0);
  assert_int_equal(e->stats.alerts, 1);
  run(e, mk(0, 3, "tsu", 4.0, T0, 1, "japan", "new", true), T0);
  assert_int_equal(e->stats.alerts, 2);
  /* VOLUME: more than 50 events in a window (51 here). */
  for (int i = 0; i < 47; i++) {
    char id[16];
    snprintf(id, sizeof id, "v%d", i);
    run(e, mk(0, 10 + i, id, 1.0, T0 + i, 1, "japan", "new", false), T0);
  }
  assert_int_equal(win(e, "japan", T0)->row.agg.event_count, 50);
  assert_int_equal(e->stats.alerts, 2);
  run(e, mk(0, 100, "v51", 1.0, T0, 1, "japan", "new", false), T0);
  assert_int_equal(e->stats.alerts, 3);
  run(e, mk(0, 101, "v52", 1.0, T0, 1, "japan", "new", false), T0);
  assert_int_equal(e->stats.alerts, 3);
  sa_argv ops;
  sa_argv_init(&ops);
  take(e, &ops);
  assert_int_equal(count_ops(&ops, "@ALERT", NULL), 3);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_anomaly_needs_a_baseline_and_uses_scaled_threshold(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "a0", 1.0, T0, 1, "hawaii", "new", false), T0);
  run(e, mk(0, 2, "a1", 1.0, T0, 1, "hawaii", "new", false), T0);
  assert_int_equal(e->stats.alerts, 0); /* no baseline: no anomaly */
  qs_agg_baseline b;
  qs_agg_baseline_init(&b);
  for (int h = 0; h < 24; h++)
    assert_int_equal(qs_agg_baseline_add_hour(&b, h % 2 ? 12 : 0), 0);
  double thr;
  assert_int_equal(qs_agg_baseline_threshold(&b, 5 * MIN, 2.0, &thr), 0);
  sa_engine_set_baseline(e, "hawaii", &b);
  int n = 2;
  while ((double)(n + 1) <= thr) {
    char id[16];
    snprintf(id, sizeof id, "b%d", n);
    run(e, mk(0, 10 + n, id, 1.0, T0, 1, "hawaii", "new", false), T0);
    n++;
  }
  assert_int_equal(e->stats.alerts, 0);
  run(e, mk(0, 99, "over", 1.0, T0, 1, "hawaii", "new", false), T0);
  assert_int_equal(e->stats.alerts, 1);
  free_engine(e);
}

static void test_reloaded_window_rebuilds_aggregate_from_members(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  qs_contrib a, b;
  assert_int_equal(qs_contrib_init(&a, T0 + 1, 2.5, 10.0, false, 5.0), 0);
  assert_int_equal(qs_contrib_init(&b, T0 + 2, NAN, NAN, true, 5.0), 0);
  char ea[128], eb[128];
  sa_contrib_encode(&a, ea, sizeof ea);
  sa_contrib_encode(&b, eb, sizeof eb);
  qs_contrib back;
  assert_int_equal(sa_contrib_decode(&back, ea, strlen(ea)), 0);
  assert_memory_equal(&back, &a, sizeof a);
  const char *ids[] = {"x1", "x2"};
  const char *vals[] = {ea, eb};
  size_t lens[] = {strlen(ea), strlen(eb)};
  char key[64];
  snprintf(key, sizeof key, "alaska|%lld", (long long)T0);
  const char *row = "{\"event_count\":2,\"final\":true,\"late_count\":7}";
  assert_int_equal(sa_engine_load_window(e, key, row, strlen(row), ids, vals, lens, 2), 0);
  const sa_window *w = sa_engine_window(e, "alaska", T0);
  assert_int_equal(w->row.agg.event_count, 2);
  assert_int_equal(w->row.agg.tsunami_count, 1);
  assert_true(w->final);
  assert_int_equal(w->late_count, 7);
  /* A reloaded event record lets a revision retract from the reloaded window. */
  char rec[256];
  snprintf(rec, sizeof rec, "1|N|alaska|%s", ea);
  sa_engine_load_evstate(e, "alaska|x1", rec, strlen(rec));
  run(e, mk(0, 1, "x1", 3.5, T0 + 1, 2, "alaska", "revision", false), T0);
  assert_int_equal(w->row.agg.event_count, 2);
  assert_int_equal(w->row.agg.mag_sum_micro, 3500000);
  assert_int_equal(w->late_count, 8); /* it was final */
  assert_int_equal(sa_contrib_decode(&back, "1,x,2,0", 7), QS_ERR_PARSE);
  free_engine(e);
}

static void test_take_covers_state_checkpoint_and_live_messages(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(1, 7, "a1", 2.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(1, 8, "a2", 2.0, T0, 1, "alaska", "new", false), T0);
  assert_true(sa_engine_has_changes(e));
  sa_argv ops;
  sa_argv_init(&ops);
  int parts[SA_PARTITIONS_MAX];
  size_t np;
  assert_int_equal(sa_engine_take(e, &ops, parts, &np, T0), 2);
  assert_false(sa_engine_has_changes(e));
  assert_int_equal(count_ops(&ops, "HSET", "qs:rt:win"), 1);
  /* Raw events: one conditional op for both (it publishes them as it writes them). */
  assert_int_equal(count_ops(&ops, "@EV", NULL), 1);
  assert_int_equal(count_ops(&ops, "PUBLISH", "qs:live:events"), 0);
  assert_int_equal(count_ops(&ops, "PUBLISH", "qs:live:aggregates"), 1);
  assert_int_equal(count_ops(&ops, "@FINAL", NULL), 1);
  assert_int_equal(count_ops(&ops, "ZADD", "qs:rt:open:earthquake-events:$Default:1"), 1);
  assert_int_equal(np, 1);
  assert_int_equal(parts[0], 1);
  /* The window row carries final, late_count and updated_at after the qs_agg fields. */
  bool row_ok = false;
  for (size_t i = 0; i < ops.n; i++) {
    const char *s = sa_argv_at(&ops, i, NULL);
    if (strncmp(s, "{\"window_start\"", 15) == 0 && strstr(s, "\"final\":false,\"late_count\":0"))
      row_ok = true;
  }
  assert_true(row_ok);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_revision_of_event_whose_window_was_trimmed_does_not_crash(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  qs_contrib a;
  assert_int_equal(qs_contrib_init(&a, T0 + 1, 2.5, 10.0, false, 5.0), 0);
  char ea[128], rec[256];
  sa_contrib_encode(&a, ea, sizeof ea);
  snprintf(rec, sizeof rec, "1|N|alaska|%s", ea);
  sa_engine_load_evstate(e, "alaska|old1", rec, strlen(rec));
  /* Retention removed the window (and its members); the record is still there. */
  run(e, mk(0, 1, "old1", 3.0, T0 + 1, 2, "alaska", "revision", false), T0);
  assert_int_equal(e->stats.orphans, 1);
  assert_int_equal(win(e, "alaska", T0)->row.agg.event_count, 1);
  free_engine(e);
}

static void test_alert_is_retracted_when_its_condition_goes(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "big", 6.4, T0, 1, "japan", "new", true), T0);
  run(e, mk(0, 2, "big", 5.8, T0, 2, "japan", "revision", true), T0); /* below 6: spike goes */
  run(e, mk(0, 3, "big", 5.8, T0, 3, "japan", "deleted", true), T0);  /* tsunami goes */
  sa_argv ops;
  sa_argv_init(&ops);
  take(e, &ops);
  /* v1: spike + tsunami; v2: tsunami again (stored once: the commit dedupes by key). */
  assert_int_equal(count_ops(&ops, "@ALERT", NULL), 3);
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 2);
  bool spike = false, tsu = false;
  for (size_t i = 0; i + 1 < ops.n; i++)
    if (strcmp(sa_argv_at(&ops, i, NULL), "@RETRACT") == 0) {
      spike |= strcmp(sa_argv_at(&ops, i + 1, NULL), "MAGNITUDE_SPIKE|big") == 0;
      tsu |= strcmp(sa_argv_at(&ops, i + 1, NULL), "TSUNAMI|big") == 0;
    }
  assert_true(spike && tsu);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_cache_trim_keeps_uncommitted_changes(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "c1", 2.0, T0, 1, "alaska", "new", false), T0);
  sa_argv ops;
  sa_argv_init(&ops);
  take(e, &ops); /* c1 and its window are now clean */
  run(e, mk(0, 2, "c2", 3.0, T0 + 6 * MINUTE, 1, "alaska", "new", false), T0);
  assert_int_equal(sa_engine_trim_cache(e, 1), 2); /* c2 + its window stay */
  assert_null(sa_engine_evrec(e, "alaska", "c1"));
  assert_null(sa_engine_window(e, "alaska", T0));
  assert_non_null(sa_engine_evrec(e, "alaska", "c2"));
  take(e, &ops);
  assert_int_equal(count_ops(&ops, "HSET", "qs:rt:win"), 1);
  sa_argv_free(&ops);
  free_engine(e);
}

/* The command (count > 0) cmd on key, as "arg arg ..." after the key; "" if there is none. */
static void op_args_of(const sa_argv *ops, const char *cmd, const char *key, char *out,
                       size_t cap) {
  out[0] = '\0';
  for (size_t i = 0; i < ops->n; i = next_op(ops, i)) {
    int c = atoi(sa_argv_at(ops, i, NULL));
    if (c == 0 || strcmp(sa_argv_at(ops, i + 1, NULL), cmd) != 0 ||
        strcmp(sa_argv_at(ops, i + 2, NULL), key) != 0)
      continue;
    for (int k = 3; k <= c; k++) {
      size_t used = strlen(out);
      snprintf(out + used, cap - used, "%s%s", used ? " " : "",
               sa_argv_at(ops, i + (size_t)k, NULL));
    }
    return;
  }
}

/* A trim between applies and the take moves the changed records: the members written are still
 * those of the records' final states (c2 left window B for window A in the same batch). */
static void test_cache_trim_keeps_member_changes(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "c1", 2.0, T0, 1, "alaska", "new", false), T0);
  run(e, mk(0, 2, "c3", 2.5, T0 + 6 * MINUTE, 1, "alaska", "new", false), T0);
  sa_argv ops;
  sa_argv_init(&ops);
  take(e, &ops); /* clean: c1 in A, c3 in B */
  run(e, mk(0, 3, "c2", 3.0, T0 + 7 * MINUTE, 1, "alaska", "new", false), T0);
  run(e, mk(0, 4, "c2", 3.5, T0 + MINUTE, 2, "alaska", "revision", false), T0);
  sa_engine_trim_cache(e, 1);
  assert_null(sa_engine_evrec(e, "alaska", "c1"));
  assert_non_null(sa_engine_evrec(e, "alaska", "c2"));
  take(e, &ops);
  char a[64], b[64], got[256], want[128];
  snprintf(a, sizeof a, "qs:rt:mem:alaska|%" PRId64, T0);
  snprintf(b, sizeof b, "qs:rt:mem:alaska|%" PRId64, T0 + 5 * MINUTE);
  op_args_of(&ops, "HSET", a, got, sizeof got);
  snprintf(want, sizeof want, "c2 %" PRId64 ",3500000,8250000,0", T0 + MINUTE);
  assert_string_equal(got, want);
  op_args_of(&ops, "HDEL", b, got, sizeof got);
  assert_string_equal(got, "c2");
  op_args_of(&ops, "HSET", b, got, sizeof got);
  assert_string_equal(got, "");
  sa_argv_free(&ops);
  free_engine(e);
}

/* The spike alert's message is printf's "M%.1f earthquake: <place>" for every magnitude the
 * validation lets through at or above the threshold (ties at the second decimal included: 6.25
 * is exact in binary and rounds to even, 6.35 is just below and rounds down). */
static void test_spike_message_is_printf_form(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  int64_t seq = 0;
  for (int h = 600; h <= 1050; h++) {
    char id[32];
    snprintf(id, sizeof id, "m%d", h);
    run(e, mk(0, seq++, id, h / 100.0, T0 + h, 1, "alaska", "new", false), T0);
  }
  sa_argv ops;
  sa_argv_init(&ops);
  take(e, &ops);
  int seen = 0;
  for (size_t i = 0; i + 3 < ops.n; i++) {
    if (strcmp(sa_argv_at(&ops, i, NULL), "@ALERT") != 0 ||
        strncmp(sa_argv_at(&ops, i + 1, NULL), "MAGNITUDE_SPIKE|m", 17) != 0)
      continue;
    int h = atoi(sa_argv_at(&ops, i + 1, NULL) + 17);
    char mag[16], want[96];
    snprintf(mag, sizeof mag, "%.2f", h / 100.0);
    snprintf(want, sizeof want, "\"message\":\"M%.1f earthquake: somewhere\"", strtod(mag, NULL));
    if (!strstr(sa_argv_at(&ops, i + 3, NULL), want))
      fail_msg("%s: no %s", sa_argv_at(&ops, i + 3, NULL), want);
    seen++;
  }
  assert_int_equal(seen, 451);
  sa_argv_free(&ops);
  free_engine(e);
}

/* ---- region moves (docs/changes.md) -------------------------------------------------------- */

/* Index of the first op argument equal to s (after position from), or -1. */
static long find_arg(const sa_argv *ops, const char *s, size_t from) {
  for (size_t i = from; i < ops->n; i++)
    if (strcmp(sa_argv_at(ops, i, NULL), s) == 0)
      return (long)i;
  return -1;
}

static int64_t count_in(const sa_engine *e, const char *region, int64_t t) {
  const sa_window *w = sa_engine_window(e, region, t / (5 * MIN) * (5 * MIN));
  return w ? w->row.agg.event_count : 0;
}

static void test_moved_retracts_from_its_region_only(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  sa_argv ops;
  sa_argv_init(&ops);
  run(e, mk(0, 1, "mv1", 6.5, T0, 10, "us-west", "new", false), T0);
  run(e, mk(0, 2, "other", 2.0, T0, 10, "us-west", "new", false), T0);
  take(e, &ops);
  /* The new version is in another region: this one only forgets it. */
  run(e, mk(0, 3, "mv1", 5.0, T0, 20, "us-west", "moved", false), T0);
  assert_int_equal(count_in(e, "us-west", T0), 1);
  const sa_evrec *r = sa_engine_evrec(e, "us-west", "mv1");
  assert_false(r->live);
  assert_int_equal(r->change, 'M');
  assert_int_equal(r->updated, 20);
  assert_int_equal(e->stats.moves, 1);
  assert_int_equal(e->stats.retractions, 1);
  take(e, &ops);
  /* The record and the window change; the raw event and the alerts do not, and nothing is
   * announced as removed. */
  assert_int_equal(count_ops(&ops, "HSET", "qs:rt:evstate"), 1);
  assert_int_equal(count_ops(&ops, "HSET", "qs:rt:win"), 1);
  assert_int_equal(count_ops(&ops, "@EV", NULL), 0);
  assert_int_equal(count_ops(&ops, "@EVDEL", NULL), 0);
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 0);
  assert_int_equal(count_ops(&ops, "@ALERT", NULL), 0);
  assert_true(find_arg(&ops, "us-west|mv1", 0) >= 0);
  assert_true(find_arg(&ops, "20|M|us-west|1764051900000,n,n,0", 0) >= 0);
  sa_argv_free(&ops);
  free_engine(e);
}

static void
test_revision_without_a_record_in_its_region_is_new_there_and_rechecks_alerts(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  sa_argv ops;
  sa_argv_init(&ops);
  /* The second half of a move: nothing of mv1 in japan yet. */
  run(e, mk(1, 1, "mv1", 5.0, T0, 20, "japan", "revision", false), T0);
  assert_int_equal(count_in(e, "japan", T0), 1);
  assert_true(sa_engine_evrec(e, "japan", "mv1")->live);
  assert_int_equal(sa_engine_evrec(e, "japan", "mv1")->change, 'R');
  assert_int_equal(e->stats.revisions, 0); /* nothing retracted here */
  take(e, &ops);
  assert_int_equal(count_ops(&ops, "@EV", NULL), 1);
  /* Below 6 and no tsunami flag: the event's alerts, wherever they were raised, are retracted
   * (if they exist and no newer version is stored), versioned with this message's updated. */
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 2);
  long at = find_arg(&ops, "MAGNITUDE_SPIKE|mv1", 0);
  assert_true(at > 0);
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 1, NULL), "mv1");
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 2, NULL), "20");
  assert_true(find_arg(&ops, "TSUNAMI|mv1", 0) > 0);
  /* Qualifying: raised (or un-retracted) instead; the other kind is retracted. */
  run(e, mk(2, 1, "mv2", 6.6, T0, 30, "hawaii", "revision", false), T0);
  take(e, &ops);
  assert_int_equal(count_ops(&ops, "@ALERT", NULL), 1);
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 1);
  assert_true(find_arg(&ops, "TSUNAMI|mv2", 0) > 0);
  /* A new event costs nothing extra: no retraction ops. */
  run(e, mk(2, 2, "new1", 2.0, T0, 30, "hawaii", "new", false), T0);
  take(e, &ops);
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 0);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_event_moved_out_and_back_counts_once_where_it_is(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "mb", 3.0, T0, 10, "us-west", "new", false), T0);
  /* us-west -> japan at 20 (the time moves a window too) */
  run(e, mk(0, 2, "mb", 3.5, T0 + 6 * MIN, 20, "us-west", "moved", false), T0);
  run(e, mk(1, 1, "mb", 3.5, T0 + 6 * MIN, 20, "japan", "revision", false), T0);
  assert_int_equal(count_in(e, "us-west", T0), 0);
  assert_int_equal(count_in(e, "japan", T0 + 6 * MIN), 1);
  /* japan -> us-west at 30: the moved record there is replaced by the new version. */
  run(e, mk(1, 2, "mb", 4.0, T0 + 1000, 30, "japan", "moved", false), T0);
  run(e, mk(0, 3, "mb", 4.0, T0 + 1000, 30, "us-west", "revision", false), T0);
  assert_int_equal(count_in(e, "japan", T0 + 6 * MIN), 0);
  assert_int_equal(count_in(e, "us-west", T0), 1);
  assert_true(maxmag(win(e, "us-west", T0)) == 4.0);
  assert_int_equal(sa_engine_evrec(e, "japan", "mb")->change, 'M');
  assert_int_equal(sa_engine_evrec(e, "us-west", "mb")->change, 'R');
  assert_int_equal(sa_engine_evrec(e, "us-west", "mb")->updated, 30);
  assert_int_equal(e->stats.moves, 2);
  free_engine(e);
}

static void test_duplicate_moved_and_older_versions_after_it_change_nothing(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  run(e, mk(0, 1, "dm", 3.0, T0, 10, "us-west", "new", false), T0);
  run(e, mk(0, 2, "dm", 3.5, T0, 20, "us-west", "moved", false), T0);
  run(e, mk(0, 3, "dm", 3.5, T0, 20, "us-west", "moved", false), T0); /* redelivered */
  assert_int_equal(e->stats.duplicates, 1);
  /* A version older than the move, late on the old region: stale. */
  run(e, mk(0, 4, "dm", 3.2, T0, 15, "us-west", "revision", false), T0);
  run(e, mk(0, 5, "dm", 3.0, T0, 10, "us-west", "new", false), T0);
  assert_int_equal(e->stats.stale, 2);
  assert_int_equal(count_in(e, "us-west", T0), 0);
  assert_int_equal(e->stats.moves, 1);
  free_engine(e);
}

/* One engine per replica: the old region's partition and the new region's, in either order. */
static void move_in_order(bool moved_first, sa_engine *o, sa_engine *r) {
  if (moved_first) {
    run(o, mk(0, 1, "x", 6.4, T0, 10, "us-west", "new", false), T0);
    run(o, mk(0, 2, "x", 5.5, T0 + 8 * MIN, 20, "us-west", "moved", false), T0);
    run(r, mk(1, 1, "x", 5.5, T0 + 8 * MIN, 20, "japan", "revision", false), T0);
  } else {
    run(r, mk(1, 1, "x", 5.5, T0 + 8 * MIN, 20, "japan", "revision", false), T0);
    run(o, mk(0, 1, "x", 6.4, T0, 10, "us-west", "new", false), T0);
    run(o, mk(0, 2, "x", 5.5, T0 + 8 * MIN, 20, "us-west", "moved", false), T0);
  }
}

static void test_moved_before_or_after_the_revision_on_the_other_region_agree(void **st) {
  (void)st;
  for (int order = 0; order < 2; order++) {
    sa_engine *o = new_engine(), *r = new_engine();
    move_in_order(order == 0, o, r);
    assert_int_equal(count_in(o, "us-west", T0), 0);
    assert_int_equal(count_in(r, "japan", T0 + 8 * MIN), 1);
    assert_int_equal(sa_engine_evrec(o, "us-west", "x")->change, 'M');
    assert_int_equal(sa_engine_evrec(r, "japan", "x")->updated, 20);
    /* Each replica touches its own region only. */
    assert_null(sa_engine_evrec(o, "japan", "x"));
    assert_null(sa_engine_evrec(r, "us-west", "x"));
    assert_null(sa_engine_window(r, "us-west", T0));
    /* The raw event and alerts are decided by version in the commit: the new region's replica
     * sends v20 and retracts the spike at 20; the old one's v10 and its spike are sent at 10 and
     * lose against a stored 20, whatever the commit order. */
    sa_argv ops;
    sa_argv_init(&ops);
    take(r, &ops);
    long at = find_arg(&ops, "@EV", 0);
    assert_true(at >= 0);
    assert_string_equal(sa_argv_at(&ops, (size_t)at + 3, NULL), "20");
    at = find_arg(&ops, "MAGNITUDE_SPIKE|x", 0);
    assert_true(at > 0);
    assert_string_equal(sa_argv_at(&ops, (size_t)at + 2, NULL), "20");
    take(o, &ops);
    assert_int_equal(count_ops(&ops, "@EV", NULL), 0); /* v10 left before the commit */
    at = find_arg(&ops, "@ALERT", 0);
    assert_true(at >= 0);
    assert_string_equal(sa_argv_at(&ops, (size_t)at + 5, NULL), "10");
    sa_argv_free(&ops);
    free_engine(o);
    free_engine(r);
  }
}

static void test_deletion_after_a_move_is_applied_on_the_new_region(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  sa_argv ops;
  sa_argv_init(&ops);
  run(e, mk(0, 1, "dl", 6.2, T0, 10, "us-west", "new", false), T0);
  run(e, mk(0, 2, "dl", 6.3, T0, 20, "us-west", "moved", false), T0);
  run(e, mk(1, 1, "dl", 6.3, T0, 20, "japan", "revision", false), T0);
  take(e, &ops);
  /* The ingestor keys the deletion to the region the event was last counted in. */
  run(e, mk(1, 2, "dl", 6.3, T0, 30, "japan", "deleted", false), T0);
  assert_int_equal(count_in(e, "japan", T0), 0);
  assert_int_equal(count_in(e, "us-west", T0), 0);
  assert_int_equal(sa_engine_evrec(e, "japan", "dl")->change, 'D');
  assert_int_equal(sa_engine_evrec(e, "us-west", "dl")->change, 'M');
  assert_int_equal(e->stats.deletions, 1);
  take(e, &ops);
  /* Raw event removed (by version) and announced: it was counted here. */
  long at = find_arg(&ops, "@EVDEL", 0);
  assert_true(at >= 0);
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 1, NULL), "1");
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 2, NULL), "dl");
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 3, NULL), "30");
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 4, NULL), "deleted");
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 5, NULL), "1");
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 1); /* the spike it had */
  /* An older version on the old region, replayed late: stale there. */
  run(e, mk(0, 3, "dl", 6.2, T0, 10, "us-west", "new", false), T0);
  assert_int_equal(count_in(e, "us-west", T0), 0);
  /* A deletion of an id never counted here: every alert is re-checked, nothing was counted. */
  run(e, mk(2, 1, "gone", 2.0, T0, 5, "hawaii", "deleted", false), T0);
  take(e, &ops);
  at = find_arg(&ops, "@EVDEL", 0);
  assert_string_equal(sa_argv_at(&ops, (size_t)at + 5, NULL), "0");
  assert_int_equal(count_ops(&ops, "@RETRACT", NULL), 2);
  sa_argv_free(&ops);
  free_engine(e);
}

static void test_reloaded_records_are_per_region(void **st) {
  (void)st;
  sa_engine *e = new_engine();
  qs_contrib a;
  assert_int_equal(qs_contrib_init(&a, T0 + 1, 2.5, 10.0, false, 5.0), 0);
  char ea[128], rec[256];
  sa_contrib_encode(&a, ea, sizeof ea);
  /* The same id: moved out of alaska, live in japan. */
  snprintf(rec, sizeof rec, "20|M|alaska|%lld,n,n,0", (long long)(T0 + 1));
  sa_engine_load_evstate(e, "alaska|rl", rec, strlen(rec));
  snprintf(rec, sizeof rec, "20|R|japan|%s", ea);
  sa_engine_load_evstate(e, "japan|rl", rec, strlen(rec));
  const char *ids[] = {"rl"};
  const char *vals[] = {ea};
  size_t lens[] = {strlen(ea)};
  char key[64];
  snprintf(key, sizeof key, "japan|%lld", (long long)T0);
  assert_int_equal(sa_engine_load_window(e, key, NULL, 0, ids, vals, lens, 1), 0);
  assert_int_equal(sa_engine_evrec(e, "alaska", "rl")->change, 'M');
  assert_false(sa_engine_evrec(e, "alaska", "rl")->live);
  assert_true(sa_engine_evrec(e, "japan", "rl")->live);
  /* A late old version on alaska is stale; a revision on japan replaces the contribution. */
  run(e, mk(0, 1, "rl", 9.0, T0 + 1, 15, "alaska", "revision", false), T0);
  assert_int_equal(e->stats.stale, 1);
  run(e, mk(1, 1, "rl", 3.0, T0 + 1, 30, "japan", "revision", false), T0);
  assert_int_equal(count_in(e, "japan", T0), 1);
  assert_true(maxmag(win(e, "japan", T0)) == 3.0);
  assert_int_equal(e->stats.revisions, 1);
  /* A key that is not "<region>|<id>" is ignored. */
  sa_engine_load_evstate(e, "noregion", rec, strlen(rec));
  assert_null(sa_engine_evrec(e, "", "noregion"));
  free_engine(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_event_on_boundary_opens_the_window_that_starts_there),
      cmocka_unit_test(test_null_magnitude_counts_but_is_not_averaged),
      cmocka_unit_test(test_watermark_is_max_event_time_minus_tolerance),
      cmocka_unit_test(test_idle_partition_watermark_advances_by_wall_clock),
      cmocka_unit_test(test_late_event_updates_final_window_and_counts_late),
      cmocka_unit_test(test_revision_retracts_old_magnitude_and_recomputes_minmax),
      cmocka_unit_test(test_revision_moving_event_to_another_window_retracts_it_there),
      cmocka_unit_test(test_exact_duplicate_changes_nothing),
      cmocka_unit_test(test_deletion_retracts_and_blocks_older_revisions),
      cmocka_unit_test(test_superseded_event_is_retracted),
      cmocka_unit_test(test_poison_goes_to_dead_letters_with_reason),
      cmocka_unit_test(test_alert_thresholds),
      cmocka_unit_test(test_anomaly_needs_a_baseline_and_uses_scaled_threshold),
      cmocka_unit_test(test_reloaded_window_rebuilds_aggregate_from_members),
      cmocka_unit_test(test_take_covers_state_checkpoint_and_live_messages),
      cmocka_unit_test(test_revision_of_event_whose_window_was_trimmed_does_not_crash),
      cmocka_unit_test(test_alert_is_retracted_when_its_condition_goes),
      cmocka_unit_test(test_cache_trim_keeps_uncommitted_changes),
      cmocka_unit_test(test_cache_trim_keeps_member_changes),
      cmocka_unit_test(test_spike_message_is_printf_form),
      cmocka_unit_test(test_moved_retracts_from_its_region_only),
      cmocka_unit_test(
          test_revision_without_a_record_in_its_region_is_new_there_and_rechecks_alerts),
      cmocka_unit_test(test_event_moved_out_and_back_counts_once_where_it_is),
      cmocka_unit_test(test_duplicate_moved_and_older_versions_after_it_change_nothing),
      cmocka_unit_test(test_moved_before_or_after_the_revision_on_the_other_region_agree),
      cmocka_unit_test(test_deletion_after_a_move_is_applied_on_the_new_region),
      cmocka_unit_test(test_reloaded_records_are_per_region),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
