/* loader.c — lock, run record and the atomic table swap in Redis (see loader.h). */
#include "loader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/agg.h"
#include "qs/error.h"

#include "gold.h"

#define TMP_TTL_MS 86400000LL

static const char *const tables[] = {"hourly", "hourly:idx", "daily", "daily:idx", "baseline"};
#define N_TABLES (sizeof tables / sizeof tables[0])

enum { PH_HOURLY, PH_DAILY, PH_BASELINE, PH_META, PH_EXPIRE, PH_STREAM_DONE, PH_SWAP, PH_DONE };

static void pump(bw_loader *l);

static void finish(bw_loader *l, int rc, const char *err) {
  if (l->phase == PH_DONE)
    return;
  l->phase = PH_DONE;
  l->done(l, rc, err);
}

static void fail(bw_loader *l, const char *what, redisReply *reply, int status) {
  if (!l->failed) {
    l->failed = 1;
    if (reply && reply->type == REDIS_REPLY_ERROR)
      snprintf(l->err, sizeof l->err, "%s: %s", what, reply->str);
    else
      snprintf(l->err, sizeof l->err, "%s: %s", what,
               status ? qs_strerror(status) : "unexpected reply");
  }
}

static void on_stream_reply(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  bw_loader *l = ud;
  l->inflight--;
  if (!reply || reply->type == REDIS_REPLY_ERROR)
    fail(l, "writing the batch tables", reply, status);
  pump(l);
}

static void tmp_key(const bw_loader *l, const char *table, char *out, size_t cap) {
  snprintf(out, cap, "qs:batch:tmp:%s:%s", l->run_id, table);
}

static int track(bw_loader *l, int rc) {
  if (rc) {
    fail(l, "queueing a command", NULL, rc);
    return rc;
  }
  l->inflight++;
  return 0;
}

static int has_rows(const bw_loader *l, int table) {
  /* Which temporary tables received at least one row. */
  if (table <= 1)
    return l->hourly_loaded > 0;
  if (table <= 3)
    return l->daily_loaded > 0;
  return l->res->n_baselines > 0;
}

static void on_swap_exec(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  bw_loader *l = ud;
  if (!reply) {
    finish(l, status ? status : QS_ERR_IO, "EXEC: Redis connection lost");
    return;
  }
  if (reply->type == REDIS_REPLY_NIL) {
    finish(l, QS_ERR_STOLEN, "the run lock changed hands during the load: tables left unchanged");
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY) {
    finish(l, QS_ERR_IO, reply->type == REDIS_REPLY_ERROR ? reply->str : "EXEC failed");
    return;
  }
  for (size_t i = 0; i < reply->elements; i++) {
    if (reply->element[i]->type == REDIS_REPLY_ERROR) {
      char e[256];
      snprintf(e, sizeof e, "swap command %zu: %s", i, reply->element[i]->str);
      finish(l, QS_ERR_IO, e);
      return;
    }
  }
  finish(l, 0, "");
}

static void on_swap_step(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  (void)status;
  (void)reply;
  (void)ud; /* QUEUED / OK; failures show in EXEC's reply */
}

static void do_swap(bw_loader *l) {
  char tmp[256], live[128];
  int rc = qs_redis_command(l->redis, on_swap_step, l, "MULTI");
  for (size_t t = 0; t < N_TABLES && rc == 0; t++) {
    snprintf(live, sizeof live, "qs:batch:%s", tables[t]);
    tmp_key(l, tables[t], tmp, sizeof tmp);
    if (has_rows(l, (int)t)) {
      rc = qs_redis_command(l->redis, on_swap_step, l, "RENAME %s %s", tmp, live);
      if (rc == 0)
        rc = qs_redis_command(l->redis, on_swap_step, l, "PEXPIRE %s %lld", live,
                              (long long)l->retention_ms);
    } else {
      rc = qs_redis_command(l->redis, on_swap_step, l, "DEL %s", live);
    }
  }
  tmp_key(l, "meta", tmp, sizeof tmp);
  if (rc == 0)
    rc = qs_redis_command(l->redis, on_swap_step, l, "RENAME %s qs:batch:meta", tmp);
  if (rc == 0)
    rc = qs_redis_command(l->redis, on_swap_step, l, "PERSIST qs:batch:meta");
  if (rc == 0)
    rc = qs_redis_command(l->redis, on_swap_step, l, "LPUSH %s %s", BW_KEY_RUNS, l->run_json);
  if (rc == 0)
    rc = qs_redis_command(l->redis, on_swap_step, l, "LTRIM %s 0 %d", BW_KEY_RUNS, BW_RUNS_MAX - 1);
  if (rc == 0)
    rc = qs_redis_command(l->redis, on_swap_exec, l, "EXEC");
  if (rc)
    finish(l, rc, "queueing the swap failed");
}

