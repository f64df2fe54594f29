/* replay.c — `ingestor replay FILE`: sends a recorded feed to the hub: a GeoJSON
 * FeatureCollection in event-time order, or a change log (NDJSON, one USGS feature per line, each
 * a new version of its event) in file order, at --speed N times real time (0: as fast as the hub
 * acknowledges; a change log is paced by `updated`), optionally shifted so the last event (or
 * change) happens now. Every feature goes through the live sources' classifier (changes.h) with
 * state kept in memory for the file: revisions, deletions, supersedes and region moves are sent
 * as the pollers would send them. Nothing is remembered across replays: a replay is meant to be
 * sent again each time (both layers make repeats harmless). Progress on a terminal; a summary
 * log line at the end. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qs/error.h"
#include "qs/timeutil.h"

#include "changes.h"
#include "ingest.h"

/* One message to send, with the time it is paced by. */
typedef struct rmsg {
  char *json;
  size_t len;
  char key[QS_EVENT_SHORT_MAX + 1];
  int64_t at;
} rmsg;

typedef struct replay {
  ingest_ctx *ctx;
  replay_opts o;
  feed_list l;
  rmsg *msgs;
  size_t nmsgs, capmsgs;
  int64_t cls_at; /* pace time of the entry being classified */
  size_t counts[CH_KINDS];
  qs_eh_producer *prod;
  uv_timer_t timer, progress;
  size_t next, acked, failed;
  int64_t wall0_ms, t0_ms;
  uint64_t start_ns, parse_ns, send_start_ns;
  bool waiting_drain, finished;
  int open_handles;
  int64_t shift_ms; /* added to every time by --shift-to-now */
  qs_metric *m_sent, *m_failed;
  void (*done)(int, void *);
  void *ud;
} replay;

static void replay_pump(replay *r);

static void print_progress(replay *r, bool final) {
  if (!r->o.progress)
    return;
  double s = (double)(uv_hrtime() - r->send_start_ns) / 1e9;
  fprintf(stderr, "\r  replay %zu/%zu sent, %zu acknowledged, %zu failed  %.0f events/s   %s",
          r->next, r->nmsgs, r->acked, r->failed, s > 0 ? (double)r->acked / s : 0.0,
          final ? "\n" : "");
  fflush(stderr);
}

static void msgs_free(replay *r) {
  for (size_t i = 0; i < r->nmsgs; i++)
    free(r->msgs[i].json);
  free(r->msgs);
  r->msgs = NULL;
}

static void on_closed_free(uv_handle_t *h) {
  replay *r = h->data;
  if (--r->open_handles == 0) { /* both timers closed, in whatever order */
    feed_list_free(&r->l);
    msgs_free(r);
    free(r);
  }
}

static void finish(replay *r) {
  if (r->finished)
    return;
  r->finished = true;
  print_progress(r, true);
  double send_s = (double)(uv_hrtime() - r->send_start_ns) / 1e9;
  qs_log_info(
      r->ctx->log, "replay done", QS_LSTR("file", r->o.path), QS_LINT("events", r->l.n),
      QS_LINT("messages", r->nmsgs), QS_LINT("new", r->counts[CH_NEW]),
      QS_LINT("revisions", r->counts[CH_REVISION]), QS_LINT("deleted", r->counts[CH_DELETED]),
      QS_LINT("superseded", r->counts[CH_SUPERSEDED]), QS_LINT("moved", r->counts[CH_MOVED]),
      QS_LINT("folded", r->counts[CH_FOLDED]), QS_LINT("duplicates", r->counts[CH_DUPLICATE]),
      QS_LINT("acknowledged", r->acked), QS_LINT("failed", r->failed),
      QS_LDBL("parse_s", (double)r->parse_ns / 1e9), QS_LDBL("send_s", send_s),
      QS_LDBL("events_per_s", send_s > 0 ? (double)r->acked / send_s : 0));
  int rc = r->failed ? 1 : 0;
  void (*done)(int, void *) = r->done;
  void *ud = r->ud;
  r->open_handles = 2;
  uv_close((uv_handle_t *)&r->timer, on_closed_free);
  uv_close((uv_handle_t *)&r->progress, on_closed_free);
  done(rc, ud);
}

