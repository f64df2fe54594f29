/* poller.c — the polling sources (USGS summary feed, weather.gov alerts): conditional GET on a
 * timer, parse, dedupe against Redis, send to the hub, and mark seen only once the hub accepted.
 *
 * One poll at a time per source: the next starts POLL_INTERVAL after the previous one started,
 * and never before all of its sends are settled, so the dedupe store always reflects every
 * acknowledged event and a new version of an event is never raced by an older one.
 * Errors (HTTP 429/5xx, timeouts, network, a malformed document, Redis down) back off
 * exponentially with jitter up to BACKOFF_MAX (Retry-After honoured), with a log line and a
 * metric; a malformed feature is counted and skipped.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "qs/error.h"
#include "qs/timeutil.h"

#include "ingest.h"

#include "changes.h"

#define DEDUPE_CHUNK 500
/* starttime of a sweep's first page: USGS would otherwise default to 30 days back, and a
 * revision of an older event would never be seen */
#define SWEEP_EPOCH_MS INT64_C(-2208988800000) /* 1900-01-01 */
#define LOAD_ROUNDS 4 /* MGET rounds per chunk: ids, then the ends of association chains */

typedef struct poller poller;
typedef int (*parse_fn)(poller *p, const char *doc, size_t len, feed_list *out, size_t *skipped,
                        char *why, size_t whylen);

/* One message of the current chunk. */
typedef struct pmsg {
  size_t entry;
  char *json;
  size_t len;
  char key[QS_EVENT_SHORT_MAX + 1];
} pmsg;

/* A record to store once its feature's messages are all acknowledged. */
typedef struct prec_write {
  char id[QS_EVENT_ID_MAX + 1];
  char val[CH_REC_MAX];
} prec_write;

typedef struct pent {
  uint32_t left; /* messages not yet settled */
  bool failed;
  size_t wlo, whi; /* its records in writes[] */
} pent;

struct poller {
  ingest_ctx *ctx;
  const char *source; /* metric label and log field */
  char url[2048];
  char hub[QS_EH_HUB_MAX + 1];
  uint32_t interval_ms;
  qs_eh_producer *prod;
  uv_timer_t timer;
  bool timer_open;
  char etag[256], last_modified[128];
  uint32_t backoff_ms;
  parse_fn parse;
  const char *seen_prefix;
  bool versioned; /* USGS: the change classifier (changes.h); weather: seen or not */
  /* the sweep (FDSN event service), when sweep_base is set */
  const char *sweep_base;
  int64_t backfill_ms, overlap_ms;
  uint32_t page_size;
  bool sweeping;      /* between the first page and the end of a sweep */
  int64_t sweep_from; /* updatedafter of this sweep */
  int64_t sweep_wm;   /* the watermark to store when it completes */
  size_t page;        /* 0-based page of this sweep */
  int64_t page_start; /* starttime of this page (origin time; keyset paging) */
  size_t page_skip;   /* features at exactly page_start already seen: offset = 1 + this */
  int64_t seen_max;   /* largest `updated` seen in this sweep */
  int64_t opened_ms;  /* when the source started (Redis may still be connecting) */
  bool polled_once;
  int64_t req_start; /* page_start, page_skip of the request in flight (for the log) */
  size_t req_skip;
  bool sweep_failed; /* an event was not acknowledged: keep the old watermark */
  size_t sweep_counts[CH_KINDS], sweep_features, sweep_malformed, sweep_sent, sweep_failed_n;
  /* the poll in progress */
  bool busy, stopped, holding; /* holding: this poller owns the usgs state (ctx->state_owner) */
  int64_t started_ms;
  feed_list cur;
  ch_store *st;
  size_t next_chunk; /* first entry not yet classified */
  size_t chunk_hi, load_round;
  char **loading; /* keys of the MGET in flight (prefix + id) */
  size_t nload, caploading;
  pmsg *msgs;
  size_t nmsgs, capmsgs, sent_upto;
  prec_write *writes;
  size_t nwrites, capwrites;
  pent *ents;
  size_t cls_entry;   /* entry being classified (for the sink) */
  size_t outstanding; /* sends not yet settled + Redis requests in flight */
  size_t counts[CH_KINDS], n_ok, n_fail, skipped;
  bool waiting_drain;
  /* series touched once per event, looked up once */
  qs_metric *m_sent, *m_failed, *m_kind[CH_KINDS];
};

struct usgs_source {
  poller feed, sweep;
  bool has_sweep;
};
struct weather_source {
  poller p;
};

typedef struct send_ud {
  poller *p;
  size_t entry;
} send_ud;

static qs_metric *metric2(qs_metric_family *f, const char *a, const char *b) {
  const char *v[] = {a, b};
  return qs_metric_get(f, v);
}

static qs_metric *metric1(qs_metric_family *f, const char *a) {
  const char *v[] = {a};
  return qs_metric_get(f, v);
}

static void on_timer(uv_timer_t *t);
static void process_start(poller *p);

