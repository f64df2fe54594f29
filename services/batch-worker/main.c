/* batch-worker — reprocesses the Capture archive into authoritative hourly and daily views.
 *
 * Wiring only: configuration -> job options; a run = lock (Redis SET NX PX, renewed while it
 * runs) -> job on a uv_queue_work thread (job.c) -> Redis load and atomic swap (loader.c) ->
 * lock released. `run-once` does one run and exits (progress bar on a terminal, the run record
 * as one JSON line on stdout); without arguments the service runs on its CRON schedule.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qs/error.h"
#include "qs/regions.h"
#include "qs/service.h"
#include "qs/timeutil.h"

#include "blob.h"
#include "cron.h"
#include "job.h"
#include "loader.h"

static const qs_cfg_spec batch_config[] = {
    {"SOURCE", QS_CFG_STR, "var/capture", 1, 4096, NULL,
     "Capture archive: a directory (the hub's CAPTURE_DIR) or an Azure Blob / ADLS Gen2 URL "
     "(https://<account>.blob.core.windows.net/<container>/<prefix>, "
     "abfss://<container>@<account>.dfs.core.windows.net/<prefix>, or path style "
     "http://127.0.0.1:10000/<account>/<container> for Azurite)",
     0},
    {"EVENT_HUB", QS_CFG_STR, "earthquake-events", 0, 256, NULL,
     "read only Capture files of this event hub (the path component before p=<id>); files "
     "without a p= component are always read; empty: every hub",
     0},
    {"BLOB_ACCOUNT_KEY", QS_CFG_STR, "", 0, 256, NULL,
     "storage account key (base64) for Shared Key authentication; empty: SAS or anonymous",
     QS_CFG_SECRET},
    {"BLOB_SAS", QS_CFG_STR, "", 0, 2048, NULL,
     "SAS token (query string, with or without '?'); a SAS in the SOURCE URL also works",
     QS_CFG_SECRET},
    {"BLOB_PAGE_SIZE", QS_CFG_INT, "5000", 1, 5000, NULL, "List Blobs page size (maxresults)", 0},
    {"GOLD_DIR", QS_CFG_STR, "var/gold", 0, 4096, NULL,
     "where hourly.avro and daily.avro are written (temp name + rename); empty: no gold files", 0},
    {"GOLD_URL", QS_CFG_STR, "", 0, 4096, NULL,
     "blob container URL (same forms and credentials as SOURCE) the gold files are also uploaded "
     "to after each run; needs GOLD_DIR; empty: none",
     0},
    {"REDIS_URL", QS_CFG_STR, "redis://127.0.0.1:6379/0", 0, 1024, NULL,
     "Redis for the batch tables, run records and the run lock; empty: no Redis (gold only)",
     QS_CFG_SECRET},
    {"CRON", QS_CFG_STR, "0 */6 * * *", 1, 128, NULL,
     "cron expression (UTC, 5 fields or @hourly/@daily...) of the service mode's runs", 0},
    {"RUN_ON_START", QS_CFG_BOOL, "false", 0, 0, NULL,
     "service mode: also run once right after start", 0},
    {"LOCK_TTL", QS_CFG_DURATION, "10m", 5000, 86400000, NULL,
     "expiry of the run lock (renewed every third of it while a run is alive)", 0},
    {"RETENTION", QS_CFG_DURATION, "365d", 3600000, 36600LL * 86400000, NULL,
     "batch tables in Redis keep rows of this far back, and expire if no run refreshes them", 0},
    {"SIGNIFICANT_MAGNITUDE", QS_CFG_DOUBLE, "5.0", -2, 10.5, NULL,
     "significant_count threshold (same value as the speed layer's)", 0},
    {"MAX_FILE_BYTES", QS_CFG_INT, "268435456", 1024, 4294967296.0, NULL,
     "largest Capture file read (a blob is downloaded into memory); larger ones are reported "
     "and skipped",
     0},
    {"MAX_FILES", QS_CFG_INT, "1000000", 1, 100000000, NULL,
     "most Capture files one run lists (a larger archive fails the run)", 0},
    {"REDIS_WAIT", QS_CFG_DURATION, "10s", 0, 3600000, NULL,
     "run-once: how long to wait for Redis before failing", 0},
    {"PROGRESS", QS_CFG_ENUM, "auto", 0, 0, "auto|always|never",
     "run-once progress bar on stderr: auto = only when stderr is a terminal", 0},
    {NULL},
};

