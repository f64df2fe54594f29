/* store.h — the aggregator's Redis side (docs/keyspace.md, "Speed layer"): fetching cached
 * state, the atomic commit of state + checkpoints (one Lua script, fenced by the partitions'
 * leases), checkpoints, ANOMALY baselines, the rolling 1-hour window and retention trimming.
 * Every call is asynchronous on the service's qs_redis; every callback fires exactly once.
 */
#ifndef SA_STORE_H
#define SA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qs/redis.h"

#include "argv.h"
#include "engine.h"

typedef struct sa_store {
  qs_redis *redis;
  sa_engine *engine;
  char owner[128];        /* lease owner id of this replica */
  char lease_prefix[600]; /* qs:lease:<hub>:<group>: */
  sa_argv cmd;            /* the commit being built */
  size_t ops_count_idx;
  bool building;
  char last_rolling[512]; /* last published rolling JSON without updated_at */
} sa_store;

void sa_store_init(sa_store *s, qs_redis *r, sa_engine *e, const char *owner);
void sa_store_free(sa_store *s);

/* Fetches what `n` lists into the engine's cache; takes over n's event ids (n is rebuilt for the
 * next fetch). cb(status): 0, or a negative code. */
typedef void (*sa_store_done_cb)(void *ud, int status);
int sa_store_fetch(sa_store *s, sa_needs *n, sa_store_done_cb cb, void *ud);

/* Takes the engine's changes and commits them atomically with the checkpoints, only if this
 * replica still holds every lease of the partitions involved. cb: status 0 (alerts: JSON of the
 * alerts newly stored, n_alerts of them, valid during the callback), QS_ERR_STOLEN when a lease
 * was lost (reason names it), or another negative code. Returns the number of items covered. */
typedef void (*sa_store_commit_cb)(void *ud, int status, const char *reason,
                                   const char *const *alerts, const size_t *alert_lens,
                                   size_t n_alerts, size_t items);
int sa_store_commit(sa_store *s, int64_t now_ms, sa_store_commit_cb cb, void *ud,
                    size_t *items_out);

/* Reads a partition's checkpoint into the engine (none: sequence -1). */
int sa_store_load_checkpoint(sa_store *s, int partition, sa_store_done_cb cb, void *ud);

/* Loads qs:batch:baseline into the engine (replacing every baseline). */
int sa_store_load_baselines(sa_store *s, sa_store_done_cb cb, void *ud);

/* Recomputes the rolling 1-hour window from the committed raw events and writes / publishes it
 * when it changed. end_ms: the window's end when wall_clock; otherwise the newest event time. */
int sa_store_refresh_rolling(sa_store *s, bool wall_clock, int64_t now_ms, size_t max_events,
                             sa_store_done_cb cb, void *ud);

/* Deletes windows older than win_ttl_ms and raw events / records / alerts older than
 * ev_ttl_ms (at most limit of each per call). */
int sa_store_trim(sa_store *s, int64_t now_ms, int64_t win_ttl_ms, int64_t ev_ttl_ms, int limit,
                  sa_store_done_cb cb, void *ud);

/* The Lua sources (exposed for the tests). */
extern const char sa_commit_lua[];

#endif