static void schedule(poller *p, uint64_t delay_ms) {
  if (!p->stopped && p->timer_open)
    uv_timer_start(&p->timer, on_timer, delay_ms, 0);
}

/* The USGS feed poll and the sweep classify against the same per-id state: one at a time, from
 * the first lookup to the last record written (ctx->state_owner). */
static bool acquire_state(poller *p) {
  if (!p->versioned)
    return true;
  if (p->ctx->state_owner && p->ctx->state_owner != p) {
    p->ctx->state_waiter = p;
    return false;
  }
  p->ctx->state_owner = p;
  p->holding = true;
  return true;
}

static void release_state(poller *p) {
  if (!p->holding)
    return;
  p->holding = false;
  p->ctx->state_owner = NULL;
  poller *w = p->ctx->state_waiter;
  p->ctx->state_waiter = NULL;
  if (w && !w->stopped && acquire_state(w))
    process_start(w);
}

static void reset_poll(poller *p) {
  for (size_t i = p->sent_upto; i < p->nmsgs; i++)
    free(p->msgs[i].json);
  p->nmsgs = p->sent_upto = 0;
  p->nwrites = 0;
  free(p->ents);
  p->ents = NULL;
  feed_list_free(&p->cur);
  if (p->st)
    ch_store_clear(p->st);
}

/* After an error: exponential backoff with jitter, at least Retry-After when given. A sweep
 * retries the same page. */
static void backoff(poller *p, const char *result, const char *why, uint32_t retry_after_ms) {
  uint32_t b = p->backoff_ms ? p->backoff_ms * 2 : p->interval_ms;
  if (b > p->ctx->backoff_max_ms)
    b = p->ctx->backoff_max_ms;
  if (b < 1000)
    b = 1000;
  p->backoff_ms = b;
  uint64_t delay = b / 2 + (uint64_t)rand() % (b / 2 + 1);
  if (retry_after_ms > delay)
    delay = retry_after_ms;
  qs_metric_inc(metric2(p->ctx->m->polls, p->source, result));
  qs_metric_set(metric1(p->ctx->m->backoff, p->source), (double)delay / 1000.0);
  qs_log_warn(p->ctx->log, "poll failed, backing off", QS_LSTR("source", p->source),
              QS_LSTR("url", p->url), QS_LSTR("result", result), QS_LSTR("reason", why),
              QS_LINT("page", p->page), QS_LINT("retry_in_ms", delay));
  reset_poll(p);
  release_state(p);
  p->busy = false;
  schedule(p, delay);
}

static void sweep_finish(poller *p);

static void on_wm_stored(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  p->outstanding--;
  if (status != 0 || !reply || reply->type == REDIS_REPLY_ERROR) {
    p->sweep_failed = true; /* logged by sweep_finish: the next sweep starts where this did */
  }
  sweep_finish(p);
}

static void sweep_finish(poller *p) {
  if (p->outstanding)
    return;
  int64_t now = qs_time_now_ms();
  qs_log_info(
      p->ctx->log, "sweep done", QS_LSTR("source", p->source), QS_LINT("pages", p->page + 1),
      QS_LINT("features", p->sweep_features), QS_LINT("from", p->sweep_from),
      QS_LINT("watermark", p->sweep_wm), QS_LBOOL("watermark_advanced", !p->sweep_failed),
      QS_LINT("new", p->sweep_counts[CH_NEW]), QS_LINT("revisions", p->sweep_counts[CH_REVISION]),
      QS_LINT("deleted", p->sweep_counts[CH_DELETED]),
      QS_LINT("superseded", p->sweep_counts[CH_SUPERSEDED]),
      QS_LINT("moved", p->sweep_counts[CH_MOVED]), QS_LINT("folded", p->sweep_counts[CH_FOLDED]),
      QS_LINT("duplicates", p->sweep_counts[CH_DUPLICATE]),
      QS_LINT("malformed", p->sweep_malformed), QS_LINT("sent", p->sweep_sent),
      QS_LINT("failed", p->sweep_failed_n), QS_LINT("ms", now - p->started_ms));
  if (!p->sweep_failed)
    qs_metric_set(qs_metric_series(p->ctx->m->watermark), (double)p->sweep_wm / 1000.0);
  p->sweeping = false;
  p->page = 0;
  p->busy = false;
  int64_t next = p->started_ms + p->interval_ms - now;
  schedule(p, next > 0 ? (uint64_t)next : 0);
}