static const qs_service_def def = {
    .name = "batch-worker",
    .summary = "reprocesses the Capture archive into hourly and daily views",
    .usage = "usage: batch-worker                       run on CRON (service mode)\n"
             "       batch-worker run-once [--source DIR|URL]   one run, then exit",
    .admin_port = 8093,
    .config = batch_config,
};

typedef struct app {
  qs_service *svc;
  const qs_config *cfg;
  bw_job_opts opts;
  const char *source;
  const char **region_names;
  qs_regions regions;
  qs_redis redis;
  int have_redis;
  int once;
  int progress;
  int exit_code;
  bw_cron cron;
  uv_timer_t cron_timer, progress_timer, lock_timer, wait_timer, metrics_timer;
  int handles_open;
  int running, in_thread, stopping, closing;
  int64_t wait_deadline;
  uv_work_t work;
  _Atomic int cancel;
  bw_job_progress prog;
  bw_job_result *res;
  char run_id[64];
  int64_t started_ms;
  double started_mono;
  bw_loader loader;
  qs_buf run_json;
  int64_t last_cutoff_ms;
  int64_t next_at; /* the scheduled run the cron timer is armed for */
  struct {
    qs_metric_family *runs;
    qs_metric *duration, *files, *records, *rate, *cutoff_age, *running, *last_success;
    qs_metric_family *errors;
    qs_metric *invalid;
  } m;
} app;

static void start_run(app *a);
static void end_run(app *a, const char *status, const char *err);

static double mono_s(void) { return (double)uv_hrtime() / 1e9; }

static void on_cron(uv_timer_t *t);

static void arm_cron(app *a) {
  if (a->once || a->stopping)
    return;
  int64_t now = qs_time_now_ms();
  /* From the slot just served at the earliest: a timer that fires a hair early (monotonic vs wall
   * clock) must not schedule the same minute again. */
  int64_t next = bw_cron_next(&a->cron, a->next_at > now ? a->next_at : now);
  if (next < 0)
    return;
  a->next_at = next;
  uv_timer_start(&a->cron_timer, on_cron, (uint64_t)(next > now ? next - now : 0), 0);
  char iso[32];
  qs_time_format_iso8601(next, iso, sizeof iso);
  qs_log_info(&a->svc->log, "next run scheduled", QS_LSTR("at", iso));
}

static void on_cron(uv_timer_t *t) {
  app *a = t->data;
  start_run(a);
  arm_cron(a);
}

/* ---- progress bar (terminal only) ---------------------------------------------------------- */

static void draw_progress(app *a, int final) {
  uint64_t total = atomic_load(&a->prog.files_total), done = atomic_load(&a->prog.files_done);
  uint64_t rec = atomic_load(&a->prog.records), bytes = atomic_load(&a->prog.bytes);
  double el = mono_s() - a->started_mono;
  double mbs = el > 0 ? (double)bytes / 1e6 / el : 0;
  int width = 30, fill = total ? (int)((double)done / (double)total * width) : 0;
  char bar[64];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  fprintf(stderr, "\r\033[K[%s] files %llu/%llu  records %llu  %.1f MB/s%s", bar,
          (unsigned long long)done, (unsigned long long)total, (unsigned long long)rec, mbs,
          final ? "\n" : "");
  fflush(stderr);
}

static void on_progress(uv_timer_t *t) { draw_progress(t->data, 0); }

/* ---- lock renewal -------------------------------------------------------------------------- */

