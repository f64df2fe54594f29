/* capture_sched.c — windows of a partition's durable records written as Capture Avro files.
 *
 * Invariants: at most one file is being written per partition (c->job); next_seq only moves after
 * that file was renamed into place and the checkpoint replaced; window starts strictly increase by
 * at least one second, so two windows never share a path; enqueued times never decrease within a
 * partition (the log guarantees it), so a window is a contiguous sequence range.
 */
#include "capture_sched.h"

#include "qs/capture.h"
#include "qs/error.h"
#include "qs/fsutil.h"
#include "qs/timeutil.h"

#include "evmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_BATCH 256
#define RETRY_MS 5000

#define MAX_PROPS 64 /* application properties copied per event; more are dropped */

typedef struct job_rec {
  int64_t seq, offset, enqueued_ms;
  size_t key_off, key_len, body_off, body_len;
  bool has_body;
  size_t props_at, n_props; /* into job.props */
} job_rec;

typedef struct job {
  uv_work_t work;
  hub_capture *c;
  char path[1024];
  job_rec *recs;
  size_t n, cap;
  uint8_t *bytes; /* keys and bodies of the records */
  size_t len, bytes_cap;
  qs_capture_prop *props; /* application properties; data pointers are offsets until written */
  size_t n_props, props_cap;
  int64_t end_seq, win_start;
  int rc;
  char err[QS_CAPTURE_ERR_MAX];
} job;

struct hub_capture {
  uv_loop_t *loop;
  hub_capture_options o;
  char *ckpt_path;
  uv_timer_t timer;
  int64_t next_seq;       /* first sequence not yet captured */
  int64_t last_win_start; /* start of the last window written, -1 none */
  int64_t win_start;      /* open window, -1 none */
  int64_t scan_seq;       /* next record to look at in the open window */
  uint64_t win_bytes;
  job *job;
  bool stopping;
  hub_capture_stopped_cb stopped_cb;
  void *stopped_arg;
};

/* The metrics are optional (tests leave them out). */
static void count(qs_metric *m, double v) {
  if (m)
    qs_metric_add(m, v);
}

static int64_t now_ms(const hub_capture *c) {
  return c->o.now_ms ? c->o.now_ms() : qs_time_now_ms();
}

/* The event body of a stored AMQP message: its data section(s), else the encoded amqp-value. */
static bool message_body(const uint8_t *msg, size_t len, const uint8_t **body, size_t *blen) {
  size_t pos = 0;
  hub_evmsg_section sec;
  while (hub_evmsg_next(msg, len, &pos, &sec) == 1) {
    if (sec.code == HUB_SEC_DATA && sec.value_len >= 2) {
      const uint8_t *v = sec.value;
      if (v[0] == 0xa0 && sec.value_len >= 2) {
        *body = v + 2, *blen = v[1];
        return 2 + (size_t)v[1] <= sec.value_len;
      }
      if (v[0] == 0xb0 && sec.value_len >= 5) {
        size_t n = (size_t)v[1] << 24 | (size_t)v[2] << 16 | (size_t)v[3] << 8 | v[4];
        *body = v + 5, *blen = n;
        return 5 + n <= sec.value_len;
      }
    } else if (sec.code == HUB_SEC_VALUE) {
      *body = sec.value, *blen = sec.value_len;
      return true;
    }
  }
  return false;
}

static uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* One AMQP simple value as a Capture property value; false for types Capture cannot hold. */
static bool decode_prop_value(const uint8_t *v, size_t n, qs_capture_prop *out) {
  if (n < 1)
    return false;
  uint8_t t = v[0];
  switch (t) {
  case 0x40:
    out->type = QS_CAPTURE_NULL;
    return true;
  case 0x41:
  case 0x42:
  case 0x56: /* booleans as 0/1 */
    out->type = QS_CAPTURE_LONG;
    out->l = t == 0x41 || (t == 0x56 && n > 1 && v[1]);
    return true;
  case 0x43: /* uint0 */
  case 0x44: /* ulong0 */
    out->type = QS_CAPTURE_LONG;
    out->l = 0;
    return true;
  case 0x50: /* ubyte */
  case 0x52: /* smalluint */
  case 0x53: /* smallulong */
    out->type = QS_CAPTURE_LONG;
    out->l = n > 1 ? v[1] : 0;
    return n >= 2;
  case 0x51: /* byte */
  case 0x54: /* smallint */
  case 0x55: /* smalllong */
    out->type = QS_CAPTURE_LONG;
    out->l = n > 1 ? (int8_t)v[1] : 0;
    return n >= 2;
  case 0x60:
  case 0x61:
    out->type = QS_CAPTURE_LONG;
    out->l = t == 0x61 ? (int16_t)be(v + 1, 2) : (int64_t)be(v + 1, 2);
    return n >= 3;
  case 0x70:
  case 0x71:
    out->type = QS_CAPTURE_LONG;
    out->l = t == 0x71 ? (int32_t)be(v + 1, 4) : (int64_t)be(v + 1, 4);
    return n >= 5;
  case 0x80:
  case 0x81:
  case 0x83: /* ulong, long, timestamp */
    out->type = QS_CAPTURE_LONG;
    out->l = (int64_t)be(v + 1, 8);
    return n >= 9;
  case 0x72: {
    uint32_t u = (uint32_t)be(v + 1, 4);
    float f;
    memcpy(&f, &u, 4);
    out->type = QS_CAPTURE_DOUBLE;
    out->d = f;
    return n >= 5;
  }
  case 0x82: {
    uint64_t u = be(v + 1, 8);
    out->type = QS_CAPTURE_DOUBLE;
    memcpy(&out->d, &u, 8);
    return n >= 9;
  }
  case 0xa0:
  case 0xa1:
  case 0xa3:
  case 0xb0:
  case 0xb1:
  case 0xb3: {
    size_t w = t >= 0xb0 ? 4 : 1;
    if (n < 1 + w)
      return false;
    out->type = (t & 0x0f) == 0 ? QS_CAPTURE_BYTES : QS_CAPTURE_STRING;
    out->len = (size_t)be(v + 1, w);
    out->data = v + 1 + w;
    return 1 + w + out->len <= n;
  }
  default:
    return false;
  }
}

/* The application-properties section (a map with string keys) into j->props; data pointers
 * point into the stored message for now and are made relative to j->bytes by the caller. */
static void add_props(job *j, const uint8_t *msg, size_t len, job_rec *jr) {
  size_t pos = 0;
  hub_evmsg_section sec;
  jr->props_at = j->n_props;
  jr->n_props = 0;
  while (hub_evmsg_next(msg, len, &pos, &sec) == 1) {
    if (sec.code != HUB_SEC_APP_PROPS)
      continue;
    const uint8_t *v = sec.value, *end = sec.value + sec.value_len;
    size_t hdr = v[0] == 0xc1 ? 3 : v[0] == 0xd1 ? 9 : 0;
    if (hdr == 0 || sec.value_len < hdr)
      return;
    size_t count = hdr == 3 ? v[2] : (size_t)be(v + 5, 4);
    const uint8_t *p = v + hdr;
    for (size_t i = 0; i + 1 < count; i += 2) { /* count: keys and values */
      size_t klen, vlen;
      if (hub_evmsg_skip(p, (size_t)(end - p), &klen) != 0 ||
          hub_evmsg_skip(p + klen, (size_t)(end - p - klen), &vlen) != 0)
        return;
      qs_capture_prop key = {0}, val = {0};
      if (jr->n_props < MAX_PROPS && decode_prop_value(p, klen, &key) &&
          key.type == QS_CAPTURE_STRING && decode_prop_value(p + klen, vlen, &val)) {
        if (j->n_props == j->props_cap) {
          j->props_cap = j->props_cap ? j->props_cap * 2 : 256;
          j->props = qs_xrealloc(j->props, j->props_cap * sizeof *j->props);
        }
        val.key = (const char *)key.data;
        val.key_len = key.len;
        j->props[j->n_props++] = val;
        jr->n_props++;
      }
      p += klen + vlen;
    }
    return;
  }
}

