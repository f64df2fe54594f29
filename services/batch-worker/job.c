/* job.c — one batch run on a worker thread (see job.h). */
#include "job.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "qs/capture.h"
#include "qs/error.h"
#include "qs/timeutil.h"

#include "blob.h"
#include "gold.h"

typedef struct src_file {
  char *name; /* relative to the source root */
  uint64_t size;
} src_file;

typedef struct file_list {
  src_file *v;
  size_t n, cap, max;
  int over;
  const char *hub;
} file_list;

typedef struct partition {
  char key[512];
  int64_t start; /* earliest covered time, INT64_MAX none */
  int64_t end;   /* latest covered time, INT64_MIN none */
} partition;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The last "p=" path component of name, or NULL. */
static const char *partition_component(const char *name) {
  const char *p = NULL;
  for (const char *s = name; (s = strstr(s, "p=")) != NULL; s += 2)
    if (s == name || s[-1] == '/')
      p = s;
  return p;
}

int bw_job_hub_matches(const char *name, const char *event_hub) {
  const char *p = partition_component(name);
  if (!event_hub || !event_hub[0] || !p)
    return 1;
  size_t n = strlen(event_hub);
  const char *hub = p - 1 - n;
  return p - name >= (ptrdiff_t)n + 1 && memcmp(hub, event_hub, n) == 0 &&
         (hub == name || hub[-1] == '/');
}

static int list_add(void *ud, const char *name, uint64_t size) {
  file_list *l = ud;
  if (!ends_with(name, ".avro") || !bw_job_hub_matches(name, l->hub))
    return 0;
  if (l->n >= l->max) {
    l->over = 1;
    return 0;
  }
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 256;
    l->v = qs_xrealloc(l->v, l->cap * sizeof *l->v);
  }
  l->v[l->n].name = qs_xstrdup(name);
  l->v[l->n].size = size;
  l->n++;
  return 0;
}

/* Recursive walk; hidden entries (the writers' ".name.tmp" files) are skipped. */
static int walk_dir(const char *root, const char *rel, file_list *l, int depth, char *err,
                    size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s%s%s", root, rel[0] ? "/" : "", rel);
  DIR *d = opendir(path);
  if (!d) {
    qs_set_reason(err, errlen, "%s: cannot open directory: %s", path, strerror(errno));
    return -errno;
  }
  struct dirent *de;
  int rc = 0;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.')
      continue;
    char sub[4096];
    if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
        sizeof sub)
      continue;
    char full[8192];
    snprintf(full, sizeof full, "%s/%s", root, sub);
    struct stat st;
    if (stat(full, &st) != 0)
      continue;
    if (S_ISDIR(st.st_mode)) {
      if (depth < 16)
        rc = walk_dir(root, sub, l, depth + 1, err, errlen);
    } else if (S_ISREG(st.st_mode)) {
      list_add(l, sub, (uint64_t)st.st_size);
    }
  }
  closedir(d);
  return rc;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(((const src_file *)a)->name, ((const src_file *)b)->name);
}

static int parse_num(const char *s, size_t n, int *out) {
  int v = 0;
  if (n == 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

void bw_job_path_info(const char *name, char *partition_key, size_t cap, int64_t *time_ms) {
  *time_ms = -1;
  const char *p = partition_component(name);
  if (!p) {
    const char *slash = strrchr(name, '/');
    snprintf(partition_key, cap, "%.*s", slash ? (int)(slash - name) : 0, name);
    return;
  }
  const char *pe = strchr(p, '/');
  if (!pe) {
    snprintf(partition_key, cap, "%s", name);
    return;
  }
  snprintf(partition_key, cap, "%.*s", (int)(pe - name), name);
  int f[6];
  const char *s = pe + 1;
  for (int i = 0; i < 6; i++) {
    size_t n = strcspn(s, i < 5 ? "/" : ".");
    if (parse_num(s, n, &f[i]) != 0 || s[n] == '\0')
      return;
    s += n + 1;
  }
  if (strcmp(s, "avro") != 0 || f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 ||
      f[4] > 59 || f[5] > 60)
    return;
  *time_ms = qs_days_from_civil(f[0], (unsigned)f[1], (unsigned)f[2]) * QS_MS_PER_DAY +
             (int64_t)f[3] * QS_MS_PER_HOUR + (int64_t)f[4] * QS_MS_PER_MIN +
             (int64_t)f[5] * QS_MS_PER_SEC;
}

static partition *partition_of(partition **v, size_t *n, const char *key) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*v)[i].key, key) == 0)
      return &(*v)[i];
  if ((*n & 15) == 0)
    *v = qs_xrealloc(*v, (*n + 16) * sizeof **v);
  partition *p = &(*v)[(*n)++];
  snprintf(p->key, sizeof p->key, "%s", key);
  p->start = INT64_MAX;
  p->end = INT64_MIN;
  return p;
}

