/* aggregator.c — the pipeline (see aggregator.h).
 *
 * Invariants:
 * - Items are applied in queue order, which is each partition's order; an item is applied only
 *   when the state it touches is cached (fetched from Redis or created by an earlier item).
 * - At most one fetch and one commit are in flight. A commit covers everything applied before it
 *   was taken; items applied while it is in flight go into the next one.
 * - After any failure nothing uncommitted survives: the reset drops the queue and the engine's
 *   cache and changes, and consumption restarts after the committed checkpoints.
 */
#include "aggregator.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/timeutil.h"

#define FETCH_SCAN_MAX 2000 /* items examined to build one fetch */
#define TICK_MS 20
#define RESET_BACKOFF_MS 500

void sa_agg_opts_default(sa_agg_opts *o) {
  memset(o, 0, sizeof *o);
  sa_engine_opts_default(&o->engine);
  o->batch_max = 2000;
  o->batch_ms = 50;
  o->queue_max = 5000;
  o->cache_max = 500000;
  o->lease_ttl_ms = 10000;
  o->rolling_ms = 1000;
  o->rolling_max = 100000;
  o->retention_windows_ms = 30 * QS_MS_PER_DAY;
  o->retention_events_ms = 90 * QS_MS_PER_DAY;
  o->trim_ms = 60000;
  o->baseline_ms = 60000;
  o->owner = "speed-aggregator";
}

static int64_t now_ms(void) { return qs_time_now_ms(); }

/* ---- queue -------------------------------------------------------------------------------- */

static void q_push(sa_queue *q, sa_item *it) {
  if (q->len == q->cap) {
    size_t ncap = q->cap ? q->cap * 2 : 1024;
    sa_item **n = qs_xcalloc(ncap, sizeof *n);
    for (size_t i = 0; i < q->len; i++)
      n[i] = q->items[(q->head + i) % q->cap];
    free(q->items);
    q->items = n;
    q->cap = ncap;
    q->head = 0;
  }
  q->items[(q->head + q->len) % q->cap] = it;
  q->len++;
}

static sa_item *q_at(const sa_queue *q, size_t i) { return q->items[(q->head + i) % q->cap]; }

static sa_item *q_pop(sa_queue *q) {
  sa_item *it = q->items[q->head];
  q->head = (q->head + 1) % q->cap;
  q->len--;
  return it;
}

/* Items (~4 KB, one per event) are recycled, up to as many as the queue holds (QUEUE_MAX plus
 * a fetch's worth): the queue reaches that size under load anyway, and malloc/free of items
 * beyond a smaller free list showed in the profile. */
static sa_item **free_items;
static size_t n_free_items, max_free_items;

static sa_item *item_new(size_t body_len) {
  sa_item *it = n_free_items ? free_items[--n_free_items] : qs_xmalloc(sizeof *it);
  it->body = body_len < sizeof it->small ? it->small : qs_xmalloc(body_len + 1);
  return it;
}

static void item_free(sa_item *it) {
  if (it->body != it->small)
    free(it->body);
  if (n_free_items < max_free_items)
    free_items[n_free_items++] = it;
  else
    free(it);
}