static void job_add(job *j, const hub_plog_record *r) {
  if (j->n == j->cap) {
    j->cap = j->cap ? j->cap * 2 : 256;
    j->recs = qs_xrealloc(j->recs, j->cap * sizeof *j->recs);
  }
  const uint8_t *body = NULL;
  size_t blen = 0;
  bool has = message_body(r->payload, r->payload_len, &body, &blen);
  size_t need = j->len + r->key_len + blen;
  if (need > j->bytes_cap) {
    j->bytes_cap = need * 2;
    j->bytes = qs_xrealloc(j->bytes, j->bytes_cap);
  }
  job_rec *jr = &j->recs[j->n++];
  *jr = (job_rec){r->seq, r->offset, r->enqueued_ms, j->len, r->key_len, 0, 0, has, 0, 0};
  if (r->key_len)
    memcpy(j->bytes + j->len, r->key, r->key_len);
  j->len += r->key_len;
  jr->body_off = j->len;
  jr->body_len = has ? blen : 0;
  if (has && blen)
    memcpy(j->bytes + j->len, body, blen);
  j->len += jr->body_len;
  add_props(j, r->payload, r->payload_len, jr);
  for (size_t i = jr->props_at; i < jr->props_at + jr->n_props; i++) { /* copy, keep offsets */
    qs_capture_prop *pr = &j->props[i];
    size_t dlen = pr->type == QS_CAPTURE_STRING || pr->type == QS_CAPTURE_BYTES ? pr->len : 0;
    if (j->len + pr->key_len + dlen > j->bytes_cap) {
      j->bytes_cap = (j->len + pr->key_len + dlen) * 2;
      j->bytes = qs_xrealloc(j->bytes, j->bytes_cap);
    }
    memcpy(j->bytes + j->len, pr->key, pr->key_len);
    pr->key = (const char *)(uintptr_t)j->len;
    j->len += pr->key_len;
    if (dlen)
      memcpy(j->bytes + j->len, pr->data, dlen);
    pr->data = (const uint8_t *)(uintptr_t)j->len;
    j->len += dlen;
  }
}

/* Worker thread: encode and write the window's file (temp name, fsync, rename). */
static void job_write(uv_work_t *w) {
  job *j = w->data;
  qs_capture_writer wr;
  int rc = qs_mkdir_parents(j->path);
  if (rc != 0) {
    snprintf(j->err, sizeof j->err, "cannot create directories for %.180s: %s", j->path,
             strerror(-rc));
    j->rc = QS_ERR_IO;
    return;
  }
  for (size_t i = 0; i < j->n_props; i++) { /* offsets into j->bytes become pointers */
    j->props[i].key = (const char *)j->bytes + (uintptr_t)j->props[i].key;
    j->props[i].data = j->bytes + (uintptr_t)j->props[i].data;
  }
  rc = qs_capture_writer_open(&wr, j->path, NULL);
  for (size_t i = 0; rc == 0 && i < j->n; i++) {
    const job_rec *r = &j->recs[i];
    qs_capture_record rec = {0};
    rec.sequence_number = r->seq;
    snprintf(rec.offset, sizeof rec.offset, "%" PRId64, r->offset);
    qs_time_format_capture(r->enqueued_ms, rec.enqueued_time, sizeof rec.enqueued_time);
    rec.partition_key = r->key_len ? (const char *)j->bytes + r->key_off : NULL;
    rec.partition_key_len = r->key_len;
    rec.has_body = r->has_body;
    rec.body = j->bytes + r->body_off;
    rec.body_len = r->body_len;
    rec.props = j->props + r->props_at;
    rec.n_props = r->n_props;
    rc = qs_capture_writer_append(&wr, &rec);
  }
  if (rc == 0)
    rc = qs_capture_writer_close(&wr);
  else
    qs_capture_writer_abort(&wr);
  if (rc != 0)
    snprintf(j->err, sizeof j->err, "writing %.200s: %s", j->path, qs_strerror(rc));
  j->rc = rc;
}