static void listed_add(bw_job_listed *v, size_t *n, const char *path, int64_t seq,
                       const char *reason) {
  if (*n >= BW_JOB_MAX_LISTED)
    return;
  snprintf(v[*n].path, sizeof v[*n].path, "%s", path);
  v[*n].sequence = seq;
  snprintf(v[*n].reason, sizeof v[*n].reason, "%s", reason);
  (*n)++;
}

static void compute_baselines(const bw_job_opts *o, bw_fold *f, bw_job_result *res) {
  if (res->cutoff_ms <= 0 || res->coverage_start_ms == 0)
    return;
  int64_t start = qs_window_start(res->coverage_start_ms, QS_MS_PER_HOUR);
  if (o->retention_ms > 0 && start < res->cutoff_ms - o->retention_ms)
    start = qs_window_start(res->cutoff_ms - o->retention_ms, QS_MS_PER_HOUR);
  if (start >= res->cutoff_ms)
    return;
  int64_t hours = (res->cutoff_ms - start) / QS_MS_PER_HOUR;
  if (hours > QS_AGG_BASELINE_MAX_HOURS)
    return;
  res->baselines = qs_xcalloc(f->n_regions ? f->n_regions : 1, sizeof *res->baselines);
  for (size_t r = 0; r < f->n_regions; r++) {
    bw_job_baseline *b = &res->baselines[res->n_baselines];
    snprintf(b->region, sizeof b->region, "%s", f->regions[r]);
    qs_agg_baseline_init(&b->b);
    int64_t with_rows = 0;
    int ok = 1;
    for (size_t i = 0; i < res->rows.n_hourly && ok; i++) {
      const qs_agg_row *row = &res->rows.hourly[i];
      if (row->window_start_ms < start || row->window_end_ms > res->cutoff_ms ||
          strcmp(row->region, f->regions[r]) != 0)
        continue;
      ok = qs_agg_baseline_add_hour(&b->b, row->agg.event_count) == 0;
      with_rows++;
    }
    if (ok && qs_agg_baseline_add_empty_hours(&b->b, hours - with_rows) == 0)
      res->n_baselines++;
  }
}