static void poll_complete(poller *p) {
  if (p->outstanding > 0 || p->next_chunk < p->cur.n || p->sent_upto < p->nmsgs)
    return;
  int64_t now = qs_time_now_ms();
  size_t features = p->cur.n + p->skipped;
  /* One "poll done" line: a sweep page names its page and key, a feed poll says it was modified. */
  qs_log_field f[20];
  size_t n = 0;
  f[n++] = QS_LSTR("source", p->source);
  if (p->sweep_base) {
    f[n++] = QS_LINT("page", p->page);
    f[n++] = QS_LINT("starttime", p->req_start);
    f[n++] = QS_LINT("offset", 1 + p->req_skip);
  } else {
    f[n++] = QS_LBOOL("not_modified", false);
  }
  f[n++] = QS_LINT("features", features);
  f[n++] = QS_LINT("new", p->counts[CH_NEW]);
  f[n++] = QS_LINT("revisions", p->counts[CH_REVISION]);
  f[n++] = QS_LINT("deleted", p->counts[CH_DELETED]);
  f[n++] = QS_LINT("superseded", p->counts[CH_SUPERSEDED]);
  f[n++] = QS_LINT("moved", p->counts[CH_MOVED]);
  f[n++] = QS_LINT("folded", p->counts[CH_FOLDED]);
  f[n++] = QS_LINT("duplicates", p->counts[CH_DUPLICATE]);
  f[n++] = QS_LINT("malformed", p->skipped);
  f[n++] = QS_LINT("sent", p->n_ok);
  f[n++] = QS_LINT("failed", p->n_fail);
  f[n++] = QS_LINT("ms", now - p->started_ms);
  qs_log_write(p->ctx->log, QS_LOG_INFO, "poll done", f, n);
  reset_poll(p);
  release_state(p);
  qs_metric_set(metric1(p->ctx->m->backoff, p->source), 0);
  if (p->sweep_base) {
    for (int k = 0; k < CH_KINDS; k++)
      p->sweep_counts[k] += p->counts[k];
    p->sweep_features += features;
    p->sweep_malformed += p->skipped;
    p->sweep_sent += p->n_ok;
    p->sweep_failed_n += p->n_fail;
    if (p->n_fail)
      p->sweep_failed = true;
    if (features >= p->page_size) { /* a full page: there may be more */
      p->page++;
      p->busy = false;
      schedule(p, 0);
      return;
    }
    /* the watermark: the newest change seen, but never past the sweep's own start — a change
     * made while the sweep ran is asked for again by the next one */
    int64_t wm = p->seen_max < p->started_ms ? p->seen_max : p->started_ms;
    if (wm > p->sweep_wm)
      p->sweep_wm = wm;
    if (!p->sweep_failed) {
      char v[32];
      snprintf(v, sizeof v, "%" PRId64, p->sweep_wm);
      const char *argv[] = {"SET", "qs:ingest:fdsn:watermark", v};
      if (qs_redis_command_argv(p->ctx->redis, on_wm_stored, p, 3, argv, NULL) == 0) {
        p->outstanding++;
        return;
      }
      p->sweep_failed = true;
    }
    sweep_finish(p);
    return;
  }
  p->busy = false;
  int64_t next = p->started_ms + p->interval_ms - now;
  schedule(p, next > 0 ? (uint64_t)next : 0);
}

static void classify_next(poller *p);

static void on_marked(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  if (status != 0 || !reply || reply->type == REDIS_REPLY_ERROR) {
    qs_log_warn(p->ctx->log, "could not mark an event seen (it will be sent again)",
                QS_LSTR("source", p->source),
                QS_LSTR("reason", reply && reply->str ? reply->str : qs_strerror(status)));
    if (p->sweep_base)
      p->sweep_failed = true;
  }
  p->outstanding--;
  poll_complete(p);
}

/* Every message of entry i settled: store its records (if all were accepted). */
static void entry_settled(poller *p, size_t i) {
  pent *en = &p->ents[i];
  if (en->failed)
    return;
  char ttl[32];
  snprintf(ttl, sizeof ttl, "%" PRId64, p->ctx->dedupe_ttl_s);
  for (size_t w = en->wlo; w < en->whi; w++) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", p->seen_prefix, p->writes[w].id);
    const char *argv[] = {"SET", key, p->writes[w].val, "EX", ttl};
    int rc = qs_redis_command_argv(p->ctx->redis, on_marked, p, 5, argv, NULL);
    if (rc == 0) {
      p->outstanding++;
      continue;
    }
    if (p->sweep_base)
      p->sweep_failed = true;
    qs_log_warn(p->ctx->log, "could not mark an event seen (it will be sent again)",
                QS_LSTR("source", p->source), QS_LSTR("id", p->writes[w].id),
                QS_LSTR("reason", qs_strerror(rc)));
  }
}

static void on_sent(int status, const char *cond, const char *desc, void *ud) {
  send_ud *s = ud;
  poller *p = s->p;
  size_t i = s->entry;
  free(s);
  p->outstanding--;
  pent *en = &p->ents[i];
  if (status == 0) {
    p->n_ok++;
    qs_metric_inc(p->m_sent);
  } else {
    en->failed = true;
    p->n_fail++;
    qs_metric_inc(p->m_failed);
    if (p->n_fail <= 3)
      qs_log_warn(p->ctx->log, "event not accepted by the hub (it will be tried again)",
                  QS_LSTR("source", p->source), QS_LSTR("event_id", p->cur.v[i].id),
                  QS_LSTR("error", qs_strerror(status)), QS_LSTR("condition", cond ? cond : ""),
                  QS_LSTR("description", desc ? desc : ""));
  }
  if (--en->left == 0)
    entry_settled(p, i);
  poll_complete(p);
}

