/* loader.h — the batch layer's Redis side (docs/keyspace.md, "Batch layer"): the run lock, the
 * run record, and the atomic replacement of the batch tables.
 *
 * Load: every row is written under qs:batch:tmp:<run_id>:… (at most BW_LOADER_WINDOW commands in
 * flight; the temporary keys expire after a day, so a crashed run leaves nothing behind), then
 * WATCH qs:batch:lock, check we still own it, and in one MULTI/EXEC: RENAME each temporary table
 * over its live name (DEL the live one when the run has no rows for it), PEXPIRE the live tables
 * to the retention, RENAME the meta hash, LPUSH the run record and LTRIM the list to 1000. A
 * reader sees the previous run or this one, never a mix; if another worker took the lock
 * meanwhile, EXEC aborts and nothing changes.
 */
#ifndef BW_LOADER_H
#define BW_LOADER_H

#include <stdint.h>

#include "qs/buf.h"
#include "qs/redis.h"

#include "job.h"

#define BW_LOADER_WINDOW 256
#define BW_RUNS_MAX 1000
#define BW_KEY_LOCK "qs:batch:lock"
#define BW_KEY_RUNS "qs:batch:runs"

typedef struct bw_loader bw_loader;
typedef void (*bw_loader_done_fn)(bw_loader *l, int rc, const char *err);
/* Called once right before WATCH: the caller stops renewing the lock from here on (a renewal
 * touches the watched key and would abort the swap). */
typedef void (*bw_loader_hook_fn)(bw_loader *l);

struct bw_loader {
  qs_redis *redis;
  char run_id[64];
  const bw_job_result *res;
  const char *run_json;
  int64_t finished_at_ms;
  int64_t retention_ms;
  int64_t keep_from_ms; /* rows ending at or before this are not loaded */
  /* Progress of the streaming phase. */
  int phase;
  size_t next, inflight;
  uint64_t hourly_loaded, daily_loaded;
  int failed;
  char err[256];
  bw_loader_done_fn done;
  bw_loader_hook_fn before_swap;
  void *data;
};

/* Starts loading; done runs exactly once (rc 0, or negative with err). 0 or a synchronous error. */
int bw_loader_start(bw_loader *l, qs_redis *r, const char *run_id, const bw_job_result *res,
                    const char *run_json, int64_t now_ms, int64_t retention_ms,
                    bw_loader_hook_fn before_swap, bw_loader_done_fn done, void *data);

/* Lock helpers: cb(data, status) with status 1 = acquired/renewed/released, 0 = held by someone
 * else (or no longer ours), < 0 = Redis unreachable or error. cb may be NULL. */
typedef void (*bw_lock_fn)(void *data, int status);
int bw_lock_acquire(qs_redis *r, const char *owner, int64_t ttl_ms, bw_lock_fn cb, void *data);
int bw_lock_renew(qs_redis *r, const char *owner, int64_t ttl_ms, bw_lock_fn cb, void *data);
int bw_lock_release(qs_redis *r, const char *owner, bw_lock_fn cb, void *data);

/* The run record as JSON (appended to out): run_id, started_at, finished_at (epoch ms),
 * duration_ms, source, status, error, files, files_ok, files_failed, files_empty, records,
 * bytes, records_skipped, bad_enqueued_time, events, events_counted, invalid_bodies, changes
 * {new,revision,deleted,superseded}, revisions_folded, duplicates, excluded_deleted,
 * excluded_superseded, partitions, cutoff_ms, hourly_rows, daily_rows, errors [{path,reason}],
 * invalid [{path,sequence,reason}]. */
void bw_run_record_json(qs_buf *out, const char *run_id, const char *source, int64_t started_ms,
                        int64_t finished_ms, const bw_job_result *res);

#endif