/* Reads one file into the fold; on failure rolls the fold back and returns the reason. */
static int read_file(const bw_job_opts *o, bw_blob *blob, qs_buf *mem, const src_file *sf,
                     bw_fold *f, bw_job_progress *prog, bw_job_result *res, partition *part,
                     int64_t path_time, char *why, size_t whylen) {
  qs_capture_reader r;
  qs_capture_limits lim = {.max_header_bytes = 64 << 10,
                           .max_block_bytes = o->max_file_bytes < ((size_t)64 << 20)
                                                  ? o->max_file_bytes
                                                  : (size_t)64 << 20,
                           .max_props = 1024};
  int rc;
  if (sf->size > o->max_file_bytes) {
    qs_set_reason(why, whylen, "file of %llu bytes is over MAX_FILE_BYTES",
                  (unsigned long long)sf->size);
    return QS_ERR_TOOBIG;
  }
  if (blob) {
    rc = bw_blob_get(blob, sf->name, mem, why, whylen);
    if (rc)
      return rc;
    rc = qs_capture_reader_open_buffer(&r, mem->p, mem->len, &lim);
  } else {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", o->source, sf->name);
    rc = qs_capture_reader_open_file(&r, path, &lim);
  }
  if (rc) {
    qs_set_reason(why, whylen, "%s", r.error[0] ? r.error : qs_strerror(rc));
    qs_capture_reader_close(&r);
    return rc;
  }
  bw_fold_mark(f);
  size_t invalid_mark = res->n_invalid;
  uint64_t no_body = 0, bad_time = 0, n = 0, last_bytes = 0;
  int64_t tmin = INT64_MAX, tmax = INT64_MIN;
  qs_capture_record rec;
  char reason[256];
  while ((rc = qs_capture_reader_next(&r, &rec)) == 1) {
    n++;
    if ((n & 1023) == 0) {
      atomic_fetch_add_explicit(&prog->records, 1024, memory_order_relaxed);
      atomic_fetch_add_explicit(&prog->bytes, r.bytes - last_bytes, memory_order_relaxed);
      last_bytes = r.bytes;
    }
    int64_t t;
    if (qs_time_parse_any(rec.enqueued_time, &t) == 0) {
      if (t < tmin)
        tmin = t;
      if (t > tmax)
        tmax = t;
    } else {
      bad_time++;
    }
    if (!rec.has_body) {
      no_body++;
      f->stats.invalid++;
      listed_add(res->invalid, &res->n_invalid, sf->name, rec.sequence_number, "Body is null");
      continue;
    }
    if (bw_fold_add_body(f, rec.body, rec.body_len, reason, sizeof reason) != 0)
      listed_add(res->invalid, &res->n_invalid, sf->name, rec.sequence_number, reason);
  }
  atomic_fetch_add_explicit(&prog->records, n & 1023, memory_order_relaxed);
  atomic_fetch_add_explicit(&prog->bytes, r.bytes - last_bytes, memory_order_relaxed);
  if (rc < 0) {
    qs_set_reason(why, whylen, "%s", r.error[0] ? r.error : qs_strerror(rc));
    qs_capture_reader_close(&r);
    bw_fold_rollback(f);
    res->n_invalid = invalid_mark;
    res->records_skipped += n;
    return rc;
  }
  res->records += n;
  res->bytes += r.bytes;
  res->no_body += no_body;
  res->bad_enqueued_time += bad_time;
  if (n == 0)
    res->files_empty++;
  qs_capture_reader_close(&r);
  if (path_time >= 0) {
    if (path_time < tmin)
      tmin = path_time;
    if (path_time > tmax)
      tmax = path_time;
  }
  if (tmin < part->start)
    part->start = tmin;
  if (tmax > part->end)
    part->end = tmax;
  return 0;
}

/* Uploads the gold files just written to o->gold_url (one Put Blob each: atomic per file). */
static int upload_gold(const bw_job_opts *o, char *err, size_t errlen) {
  bw_blob b;
  int rc = bw_blob_init(&b, o->gold_url, o->blob_key, o->blob_sas, err, errlen);
  if (rc)
    return rc;
  static const char *const names[] = {BW_GOLD_HOURLY_FILE, BW_GOLD_DAILY_FILE};
  for (size_t i = 0; i < 2 && rc == 0; i++) {
    char path[4096], name[2048];
    snprintf(path, sizeof path, "%s/%s", o->gold_dir, names[i]);
    size_t pl = strlen(b.prefix);
    snprintf(name, sizeof name, "%s%s%s", b.prefix, pl && b.prefix[pl - 1] != '/' ? "/" : "",
             names[i]);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
      qs_set_reason(err, errlen, "%s: %s", path, strerror(errno));
      rc = QS_ERR_IO;
      break;
    }
    qs_buf data = QS_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
      qs_buf_append(&data, chunk, n);
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
      qs_set_reason(err, errlen, "%s: read error", path);
      rc = QS_ERR_IO;
    } else {
      rc = bw_blob_put(&b, name, data.p ? data.p : "", data.len, err, errlen);
    }
    qs_buf_free(&data);
  }
  bw_blob_free(&b);
  return rc;
}