static void send_pending(poller *p) {
  while (p->sent_upto < p->nmsgs) {
    pmsg *m = &p->msgs[p->sent_upto];
    qs_eh_event_out ev = {.body = m->json, .len = m->len, .partition_key = m->key};
    send_ud *s = qs_xmalloc(sizeof *s);
    s->p = p;
    s->entry = m->entry;
    int rc = qs_eh_send(p->prod, &ev, on_sent, s);
    if (rc == QS_ERR_FULL) {
      free(s);
      p->waiting_drain = true;
      return;
    }
    free(m->json); /* the client copied it */
    m->json = NULL;
    p->sent_upto++;
    if (rc != 0) {
      free(s);
      pent *en = &p->ents[m->entry];
      en->failed = true;
      p->n_fail++;
      qs_metric_inc(p->m_failed);
      qs_log_warn(p->ctx->log, "event refused before sending", QS_LSTR("source", p->source),
                  QS_LSTR("event_id", p->cur.v[m->entry].id), QS_LSTR("error", qs_strerror(rc)));
      en->left--;
      continue;
    }
    p->outstanding++;
  }
  qs_metric_set(metric1(p->ctx->m->queue, p->source), (double)qs_eh_producer_pending(p->prod));
  p->nmsgs = p->sent_upto = 0;
  classify_next(p);
}

static void on_drain(qs_eh_producer *prod, void *ud) {
  (void)prod;
  poller *p = ud;
  if (p->waiting_drain) {
    p->waiting_drain = false;
    send_pending(p);
  }
}

/* ---- classification sink ---- */

static void sink_send(void *ud, char *json, size_t len, const char *key, ch_kind kind) {
  poller *p = ud;
  if (p->nmsgs == p->capmsgs) {
    p->capmsgs = p->capmsgs ? p->capmsgs * 2 : 64;
    p->msgs = qs_xrealloc(p->msgs, p->capmsgs * sizeof *p->msgs);
  }
  pmsg *m = &p->msgs[p->nmsgs++];
  m->entry = p->cls_entry;
  m->json = json;
  m->len = len;
  snprintf(m->key, sizeof m->key, "%s", key);
  p->ents[p->cls_entry].left++;
  if (kind == CH_SUPERSEDED || kind == CH_MOVED) { /* the event's own kind is counted after */
    p->counts[kind]++;
    qs_metric_inc(p->m_kind[kind]);
  }
}

static void sink_write(void *ud, const char *id, const ch_rec *r) {
  poller *p = ud;
  if (p->nwrites == p->capwrites) {
    p->capwrites = p->capwrites ? p->capwrites * 2 : 64;
    p->writes = qs_xrealloc(p->writes, p->capwrites * sizeof *p->writes);
  }
  prec_write *w = &p->writes[p->nwrites++];
  snprintf(w->id, sizeof w->id, "%s", id);
  ch_rec_format(r, w->val, sizeof w->val);
  p->ents[p->cls_entry].whi = p->nwrites;
}

static void count(poller *p, ch_kind k) {
  p->counts[k]++;
  qs_metric_inc(p->m_kind[k]);
}

/* Classifies the loaded chunk [next_chunk, chunk_hi) and sends its messages. */
static void classify_chunk(poller *p) {
  ch_sink sink = {.send = sink_send, .write = sink_write, .ud = p};
  p->nmsgs = p->sent_upto = 0;
  for (size_t i = p->next_chunk; i < p->chunk_hi; i++) {
    feed_entry *e = &p->cur.v[i];
    p->cls_entry = i;
    p->ents[i] = (pent){.wlo = p->nwrites, .whi = p->nwrites};
    if (!p->versioned) {
      ch_rec *r = ch_store_add(p->st, e->id);
      if (r->state) {
        count(p, CH_DUPLICATE);
        continue;
      }
      r->state = 'L';
      r->updated = e->updated;
      sink_send(p, e->json, e->len, e->region, CH_NEW);
      e->json = NULL;
      sink_write(p, e->id, r);
      count(p, CH_NEW);
      continue;
    }
    ch_kind kind;
    bool folded;
    int rc = ch_classify(p->st, e, &sink, &kind, &folded);
    if (rc) {
      p->ents[i].failed = true;
      p->n_fail++;
      qs_log_warn(p->ctx->log, "event could not be encoded (skipped)", QS_LSTR("source", p->source),
                  QS_LSTR("event_id", e->id), QS_LSTR("error", qs_strerror(rc)));
      continue;
    }
    count(p, kind);
    if (folded)
      count(p, CH_FOLDED);
  }
  /* entries with nothing to send store their records now */
  for (size_t i = p->next_chunk; i < p->chunk_hi; i++)
    if (p->ents[i].left == 0)
      entry_settled(p, i);
  p->next_chunk = p->chunk_hi;
  send_pending(p);
}