static void on_ack(int status, const char *cond, const char *desc, void *ud) {
  replay *r = ud;
  if (status == 0) {
    r->acked++;
    qs_metric_inc(r->m_sent);
  } else {
    if (r->failed++ < 3)
      qs_log_warn(r->ctx->log, "event not accepted", QS_LSTR("error", qs_strerror(status)),
                  QS_LSTR("condition", cond ? cond : ""), QS_LSTR("description", desc ? desc : ""));
    qs_metric_inc(r->m_failed);
  }
  if (r->acked + r->failed == r->nmsgs)
    finish(r);
}

static void on_timer(uv_timer_t *t) { replay_pump(t->data); }

static void on_drain(qs_eh_producer *p, void *ud) {
  (void)p;
  replay *r = ud;
  if (r->waiting_drain) {
    r->waiting_drain = false;
    replay_pump(r);
  }
}

static void on_progress(uv_timer_t *t) { print_progress(t->data, false); }

static void replay_pump(replay *r) {
  if (r->ctx->stopping && !r->finished) {
    /* a stop request: what was sent is flushed by the client; the rest is not sent */
    for (size_t i = r->next; i < r->nmsgs; i++)
      free(r->msgs[i].json);
    r->nmsgs = r->next;
    if (r->acked + r->failed == r->nmsgs)
      finish(r);
    return;
  }
  int64_t now = qs_time_now_ms();
  while (r->next < r->nmsgs) {
    rmsg *e = &r->msgs[r->next];
    if (r->o.speed > 0) {
      int64_t due = r->wall0_ms + (int64_t)((double)(e->at - r->t0_ms) / r->o.speed);
      if (due > now) {
        uv_timer_start(&r->timer, on_timer, (uint64_t)(due - now), 0);
        return;
      }
    }
    qs_eh_event_out ev = {.body = e->json, .len = e->len, .partition_key = e->key};
    int rc = qs_eh_send(r->prod, &ev, on_ack, r);
    if (rc == QS_ERR_FULL) {
      r->waiting_drain = true;
      return;
    }
    free(e->json); /* the client copied it */
    e->json = NULL;
    r->next++;
    if (rc != 0)
      on_ack(rc, "qs:refused", "event refused before sending", r);
  }
}

static void shift_event(qs_event *ev, void *ud) {
  int64_t delta = *(const int64_t *)ud;
  ev->time += delta;
  ev->updated += delta;
  if (ev->updated > QS_EVENT_TIME_MAX)
    ev->updated = QS_EVENT_TIME_MAX;
}

/* Shifts event times so the last event (of a change log: the last change) is now; updated
 * keeps its distance to time. */
static void shift_to_now(replay *r) {
  if (!r->l.n)
    return;
  int64_t last = 0;
  for (size_t i = 0; i < r->l.n; i++) {
    int64_t t = r->l.ndjson ? r->l.v[i].updated : r->l.v[i].time;
    if (t > last)
      last = t;
  }
  int64_t delta = r->shift_ms = qs_time_now_ms() - last;
  for (size_t i = 0; i < r->l.n; i++)
    feed_entry_rewrite(&r->l.v[i], shift_event, &delta);
}

static void sink_send(void *ud, char *json, size_t len, const char *key, ch_kind kind) {
  replay *r = ud;
  if (r->nmsgs == r->capmsgs) {
    r->capmsgs = r->capmsgs ? r->capmsgs * 2 : 1024;
    r->msgs = qs_xrealloc(r->msgs, r->capmsgs * sizeof *r->msgs);
  }
  rmsg *m = &r->msgs[r->nmsgs++];
  m->json = json;
  m->len = len;
  snprintf(m->key, sizeof m->key, "%s", key);
  m->at = r->cls_at;
  if (kind == CH_SUPERSEDED || kind == CH_MOVED)
    r->counts[kind]++;
}

static void sink_write(void *ud, const char *id, const ch_rec *rec) {
  (void)ud, (void)id, (void)rec; /* the store is the memory of this replay */
}