static void on_lock_check(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  bw_loader *l = ud;
  if (!reply) {
    finish(l, status ? status : QS_ERR_IO, "checking the run lock: Redis connection lost");
    return;
  }
  if (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, l->run_id) != 0) {
    qs_redis_command(l->redis, on_swap_step, l, "UNWATCH");
    finish(l, QS_ERR_STOLEN, "the run lock is no longer ours: tables left unchanged");
    return;
  }
  do_swap(l);
}

static void pump(bw_loader *l) {
  const bw_job_result *res = l->res;
  char key[256], field[128];
  while (!l->failed && l->phase < PH_STREAM_DONE && l->inflight < BW_LOADER_WINDOW) {
    int rc = 0;
    if (l->phase == PH_HOURLY) {
      if (l->next >= res->rows.n_hourly) {
        l->phase = PH_DAILY;
        l->next = 0;
        continue;
      }
      const qs_agg_row *row = &res->rows.hourly[l->next++];
      if (row->window_end_ms <= l->keep_from_ms)
        continue;
      char *json = NULL;
      size_t len = 0;
      rc = qs_agg_row_to_json(row, &json, &len);
      if (rc) {
        fail(l, "encoding an hourly row", NULL, rc);
        break;
      }
      snprintf(field, sizeof field, "%s|%lld", row->region, (long long)row->window_start_ms);
      tmp_key(l, "hourly", key, sizeof key);
      rc = track(l, qs_redis_command(l->redis, on_stream_reply, l, "HSET %s %s %b", key, field,
                                     json, len));
      free(json);
      tmp_key(l, "hourly:idx", key, sizeof key);
      if (rc == 0)
        rc = track(l, qs_redis_command(l->redis, on_stream_reply, l, "ZADD %s %lld %s", key,
                                       (long long)row->window_start_ms, field));
      l->hourly_loaded++;
    } else if (l->phase == PH_DAILY) {
      if (l->next >= res->rows.n_daily) {
        l->phase = PH_BASELINE;
        l->next = 0;
        continue;
      }
      const qs_agg_row *row = &res->rows.daily[l->next++];
      if (row->window_end_ms <= l->keep_from_ms)
        continue;
      qs_buf json = QS_BUF_INIT;
      bw_gold_daily_json(&json, row);
      char date[16];
      bw_gold_date(row, date, sizeof date);
      snprintf(field, sizeof field, "%s|%s", row->region, date);
      tmp_key(l, "daily", key, sizeof key);
      rc = track(l, qs_redis_command(l->redis, on_stream_reply, l, "HSET %s %s %b", key, field,
                                     json.p, json.len));
      qs_buf_free(&json);
      tmp_key(l, "daily:idx", key, sizeof key);
      if (rc == 0)
        rc = track(l, qs_redis_command(l->redis, on_stream_reply, l, "ZADD %s %lld %s", key,
                                       (long long)row->window_start_ms, field));
      l->daily_loaded++;
    } else if (l->phase == PH_BASELINE) {
      if (l->next >= res->n_baselines) {
        l->phase = PH_META;
        continue;
      }
      const bw_job_baseline *b = &res->baselines[l->next++];
      char json[160];
      snprintf(json, sizeof json, "{\"hours\":%lld,\"count_sum\":%lld,\"count_sq_sum\":%lld}",
               (long long)b->b.hours, (long long)b->b.count_sum, (long long)b->b.count_sq_sum);
      tmp_key(l, "baseline", key, sizeof key);
      rc = track(
          l, qs_redis_command(l->redis, on_stream_reply, l, "HSET %s %s %s", key, b->region, json));
    } else if (l->phase == PH_META) {
      tmp_key(l, "meta", key, sizeof key);
      rc = track(l, qs_redis_command(l->redis, on_stream_reply, l,
                                     "HSET %s run_id %s cutoff_ms %lld finished_at %lld", key,
                                     l->run_id, (long long)res->cutoff_ms,
                                     (long long)l->finished_at_ms));
      l->phase = PH_EXPIRE;
    } else if (l->phase == PH_EXPIRE) {
      for (size_t t = 0; t < N_TABLES && rc == 0; t++) {
        tmp_key(l, tables[t], key, sizeof key);
        rc = track(
            l, qs_redis_command(l->redis, on_stream_reply, l, "PEXPIRE %s %lld", key, TMP_TTL_MS));
      }
      tmp_key(l, "meta", key, sizeof key);
      if (rc == 0)
        rc = track(
            l, qs_redis_command(l->redis, on_stream_reply, l, "PEXPIRE %s %lld", key, TMP_TTL_MS));
      l->phase = PH_STREAM_DONE;
    }
    if (rc)
      break;
  }
  if (l->inflight > 0 || l->phase == PH_DONE || l->phase == PH_SWAP)
    return;
  if (l->failed) {
    finish(l, QS_ERR_IO, l->err);
    return;
  }
  if (l->phase == PH_STREAM_DONE) {
    l->phase = PH_SWAP;
    if (l->before_swap)
      l->before_swap(l);
    int rc = qs_redis_command(l->redis, on_swap_step, l, "WATCH %s", BW_KEY_LOCK);
    if (rc == 0)
      rc = qs_redis_command(l->redis, on_lock_check, l, "GET %s", BW_KEY_LOCK);
    if (rc)
      finish(l, rc, "queueing the lock check failed");
  }
}