static void q_clear(sa_queue *q) {
  while (q->len)
    item_free(q_pop(q));
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void pump(sa_agg *a);
static void reset(sa_agg *a, const char *why);
static void maybe_finish_stop(sa_agg *a);

static void update_gauges(sa_agg *a) {
  qs_metric_set(a->m_queue, (double)a->q.len);
  qs_metric_set(a->m_owned, (double)sa_lease_owned_count(&a->lease));
}

/* ---- partitions --------------------------------------------------------------------------- */

typedef struct part_ctx {
  sa_agg *a;
  int partition;
  uint32_t gen;
} part_ctx;

static void on_ckpt_loaded(void *ud, int status) {
  part_ctx *c = ud;
  sa_agg *a = c->a;
  int p = c->partition;
  uint32_t gen = c->gen;
  free(c);
  if (a->part[p] != SA_PART_LOADING || a->stopping || gen != a->part_gen[p])
    return; /* lost or reset meanwhile */
  if (status != 0) {
    a->part[p] = SA_PART_NONE;
    reset(a, "checkpoint read failed");
    return;
  }
  const sa_partition *pt = sa_engine_partition(&a->engine, p);
  int rc = a->src_ops->open(a->src, p, pt->sequence);
  if (rc != 0) {
    qs_log_error(a->log, "cannot open partition consumer", QS_LINT("partition", p),
                 QS_LSTR("error", qs_strerror(rc)));
    a->part[p] = SA_PART_NONE;
    reset(a, "consumer open failed");
    return;
  }
  a->part[p] = SA_PART_CONSUMING;
  qs_log_info(a->log, "partition consuming", QS_LINT("partition", p),
              QS_LINT("after_sequence", pt->sequence), QS_LINT("watermark", pt->watermark));
}

static void start_partition(sa_agg *a, int p) {
  a->part[p] = SA_PART_LOADING;
  part_ctx *c = qs_xcalloc(1, sizeof *c);
  c->a = a;
  c->partition = p;
  c->gen = ++a->part_gen[p];
  if (sa_store_load_checkpoint(&a->store, p, on_ckpt_loaded, c) != 0) {
    free(c);
    a->part[p] = SA_PART_NONE;
    reset(a, "checkpoint read failed");
  }
}

static void on_lease_change(sa_lease *l, int p, bool acquired, void *ud) {
  (void)l;
  sa_agg *a = ud;
  update_gauges(a);
  if (a->stopping)
    return;
  qs_log_info(a->log, acquired ? "lease acquired" : "lease lost", QS_LINT("partition", p));
  if (acquired) {
    if (!a->resetting)
      start_partition(a, p);
    return;
  }
  /* Changes of p not committed yet would fail the fence: start over from the checkpoints. */
  reset(a, "lease lost");
}

/* ---- reset -------------------------------------------------------------------------------- */

static void finish_reset(sa_agg *a) {
  if (!a->resetting || a->fetch_inflight || a->commit_inflight)
    return;
  if (now_ms() < a->reset_at)
    return; /* the tick timer comes back */
  sa_engine_reset(&a->engine);
  a->resetting = false;
  a->first_pending_ms = 0;
  if (a->stopping) {
    maybe_finish_stop(a);
    return;
  }
  for (int p = 0; p < a->partitions; p++)
    if (a->lease.owned[p])
      start_partition(a, p);
  if (a->paused) {
    a->paused = false;
    a->src_ops->resume(a->src);
  }
  qs_log_info(a->log, "resumed from checkpoints",
              QS_LINT("partitions", sa_lease_owned_count(&a->lease)));
}

static void reset(sa_agg *a, const char *why) {
  if (!a->resetting) {
    qs_metric_inc(a->m_resets);
    qs_log_warn(a->log, "dropping uncommitted work, resuming from checkpoints",
                QS_LSTR("reason", why), QS_LINT("queued", (int64_t)a->q.len));
  }
  a->resetting = true;
  a->reset_at = now_ms() + RESET_BACKOFF_MS;
  for (int p = 0; p < a->partitions; p++) {
    if (a->part[p] == SA_PART_CONSUMING)
      a->src_ops->close(a->src, p);
    a->part[p] = SA_PART_NONE;
  }
  q_clear(&a->q);
  update_gauges(a);
}

/* ---- fetch / apply / commit --------------------------------------------------------------- */

static void on_fetched(void *ud, int status) {
  sa_agg *a = ud;
  a->fetch_inflight = false;
  qs_metric_inc(a->m_fetches);
  if (status != 0) {
    reset(a, "state fetch failed");
    finish_reset(a);
    return;
  }
  if (a->resetting) {
    finish_reset(a);
    return;
  }
  pump(a);
}

static void start_fetch(sa_agg *a) {
  sa_needs_reset(&a->needs);
  size_t n = a->q.len < FETCH_SCAN_MAX ? a->q.len : FETCH_SCAN_MAX;
  for (size_t i = 0; i < n; i++)
    sa_engine_ready_for(&a->engine, q_at(&a->q, i), &a->needs);
  if (a->needs.ev_ids.n == 0 && a->needs.win_keys.n == 0)
    return;
  if (sa_store_fetch(&a->store, &a->needs, on_fetched, a) == 0)
    a->fetch_inflight = true;
  else
    reset(a, "state fetch refused (redis)");
}

static void on_committed(void *ud, int status, const char *reason, const char *const *alerts,
                         const size_t *lens, size_t n_alerts, size_t items) {
  sa_agg *a = ud;
  a->commit_inflight = false;
  if (status != 0) {
    qs_metric_inc(a->m_commit_fail);
    qs_log_warn(a->log, "commit failed", QS_LSTR("reason", reason),
                QS_LINT("items", (int64_t)items));
    reset(a, status == QS_ERR_STOLEN ? "lease lost at commit" : "commit failed");
    finish_reset(a);
    if (status == QS_ERR_STOLEN)
      sa_lease_kick(&a->lease);
    maybe_finish_stop(a);
    return;
  }
  qs_metric_inc(a->m_commits);
  qs_metric_observe(a->m_batch, (double)items);
  a->committed_items += items;
  a->rolling_dirty = true;
  for (size_t i = 0; i < n_alerts; i++) {
    qs_metric_inc(a->m_alerts);
    if (a->on_alert)
      a->on_alert(a, alerts[i], lens[i], a->alert_ud);
  }
  if (a->resetting) {
    finish_reset(a);
    maybe_finish_stop(a);
    return;
  }
  if (!a->fetch_inflight)
    sa_engine_trim_cache(&a->engine, a->o.cache_max);
  maybe_finish_stop(a);
  pump(a);
}

static void start_commit(sa_agg *a) {
  if (a->commit_inflight || !sa_engine_has_changes(&a->engine))
    return;
  size_t items = 0;
  uint64_t t0 = uv_hrtime();
  int rc = sa_store_commit(&a->store, now_ms(), on_committed, a, &items);
  qs_metric_observe(a->m_commit_seconds, (double)(uv_hrtime() - t0) / 1e9);
  if (rc != 0) {
    /* The changes were taken but never sent: they are lost, so start over. */
    reset(a, "commit refused (redis)");
    return;
  }
  a->commit_inflight = true;
  a->first_pending_ms = 0;
}

static void sync_stats(sa_agg *a) {
  const sa_engine_stats *s = &a->engine.stats;
  qs_metric_set(a->m_events, (double)s->events);
  qs_metric_set(a->m_poison, (double)s->poison);
  qs_metric_set(a->m_dupes, (double)(s->duplicates + s->stale));
  qs_metric_set(a->m_late, (double)s->late);
  qs_metric_set(a->m_retracted[0], (double)s->deletions);
  qs_metric_set(a->m_retracted[1], (double)s->supersedes);
  qs_metric_set(a->m_retracted[2], (double)s->moves);
}

static void pump(sa_agg *a) {
  if (a->resetting || !a->started)
    return;
  int64_t now = now_ms();
  size_t applied = 0;
  while (a->q.len) {
    sa_item *it = q_at(&a->q, 0);
    if (!sa_engine_try_apply(&a->engine, it, now)) {
      if (!a->fetch_inflight)
        start_fetch(a);
      break;
    }
    item_free(q_pop(&a->q));
    if (!a->first_pending_ms)
      a->first_pending_ms = now;
    if (++applied >= a->o.batch_max && !a->commit_inflight) {
      start_commit(a);
      if (a->resetting)
        return;
    }
  }
  /* Group commit: with no commit in flight, commit as soon as everything received is applied
   * (lowest latency); under load commits stay in flight and batches grow by themselves, up to
   * batch_max; batch_ms bounds the wait while a fetch holds the queue. */
  if (a->engine.pending_items >= a->o.batch_max ||
      (a->engine.pending_items && a->q.len == 0 && !a->fetch_inflight) ||
      (a->first_pending_ms && now - a->first_pending_ms >= a->o.batch_ms) ||
      (a->stopping && sa_engine_has_changes(&a->engine)))
    start_commit(a);
  if (a->paused && a->q.len <= a->o.queue_max / 2 && !a->stopping) {
    a->paused = false;
    a->src_ops->resume(a->src);
  }
  sync_stats(a);
  update_gauges(a);
}

void sa_agg_on_event(sa_agg *a, int partition, int64_t sequence, const char *offset,
                     int64_t enqueued_ms, const void *body, size_t len) {
  if (partition < 0 || partition >= SA_PARTITIONS_MAX || a->part[partition] != SA_PART_CONSUMING ||
      a->resetting || a->stopping)
    return;
  sa_item *it = item_new(len);
  it->partition = partition;
  it->sequence = sequence;
  size_t olen = offset ? strnlen(offset, sizeof it->offset - 1) : 0;
  memcpy(it->offset, offset ? offset : "", olen);
  it->offset[olen] = '\0';
  it->enqueued_ms = enqueued_ms;
  memcpy(it->body, body, len);
  it->body[len] = '\0';
  it->len = len;
  sa_item_parse(it);
  q_push(&a->q, it);
  if (!a->paused && a->q.len >= a->o.queue_max) {
    a->paused = true;
    a->src_ops->pause(a->src);
  }
}

void sa_agg_on_source_error(sa_agg *a, int partition, const char *reason) {
  qs_log_warn(a->log, "partition consumer ended", QS_LINT("partition", partition),
              QS_LSTR("reason", reason));
  if (partition >= 0 && partition < SA_PARTITIONS_MAX && a->part[partition] == SA_PART_CONSUMING) {
    a->src_ops->close(a->src, partition);
    a->part[partition] = SA_PART_NONE;
  }
  reset(a, "consumer link ended");
}

/* ---- periodic ----------------------------------------------------------------------------- */

static void on_rolling(void *ud, int status) {
  sa_agg *a = ud;
  a->rolling_inflight = false;
  (void)status;
  maybe_finish_stop(a);
}

static void on_trim(void *ud, int status) {
  sa_agg *a = ud;
  a->trim_inflight = false;
  if (status != 0)
    qs_log_warn(a->log, "retention trim failed");
  maybe_finish_stop(a);
}

static void on_baselines(void *ud, int status) {
  sa_agg *a = ud;
  a->baseline_inflight = false;
  (void)status;
  maybe_finish_stop(a);
}

static void on_check(uv_check_t *h) { pump(h->data); }

static void on_tick(uv_timer_t *t) {
  sa_agg *a = t->data;
  int64_t now = now_ms();
  if (a->resetting) {
    finish_reset(a);
    return;
  }
  if (a->stopping)
    return;
  if (now >= a->next_engine_tick) {
    sa_engine_tick(&a->engine, now);
    a->next_engine_tick = now + 1000;
  }
  if (a->first_pending_ms == 0 && sa_engine_has_changes(&a->engine))
    a->first_pending_ms = now;
  pump(a);
  if (qs_redis_ready(a->redis, NULL)) {
    if (now >= a->next_rolling && !a->rolling_inflight && (a->rolling_dirty || a->o.rolling_wall)) {
      a->next_rolling = now + a->o.rolling_ms;
      a->rolling_dirty = false;
      if (sa_store_refresh_rolling(&a->store, a->o.rolling_wall, now, a->o.rolling_max, on_rolling,
                                   a) == 0)
        a->rolling_inflight = true;
    }
    if (now >= a->next_trim && !a->trim_inflight) {
      a->next_trim = now + a->o.trim_ms;
      if (sa_store_trim(&a->store, now, a->o.retention_windows_ms, a->o.retention_events_ms, 1000,
                        on_trim, a) == 0)
        a->trim_inflight = true;
    }
    if (now >= a->next_baseline && !a->baseline_inflight) {
      a->next_baseline = now + a->o.baseline_ms;
      if (sa_store_load_baselines(&a->store, on_baselines, a) == 0)
        a->baseline_inflight = true;
    }
  }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void sa_agg_init(sa_agg *a, uv_loop_t *loop, qs_log *log, qs_metrics *metrics, qs_redis *redis,
                 const sa_agg_opts *o, const sa_source_ops *src_ops, void *src) {
  memset(a, 0, sizeof *a);
  a->loop = loop;
  a->log = log;
  a->redis = redis;
  a->o = *o;
  a->src_ops = src_ops;
  a->src = src;
  sa_engine_init(&a->engine, &o->engine);
  sa_store_init(&a->store, redis, &a->engine, o->owner);
  sa_lease_init(&a->lease, loop, redis, a->engine.hub, a->engine.group, o->owner, o->lease_ttl_ms,
                on_lease_change, a);
  sa_needs_init(&a->needs);
  if (!free_items) {
    max_free_items = o->queue_max + FETCH_SCAN_MAX;
    free_items = qs_xcalloc(max_free_items, sizeof *free_items);
  }
  uv_check_init(loop, &a->check);
  a->check.data = a;
  uv_timer_init(loop, &a->tick);
  a->tick.data = a;
  static const double batch_bounds[] = {1, 10, 100, 500, 1000, 2000, 5000, 10000};
  double secs[12];
  qs_metrics_exp_buckets(secs, 0.0001, 2.5, 12);
  a->m_events = qs_metric_series(qs_metrics_gauge(
      metrics, "quakestream_speed_events", "events applied by this process since start", NULL));
  a->m_poison = qs_metric_series(qs_metrics_gauge(
      metrics, "quakestream_speed_poison_events",
      "invalid events sent to the dead-letter list (qs:rt:dlq) since start", NULL));
  a->m_dupes = qs_metric_series(
      qs_metrics_gauge(metrics, "quakestream_speed_duplicate_events",
                       "duplicates and stale revisions that changed nothing, since start", NULL));
  a->m_late = qs_metric_series(qs_metrics_gauge(
      metrics, "quakestream_speed_late_events",
      "events that arrived after their window was final (counted in late_count)", NULL));
  static const char *const kind_label[] = {"kind", NULL};
  qs_metric_family *retracted =
      qs_metrics_gauge(metrics, "quakestream_speed_retractions",
                       "deleted, superseded and moved messages applied (each retracts the "
                       "event from its region's window, if counted there), since start",
                       kind_label);
  static const char *const kinds[] = {"deleted", "superseded", "moved"};
  for (int k = 0; k < 3; k++)
    a->m_retracted[k] = qs_metric_get(retracted, (const char *const[]){kinds[k]});
  a->m_commits =
      qs_metric_series(qs_metrics_counter(metrics, "quakestream_speed_commits_total",
                                          "atomic state + checkpoint commits to Redis", NULL));
  a->m_commit_fail = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_speed_commit_failures_total",
      "commits refused (lease lost) or failed (Redis); work replayed from checkpoints", NULL));
  a->m_resets = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_speed_resets_total",
      "times uncommitted work was dropped and consumption resumed from checkpoints", NULL));
  a->m_alerts = qs_metric_series(qs_metrics_counter(metrics, "quakestream_speed_alerts_total",
                                                    "alerts newly stored (once per key)", NULL));
  a->m_fetches = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_speed_state_fetches_total", "state fetches from Redis", NULL));
  a->m_queue = qs_metric_series(qs_metrics_gauge(metrics, "quakestream_speed_queue_events",
                                                 "consumed events waiting to be applied", NULL));
  a->m_owned = qs_metric_series(qs_metrics_gauge(metrics, "quakestream_speed_partitions_owned",
                                                 "partitions leased by this replica", NULL));
  a->m_commit_seconds = qs_metric_series(
      qs_metrics_histogram(metrics, "quakestream_speed_commit_build_seconds",
                           "time to build and send one commit (CPU side)", NULL, secs, 12));
  a->m_batch = qs_metric_series(qs_metrics_histogram(metrics, "quakestream_speed_batch_events",
                                                     "events per commit", NULL, batch_bounds, 8));
}

