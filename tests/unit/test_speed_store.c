/* test_speed_store.c — the speed aggregator's Redis side against a real redis-server on a free
 * port: the atomic commit of state + checkpoint with its lease fence, reloading state into a
 * fresh engine (what a restarted replica does), window finalisation, and lease balancing between
 * two replicas. Skips if redis-server is absent; the server is always killed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "qs/error.h"
#include "qs/redis.h"

#include "engine.h"
#include "lease.h"
#include "smap.h"
#include "store.h"

#include "redis_fixture.h"

#define T0 INT64_C(1764051900000)
#define MINUTE INT64_C(60000)

typedef struct fx {
  uv_loop_t loop;
  qs_redis redis;
  redisContext *sync;
  int port;
  sa_engine engine;
  sa_store store;
} fx;

static fx *fx_new(void) {
  if (!redis_fixture_dir[0])
    return NULL;
  fx *f = calloc(1, sizeof *f);
  f->port = redis_fixture_free_port();
  assert_int_equal(redis_fixture_start(f->port, NULL), 0);
  uv_loop_init(&f->loop);
  char url[64], err[256];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->port);
  assert_int_equal(qs_redis_init(&f->redis, &f->loop, url, NULL, err, sizeof err), 0);
  f->sync = redisConnect("127.0.0.1", f->port);
  assert_non_null(f->sync);
  assert_int_equal(f->sync->err, 0);
  sa_engine_opts o;
  sa_engine_opts_default(&o);
  o.tolerance_ms = MINUTE;
  o.lateness_ms = 5 * MINUTE;
  sa_engine_init(&f->engine, &o);
  sa_store_init(&f->store, &f->redis, &f->engine, "me");
  return f;
}

static void fx_free(fx *f) {
  sa_store_free(&f->store);
  sa_engine_free(&f->engine);
  qs_redis_close(&f->redis, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  redisFree(f->sync);
  free(f);
  redis_fixture_kill();
}

static void on_guard(uv_timer_t *t) { *(int *)t->data = 1; }

/* Runs the loop until *flag or 10 s. */
static void run_until(uv_loop_t *loop, int *flag) {
  uv_timer_t guard;
  int expired = 0;
  uv_timer_init(loop, &guard);
  guard.data = &expired;
  uv_timer_start(&guard, on_guard, 10000, 0);
  while (!*flag && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  assert_false(expired);
}

static redisReply *cmd(fx *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(f->sync, fmt, ap);
  va_end(ap);
  assert_non_null(r);
  return r;
}

static long long cmd_int(fx *f, const char *fmt, const char *arg) {
  redisReply *r = cmd(f, fmt, arg);
  long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                : r->type == REDIS_REPLY_STRING ? atoll(r->str)
                                                : -1;
  freeReplyObject(r);
  return v;
}

static sa_item *mk_in(const char *region, int part, int64_t seq, const char *id, double mag,
                      int64_t t, int64_t updated, const char *change) {
  char body[2048];
  snprintf(body, sizeof body,
           "{\"event_id\":\"%s\",\"magnitude\":%.2f,\"mag_type\":\"ml\",\"place\":\"p\","
           "\"time\":%lld,\"updated\":%lld,\"longitude\":-150,\"latitude\":61,"
           "\"depth_km\":8,\"event_type\":\"earthquake\",\"status\":\"reviewed\","
           "\"tsunami_flag\":false,\"alert_level\":null,\"net\":\"ak\",\"sig\":100,"
           "\"region\":\"%s\",\"source\":\"test\",\"ingested_at\":1,\"ids\":[\"%s\"],"
           "\"change\":\"%s\"}",
           id, mag, (long long)t, (long long)updated, region, id, change);
  sa_item *it = calloc(1, sizeof *it);
  it->partition = part;
  it->sequence = seq;
  snprintf(it->offset, sizeof it->offset, "%lld", (long long)seq * 10);
  it->body = strdup(body);
  it->len = strlen(body);
  sa_item_parse(it);
  assert_int_equal(it->parse_rc, 0);
  return it;
}

static sa_item *mk(int part, int64_t seq, const char *id, double mag, int64_t t, int64_t updated,
                   const char *change) {
  return mk_in("alaska", part, seq, id, mag, t, updated, change);
}

static void on_fetched(void *ud, int status) {
  assert_int_equal(status, 0);
  *(int *)ud = 1;
}

/* Applies it with store s (and its engine), fetching missing state from Redis as the service
 * does. */
static void apply_with(fx *f, sa_store *s, sa_item *it) {
  sa_needs n;
  sa_needs_init(&n);
  for (int round = 0; round < 3 && !sa_engine_ready_for(s->engine, it, &n); round++) {
    int done = 0;
    assert_int_equal(sa_store_fetch(s, &n, on_fetched, &done), 0);
    run_until(&f->loop, &done);
    sa_needs_reset(&n);
  }
  assert_true(sa_engine_ready_for(s->engine, it, &n));
  sa_needs_free(&n);
  sa_engine_apply(s->engine, it, T0);
  free(it->body);
  free(it);
}

static void apply(fx *f, sa_item *it) { apply_with(f, &f->store, it); }

typedef struct commit_res {
  int done, status;
  size_t alerts;
} commit_res;

static void on_commit(void *ud, int status, const char *reason, const char *const *alerts,
                      const size_t *lens, size_t n, size_t items) {
  (void)reason;
  (void)alerts;
  (void)lens;
  (void)items;
  commit_res *r = ud;
  r->status = status;
  r->alerts = n;
  r->done = 1;
}

static int commit_with(fx *f, sa_store *s, size_t *alerts) {
  commit_res r = {0};
  assert_int_equal(sa_store_commit(s, T0, on_commit, &r, NULL), 0);
  run_until(&f->loop, &r.done);
  if (alerts)
    *alerts = r.alerts;
  return r.status;
}

static int commit(fx *f, size_t *alerts) { return commit_with(f, &f->store, alerts); }

static void hold_lease(fx *f, int p) {
  char k[128];
  snprintf(k, sizeof k, "qs:lease:earthquake-events:$Default:%d", p);
  freeReplyObject(cmd(f, "SET %s me", k));
}

static void test_commit_writes_state_and_checkpoint_together(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 5, "ak1", 2.0, T0 + 1, 1, "new"));
  apply(f, mk(0, 6, "ak2", 6.5, T0 + 2, 1, "new"));
  size_t alerts = 0;
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 1); /* MAGNITUDE_SPIKE, new */
  assert_int_equal(cmd_int(f, "HGET %s sequence", "qs:ckpt:earthquake-events:$Default:0"), 6);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:ev"), 2);
  assert_int_equal(cmd_int(f, "ZCARD %s", "qs:ev:idx"), 2);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:rt:mem:alaska|1764051900000"), 2);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:alerts"), 1);
  redisReply *row = cmd(f, "HGET qs:rt:win %s", "alaska|1764051900000");
  assert_int_equal(row->type, REDIS_REPLY_STRING);
  assert_non_null(strstr(row->str, "\"event_count\":2"));
  assert_non_null(strstr(row->str, "\"max_magnitude\":6.5"));
  freeReplyObject(row);
  /* The same alert again is not stored or reported twice. */
  apply(f, mk(0, 7, "ak2", 6.6, T0 + 2, 2, "revision"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 0);
  /* Revised below the threshold: retracted; back above it: raised again. */
  apply(f, mk(0, 8, "ak2", 5.0, T0 + 2, 3, "revision"));
  assert_int_equal(commit(f, &alerts), 0);
  redisReply *al = cmd(f, "HGET qs:alerts %s", "MAGNITUDE_SPIKE|ak2");
  assert_non_null(strstr(al->str, "\"retracted\":true"));
  freeReplyObject(al);
  apply(f, mk(0, 9, "ak2", 6.1, T0 + 2, 4, "revision"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 1);
  al = cmd(f, "HGET qs:alerts %s", "MAGNITUDE_SPIKE|ak2");
  assert_non_null(strstr(al->str, "\"retracted\":false"));
  freeReplyObject(al);
  fx_free(f);
}

static void test_commit_without_the_lease_writes_nothing(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  freeReplyObject(cmd(f, "SET %s other", "qs:lease:earthquake-events:$Default:1"));
  apply(f, mk(1, 5, "ak1", 2.0, T0 + 1, 1, "new"));
  assert_int_equal(commit(f, NULL), QS_ERR_STOLEN);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:ckpt:earthquake-events:$Default:1"), 0);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:ev"), 0);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:rt:win"), 0);
  fx_free(f);
}

