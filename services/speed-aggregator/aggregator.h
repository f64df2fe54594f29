/* aggregator.h — the aggregator's pipeline: consumed events -> queue -> (fetch missing state) ->
 * engine -> batched atomic commits, with leases deciding which partitions this replica consumes.
 *
 * The event source (Event Hubs consumers, consumer.c) is behind a small vtable so this file
 * holds no AMQP code. Recovery is one mechanism for every failure (Redis down, a commit refused
 * because a lease was lost, a consumer link stolen): drop everything not committed, close the
 * consumers, re-read the checkpoints and consume again after them. Because state and checkpoint
 * are committed together, that replay yields exactly the state of a run without the failure.
 */
#ifndef SA_AGGREGATOR_H
#define SA_AGGREGATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "qs/log.h"
#include "qs/metrics.h"
#include "qs/redis.h"

#include "engine.h"
#include "lease.h"
#include "store.h"

typedef struct sa_source_ops {
  /* Start consuming partition p after sequence number `after` (-1: from the configured start).
   * Events arrive through sa_agg_on_event. */
  int (*open)(void *src, int partition, int64_t after);
  /* Stop; no event of p is delivered after this returns. */
  void (*close)(void *src, int partition);
  void (*pause)(void *src);
  void (*resume)(void *src);
} sa_source_ops;

typedef struct sa_agg_opts {
  sa_engine_opts engine;
  size_t batch_max; /* events per commit */
  int64_t batch_ms; /* longest wait before a commit */
  size_t queue_max; /* consumed, not yet applied events; consumers pause beyond */
  size_t cache_max; /* cached records + windows before the cache is dropped */
  int64_t lease_ttl_ms;
  int64_t rolling_ms; /* rolling-window refresh period */
  bool rolling_wall;  /* rolling window ends at the wall clock (else at the newest event) */
  size_t rolling_max; /* events read per refresh */
  int64_t retention_windows_ms;
  int64_t retention_events_ms;
  int64_t trim_ms;     /* retention trim period */
  int64_t baseline_ms; /* baseline reload period */
  const char *owner;   /* lease owner id */
} sa_agg_opts;

void sa_agg_opts_default(sa_agg_opts *o);

typedef struct sa_agg sa_agg;
/* Alerts newly stored by a commit (for the webhook). */
typedef void (*sa_alert_cb)(sa_agg *a, const char *json, size_t len, void *ud);

typedef struct sa_queue {
  sa_item **items;
  size_t head, len, cap;
} sa_queue;

typedef enum { SA_PART_NONE = 0, SA_PART_LOADING, SA_PART_CONSUMING } sa_part_state;

struct sa_agg {
  uv_loop_t *loop;
  qs_log *log;
  qs_redis *redis;
  sa_agg_opts o;
  sa_engine engine;
  sa_store store;
  sa_lease lease;
  const sa_source_ops *src_ops;
  void *src;
  sa_queue q;
  sa_needs needs;
  sa_part_state part[SA_PARTITIONS_MAX];
  uint32_t part_gen[SA_PARTITIONS_MAX]; /* checkpoint loads of an older generation are ignored */
  int partitions;
  uv_check_t check;
  uv_timer_t tick;
  bool fetch_inflight, commit_inflight, paused, resetting, reset_wanted, stopping, started;
  int64_t first_pending_ms; /* when the oldest uncommitted change was applied */
  int64_t next_rolling, next_trim, next_baseline, next_engine_tick, reset_at;
  bool rolling_inflight, trim_inflight, baseline_inflight, rolling_dirty;
  sa_alert_cb on_alert;
  void *alert_ud;
  void (*stopped_cb)(sa_agg *a, void *ud);
  void *stopped_ud;
  int closing_handles;
  /* metrics */
  qs_metric *m_retracted[3]; /* deleted, superseded, moved */
  qs_metric *m_events, *m_poison, *m_dupes, *m_late, *m_commits, *m_commit_fail, *m_resets,
      *m_alerts, *m_queue, *m_owned, *m_fetches;
  qs_metric *m_commit_seconds, *m_batch;
  uint64_t committed_items;
};

void sa_agg_init(sa_agg *a, uv_loop_t *loop, qs_log *log, qs_metrics *metrics, qs_redis *redis,
                 const sa_agg_opts *o, const sa_source_ops *src_ops, void *src);
/* Starts the lease rounds for a hub of `partitions` partitions. */
void sa_agg_start(sa_agg *a, int partitions);
/* The source delivers one event (body copied). */
void sa_agg_on_event(sa_agg *a, int partition, int64_t sequence, const char *offset,
                     int64_t enqueued_ms, const void *body, size_t len);
/* The source lost a partition for good (link stolen, not found). */
void sa_agg_on_source_error(sa_agg *a, int partition, const char *reason);
/* Orderly stop: stop consuming, commit what was applied, release the leases; cb once done. */
void sa_agg_stop(sa_agg *a, void (*cb)(sa_agg *a, void *ud), void *ud);
void sa_agg_free(sa_agg *a);
/* For /readyz: Redis reachable and the lease rounds running. */
bool sa_agg_ready(sa_agg *a, char *reason, size_t cap);

#endif