static int write_checkpoint(hub_capture *c, int64_t next_seq, int64_t last_win_start) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", c->ckpt_path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return -errno;
  char line[64];
  int n = snprintf(line, sizeof line, "%" PRId64 " %" PRId64 "\n", next_seq, last_win_start);
  int rc = (write(fd, line, (size_t)n) == n && fdatasync(fd) == 0) ? 0 : -errno;
  close(fd);
  if (rc == 0 && rename(tmp, c->ckpt_path) != 0)
    rc = -errno;
  return rc;
}

static void poke(hub_capture *c);
static void on_timer(uv_timer_t *t);
static void finish_stop(hub_capture *c);

static void job_done(uv_work_t *w, int status) {
  job *j = w->data;
  hub_capture *c = j->c;
  c->job = NULL;
  int rc = status < 0 ? status : j->rc;
  if (rc == 0) {
    rc = write_checkpoint(c, j->end_seq, j->win_start);
    if (rc != 0)
      snprintf(j->err, sizeof j->err, "checkpoint %.200s: %s", c->ckpt_path, strerror(-rc));
  }
  if (rc == 0) {
    c->next_seq = j->end_seq;
    c->last_win_start = j->win_start;
    c->win_start = -1;
    count(c->o.files, 1);
    count(c->o.events, (double)j->n);
    qs_log_debug(c->o.qlog, "capture file written", QS_LSTR("path", j->path),
                 QS_LINT("events", (int64_t)j->n));
  } else {
    count(c->o.errors, 1);
    qs_log_error(c->o.qlog, "capture failed; retrying", QS_LSTR("error", j->err),
                 QS_LINT("retry_ms", RETRY_MS));
  }
  free(j->recs);
  free(j->bytes);
  free(j->props);
  free(j);
  if (c->stopping) {
    finish_stop(c);
    return;
  }
  if (rc != 0)
    uv_timer_start(&c->timer, on_timer, RETRY_MS, 0);
  else
    poke(c);
}

/* Write [next_seq, end_seq) as the window starting at win_start. */
static void close_window(hub_capture *c, int64_t end_seq, int64_t win_start) {
  job *j = qs_xcalloc(1, sizeof *j);
  j->c = c;
  j->end_seq = end_seq;
  j->win_start = win_start;
  int64_t day = qs_window_start(win_start, QS_MS_PER_DAY), y;
  unsigned mo, d, sec = (unsigned)((win_start - day) / 1000);
  qs_civil_from_days(day / QS_MS_PER_DAY, &y, &mo, &d);
  char part[16];
  snprintf(part, sizeof part, "%d", c->o.partition);
  qs_capture_path_parts pp = {c->o.namespace_name, c->o.hub,      part,    (int)y, (int)mo, (int)d,
                              sec / 3600,          sec / 60 % 60, sec % 60};
  char rel[900];
  if (qs_capture_path_build(rel, sizeof rel, &pp) < 0) {
    qs_log_error(c->o.qlog, "capture path invalid", QS_LSTR("hub", c->o.hub));
    free(j);
    return;
  }
  snprintf(j->path, sizeof j->path, "%s/%s", c->o.capture_dir, rel);
  for (int64_t s = c->next_seq; s < end_seq;) {
    hub_plog_record recs[READ_BATCH];
    size_t n = 0;
    if (hub_plog_read(c->o.log, s,
                      (size_t)(end_seq - s) < READ_BATCH ? (size_t)(end_seq - s) : READ_BATCH,
                      SIZE_MAX, recs, &n) != 0 ||
        n == 0)
      break;
    for (size_t i = 0; i < n && recs[i].seq < end_seq; i++)
      job_add(j, &recs[i]);
    s = recs[n - 1].seq + 1;
  }
  c->job = j;
  uv_timer_stop(&c->timer);
  j->work.data = j;
  uv_queue_work(c->loop, &j->work, job_write, job_done);
}

static void on_timer(uv_timer_t *t) { poke(t->data); }

static void arm(hub_capture *c, int64_t at_ms) {
  int64_t now = now_ms(c);
  uv_timer_start(&c->timer, on_timer, at_ms > now ? (uint64_t)(at_ms - now) : 0, 0);
}