int bw_loader_start(bw_loader *l, qs_redis *r, const char *run_id, const bw_job_result *res,
                    const char *run_json, int64_t now_ms, int64_t retention_ms,
                    bw_loader_hook_fn before_swap, bw_loader_done_fn done, void *data) {
  memset(l, 0, sizeof *l);
  l->redis = r;
  snprintf(l->run_id, sizeof l->run_id, "%s", run_id);
  l->res = res;
  l->run_json = run_json;
  l->finished_at_ms = now_ms;
  l->retention_ms = retention_ms;
  l->keep_from_ms = now_ms - retention_ms;
  l->done = done;
  l->before_swap = before_swap;
  l->data = data;
  l->phase = PH_HOURLY;
  pump(l);
  return 0;
}

/* ---- lock ---------------------------------------------------------------------------------- */

typedef struct lock_req {
  bw_lock_fn cb;
  void *data;
} lock_req;

static void on_lock_reply(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  lock_req *q = ud;
  int st;
  if (!reply)
    st = status ? status : QS_ERR_IO;
  else if (reply->type == REDIS_REPLY_ERROR)
    st = QS_ERR_IO;
  else if (reply->type == REDIS_REPLY_STATUS ||
           (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1))
    st = 1;
  else
    st = 0; /* nil (SET NX lost) or 0 (not our lock) */
  if (q->cb)
    q->cb(q->data, st);
  free(q);
}

static lock_req *lock_req_new(bw_lock_fn cb, void *data) {
  lock_req *q = qs_xcalloc(1, sizeof *q);
  q->cb = cb;
  q->data = data;
  return q;
}

static int lock_send_result(int rc, lock_req *q) {
  if (rc)
    free(q);
  return rc;
}

int bw_lock_acquire(qs_redis *r, const char *owner, int64_t ttl_ms, bw_lock_fn cb, void *data) {
  lock_req *q = lock_req_new(cb, data);
  return lock_send_result(qs_redis_command(r, on_lock_reply, q, "SET %s %s NX PX %lld", BW_KEY_LOCK,
                                           owner, (long long)ttl_ms),
                          q);
}

int bw_lock_renew(qs_redis *r, const char *owner, int64_t ttl_ms, bw_lock_fn cb, void *data) {
  lock_req *q = lock_req_new(cb, data);
  return lock_send_result(
      qs_redis_command(r, on_lock_reply, q, "EVAL %s 1 %s %s %lld",
                       "if redis.call('get', KEYS[1]) == ARGV[1] then "
                       "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
                       BW_KEY_LOCK, owner, (long long)ttl_ms),
      q);
}