/* Every feature through the classifier, in order, into the messages to send. */
static void classify_all(replay *r) {
  ch_store *st = ch_store_new();
  ch_sink sink = {.send = sink_send, .write = sink_write, .ud = r};
  for (size_t i = 0; i < r->l.n; i++) {
    feed_entry *e = &r->l.v[i];
    r->cls_at = r->l.ndjson ? e->updated : e->time;
    ch_kind kind;
    bool folded;
    if (ch_classify(st, e, &sink, &kind, &folded) != 0) {
      qs_log_warn(r->ctx->log, "replay: event could not be encoded (skipped)",
                  QS_LSTR("event_id", e->id));
      continue;
    }
    r->counts[kind]++;
    if (folded)
      r->counts[CH_FOLDED]++;
  }
  ch_store_free(st);
  /* a change log is paced by publication time: keep the pace times from going back */
  for (size_t i = 1; i < r->nmsgs; i++)
    if (r->msgs[i].at < r->msgs[i - 1].at)
      r->msgs[i].at = r->msgs[i - 1].at;
}

static int read_file(const char *path, char **out, size_t *len, char *why, size_t whylen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    qs_set_reason(why, whylen, "cannot open %s: %m", path);
    return QS_ERR_IO;
  }
  size_t cap = 1 << 20, n = 0;
  char *buf = qs_xmalloc(cap);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap)
      buf = qs_xrealloc(buf, cap *= 2);
  }
  bool err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    qs_set_reason(why, whylen, "cannot read %s", path);
    return QS_ERR_IO;
  }
  *out = buf;
  *len = n;
  return 0;
}

int replay_start(ingest_ctx *ctx, const replay_opts *o, void (*done)(int rc, void *ud), void *ud) {
  replay *r = qs_xcalloc(1, sizeof *r);
  r->ctx = ctx;
  r->o = *o;
  r->done = done;
  r->ud = ud;
  r->m_sent = qs_metric_get(ctx->m->sent, (const char *[]){"replay"});
  r->m_failed = qs_metric_get(ctx->m->send_failed, (const char *[]){"replay"});
  char *doc;
  size_t len, skipped = 0;
  char why[256] = "";
  int rc = read_file(o->path, &doc, &len, why, sizeof why);
  if (rc == 0) {
    uint64_t t = uv_hrtime();
    rc = feed_list_parse(&r->l, doc, len, ctx->regions, "replay", qs_time_now_ms(), &skipped, why,
                         sizeof why);
    r->parse_ns = uv_hrtime() - t;
    free(doc);
  }
  if (rc != 0) {
    qs_log_error(ctx->log, "replay: cannot read the feed", QS_LSTR("file", o->path),
                 QS_LSTR("reason", why));
    feed_list_free(&r->l);
    free(r);
    return rc;
  }
  if (skipped)
    qs_log_warn(ctx->log, "replay: malformed features skipped", QS_LINT("count", skipped),
                QS_LSTR("first", why));
  if (!r->l.ndjson) /* a change log keeps its publication order */
    feed_list_sort_by_time(&r->l);
  uint64_t t = uv_hrtime();
  if (o->shift_to_now)
    shift_to_now(r);
  classify_all(r);
  r->parse_ns += uv_hrtime() - t; /* parse + shift + classify + encode */
  qs_log_info(ctx->log, "replay started", QS_LSTR("file", o->path), QS_LINT("events", r->l.n),
              QS_LDBL("speed", o->speed), QS_LBOOL("shift_to_now", o->shift_to_now),
              QS_LINT("shift_ms", r->shift_ms), QS_LSTR("hub", o->hub));
  qs_eh_producer_opts po = {.hub = o->hub, .partition = -1, .queue_max = ctx->queue_max};
  rc = qs_eh_producer_open(ctx->eh, &po, &r->prod);
  if (rc != 0) {
    feed_list_free(&r->l);
    msgs_free(r);
    free(r);
    return rc;
  }
  qs_eh_producer_on_drain(r->prod, on_drain, r);
  uv_timer_init(ctx->loop, &r->timer);
  r->timer.data = r;
  uv_timer_init(ctx->loop, &r->progress);
  r->progress.data = r;
  if (o->progress)
    uv_timer_start(&r->progress, on_progress, 200, 200);
  r->wall0_ms = qs_time_now_ms();
  r->t0_ms = r->nmsgs ? r->msgs[0].at : 0;
  r->send_start_ns = uv_hrtime();
  if (r->nmsgs == 0) {
    finish(r);
    return 0;
  }
  replay_pump(r);
  return 0;
}