static void on_renewed(void *data, int status) {
  app *a = data;
  if (status == 0) {
    qs_log_error(&a->svc->log, "run lock lost: this run will not replace the tables",
                 QS_LSTR("run_id", a->run_id));
  } else if (status < 0) {
    qs_log_warn(&a->svc->log, "run lock renewal failed", QS_LSTR("error", qs_strerror(status)));
  }
}

static void on_lock_timer(uv_timer_t *t) {
  app *a = t->data;
  if (bw_lock_renew(&a->redis, a->run_id, qs_config_ms(a->cfg, "LOCK_TTL"), on_renewed, a) != 0)
    qs_log_warn(&a->svc->log, "run lock renewal not sent");
}

/* ---- the run ------------------------------------------------------------------------------- */

static void work_cb(uv_work_t *w) {
  app *a = w->data;
  bw_job_run(&a->opts, &a->prog, a->res);
}

static void finish_stop_if_idle(app *a);

static void on_released(void *data, int status) {
  app *a = data;
  (void)status;
  a->running = 0;
  if (a->once && !a->stopping)
    qs_service_request_stop(a->svc, a->exit_code);
  finish_stop_if_idle(a);
}

static void log_summary(app *a, const char *status, const char *err) {
  bw_job_result *r = a->res;
  double secs = mono_s() - a->started_mono;
  double rate = r->seconds_read > 0 ? (double)r->records / r->seconds_read : 0;
  qs_log_info(&a->svc->log, "run finished", QS_LSTR("run_id", a->run_id), QS_LSTR("status", status),
              QS_LSTR("error", err && err[0] ? err : NULL), QS_LINT("files", r->files),
              QS_LINT("files_failed", r->files_failed), QS_LINT("records", r->records),
              QS_LINT("events", r->rows.events), QS_LINT("events_counted", r->rows.events_live),
              QS_LINT("invalid_bodies", r->stats.invalid),
              QS_LINT("revisions_folded", r->stats.revisions_folded),
              QS_LINT("hourly_rows", r->rows.n_hourly), QS_LINT("daily_rows", r->rows.n_daily),
              QS_LINT("cutoff_ms", r->cutoff_ms), QS_LDBL("seconds", secs),
              QS_LDBL("records_per_second", rate), QS_LINT("fold_bytes", r->fold_bytes));
  qs_metric_inc(qs_metric_get(a->m.runs, (const char *[]){status}));
  qs_metric_set(a->m.duration, secs);
  qs_metric_add(a->m.files, (double)r->files);
  qs_metric_add(a->m.records, (double)r->records);
  qs_metric_set(a->m.rate, rate);
  qs_metric_add(qs_metric_get(a->m.errors, (const char *[]){"file"}), (double)r->files_failed);
  qs_metric_add(a->m.invalid, (double)r->stats.invalid);
  if (strcmp(status, "ok") == 0) {
    qs_metric_set(a->m.last_success, (double)qs_time_now_ms() / 1000.0);
    if (r->cutoff_ms > 0)
      a->last_cutoff_ms = r->cutoff_ms;
  }
  if (a->once) {
    fwrite(a->run_json.p, 1, a->run_json.len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (a->progress) {
      char cut[32] = "none";
      if (r->cutoff_ms > 0)
        qs_time_format_iso8601(r->cutoff_ms, cut, sizeof cut);
      fprintf(stderr,
              "%s: %llu files (%llu failed), %llu records, %llu events (%llu counted, %llu "
              "invalid bodies), %zu hourly / %zu daily rows, cutoff %s, %.2f s (%.0f records/s)\n",
              status, (unsigned long long)r->files, (unsigned long long)r->files_failed,
              (unsigned long long)r->records, (unsigned long long)r->rows.events,
              (unsigned long long)r->rows.events_live, (unsigned long long)r->stats.invalid,
              r->rows.n_hourly, r->rows.n_daily, cut, secs, rate);
    }
  }
}

static void on_record_pushed(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  (void)reply;
  (void)status;
  (void)ud;
}

static void end_run(app *a, const char *status, const char *err) {
  uv_timer_stop(&a->lock_timer);
  log_summary(a, status, err);
  if (strcmp(status, "ok") != 0)
    a->exit_code = 1;
  bw_job_result_free(a->res);
  free(a->res);
  a->res = NULL;
  qs_buf_free(&a->run_json);
  if (a->have_redis) {
    if (bw_lock_release(&a->redis, a->run_id, on_released, a) == 0)
      return;
  }
  on_released(a, 1);
}

static void on_before_swap(bw_loader *l) {
  app *a = l->data;
  uv_timer_stop(&a->lock_timer); /* a renewal would touch the WATCHed lock and abort the swap */
}

static void on_loaded(bw_loader *l, int rc, const char *err) {
  app *a = l->data;
  if (rc) {
    qs_log_error(&a->svc->log, "loading the batch tables failed", QS_LSTR("run_id", a->run_id),
                 QS_LSTR("error", err));
    qs_metric_inc(qs_metric_get(a->m.errors, (const char *[]){"redis"}));
    end_run(a, "failed", err);
    return;
  }
  end_run(a, "ok", NULL);
}

static void after_work(uv_work_t *w, int status) {
  app *a = w->data;
  (void)status;
  a->in_thread = 0;
  qs_metric_set(a->m.running, 0);
  uv_timer_stop(&a->progress_timer);
  if (a->progress)
    draw_progress(a, 1);
  bw_job_result *r = a->res;
  int64_t now = qs_time_now_ms();
  bw_run_record_json(&a->run_json, a->run_id, a->source, a->started_ms, now, r);
  for (size_t i = 0; i < r->n_file_errors; i++)
    qs_log_warn(&a->svc->log, "capture file skipped", QS_LSTR("path", r->file_errors[i].path),
                QS_LSTR("reason", r->file_errors[i].reason));
  if (r->rc == 0 && a->stopping) {
    r->rc = QS_ERR_CLOSED;
    snprintf(r->err, sizeof r->err, "stopped before the tables were loaded");
  }
  if (r->rc) {
    qs_log_error(&a->svc->log, "run failed", QS_LSTR("run_id", a->run_id),
                 QS_LSTR("error", r->err));
    if (a->have_redis && !a->stopping) { /* failed runs are recorded too; tables untouched */
      qs_redis_command(&a->redis, on_record_pushed, a, "LPUSH %s %s", BW_KEY_RUNS, a->run_json.p);
      qs_redis_command(&a->redis, on_record_pushed, a, "LTRIM %s 0 %d", BW_KEY_RUNS,
                       BW_RUNS_MAX - 1);
    }
    end_run(a, "failed", r->err);
    return;
  }
  if (!a->have_redis) {
    end_run(a, "ok", NULL);
    return;
  }
  bw_loader_start(&a->loader, &a->redis, a->run_id, r, a->run_json.p, now,
                  qs_config_ms(a->cfg, "RETENTION"), on_before_swap, on_loaded, a);
}

static void launch(app *a) {
  a->res = qs_xcalloc(1, sizeof *a->res);
  memset(&a->prog, 0, sizeof a->prog);
  a->started_mono = mono_s();
  a->in_thread = 1;
  qs_metric_set(a->m.running, 1);
  a->work.data = a;
  qs_log_info(&a->svc->log, "run started", QS_LSTR("run_id", a->run_id),
              QS_LSTR("source", a->source));
  if (a->progress)
    uv_timer_start(&a->progress_timer, on_progress, 0, 200);
  if (a->have_redis) {
    uint64_t every = (uint64_t)qs_config_ms(a->cfg, "LOCK_TTL") / 3;
    uv_timer_start(&a->lock_timer, on_lock_timer, every, every);
  }
  int rc = uv_queue_work(&a->svc->loop, &a->work, work_cb, after_work);
  if (rc)
    QS_FATAL("uv_queue_work: %s", uv_strerror(rc));
}

static void on_locked(void *data, int status) {
  app *a = data;
  if (a->stopping) {
    if (status == 1)
      bw_lock_release(&a->redis, a->run_id, NULL, NULL);
    a->running = 0;
    finish_stop_if_idle(a);
    return;
  }
  if (status == 1) {
    launch(a);
    return;
  }
  a->running = 0;
  if (status == 0) {
    qs_log_warn(&a->svc->log, "run skipped: another run holds the lock",
                QS_LSTR("lock", BW_KEY_LOCK));
    qs_metric_inc(qs_metric_get(a->m.runs, (const char *[]){"skipped"}));
  } else {
    qs_log_error(&a->svc->log, "run not started: Redis unavailable",
                 QS_LSTR("error", qs_strerror(status)));
    qs_metric_inc(qs_metric_get(a->m.errors, (const char *[]){"redis"}));
    qs_metric_inc(qs_metric_get(a->m.runs, (const char *[]){"failed"}));
  }
  if (a->once)
    qs_service_request_stop(a->svc, 1);
}

static void on_wait_redis(uv_timer_t *t) {
  app *a = t->data;
  if (qs_redis_ready(&a->redis, NULL) || qs_time_now_ms() >= a->wait_deadline) {
    uv_timer_stop(t);
    if (bw_lock_acquire(&a->redis, a->run_id, qs_config_ms(a->cfg, "LOCK_TTL"), on_locked, a))
      on_locked(a, QS_ERR_IO);
  }
}

static void start_run(app *a) {
  if (a->running) {
    qs_log_warn(&a->svc->log, "run skipped: the previous run is still going",
                QS_LSTR("run_id", a->run_id));
    qs_metric_inc(qs_metric_get(a->m.runs, (const char *[]){"skipped"}));
    return;
  }
  a->running = 1;
  a->started_ms = qs_time_now_ms();
  char iso[32];
  qs_time_format_iso8601(a->started_ms, iso, sizeof iso);
  unsigned rnd = 0;
  if (uv_random(NULL, NULL, &rnd, sizeof rnd, 0, NULL) != 0)
    rnd = (unsigned)getpid() ^ (unsigned)uv_hrtime();
  snprintf(a->run_id, sizeof a->run_id, "%s-%08x", iso, rnd);
  if (!a->have_redis) {
    launch(a);
    return;
  }
  if (a->once && !qs_redis_ready(&a->redis, NULL)) {
    a->wait_deadline = qs_time_now_ms() + qs_config_ms(a->cfg, "REDIS_WAIT");
    uv_timer_start(&a->wait_timer, on_wait_redis, 50, 50);
    return;
  }
  if (bw_lock_acquire(&a->redis, a->run_id, qs_config_ms(a->cfg, "LOCK_TTL"), on_locked, a))
    on_locked(a, QS_ERR_IO);
}

/* ---- readiness, metrics, stop -------------------------------------------------------------- */

static bool redis_ready(void *data, char *reason, size_t cap) {
  app *a = data;
  const char *why;
  if (qs_redis_ready(&a->redis, &why))
    return true;
  snprintf(reason, cap, "redis: %s", why);
  return false;
}

static void on_metrics_timer(uv_timer_t *t) {
  app *a = t->data;
  if (a->last_cutoff_ms > 0)
    qs_metric_set(a->m.cutoff_age, (double)(qs_time_now_ms() - a->last_cutoff_ms) / 1000.0);
}

static void on_handle_closed(uv_handle_t *h) {
  app *a = h->data;
  if (--a->handles_open == 0)
    qs_service_stopped(a->svc);
}

static void close_timers(app *a) {
  uv_timer_t *timers[] = {&a->cron_timer, &a->progress_timer, &a->lock_timer, &a->wait_timer,
                          &a->metrics_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++)
    uv_close((uv_handle_t *)timers[i], on_handle_closed);
}

static void on_redis_closed(qs_redis *r) { close_timers(r->data); }

/* Once stopping and no run is in flight: close Redis, then the timers, then tell the runtime. */
static void finish_stop_if_idle(app *a) {
  if (!a->stopping || a->running || a->in_thread || a->closing)
    return;
  a->closing = 1;
  if (a->have_redis)
    qs_redis_close(&a->redis, on_redis_closed);
  else
    close_timers(a);
}

static void stop(qs_service *svc, void *data) {
  (void)svc;
  app *a = data;
  a->stopping = 1;
  atomic_store(&a->cancel, 1); /* the job stops between files */
  uv_timer_stop(&a->cron_timer);
  if (uv_is_active((uv_handle_t *)&a->wait_timer)) {
    uv_timer_stop(&a->wait_timer); /* still waiting for Redis: the run never started */
    a->running = 0;
  }
  finish_stop_if_idle(a);
}

static int parse_args(app *a, qs_service *svc) {
  if (svc->argc == 0)
    return 0;
  if (strcmp(svc->argv[0], "run-once") != 0) {
    qs_log_error(&svc->log, "invalid arguments", QS_LSTR("argument", svc->argv[0]));
    fprintf(stderr, "batch-worker: unexpected argument \"%.200s\"\n%s\n", svc->argv[0], def.usage);
    return -1;
  }
  a->once = 1;
  for (int i = 1; i < svc->argc; i++) {
    if (strcmp(svc->argv[i], "--source") == 0 && i + 1 < svc->argc) {
      a->source = svc->argv[++i];
    } else if (strncmp(svc->argv[i], "--source=", 9) == 0) {
      a->source = svc->argv[i] + 9;
    } else {
      qs_log_error(&svc->log, "invalid arguments", QS_LSTR("argument", svc->argv[i]));
      fprintf(stderr, "batch-worker: unexpected argument \"%.200s\"\n%s\n", svc->argv[i],
              def.usage);
      return -1;
    }
  }
  if (!a->source[0]) {
    qs_log_error(&svc->log, "--source needs a directory or URL");
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static qs_service svc;
  static app a;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  a.svc = &svc;
  a.cfg = &svc.config;
  a.source = qs_config_str(a.cfg, "SOURCE");
  char err[512];
  if (parse_args(&a, &svc) != 0 ||
      bw_cron_parse(&a.cron, qs_config_str(a.cfg, "CRON"), err, sizeof err) != 0) {
    if (!a.once && svc.argc == 0)
      qs_log_error(&svc.log, "bad CRON", QS_LSTR("error", err));
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  if (qs_config_is_set(a.cfg, "GOLD_URL") &&
      (!qs_config_is_set(a.cfg, "GOLD_DIR") || !bw_blob_is_url(qs_config_str(a.cfg, "GOLD_URL")))) {
    qs_log_error(&svc.log, "GOLD_URL needs GOLD_DIR and an http(s):// or abfs(s):// URL");
    fprintf(stderr, "batch-worker: GOLD_URL needs GOLD_DIR and an http(s):// or abfs(s):// URL\n");
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  qs_regions_init(&a.regions);
  if (qs_regions_load_default(&a.regions, err, sizeof err) == 0) {
    size_t n = qs_regions_count(&a.regions);
    a.region_names = qs_xcalloc(n + 1, sizeof *a.region_names);
    for (size_t i = 0; i < n; i++)
      a.region_names[i] = qs_regions_name(&a.regions, i);
  }
  a.opts = (bw_job_opts){
      .source = a.source,
      .blob_key = qs_config_str(a.cfg, "BLOB_ACCOUNT_KEY"),
      .blob_sas = qs_config_str(a.cfg, "BLOB_SAS"),
      .blob_page_size = (long)qs_config_int(a.cfg, "BLOB_PAGE_SIZE"),
      .max_file_bytes = (size_t)qs_config_int(a.cfg, "MAX_FILE_BYTES"),
      .max_files = (size_t)qs_config_int(a.cfg, "MAX_FILES"),
      .gold_dir = qs_config_str(a.cfg, "GOLD_DIR"),
      .gold_url = qs_config_str(a.cfg, "GOLD_URL"),
      .event_hub = qs_config_str(a.cfg, "EVENT_HUB"),
      .significant_threshold = qs_config_double(a.cfg, "SIGNIFICANT_MAGNITUDE"),
      .retention_ms = qs_config_ms(a.cfg, "RETENTION"),
      .regions = a.region_names,
  };
  const char *prog = qs_config_str(a.cfg, "PROGRESS");
  a.progress = a.once && (strcmp(prog, "always") == 0 ||
                          (strcmp(prog, "auto") == 0 && isatty(STDERR_FILENO)));

  qs_metrics *m = &svc.metrics;
  a.m.runs = qs_metrics_counter(m, "quakestream_batch_runs_total",
                                "batch runs by outcome (ok, failed, skipped)",
                                (const char *[]){"status", NULL});
  a.m.duration = qs_metric_series(qs_metrics_gauge(m, "quakestream_batch_last_run_duration_seconds",
                                                   "wall time of the last run", NULL));
  a.m.files = qs_metric_series(
      qs_metrics_counter(m, "quakestream_batch_files_total", "Capture files listed by runs", NULL));
  a.m.records = qs_metric_series(qs_metrics_counter(
      m, "quakestream_batch_records_total", "Capture records read completely by runs", NULL));
  a.m.rate =
      qs_metric_series(qs_metrics_gauge(m, "quakestream_batch_records_per_second",
                                        "records/s of the last run's reading and folding", NULL));
  a.m.errors = qs_metrics_counter(m, "quakestream_batch_errors_total",
                                  "errors: file (skipped Capture files), redis (load failed)",
                                  (const char *[]){"kind", NULL});
  a.m.invalid = qs_metric_series(qs_metrics_counter(m, "quakestream_batch_invalid_bodies_total",
                                                    "bodies that were not a valid event", NULL));
  a.m.cutoff_age = qs_metric_series(
      qs_metrics_gauge(m, "quakestream_batch_cutoff_age_seconds",
                       "now minus the batch cutoff of the last successful run", NULL));
  a.m.running = qs_metric_series(
      qs_metrics_gauge(m, "quakestream_batch_running", "1 while a run reads its input", NULL));
  a.m.last_success =
      qs_metric_series(qs_metrics_gauge(m, "quakestream_batch_last_success_timestamp_seconds",
                                        "end of the last successful run, epoch seconds", NULL));

  uv_timer_t *timers[] = {&a.cron_timer, &a.progress_timer, &a.lock_timer, &a.wait_timer,
                          &a.metrics_timer};
  for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
    uv_timer_init(&svc.loop, timers[i]);
    timers[i]->data = &a;
    a.handles_open++;
  }
  uv_timer_start(&a.metrics_timer, on_metrics_timer, 1000, 10000);
  const char *url = qs_config_str(a.cfg, "REDIS_URL");
  if (url[0]) {
    if (qs_redis_init(&a.redis, &svc.loop, url, NULL, err, sizeof err) != 0) {
      qs_log_error(&svc.log, "bad REDIS_URL", QS_LSTR("error", err));
      qs_service_on_stop(&svc, stop, &a);
      qs_service_request_stop(&svc, 2);
      return qs_service_run(&svc);
    }
    a.redis.data = &a;
    a.have_redis = 1;
    qs_admin_add_check(&svc.admin, "redis", redis_ready, &a);
  }
  qs_service_on_stop(&svc, stop, &a);
  a.opts.cancel = &a.cancel;
  if (a.once) {
    start_run(&a);
  } else {
    if (qs_config_bool(a.cfg, "RUN_ON_START"))
      start_run(&a);
    arm_cron(&a);
  }
  int rc = qs_service_run(&svc);
  qs_regions_close(&a.regions);
  free(a.region_names);
  return rc;
}