static void on_loaded(void *ud, int status) {
  assert_int_equal(status, 0);
  *(int *)ud = 1;
}

static void test_restarted_engine_reloads_state_and_retracts_exactly(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 1, "ak1", 2.0, T0 + 1, 1, "new"));
  apply(f, mk(0, 2, "ak2", 4.0, T0 + 2, 1, "new"));
  apply(f, mk(0, 3, "ak3", 3.0, T0 + 3, 1, "new"));
  assert_int_equal(commit(f, NULL), 0);
  /* A new process: empty cache, checkpoint from Redis. */
  sa_engine_reset(&f->engine);
  int done = 0;
  assert_int_equal(sa_store_load_checkpoint(&f->store, 0, on_loaded, &done), 0);
  run_until(&f->loop, &done);
  assert_int_equal(sa_engine_partition(&f->engine, 0)->sequence, 3);
  assert_int_equal(sa_engine_partition(&f->engine, 0)->max_time, T0 + 3);
  apply(f, mk(0, 4, "ak2", 1.0, T0 + 2, 2, "revision")); /* the max drops out */
  apply(f, mk(0, 5, "ak1", 2.0, T0 + 1, 1, "new"));      /* duplicate */
  const sa_window *w = sa_engine_window(&f->engine, "alaska", T0);
  assert_int_equal(w->row.agg.event_count, 3);
  double mx, mn;
  assert_int_equal(qs_agg_max_magnitude(&w->row.agg, &mx), 0);
  assert_int_equal(qs_agg_min_magnitude(&w->row.agg, &mn), 0);
  assert_true(mx == 3.0);
  assert_true(mn == 1.0);
  assert_int_equal(commit(f, NULL), 0);
  redisReply *row = cmd(f, "HGET qs:rt:win %s", "alaska|1764051900000");
  assert_non_null(strstr(row->str, "\"mag_sum_micro\":6000000"));
  freeReplyObject(row);
  fx_free(f);
}

