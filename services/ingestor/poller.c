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

#define DEDUPE_CHUNK 500

typedef struct poller poller;
typedef int (*parse_fn)(poller *p, const char *doc, size_t len, feed_list *out, size_t *skipped,
                        char *why, size_t whylen);

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
  bool versioned; /* USGS: `updated` decides new / revision / duplicate */
  /* the poll in progress */
  bool busy, stopped;
  int64_t started_ms;
  feed_list cur;
  size_t next_chunk; /* first entry not yet deduped */
  size_t *to_send;   /* entry indexes of the current chunk to send */
  size_t nsend, sent_upto;
  size_t outstanding; /* sends not yet settled + Redis requests in flight */
  size_t n_new, n_rev, n_dup, n_ok, n_fail, skipped;
  bool waiting_drain;
  /* series touched once per event, looked up once */
  qs_metric *m_sent, *m_failed, *m_new, *m_rev, *m_dup;
};

struct usgs_source {
  poller p;
};
struct weather_source {
  poller p;
};

typedef struct send_ud {
  poller *p;
  size_t idx;
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

static void schedule(poller *p, uint64_t delay_ms) {
  if (!p->stopped && p->timer_open)
    uv_timer_start(&p->timer, on_timer, delay_ms, 0);
}

/* After an error: exponential backoff with jitter, at least Retry-After when given. */
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
              QS_LINT("retry_in_ms", delay));
  p->busy = false;
  schedule(p, delay);
}

static void poll_complete(poller *p) {
  if (p->outstanding > 0 || p->next_chunk < p->cur.n || p->sent_upto < p->nsend)
    return;
  int64_t now = qs_time_now_ms();
  qs_log_info(p->ctx->log, "poll done", QS_LSTR("source", p->source),
              QS_LBOOL("not_modified", false), QS_LINT("features", p->cur.n + p->skipped),
              QS_LINT("new", p->n_new), QS_LINT("revisions", p->n_rev),
              QS_LINT("duplicates", p->n_dup), QS_LINT("malformed", p->skipped),
              QS_LINT("sent", p->n_ok), QS_LINT("failed", p->n_fail),
              QS_LINT("ms", now - p->started_ms));
  feed_list_free(&p->cur);
  free(p->to_send);
  p->to_send = NULL;
  p->nsend = p->sent_upto = 0;
  p->busy = false;
  qs_metric_set(metric1(p->ctx->m->backoff, p->source), 0);
  int64_t next = p->started_ms + p->interval_ms - now;
  schedule(p, next > 0 ? (uint64_t)next : 0);
}

static void dedupe_next(poller *p);

static void on_marked(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  if (status != 0 || !reply || reply->type == REDIS_REPLY_ERROR)
    qs_log_warn(p->ctx->log, "could not mark an event seen (it will be sent again)",
                QS_LSTR("source", p->source),
                QS_LSTR("reason", reply && reply->str ? reply->str : qs_strerror(status)));
  p->outstanding--;
  poll_complete(p);
}

static void on_sent(int status, const char *cond, const char *desc, void *ud) {
  send_ud *s = ud;
  poller *p = s->p;
  feed_entry *e = &p->cur.v[s->idx];
  free(s);
  p->outstanding--;
  if (status == 0) {
    p->n_ok++;
    qs_metric_inc(p->m_sent);
    char key[256], val[32];
    snprintf(key, sizeof key, "%s%s", p->seen_prefix, e->id);
    snprintf(val, sizeof val, "%" PRId64, e->updated);
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%" PRId64, p->ctx->dedupe_ttl_s);
    const char *argv[] = {"SET", key, val, "EX", ttl};
    if (qs_redis_command_argv(p->ctx->redis, on_marked, p, 5, argv, NULL) == 0)
      p->outstanding++;
  } else {
    p->n_fail++;
    qs_metric_inc(p->m_failed);
    if (p->n_fail <= 3)
      qs_log_warn(p->ctx->log, "event not accepted by the hub (it will be tried again)",
                  QS_LSTR("source", p->source), QS_LSTR("event_id", e->id),
                  QS_LSTR("error", qs_strerror(status)), QS_LSTR("condition", cond ? cond : ""),
                  QS_LSTR("description", desc ? desc : ""));
  }
  poll_complete(p);
}