void bw_job_run(const bw_job_opts *o, bw_job_progress *prog, bw_job_result *res) {
  double t0 = now_s(), c0 = thread_cpu_s();
  memset(res, 0, sizeof *res);
  file_list l = {.max = o->max_files ? o->max_files : 1000000, .hub = o->event_hub};
  bw_blob blob;
  int use_blob = bw_blob_is_url(o->source);
  if (use_blob) {
    res->rc = bw_blob_init(&blob, o->source, o->blob_key, o->blob_sas, res->err, sizeof res->err);
    if (res->rc)
      return;
    if (o->blob_page_size > 0)
      blob.page_size = o->blob_page_size;
    blob.max_blob_bytes = o->max_file_bytes;
    res->rc = bw_blob_list(&blob, list_add, &l, res->err, sizeof res->err);
  } else {
    res->rc = walk_dir(o->source, "", &l, 0, res->err, sizeof res->err);
  }
  if (res->rc == 0 && l.over) {
    qs_set_reason(res->err, sizeof res->err, "source holds more than MAX_FILES (%zu) files", l.max);
    res->rc = QS_ERR_TOOBIG;
  }
  if (res->rc) {
    for (size_t i = 0; i < l.n; i++)
      free(l.v[i].name);
    free(l.v);
    if (use_blob)
      bw_blob_free(&blob);
    return;
  }
  if (l.n > 1)
    qsort(l.v, l.n, sizeof *l.v, name_cmp);
  atomic_store(&prog->files_total, l.n);
  res->files = l.n;

  bw_fold f;
  bw_fold_init(&f, o->significant_threshold);
  for (size_t i = 0; o->regions && o->regions[i]; i++)
    bw_fold_add_region(&f, o->regions[i]);
  partition *parts = NULL;
  size_t n_parts = 0;
  qs_buf mem = QS_BUF_INIT;
  for (size_t i = 0; i < l.n; i++) {
    if (o->cancel && atomic_load(o->cancel)) {
      res->rc = QS_ERR_CLOSED;
      qs_set_reason(res->err, sizeof res->err, "cancelled after %zu of %zu files", i, l.n);
      break;
    }
    char key[512];
    int64_t path_time;
    bw_job_path_info(l.v[i].name, key, sizeof key, &path_time);
    partition *p = partition_of(&parts, &n_parts, key);
    char why[256];
    int rc = read_file(o, use_blob ? &blob : NULL, &mem, &l.v[i], &f, prog, res, p, path_time, why,
                       sizeof why);
    if (rc) {
      res->files_failed++;
      listed_add(res->file_errors, &res->n_file_errors, l.v[i].name, -1, why);
    } else {
      res->files_ok++;
    }
    atomic_fetch_add_explicit(&prog->files_done, 1, memory_order_relaxed);
    if (mem.cap > ((size_t)8 << 20))
      qs_buf_free(&mem); /* do not keep one big download's buffer for the whole run */
  }
  qs_buf_free(&mem);
  res->seconds_read = now_s() - t0;
  res->cpu_seconds_read = thread_cpu_s() - c0;
  res->fold_bytes = bw_fold_memory(&f);
  res->stats = f.stats;

  /* Coverage: only partitions whose files said something about time. */
  int64_t cov_end = INT64_MAX, cov_start = INT64_MAX;
  for (size_t i = 0; i < n_parts; i++) {
    if (parts[i].end == INT64_MIN)
      continue;
    res->partitions++;
    if (parts[i].end < cov_end)
      cov_end = parts[i].end;
    if (parts[i].start < cov_start)
      cov_start = parts[i].start;
  }
  free(parts);
  if (res->partitions > 0 && cov_end > 0) {
    res->cutoff_ms = qs_window_start(cov_end, QS_MS_PER_HOUR);
    res->coverage_start_ms = cov_start > 0 ? cov_start : 0;
  }

  if (res->rc == 0)
    res->rc = bw_fold_finish(&f, &res->rows);
  if (res->rc && !res->err[0])
    qs_set_reason(res->err, sizeof res->err, "aggregation failed: %s", qs_strerror(res->rc));
  if (res->rc == 0)
    compute_baselines(o, &f, res);
  bw_fold_free(&f);
  if (res->rc == 0 && o->gold_dir && o->gold_dir[0])
    res->rc = bw_gold_write(o->gold_dir, res->rows.hourly, res->rows.n_hourly, res->rows.daily,
                            res->rows.n_daily, res->err, sizeof res->err);
  if (res->rc == 0 && o->gold_url && o->gold_url[0] && o->gold_dir && o->gold_dir[0])
    res->rc = upload_gold(o, res->err, sizeof res->err);
  for (size_t i = 0; i < l.n; i++)
    free(l.v[i].name);
  free(l.v);
  if (use_blob)
    bw_blob_free(&blob);
  res->seconds_total = now_s() - t0;
}

void bw_job_result_free(bw_job_result *res) {
  bw_fold_result_free(&res->rows);
  free(res->baselines);
  res->baselines = NULL;
  res->n_baselines = 0;
}