static void test_watermark_past_end_finalises_committed_windows(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 1, "ak1", 2.0, T0 + 1, 1, "new"));
  assert_int_equal(commit(f, NULL), 0);
  redisReply *row = cmd(f, "HGET qs:rt:win %s", "alaska|1764051900000");
  assert_non_null(strstr(row->str, "\"final\":false"));
  freeReplyObject(row);
  /* In another window: watermark = T0 + 11 min - 1 min = end + lateness of the first. */
  apply(f, mk(0, 2, "ak2", 2.0, T0 + 11 * MINUTE, 1, "new"));
  assert_int_equal(commit(f, NULL), 0);
  row = cmd(f, "HGET qs:rt:win %s", "alaska|1764051900000");
  assert_non_null(strstr(row->str, "\"final\":true"));
  freeReplyObject(row);
  assert_int_equal(cmd_int(f, "ZCARD %s", "qs:rt:open:earthquake-events:$Default:0"), 1);
  fx_free(f);
}

static void on_done_ok(void *ud, int status) {
  assert_int_equal(status, 0);
  *(int *)ud = 1;
}

static long long rolling_count(fx *f) {
  redisReply *r = cmd(f, "GET %s", "qs:rt:rolling");
  assert_int_equal(r->type, REDIS_REPLY_STRING);
  const char *p = strstr(r->str, "\"event_count\":");
  long long n = p ? atoll(p + 14) : -1;
  freeReplyObject(r);
  return n;
}

static void refresh_rolling(fx *f) {
  int done = 0;
  assert_int_equal(sa_store_refresh_rolling(&f->store, false, T0, 1000, on_done_ok, &done), 0);
  run_until(&f->loop, &done);
}