static void send_pending(poller *p) {
  while (p->sent_upto < p->nsend) {
    size_t idx = p->to_send[p->sent_upto];
    feed_entry *e = &p->cur.v[idx];
    qs_eh_event_out ev = {.body = e->json, .len = e->len, .partition_key = e->region};
    send_ud *s = qs_xmalloc(sizeof *s);
    s->p = p;
    s->idx = idx;
    int rc = qs_eh_send(p->prod, &ev, on_sent, s);
    if (rc == QS_ERR_FULL) {
      free(s);
      p->waiting_drain = true;
      return;
    }
    p->sent_upto++;
    if (rc != 0) {
      free(s);
      p->n_fail++;
      qs_metric_inc(p->m_failed);
      qs_log_warn(p->ctx->log, "event refused before sending", QS_LSTR("source", p->source),
                  QS_LSTR("event_id", e->id), QS_LSTR("error", qs_strerror(rc)));
      continue;
    }
    p->outstanding++;
  }
  qs_metric_set(metric1(p->ctx->m->queue, p->source), (double)qs_eh_producer_pending(p->prod));
  dedupe_next(p);
}

static void on_drain(qs_eh_producer *prod, void *ud) {
  (void)prod;
  poller *p = ud;
  if (p->waiting_drain) {
    p->waiting_drain = false;
    send_pending(p);
  }
}

static void set_revision(qs_event *ev, void *ud) {
  (void)ud;
  ev->change = QS_EVENT_REVISION;
}

static void on_mget(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  poller *p = ud;
  p->outstanding--;
  size_t lo = p->next_chunk, hi = lo + DEDUPE_CHUNK < p->cur.n ? lo + DEDUPE_CHUNK : p->cur.n;
  if (status != 0 || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != hi - lo) {
    /* nothing of this poll was sent past this point: try the whole poll again later */
    p->next_chunk = p->cur.n;
    p->nsend = p->sent_upto = 0;
    if (p->outstanding == 0) {
      feed_list_free(&p->cur);
      backoff(p, "redis_unavailable",
              reply && reply->type == REDIS_REPLY_ERROR ? reply->str : qs_strerror(status), 0);
    }
    return;
  }
  free(p->to_send);
  p->to_send = qs_xmalloc((hi - lo) * sizeof *p->to_send);
  p->nsend = p->sent_upto = 0;
  for (size_t i = lo; i < hi; i++) {
    redisReply *el = reply->element[i - lo];
    feed_entry *e = &p->cur.v[i];
    if (el->type != REDIS_REPLY_STRING) {
      p->n_new++;
      qs_metric_inc(p->m_new);
    } else if (p->versioned && strtoll(el->str, NULL, 10) < e->updated) {
      p->n_rev++;
      qs_metric_inc(p->m_rev);
      feed_entry_rewrite(e, set_revision, NULL); /* same event, change = "revision" */
    } else {
      p->n_dup++;
      qs_metric_inc(p->m_dup);
      continue;
    }
    p->to_send[p->nsend++] = i;
  }
  p->next_chunk = hi;
  send_pending(p);
}