int bw_lock_release(qs_redis *r, const char *owner, bw_lock_fn cb, void *data) {
  lock_req *q = lock_req_new(cb, data);
  return lock_send_result(qs_redis_command(r, on_lock_reply, q, "EVAL %s 1 %s %s",
                                           "if redis.call('get', KEYS[1]) == ARGV[1] then "
                                           "return redis.call('del', KEYS[1]) else return 0 end",
                                           BW_KEY_LOCK, owner),
                          q);
}

/* ---- run record ---------------------------------------------------------------------------- */

static void json_str(qs_buf *b, const char *s) {
  qs_buf_puts(b, "\"");
  qs_buf_json_str(b, s, strlen(s));
  qs_buf_puts(b, "\"");
}

void bw_run_record_json(qs_buf *b, const char *run_id, const char *source, int64_t started_ms,
                        int64_t finished_ms, const bw_job_result *res) {
  const bw_fold_stats *s = &res->stats;
  qs_buf_puts(b, "{\"run_id\":");
  json_str(b, run_id);
  qs_buf_printf(b, ",\"started_at\":%lld,\"finished_at\":%lld,\"duration_ms\":%lld,\"source\":",
                (long long)started_ms, (long long)finished_ms,
                (long long)(finished_ms - started_ms));
  json_str(b, source);
  qs_buf_printf(b, ",\"status\":\"%s\",\"error\":", res->rc ? "failed" : "ok");
  if (res->rc)
    json_str(b, res->err);
  else
    qs_buf_puts(b, "null");
  qs_buf_printf(
      b,
      ",\"files\":%llu,\"files_ok\":%llu,\"files_failed\":%llu,\"files_empty\":%llu,"
      "\"records\":%llu,\"bytes\":%llu,\"records_skipped\":%llu,\"bad_enqueued_time\":%llu,"
      "\"events\":%llu,"
      "\"events_counted\":%llu,\"invalid_bodies\":%llu,\"changes\":{\"new\":%llu,"
      "\"revision\":%llu,\"deleted\":%llu,\"superseded\":%llu,\"moved\":%llu},\"revisions_folded\":"
      "%llu,"
      "\"duplicates\":%llu,\"excluded_deleted\":%llu,\"excluded_superseded\":%llu,"
      "\"partitions\":%zu,\"cutoff_ms\":%lld,\"hourly_rows\":%zu,\"daily_rows\":%zu,"
      "\"read_seconds\":%.3f,\"read_cpu_seconds\":%.3f",
      (unsigned long long)res->files, (unsigned long long)res->files_ok,
      (unsigned long long)res->files_failed, (unsigned long long)res->files_empty,
      (unsigned long long)res->records, (unsigned long long)res->bytes,
      (unsigned long long)res->records_skipped, (unsigned long long)res->bad_enqueued_time,
      (unsigned long long)res->rows.events, (unsigned long long)res->rows.events_live,
      (unsigned long long)s->invalid, (unsigned long long)s->kind_new,
      (unsigned long long)s->kind_revision, (unsigned long long)s->kind_deleted,
      (unsigned long long)s->kind_superseded, (unsigned long long)s->kind_moved,
      (unsigned long long)s->revisions_folded, (unsigned long long)s->duplicates,
      (unsigned long long)res->rows.excluded_deleted,
      (unsigned long long)res->rows.excluded_superseded, res->partitions, (long long)res->cutoff_ms,
      res->rows.n_hourly, res->rows.n_daily, res->seconds_read, res->cpu_seconds_read);
  qs_buf_puts(b, ",\"errors\":[");
  for (size_t i = 0; i < res->n_file_errors; i++) {
    qs_buf_puts(b, i ? ",{\"path\":" : "{\"path\":");
    json_str(b, res->file_errors[i].path);
    qs_buf_puts(b, ",\"reason\":");
    json_str(b, res->file_errors[i].reason);
    qs_buf_puts(b, "}");
  }
  qs_buf_puts(b, "],\"invalid\":[");
  for (size_t i = 0; i < res->n_invalid; i++) {
    qs_buf_puts(b, i ? ",{\"path\":" : "{\"path\":");
    json_str(b, res->invalid[i].path);
    qs_buf_printf(b, ",\"sequence\":%lld,\"reason\":", (long long)res->invalid[i].sequence);
    json_str(b, res->invalid[i].reason);
    qs_buf_puts(b, "}");
  }
  qs_buf_puts(b, "]}");
}