static void load_ids(poller *p);

static void loading_free(poller *p) {
  for (size_t i = 0; i < p->nload; i++)
    free(p->loading[i]);
  p->nload = 0;
}

static void on_loaded(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  p->outstanding--;
  if (status != 0 || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != p->nload) {
    loading_free(p);
    /* nothing of this chunk was sent: try the whole poll again later */
    p->next_chunk = p->cur.n;
    p->nmsgs = p->sent_upto = 0;
    if (p->outstanding == 0)
      backoff(p, "redis_unavailable",
              reply && reply->type == REDIS_REPLY_ERROR ? reply->str : qs_strerror(status), 0);
    else
      p->sweep_failed = true;
    return;
  }
  /* the reply is in the order of the keys asked for (the store's unknown placeholders) */
  size_t plen = strlen(p->seen_prefix);
  for (size_t i = 0; i < reply->elements; i++) {
    redisReply *el = reply->element[i];
    ch_rec *rec = ch_store_find(p->st, p->loading[i] + plen);
    if (rec && el->type == REDIS_REPLY_STRING && ch_rec_parse(rec, el->str, el->len) != 0)
      memset(rec, 0, sizeof *rec);
  }
  loading_free(p);
  load_ids(p);
}

/* An id the chunk needs and the store lacks: an unknown placeholder now, its key to MGET. */
static void need_id(const char *id, void *ud) {
  poller *p = ud;
  if (ch_store_find(p->st, id))
    return;
  ch_store_add(p->st, id);
  if (p->nload == p->caploading) {
    p->caploading = p->caploading ? p->caploading * 2 : 64;
    p->loading = qs_xrealloc(p->loading, p->caploading * sizeof *p->loading);
  }
  size_t n = strlen(p->seen_prefix) + strlen(id) + 1;
  p->loading[p->nload] = qs_xmalloc(n);
  snprintf(p->loading[p->nload++], n, "%s%s", p->seen_prefix, id);
}

/* Loads the records of every id the chunk needs (rounds follow association chains). */
static void load_ids(poller *p) {
  if (p->load_round++ < LOAD_ROUNDS)
    for (size_t i = p->next_chunk; i < p->chunk_hi; i++)
      ch_needed_ids(p->st, &p->cur.v[i], need_id, p);
  if (p->nload == 0) {
    classify_chunk(p);
    return;
  }
  const char **argv = qs_xmalloc((p->nload + 1) * sizeof *argv);
  argv[0] = "MGET";
  memcpy(argv + 1, p->loading, p->nload * sizeof *argv);
  int rc = qs_redis_command_argv(p->ctx->redis, on_loaded, p, (int)(p->nload + 1), argv, NULL);
  free(argv);
  if (rc != 0) {
    loading_free(p);
    p->next_chunk = p->cur.n;
    if (p->outstanding == 0)
      backoff(p, "redis_unavailable", qs_strerror(rc), 0);
    else
      p->sweep_failed = true;
    return;
  }
  p->outstanding++;
}

static void classify_next(poller *p) {
  if (p->sent_upto < p->nmsgs)
    return;
  if (p->next_chunk >= p->cur.n) {
    poll_complete(p);
    return;
  }
  p->chunk_hi = p->next_chunk + DEDUPE_CHUNK < p->cur.n ? p->next_chunk + DEDUPE_CHUNK : p->cur.n;
  p->load_round = 0;
  load_ids(p);
}

/* The parsed document is in p->cur and this poller holds the state: classify and send. */
static void process_start(poller *p) {
  memset(p->counts, 0, sizeof p->counts);
  p->n_ok = p->n_fail = 0;
  p->next_chunk = 0;
  p->ents = qs_xcalloc(p->cur.n ? p->cur.n : 1, sizeof *p->ents);
  classify_next(p);
}

/* Keyset paging: the next page starts at the origin time of this page's last feature, past the
 * features at exactly that time already seen. Unlike offsets alone, a feature that changes (its
 * time, or an association removing another) during the sweep cannot shift an unchanged one past
 * a page boundary; the changed one has a newer `updated` and is seen by the next sweep. */
static void sweep_page_keys(poller *p) {
  for (size_t i = 0; i < p->cur.n; i++)
    if (p->cur.v[i].updated > p->seen_max)
      p->seen_max = p->cur.v[i].updated;
  size_t total = p->cur.n + p->skipped;
  if (p->cur.n == 0) { /* nothing usable (all malformed): step over them, same key */
    p->page_skip += total;
    return;
  }
  const feed_entry *lastf = &p->cur.v[p->cur.n - 1];
  int64_t last = lastf->time;
  size_t at_last = 0;
  for (size_t i = p->cur.n; i > 0 && p->cur.v[i - 1].time == last; i--)
    at_last++;
  /* malformed features after the last usable one (their times are >= last: the page is in time
   * order) are stepped over too, not fetched again */
  size_t trailing = lastf->pos + 1 < total ? total - lastf->pos - 1 : 0;
  if (last == p->page_start)
    p->page_skip += at_last + trailing;
  else
    p->page_start = last, p->page_skip = at_last + trailing;
}