static void test_rolling_hour_counts_events_as_they_enter_and_leave(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 1, "r1", 2.0, T0, 1, "new"));               /* leaves at T0 + 1 h */
  apply(f, mk(0, 2, "r2", 4.0, T0 + 30 * MINUTE, 1, "new")); /* leaves at T0 + 1.5 h */
  assert_int_equal(commit(f, NULL), 0);
  refresh_rolling(f); /* end = newest event time T0 + 30 min: both inside */
  assert_int_equal(rolling_count(f), 2);
  redisReply *r = cmd(f, "GET %s", "qs:rt:rolling");
  assert_non_null(strstr(r->str, "\"max_magnitude\":4"));
  assert_non_null(strstr(r->str, "\"avg_magnitude\":3"));
  freeReplyObject(r);
  apply(f, mk(0, 3, "r3", 1.0, T0 + 60 * MINUTE, 1, "new")); /* end moves: r1 leaves (exclusive) */
  assert_int_equal(commit(f, NULL), 0);
  refresh_rolling(f);
  assert_int_equal(rolling_count(f), 2);
  apply(f, mk(0, 4, "r2", 4.0, T0 + 30 * MINUTE, 2, "deleted")); /* a retraction leaves too */
  assert_int_equal(commit(f, NULL), 0);
  refresh_rolling(f);
  assert_int_equal(rolling_count(f), 1);
  fx_free(f);
}

static void test_retention_trims_old_windows_events_and_records(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 1, "old", 2.0, T0, 1, "new"));
  apply(f, mk(0, 2, "new", 2.0, T0 + 40 * 86400000LL, 1, "new"));
  apply(f, mk(0, 3, "gone", 2.0, T0, 1, "new"));
  apply(f, mk(0, 4, "gone", 2.0, T0, 2, "deleted")); /* leaves a tombstone version */
  assert_int_equal(commit(f, NULL), 0);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:ev:ver"), 1);
  int done = 0;
  /* Now = T0 + 45 d: windows are kept 30 d, events 90 d. */
  assert_int_equal(sa_store_trim(&f->store, T0 + 45 * 86400000LL, 30 * 86400000LL, 90 * 86400000LL,
                                 100, on_done_ok, &done),
                   0);
  run_until(&f->loop, &done);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:rt:win"), 1);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:rt:mem:alaska|1764051900000"), 0);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:ev"), 2);
  /* Now = T0 + 100 d: the old event and its record go too. */
  done = 0;
  assert_int_equal(sa_store_trim(&f->store, T0 + 100 * 86400000LL, 30 * 86400000LL, 90 * 86400000LL,
                                 100, on_done_ok, &done),
                   0);
  run_until(&f->loop, &done);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:ev"), 1);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:rt:evstate"), 1);
  assert_int_equal(cmd_int(f, "HLEN %s", "qs:ev:ver"), 0);
  fx_free(f);
}

static char *hget(fx *f, const char *key, const char *field) {
  redisReply *r = cmd(f, "HGET %s %s", key, field);
  char *v = r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
  freeReplyObject(r);
  return v;
}

/* Two replicas own the old and the new region of a moved event (two engines on one Redis): the
 * raw event, its alerts and its removal follow the newest version whatever order they commit in;
 * each region's record and window are its own. */