static void poke(hub_capture *c) {
  if (c->job || c->stopping)
    return;
  const int64_t interval = (int64_t)c->o.interval_s * 1000, now = now_ms(c);
  hub_plog_record recs[READ_BATCH];
  size_t n = 0;
  if (c->win_start < 0) {
    if (hub_plog_read(c->o.log, c->next_seq, 1, SIZE_MAX, recs, &n) != 0 || n == 0) {
      if (!c->o.skip_empty) { /* an empty file per interval without events */
        int64_t start = c->last_win_start < 0 ? now - interval : c->last_win_start + interval;
        if (now >= start + interval)
          close_window(c, c->next_seq, start);
        else
          arm(c, start + interval);
      }
      return;
    }
    int64_t first = recs[0].enqueued_ms, after = c->last_win_start + 1000;
    if (recs[0].seq > c->next_seq)
      c->next_seq = recs[0].seq; /* retention removed what was never captured */
    c->win_start = c->last_win_start >= 0 && after > first ? after : first;
    c->scan_seq = c->next_seq;
    c->win_bytes = 0;
  }
  const int64_t end = c->win_start + interval;
  for (;;) {
    n = 0;
    if (hub_plog_read(c->o.log, c->scan_seq, READ_BATCH, SIZE_MAX, recs, &n) != 0 || n == 0)
      break;
    for (size_t i = 0; i < n; i++) {
      if (recs[i].enqueued_ms >= end) { /* the window ended before this record */
        close_window(c, recs[i].seq, c->win_start);
        return;
      }
      c->win_bytes += recs[i].payload_len;
      c->scan_seq = recs[i].seq + 1;
      if (c->win_bytes >= c->o.size_limit_bytes) {
        close_window(c, c->scan_seq, c->win_start);
        return;
      }
    }
  }
  if (now >= end)
    close_window(c, c->scan_seq, c->win_start);
  else
    arm(c, end);
}

void hub_capture_poke(hub_capture *c) { poke(c); }

int64_t hub_capture_next_seq(const hub_capture *c) { return c->next_seq; }

int hub_capture_start(hub_capture **out, uv_loop_t *loop, const hub_capture_options *o, char *err,
                      size_t errlen) {
  hub_capture *c = qs_xcalloc(1, sizeof *c);
  c->loop = loop;
  c->o = *o;
  c->last_win_start = -1;
  c->win_start = -1;
  char path[1024];
  snprintf(path, sizeof path, "%s/%s/%d/capture.checkpoint", o->data_dir, o->hub, o->partition);
  c->ckpt_path = qs_xstrdup(path);
  hub_plog_info info;
  hub_plog_get_info(o->log, &info);
  c->next_seq = info.begin_seq;
  FILE *f = fopen(path, "r");
  if (f) {
    long long next, last;
    if (fscanf(f, "%lld %lld", &next, &last) != 2 || next < 0) {
      fclose(f);
      qs_set_reason(err, errlen, "capture checkpoint %s is damaged", path);
      free(c->ckpt_path);
      free(c);
      return QS_ERR_PARSE;
    }
    fclose(f);
    c->next_seq = next > info.begin_seq ? next : info.begin_seq;
    c->last_win_start = last;
  }
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  *out = c;
  uv_timer_start(&c->timer, on_timer, 0, 0); /* catch up on what is already durable */
  return 0;
}

static void timer_closed(uv_handle_t *h) {
  hub_capture *c = h->data;
  hub_capture_stopped_cb cb = c->stopped_cb;
  void *arg = c->stopped_arg;
  free(c->ckpt_path);
  free(c);
  cb(arg);
}

static void finish_stop(hub_capture *c) { uv_close((uv_handle_t *)&c->timer, timer_closed); }

void hub_capture_stop(hub_capture *c, hub_capture_stopped_cb cb, void *arg) {
  c->stopping = true;
  c->stopped_cb = cb;
  c->stopped_arg = arg;
  uv_timer_stop(&c->timer);
  if (!c->job)
    finish_stop(c);
}