static uint32_t retry_after_ms(const char *v) {
  if (!v || !*v)
    return 0;
  char *end;
  long s = strtol(v, &end, 10);
  return *end == 0 && s > 0 && s < 86400 ? (uint32_t)s * 1000u : 0;
}

static void on_http(const qs_http_response *res, void *ud) {
  poller *p = ud;
  if (p->stopped) {
    p->busy = false;
    return;
  }
  qs_metric_observe(metric1(p->ctx->m->poll_seconds, p->source), res->total_s);
  char why[300];
  if (res->error) {
    snprintf(why, sizeof why, "%s", res->error_text ? res->error_text : qs_strerror(res->error));
    backoff(p, res->error == QS_ERR_TIMEOUT ? "timeout" : "network_error", why, 0);
    return;
  }
  if (res->status == 304 && !p->sweep_base) {
    qs_metric_inc(metric2(p->ctx->m->polls, p->source, "not_modified"));
    qs_log_info(p->ctx->log, "poll done", QS_LSTR("source", p->source),
                QS_LBOOL("not_modified", true), QS_LINT("features", 0), QS_LINT("new", 0),
                QS_LINT("revisions", 0), QS_LINT("duplicates", 0), QS_LINT("malformed", 0),
                QS_LINT("sent", 0), QS_LINT("failed", 0),
                QS_LINT("ms", qs_time_now_ms() - p->started_ms));
    p->backoff_ms = 0;
    p->busy = false;
    qs_metric_set(metric1(p->ctx->m->backoff, p->source), 0);
    int64_t next = p->started_ms + p->interval_ms - qs_time_now_ms();
    schedule(p, next > 0 ? (uint64_t)next : 0);
    return;
  }
  feed_list_free(&p->cur);
  p->skipped = 0;
  if (res->status == 204 && p->sweep_base) { /* FDSN: no events match */
    qs_metric_inc(metric2(p->ctx->m->polls, p->source, "ok"));
    p->backoff_ms = 0;
    if (acquire_state(p))
      process_start(p);
    return;
  }
  if (res->status != 200) {
    snprintf(why, sizeof why, "HTTP %ld", res->status);
    backoff(p, "http_error", why, retry_after_ms(res->retry_after));
    return;
  }
  int rc = p->parse(p, res->body, res->body_len, &p->cur, &p->skipped, why, sizeof why);
  if (p->skipped) {
    qs_metric_add(metric2(p->ctx->m->malformed, p->source, "feature"), (double)p->skipped);
    qs_log_warn(p->ctx->log, "malformed features skipped", QS_LSTR("source", p->source),
                QS_LINT("count", p->skipped), QS_LSTR("first", why));
  }
  if (rc != 0) {
    qs_metric_inc(metric2(p->ctx->m->malformed, p->source, "document"));
    backoff(p, "malformed", why, 0);
    return;
  }
  if (p->sweep_base)
    sweep_page_keys(p);
  /* remember the validators only for a document we could use */
  snprintf(p->etag, sizeof p->etag, "%s", res->etag);
  snprintf(p->last_modified, sizeof p->last_modified, "%s", res->last_modified);
  qs_metric_inc(metric2(p->ctx->m->polls, p->source, "ok"));
  p->backoff_ms = 0;
  if (acquire_state(p))
    process_start(p);
}

static void request(poller *p) {
  char inm[300] = "", ims[160] = "";
  const char *hdrs[4];
  size_t nh = 0;
  hdrs[nh++] = "Accept: application/geo+json, application/json";
  if (p->sweep_base) {
    char after[40];
    qs_time_format_iso8601(p->sweep_from, after, sizeof after);
    char start[40];
    qs_time_format_iso8601(p->page_start, start, sizeof start);
    p->req_start = p->page_start;
    p->req_skip = p->page_skip;
    snprintf(p->url, sizeof p->url,
             "%s/fdsnws/event/1/query?format=geojson&updatedafter=%s&includedeleted=true"
             "&orderby=time-asc&starttime=%s&limit=%" PRIu32 "&offset=%zu",
             p->sweep_base, after, start, p->page_size, 1 + p->page_skip);
  } else {
    if (p->etag[0]) {
      snprintf(inm, sizeof inm, "If-None-Match: %s", p->etag);
      hdrs[nh++] = inm;
    }
    if (p->last_modified[0]) {
      snprintf(ims, sizeof ims, "If-Modified-Since: %s", p->last_modified);
      hdrs[nh++] = ims;
    }
  }
  hdrs[nh] = NULL;
  qs_http_req req = {.url = p->url, .headers = hdrs, .timeout_ms = p->ctx->http_timeout_ms};
  int rc = qs_http_request(p->ctx->http, &req, on_http, p);
  if (rc != 0)
    backoff(p, "network_error", qs_strerror(rc), 0);
}