void sa_agg_start(sa_agg *a, int partitions) {
  a->partitions = partitions > SA_PARTITIONS_MAX ? SA_PARTITIONS_MAX : partitions;
  a->started = true;
  uv_check_start(&a->check, on_check);
  uv_timer_start(&a->tick, on_tick, TICK_MS, TICK_MS);
  sa_lease_start(&a->lease, a->partitions);
  sa_store_load_baselines(&a->store, on_baselines, a) == 0 ? (void)(a->baseline_inflight = true)
                                                           : (void)0;
  a->next_baseline = now_ms() + a->o.baseline_ms;
}

static void on_handle_closed(uv_handle_t *h) {
  sa_agg *a = h->data;
  if (--a->closing_handles == 0 && a->stopped_cb)
    a->stopped_cb(a, a->stopped_ud);
}

static void on_lease_closed(sa_lease *l) {
  sa_agg *a = l->ud;
  a->closing_handles = 2;
  uv_close((uv_handle_t *)&a->check, on_handle_closed);
  uv_close((uv_handle_t *)&a->tick, on_handle_closed);
}

static void maybe_finish_stop(sa_agg *a) {
  if (!a->stopping || a->commit_inflight || a->fetch_inflight || a->rolling_inflight ||
      a->trim_inflight || a->baseline_inflight || a->lease.closing)
    return;
  if (!a->resetting && sa_engine_has_changes(&a->engine) && qs_redis_ready(a->redis, NULL)) {
    start_commit(a);
    if (a->commit_inflight)
      return;
  }
  qs_log_info(a->log, "aggregator stopped",
              QS_LINT("committed_events", (int64_t)a->committed_items));
  sa_lease_close(&a->lease, on_lease_closed);
}