static void dedupe_next(poller *p) {
  if (p->sent_upto < p->nsend)
    return;
  if (p->next_chunk >= p->cur.n) {
    poll_complete(p);
    return;
  }
  size_t lo = p->next_chunk, hi = lo + DEDUPE_CHUNK < p->cur.n ? lo + DEDUPE_CHUNK : p->cur.n;
  const char **argv = qs_xmalloc((hi - lo + 1) * sizeof *argv);
  char **keys = qs_xmalloc((hi - lo) * sizeof *keys);
  argv[0] = "MGET";
  for (size_t i = lo; i < hi; i++) {
    size_t n = strlen(p->seen_prefix) + strlen(p->cur.v[i].id) + 1;
    keys[i - lo] = qs_xmalloc(n);
    snprintf(keys[i - lo], n, "%s%s", p->seen_prefix, p->cur.v[i].id);
    argv[i - lo + 1] = keys[i - lo];
  }
  int rc = qs_redis_command_argv(p->ctx->redis, on_mget, p, (int)(hi - lo + 1), argv, NULL);
  for (size_t i = 0; i < hi - lo; i++)
    free(keys[i]);
  free(keys);
  free(argv);
  if (rc != 0) {
    p->next_chunk = p->cur.n;
    if (p->outstanding == 0) {
      feed_list_free(&p->cur);
      backoff(p, "redis_unavailable", qs_strerror(rc), 0);
    }
    return;
  }
  p->outstanding++;
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
  if (res->status == 304) {
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
  if (res->status != 200) {
    snprintf(why, sizeof why, "HTTP %ld", res->status);
    backoff(p, "http_error", why, retry_after_ms(res->retry_after));
    return;
  }
  feed_list_free(&p->cur);
  p->skipped = 0;
  int rc = p->parse(p, res->body, res->body_len, &p->cur, &p->skipped, why, sizeof why);
  if (p->skipped) {
    qs_metric_add(metric2(p->ctx->m->malformed, p->source, "feature"), (double)p->skipped);
    qs_log_warn(p->ctx->log, "malformed features skipped", QS_LSTR("source", p->source),
                QS_LINT("count", p->skipped), QS_LSTR("first", why));
  }
  if (rc != 0) {
    qs_metric_inc(metric2(p->ctx->m->malformed, p->source, "document"));
    feed_list_free(&p->cur);
    backoff(p, "malformed", why, 0);
    return;
  }
  /* remember the validators only for a document we could use */
  snprintf(p->etag, sizeof p->etag, "%s", res->etag);
  snprintf(p->last_modified, sizeof p->last_modified, "%s", res->last_modified);
  qs_metric_inc(metric2(p->ctx->m->polls, p->source, "ok"));
  p->backoff_ms = 0;
  p->n_new = p->n_rev = p->n_dup = p->n_ok = p->n_fail = 0;
  p->next_chunk = 0;
  dedupe_next(p);
}

static void on_timer(uv_timer_t *t) {
  poller *p = t->data;
  if (p->busy || p->stopped || p->ctx->stopping)
    return;
  const char *why = NULL;
  if (!qs_redis_ready(p->ctx->redis, &why)) {
    p->busy = true;
    backoff(p, "redis_unavailable", why, 0);
    return;
  }
  p->busy = true;
  p->started_ms = qs_time_now_ms();
  char inm[300] = "", ims[160] = "";
  const char *hdrs[4];
  size_t nh = 0;
  hdrs[nh++] = "Accept: application/geo+json, application/json";
  if (p->etag[0]) {
    snprintf(inm, sizeof inm, "If-None-Match: %s", p->etag);
    hdrs[nh++] = inm;
  }
  if (p->last_modified[0]) {
    snprintf(ims, sizeof ims, "If-Modified-Since: %s", p->last_modified);
    hdrs[nh++] = ims;
  }
  hdrs[nh] = NULL;
  qs_http_req req = {.url = p->url, .headers = hdrs, .timeout_ms = p->ctx->http_timeout_ms};
  int rc = qs_http_request(p->ctx->http, &req, on_http, p);
  if (rc != 0)
    backoff(p, "network_error", qs_strerror(rc), 0);
}

static int poller_start(poller *p, ingest_ctx *ctx, const char *source, const char *url,
                        const char *hub, uint32_t interval_ms) {
  p->ctx = ctx;
  p->source = source;
  snprintf(p->url, sizeof p->url, "%s", url);
  snprintf(p->hub, sizeof p->hub, "%s", hub);
  p->interval_ms = interval_ms;
  p->m_sent = metric1(ctx->m->sent, source);
  p->m_failed = metric1(ctx->m->send_failed, source);
  p->m_new = metric2(ctx->m->events, source, "new");
  p->m_rev = metric2(ctx->m->events, source, "revision");
  p->m_dup = metric2(ctx->m->events, source, "duplicate");
  qs_eh_producer_opts po = {.hub = p->hub, .partition = -1, .queue_max = ctx->queue_max};
  int rc = qs_eh_producer_open(ctx->eh, &po, &p->prod);
  if (rc != 0)
    return rc;
  qs_eh_producer_on_drain(p->prod, on_drain, p);
  uv_timer_init(ctx->loop, &p->timer);
  p->timer.data = p;
  p->timer_open = true;
  uv_timer_start(&p->timer, on_timer, 0, 0);
  return 0;
}

static void poller_stop(poller *p) {
  p->stopped = true;
  if (p->timer_open) {
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    p->timer_open = false;
  }
}

static void poller_free(poller *p) {
  feed_list_free(&p->cur);
  free(p->to_send);
}

/* ---- USGS ---- */

static int usgs_parse(poller *p, const char *doc, size_t len, feed_list *out, size_t *skipped,
                      char *why, size_t whylen) {
  return feed_list_parse(out, doc, len, p->ctx->regions, "usgs", qs_time_now_ms(), skipped, why,
                         whylen);
}

int usgs_source_start(usgs_source **out, ingest_ctx *ctx, const char *url, const char *hub,
                      uint32_t interval_ms) {
  usgs_source *s = qs_xcalloc(1, sizeof *s);
  s->p.parse = usgs_parse;
  s->p.seen_prefix = "qs:ingest:seen:";
  s->p.versioned = true;
  int rc = poller_start(&s->p, ctx, "usgs", url, hub, interval_ms);
  if (rc != 0) {
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void usgs_source_stop(usgs_source *s) { poller_stop(&s->p); }
void usgs_source_free(usgs_source *s) {
  if (!s)
    return;
  poller_free(&s->p);
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