static void on_wm_loaded(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  if (p->stopped) {
    p->busy = false;
    return;
  }
  if (status != 0 || !reply ||
      (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
    backoff(p, "redis_unavailable",
            reply && reply->type == REDIS_REPLY_ERROR ? reply->str : qs_strerror(status), 0);
    return;
  }
  int64_t wm = 0;
  if (reply->type == REDIS_REPLY_STRING)
    wm = strtoll(reply->str, NULL, 10);
  if (wm > 0) {
    p->sweep_from = wm - p->overlap_ms;
    p->sweep_wm = wm;
  } else { /* the first sweep: FDSN_BACKFILL back */
    p->sweep_from = p->started_ms - p->backfill_ms;
    p->sweep_wm = p->sweep_from;
  }
  if (p->sweep_from < 0)
    p->sweep_from = 0;
  p->page_start = SWEEP_EPOCH_MS;
  p->page_skip = 0;
  p->seen_max = 0;
  p->sweeping = true;
  p->sweep_failed = false;
  memset(p->sweep_counts, 0, sizeof p->sweep_counts);
  p->sweep_features = p->sweep_malformed = p->sweep_sent = p->sweep_failed_n = 0;
  request(p);
}

static void on_timer(uv_timer_t *t) {
  poller *p = t->data;
  if (p->busy || p->stopped || p->ctx->stopping)
    return;
  const char *why = NULL;
  if (!qs_redis_ready(p->ctx->redis, &why)) {
    if (!p->polled_once && qs_time_now_ms() - p->opened_ms < 10000) {
      schedule(p, 100); /* just started: Redis is still connecting, not down */
      return;
    }
    p->busy = true;
    backoff(p, "redis_unavailable", why, 0);
    return;
  }
  p->polled_once = true;
  p->busy = true;
  if (p->sweep_base && !p->sweeping) {
    p->started_ms = qs_time_now_ms();
    p->page = 0;
    const char *argv[] = {"GET", "qs:ingest:fdsn:watermark"};
    if (qs_redis_command_argv(p->ctx->redis, on_wm_loaded, p, 2, argv, NULL) != 0)
      backoff(p, "redis_unavailable", "cannot send to Redis", 0);
    return;
  }
  if (!p->sweep_base)
    p->started_ms = qs_time_now_ms();
  request(p);
}

static int poller_start(poller *p, ingest_ctx *ctx, const char *source, const char *url,
                        const char *hub, uint32_t interval_ms) {
  p->ctx = ctx;
  p->source = source;
  snprintf(p->url, sizeof p->url, "%s", url);
  snprintf(p->hub, sizeof p->hub, "%s", hub);
  p->interval_ms = interval_ms;
  p->st = ch_store_new();
  p->m_sent = metric1(ctx->m->sent, source);
  p->m_failed = metric1(ctx->m->send_failed, source);
  for (int k = 0; k < CH_KINDS; k++)
    p->m_kind[k] = metric2(ctx->m->events, source, ch_kind_names[k]);
  qs_eh_producer_opts po = {.hub = p->hub, .partition = -1, .queue_max = ctx->queue_max};
  int rc = qs_eh_producer_open(ctx->eh, &po, &p->prod);
  if (rc != 0)
    return rc;
  qs_eh_producer_on_drain(p->prod, on_drain, p);
  p->opened_ms = qs_time_now_ms();
  uv_timer_init(ctx->loop, &p->timer);
  p->timer.data = p;
  p->timer_open = true;
  uv_timer_start(&p->timer, on_timer, 0, 0);
  return 0;
}

static void poller_stop(poller *p) {
  p->stopped = true;
  if (p->ctx && p->ctx->state_waiter == p)
    p->ctx->state_waiter = NULL;
  if (p->timer_open) {
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    p->timer_open = false;
  }
}

static void poller_free(poller *p) {
  for (size_t i = p->sent_upto; i < p->nmsgs; i++)
    free(p->msgs[i].json);
  free(p->msgs);
  free(p->writes);
  loading_free(p);
  free(p->loading);
  free(p->ents);
  feed_list_free(&p->cur);
  ch_store_free(p->st);
}

/* ---- USGS ---- */

static int usgs_parse(poller *p, const char *doc, size_t len, feed_list *out, size_t *skipped,
                      char *why, size_t whylen) {
  return feed_list_parse(out, doc, len, p->ctx->regions, p->source, qs_time_now_ms(), skipped, why,
                         whylen);
}

int usgs_source_start(usgs_source **out, ingest_ctx *ctx, const char *url, const char *hub,
                      uint32_t interval_ms, const usgs_sweep_opts *sw) {
  usgs_source *s = qs_xcalloc(1, sizeof *s);
  s->feed.parse = usgs_parse;
  s->feed.seen_prefix = "qs:ingest:seen:";
  s->feed.versioned = true;
  int rc = poller_start(&s->feed, ctx, "usgs", url, hub, interval_ms);
  if (rc == 0 && sw && sw->interval_ms > 0) {
    s->has_sweep = true;
    s->sweep.parse = usgs_parse;
    s->sweep.seen_prefix = "qs:ingest:seen:";
    s->sweep.versioned = true;
    s->sweep.sweep_base = sw->base_url;
    s->sweep.backfill_ms = sw->backfill_ms;
    s->sweep.overlap_ms = sw->overlap_ms;
    s->sweep.page_size = sw->page_size;
    rc = poller_start(&s->sweep, ctx, "fdsn", sw->base_url, hub, sw->interval_ms);
  }
  if (rc != 0) {
    usgs_source_stop(s);
    usgs_source_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void usgs_source_stop(usgs_source *s) {
  poller_stop(&s->feed);
  if (s->has_sweep)
    poller_stop(&s->sweep);
}

void usgs_source_free(usgs_source *s) {
  if (!s)
    return;
  poller_free(&s->feed);
  poller_free(&s->sweep);
  free(s);
}

/* ---- weather.gov ---- */

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

int weather_parse(const char *doc, size_t len, feed_list *out, int64_t ingested_at, size_t *skipped,
                  char *why, size_t whylen) {
  *skipped = 0;
  cJSON *root = cJSON_ParseWithLength(doc, len);
  if (!root) {
    qs_set_reason(why, whylen, "not JSON");
    return QS_ERR_PARSE;
  }
  const cJSON *features = cJSON_GetObjectItemCaseSensitive(root, "features");
  if (!cJSON_IsArray(features)) {
    qs_set_reason(why, whylen, "no features array");
    cJSON_Delete(root);
    return QS_ERR_INVALID;
  }
  size_t idx = 0;
  const cJSON *f;
  cJSON_ArrayForEach(f, features) {
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(f, "properties");
    const char *id = jstr(pr, "id"), *event = jstr(pr, "event");
    if (!cJSON_IsObject(pr) || !id || !*id || strlen(id) > 255 || !event) {
      if (*skipped == 0)
        qs_set_reason(why, whylen, "feature %zu: missing properties.id or properties.event", idx);
      (*skipped)++;
      idx++;
      continue;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "event", event);
    static const char *const opt[][2] = {{"severity", "severity"},
                                         {"headline", "headline"},
                                         {"areaDesc", "area"},
                                         {"onset", "onset"},
                                         {"expires", "expires"}};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
      const char *v = jstr(pr, opt[i][0]);
      if (v)
        cJSON_AddStringToObject(o, opt[i][1], v);
      else
        cJSON_AddNullToObject(o, opt[i][1]);
    }
    cJSON_AddStringToObject(o, "source", "weather.gov");
    cJSON_AddNumberToObject(o, "ingested_at", (double)ingested_at);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (out->n == out->cap) {
      out->cap = out->cap ? out->cap * 2 : 64;
      out->v = qs_xrealloc(out->v, out->cap * sizeof *out->v);
    }
    feed_entry *e = &out->v[out->n++];
    memset(e, 0, sizeof *e);
    /* dedupe keys are ids: keep the part after the last '/' or ':' of long URNs bounded */
    snprintf(e->id, sizeof e->id, "%.*s", (int)sizeof e->id - 1,
             strlen(id) > QS_EVENT_ID_MAX ? id + strlen(id) - QS_EVENT_ID_MAX : id);
    snprintf(e->region, sizeof e->region, "%.*s", (int)sizeof e->region - 1, event);
    e->updated = 1;
    e->json = js;
    e->len = strlen(js);
    idx++;
  }
  cJSON_Delete(root);
  return 0;
}

static int weather_parse_cb(poller *p, const char *doc, size_t len, feed_list *out, size_t *skipped,
                            char *why, size_t whylen) {
  (void)p;
  return weather_parse(doc, len, out, qs_time_now_ms(), skipped, why, whylen);
}

int weather_source_start(weather_source **out, ingest_ctx *ctx, const char *url, const char *area,
                         const char *hub, uint32_t interval_ms) {
  weather_source *s = qs_xcalloc(1, sizeof *s);
  s->p.parse = weather_parse_cb;
  s->p.seen_prefix = "qs:ingest:weather:";
  s->p.versioned = false;
  char full[2048];
  if (area && *area)
    snprintf(full, sizeof full, "%s%sarea=%s", url, strchr(url, '?') ? "&" : "?", area);
  else
    snprintf(full, sizeof full, "%s", url);
  int rc = poller_start(&s->p, ctx, "weather", full, hub, interval_ms);
  if (rc != 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void weather_source_stop(weather_source *s) { poller_stop(&s->p); }
void weather_source_free(weather_source *s) {
  if (!s)
    return;
  poller_free(&s->p);
  free(s);
}