void sa_agg_stop(sa_agg *a, void (*cb)(sa_agg *a, void *ud), void *ud) {
  a->stopping = true;
  a->stopped_cb = cb;
  a->stopped_ud = ud;
  uv_timer_stop(&a->tick);
  for (int p = 0; p < a->partitions; p++)
    if (a->part[p] == SA_PART_CONSUMING) {
      a->src_ops->close(a->src, p);
      a->part[p] = SA_PART_LOADING; /* keeps its engine state for the last commit */
    }
  /* Events consumed but not applied are dropped: the checkpoints stay before them. Those applied
   * are committed now. */
  q_clear(&a->q);
  if (!a->started) {
    a->closing_handles = 2;
    a->lease.closing = true;
    uv_timer_stop(&a->lease.timer);
    uv_close((uv_handle_t *)&a->lease.timer, NULL);
    uv_close((uv_handle_t *)&a->check, on_handle_closed);
    uv_close((uv_handle_t *)&a->tick, on_handle_closed);
    return;
  }
  maybe_finish_stop(a);
}

void sa_agg_free(sa_agg *a) {
  q_clear(&a->q);
  while (n_free_items)
    free(free_items[--n_free_items]);
  free(free_items);
  free_items = NULL;
  max_free_items = 0;
  free(a->q.items);
  sa_needs_free(&a->needs);
  sa_store_free(&a->store);
  sa_engine_free(&a->engine);
}

bool sa_agg_ready(sa_agg *a, char *reason, size_t cap) {
  const char *why;
  if (!qs_redis_ready(a->redis, &why)) {
    snprintf(reason, cap, "redis: %s", why);
    return false;
  }
  if (a->lease.rounds == 0) {
    snprintf(reason, cap, "no lease round yet");
    return false;
  }
  snprintf(reason, cap, "ok");
  return true;
}