static void test_raw_events_and_alerts_follow_the_newest_version_across_regions(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  hold_lease(f, 1);
  sa_engine_opts o;
  sa_engine_opts_default(&o);
  sa_engine *other = malloc(sizeof *other);
  sa_engine_init(other, &o);
  sa_store other_store;
  sa_store_init(&other_store, &f->redis, other, "me");
  /* The new region's replica is first: v20 (M5.5) in japan. */
  apply_with(f, &other_store, mk_in("japan", 1, 1, "mx", 5.5, T0, 20, "revision"));
  assert_int_equal(commit_with(f, &other_store, NULL), 0);
  /* The old region's replica lags: v10 (M6.4) then the move, in alaska. */
  apply(f, mk_in("alaska", 0, 1, "mx", 6.4, T0, 10, "new"));
  size_t alerts = 9;
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 0); /* v10's spike: a newer version is stored */
  char *v = hget(f, "qs:ev", "mx");
  assert_non_null(strstr(v, "\"updated\":20"));
  assert_non_null(strstr(v, "\"region\":\"japan\""));
  free(v);
  apply(f, mk_in("alaska", 0, 2, "mx", 5.5, T0, 20, "moved"));
  assert_int_equal(commit(f, NULL), 0);
  v = hget(f, "qs:rt:evstate", "alaska|mx");
  assert_string_equal(v, "20|M|alaska|1764051900000,n,n,0");
  free(v);
  v = hget(f, "qs:rt:evstate", "japan|mx");
  assert_non_null(v);
  assert_true(strncmp(v, "20|R|japan|", 11) == 0);
  free(v);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:rt:win"), 1);
  assert_int_equal(cmd_int(f, "HEXISTS qs:rt:win %s", "alaska|1764051900000"), 0);
  assert_int_equal(cmd_int(f, "HEXISTS qs:ev %s", "mx"), 1);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:alerts"), 0);
  /* Deleted at 30 on japan (where it was last counted): raw event gone, its version kept. */
  apply_with(f, &other_store, mk_in("japan", 1, 2, "mx", 5.5, T0, 30, "deleted"));
  assert_int_equal(commit_with(f, &other_store, NULL), 0);
  assert_int_equal(cmd_int(f, "HEXISTS qs:ev %s", "mx"), 0);
  v = hget(f, "qs:ev:ver", "mx");
  assert_string_equal(v, "30");
  free(v);
  /* An old version replayed on a third region cannot bring it back, nor raise its alert. */
  apply(f, mk_in("hawaii", 0, 3, "mx", 6.4, T0, 10, "new"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 0);
  assert_int_equal(cmd_int(f, "HEXISTS qs:ev %s", "mx"), 0);
  assert_int_equal(cmd_int(f, "ZCARD %s", "qs:ev:idx"), 0);
  /* A newer version (un-deleted) is stored again, and its spike raised. */
  apply(f, mk_in("hawaii", 0, 4, "mx", 6.6, T0, 40, "new"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 1);
  v = hget(f, "qs:ev", "mx");
  assert_non_null(strstr(v, "\"updated\":40"));
  free(v);
  /* One replica with both regions, one commit: the decision order rules. The newer version
   * first: the older one's spike is never raised ... */
  apply(f, mk_in("japan", 1, 3, "my", 5.5, T0, 20, "revision"));
  apply(f, mk_in("alaska", 0, 5, "my", 6.4, T0, 10, "new"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 0);
  assert_int_equal(cmd_int(f, "HEXISTS qs:alerts %s", "MAGNITUDE_SPIKE|my"), 0);
  /* ... the older first: raised, then retracted by the newer. */
  apply(f, mk_in("alaska", 0, 6, "mz", 6.4, T0, 10, "new"));
  apply(f, mk_in("alaska", 0, 7, "mz", 5.5, T0, 20, "moved"));
  apply(f, mk_in("japan", 1, 4, "mz", 5.5, T0, 20, "revision"));
  assert_int_equal(commit(f, &alerts), 0);
  assert_int_equal(alerts, 1);
  v = hget(f, "qs:alerts", "MAGNITUDE_SPIKE|mz");
  assert_non_null(strstr(v, "\"retracted\":true"));
  free(v);
  v = hget(f, "qs:ev", "mz");
  assert_non_null(strstr(v, "\"region\":\"japan\""));
  free(v);
  sa_store_free(&other_store);
  sa_engine_free(other);
  free(other);
  fx_free(f);
}

typedef struct lease_obs {
  int owned;
  int changes;
} lease_obs;

static void on_lease(sa_lease *l, int p, bool acquired, void *ud) {
  (void)l;
  (void)p;
  lease_obs *o = ud;
  o->owned += acquired ? 1 : -1;
  o->changes++;
}

static void lease_closed(sa_lease *l) { *(int *)l->ud = -1; }

static void test_two_replicas_split_partitions_and_take_over(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  sa_lease a, b;
  lease_obs oa = {0}, ob = {0};
  sa_lease_init(&a, &f->loop, &f->redis, "hub", "$Default", "A", 600, on_lease, &oa);
  sa_lease_start(&a, 4);
  while (oa.owned < 4)
    uv_run(&f->loop, UV_RUN_ONCE);
  sa_lease_init(&b, &f->loop, &f->redis, "hub", "$Default", "B", 600, on_lease, &ob);
  sa_lease_start(&b, 4);
  /* A releases its extras on its next round, B picks them up. */
  while (!(oa.owned == 2 && ob.owned == 2))
    uv_run(&f->loop, UV_RUN_ONCE);
  /* A stops (as if it died after releasing nothing: here it releases at once) -> B takes all. */
  int closed = 0;
  a.ud = &closed;
  sa_lease_close(&a, lease_closed);
  while (closed != -1)
    uv_run(&f->loop, UV_RUN_ONCE);
  while (ob.owned < 4)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(cmd_int(f, "GET %s", "qs:lease:hub:$Default:0") == -1 ? 0 : 1, 1);
  redisReply *r = cmd(f, "GET %s", "qs:lease:hub:$Default:3");
  assert_string_equal(r->str, "B");
  freeReplyObject(r);
  b.ud = &closed;
  closed = 0;
  sa_lease_close(&b, lease_closed);
  while (closed != -1)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(cmd_int(f, "EXISTS %s", "qs:lease:hub:$Default:3"), 0);
  fx_free(f);
}

/* The record fetch (one line per asked id): a committed record, an unseen id, an id asked twice,
 * and a stored value with a newline (no record has one: it is read as unseen, not as two lines). */
static void test_record_fetch_reads_one_line_per_id(void **st) {
  (void)st;
  fx *f = fx_new();
  if (!f)
    skip();
  hold_lease(f, 0);
  apply(f, mk(0, 1, "ak1", 2.0, T0 + 1, 7, "new"));
  assert_int_equal(commit(f, NULL), 0);
  freeReplyObject(cmd(f, "HSET qs:rt:evstate %s %s", "alaska|odd", "5|N|alaska|\n1,n,n,0"));
  sa_engine_reset(&f->engine);
  sa_needs n;
  sa_needs_init(&n);
  const char *ids[] = {"alaska|ak1", "alaska|nope", "alaska|ak1", "alaska|odd"};
  for (size_t i = 0; i < 4; i++)
    sa_argv_adds(&n.ev_ids, ids[i]);
  int done = 0;
  assert_int_equal(sa_store_fetch(&f->store, &n, on_fetched, &done), 0);
  run_until(&f->loop, &done);
  sa_needs_free(&n);
  const sa_evrec *r = sa_engine_evrec(&f->engine, "alaska", "ak1");
  assert_non_null(r);
  assert_true(r->exists && r->live);
  assert_int_equal(r->updated, 7);
  r = sa_engine_evrec(&f->engine, "alaska", "nope");
  assert_non_null(r);
  assert_false(r->exists);
  r = sa_engine_evrec(&f->engine, "alaska", "odd");
  assert_non_null(r);
  assert_false(r->exists);
  fx_free(f);
}

/* A commit is sent as one RESP command built by sa_argv_resp: binary-safe, counts and lengths
 * exact, the buffer reused and regrown. */
static void test_argv_resp_frames_every_string(void **st) {
  (void)st;
  sa_argv a;
  sa_argv_init(&a);
  sa_argv_adds(&a, "EVAL");
  sa_argv_add(&a, "a\0b", 3);
  sa_argv_addi(&a, -42);
  sa_argv_add(&a, "", 0);
  size_t len;
  const char *r = sa_argv_resp(&a, &len);
  static const char want[] = "*4\r\n$4\r\nEVAL\r\n$3\r\na\0b\r\n$3\r\n-42\r\n$0\r\n\r\n";
  assert_int_equal(len, sizeof want - 1);
  assert_memory_equal(r, want, len);
  sa_argv_reset(&a);
  char big[5000];
  memset(big, 'x', sizeof big);
  for (int i = 0; i < 300; i++)
    sa_argv_add(&a, big, sizeof big);
  r = sa_argv_resp(&a, &len);
  assert_int_equal(len, 6 + 300 * (7 + sizeof big + 2));
  assert_memory_equal(r, "*300\r\n$5000\r\nxx", 15);
  sa_argv_free(&a);

  /* RESP mode: the same bytes in place; a count placeholder is rewritten zero-padded. */
  sa_argv_init_resp(&a);
  for (int round = 0; round < 2; round++) {
    sa_argv_reset(&a);
    sa_argv_adds(&a, "EVAL");
    size_t ci = sa_argv_count(&a);
    sa_argv_add_count(&a);
    sa_argv_add(&a, "a\0b", 3);
    sa_argv_add3(&a, "x", 1, "", 0, "yz", 2);
    sa_argv_addi(&a, -42);
    sa_argv_set_i(&a, ci, 802);
    size_t l;
    assert_memory_equal(sa_argv_at(&a, 3, &l), "xyz", 3);
    assert_int_equal(l, 3);
    r = sa_argv_resp(&a, &len);
    static const char want2[] =
        "*5\r\n$4\r\nEVAL\r\n$10\r\n0000000802\r\n$3\r\na\0b\r\n$3\r\nxyz\r\n$3\r\n-42\r\n";
    assert_int_equal(len, sizeof want2 - 1);
    assert_memory_equal(r, want2, len);
  }
  for (int i = 0; i < 300; i++)
    sa_argv_add(&a, big, sizeof big);
  r = sa_argv_resp(&a, &len);
  assert_memory_equal(r, "*305\r\n$4\r\nEVAL", 14);
  sa_argv_free(&a);
}

/* The members' position index agrees with a linear search through thousands of random puts,
 * swap-removals (as members_remove_at does them) and array moves. */
static void test_position_index_agrees_with_linear_search(void **st) {
  (void)st;
  enum { W = 16, N = 3000 };
  char(*ids)[W] = NULL;
  size_t n = 0, cap = 0;
  sa_pidx x = {0};
  uint64_t r = 7;
  for (int step = 0; step < 40000; step++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    char key[W];
    snprintf(key, sizeof key, "ev%u", (unsigned)(r % N));
    long lin = -1;
    for (size_t i = 0; i < n; i++)
      if (strcmp(ids[i], key) == 0)
        lin = (long)i;
    assert_int_equal(sa_pidx_find(&x, n ? ids[0] : NULL, W, key), lin);
    if (lin < 0) {
      if (n == cap) {
        cap = cap ? cap * 2 : 4; /* the array moves: the index holds positions only */
        ids = realloc(ids, cap * sizeof *ids);
      }
      memcpy(ids[n], key, W);
      sa_pidx_put(&x, ids[0], W, (uint32_t)n);
      n++;
    } else if (r % 3) {
      size_t i = (size_t)lin;
      sa_pidx_del(&x, ids[0], W, ids[i]);
      n--;
      if (i != n) {
        sa_pidx_del(&x, ids[0], W, ids[n]);
        memcpy(ids[i], ids[n], W);
        sa_pidx_put(&x, ids[0], W, (uint32_t)i);
      }
    }
    assert_int_equal(x.len, n);
  }
  sa_pidx_clear(&x);
  assert_int_equal(sa_pidx_find(&x, ids[0], W, "ev1"), -1);
  sa_pidx_free(&x);
  free(ids);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_commit_writes_state_and_checkpoint_together,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_commit_without_the_lease_writes_nothing,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_restarted_engine_reloads_state_and_retracts_exactly,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_watermark_past_end_finalises_committed_windows,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_two_replicas_split_partitions_and_take_over,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_rolling_hour_counts_events_as_they_enter_and_leave,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_retention_trims_old_windows_events_and_records,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_raw_events_and_alerts_follow_the_newest_version_across_regions,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_record_fetch_reads_one_line_per_id,
                                redis_fixture_kill_after_test),
      cmocka_unit_test(test_argv_resp_frames_every_string),
      cmocka_unit_test(test_position_index_agrees_with_linear_search),
  };
  atexit(redis_fixture_kill);
  return cmocka_run_group_tests(tests, redis_fixture_setup, redis_fixture_teardown);
}
