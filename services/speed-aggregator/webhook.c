/* webhook.c — alert POSTs with retries (see webhook.h). Jobs wait in one FIFO list with the time
 * they are due; one timer drives retries and the start of queued jobs. */
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"

struct sa_webhook_job {
  sa_webhook_job *next;
  sa_webhook *w;
  uint64_t due; /* uv_now ms */
  int attempts;
  size_t len;
  char body[];
};

static void pump(sa_webhook *w);

int sa_webhook_init(sa_webhook *w, uv_loop_t *loop, qs_log *log, qs_metrics *metrics,
                    const sa_webhook_opts *o) {
  memset(w, 0, sizeof *w);
  w->loop = loop;
  w->log = log;
  w->o = *o;
  snprintf(w->url, sizeof w->url, "%s", o->url);
  w->o.url = w->url;
  if (!w->o.queue_max)
    w->o.queue_max = 1000;
  if (w->o.max_attempts <= 0)
    w->o.max_attempts = 6;
  if (!w->o.timeout_ms)
    w->o.timeout_ms = 5000;
  if (!w->o.backoff_min_ms)
    w->o.backoff_min_ms = 500;
  if (!w->o.backoff_max_ms)
    w->o.backoff_max_ms = 30000;
  if (!w->o.concurrency)
    w->o.concurrency = 4;
  w->rng = uv_hrtime() | 1;
  qs_http_opts ho = {.user_agent = "quakestream-speed", .max_response_bytes = 64 * 1024};
  int rc = qs_http_init(&w->http, loop, &ho);
  if (rc != 0)
    return rc;
  uv_timer_init(loop, &w->timer);
  w->timer.data = w;
  static const char *const result[] = {"result", NULL};
  qs_metric_family *f = qs_metrics_counter(metrics, "quakestream_speed_webhook_posts_total",
                                           "alert webhook deliveries by final result", result);
  w->m_sent = qs_metric_get(f, (const char *const[]){"delivered"});
  w->m_failed = qs_metric_get(f, (const char *const[]){"failed"});
  w->m_dropped = qs_metric_get(f, (const char *const[]){"dropped_queue_full"});
  w->m_retries = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_speed_webhook_retries_total", "alert webhook attempts retried", NULL));
  w->m_queue = qs_metric_series(qs_metrics_gauge(metrics, "quakestream_speed_webhook_queue",
                                                 "alerts waiting for the webhook", NULL));
  return 0;
}

static uint64_t jitter(sa_webhook *w, uint64_t ms) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return ms / 2 + (ms > 1 ? w->rng % (ms / 2 + 1) : 0); /* in [ms/2, ms] */
}

static void enqueue(sa_webhook *w, sa_webhook_job *j) {
  j->next = NULL;
  if (w->tail)
    w->tail->next = j;
  else
    w->head = j;
  w->tail = j;
}

size_t sa_webhook_pending(const sa_webhook *w) { return w->queued + w->inflight; }

static void maybe_closed(sa_webhook *w);

static void on_response(const qs_http_response *res, void *ud) {
  sa_webhook_job *j = ud;
  sa_webhook *w = j->w;
  w->inflight--;
  j->attempts++;
  bool ok = res->error == 0 && res->status >= 200 && res->status < 300;
  bool retry = !ok && res->error != QS_ERR_CLOSED &&
               (res->error != 0 || res->status == 408 || res->status == 429 || res->status >= 500);
  if (ok) {
    qs_metric_inc(w->m_sent);
    free(j);
  } else if (retry && j->attempts < w->o.max_attempts && !w->closing) {
    qs_metric_inc(w->m_retries);
    uint64_t b = w->o.backoff_min_ms;
    for (int i = 1; i < j->attempts && b < w->o.backoff_max_ms; i++)
      b *= 2;
    if (b > w->o.backoff_max_ms)
      b = w->o.backoff_max_ms;
    j->due = uv_now(w->loop) + jitter(w, b);
    enqueue(w, j);
    w->queued++;
  } else {
    qs_metric_inc(w->m_failed);
    qs_log_warn(w->log, "alert webhook gave up", QS_LINT("attempts", j->attempts),
                QS_LINT("status", (int64_t)res->status),
                QS_LSTR("error", res->error ? res->error_text : "http status"));
    free(j);
  }
  qs_metric_set(w->m_queue, (double)w->queued);
  if (w->closing)
    maybe_closed(w);
  else
    pump(w);
}

static void on_timer(uv_timer_t *t) { pump(t->data); }

/* Starts every due job while there is room; re-arms the timer for the earliest not due. */
static void pump(sa_webhook *w) {
  uint64_t now = uv_now(w->loop), next = UINT64_MAX;
  sa_webhook_job **pp = &w->head, *prev = NULL;
  while (*pp && w->inflight < w->o.concurrency) {
    sa_webhook_job *j = *pp;
    if (j->due > now) {
      if (j->due < next)
        next = j->due;
      prev = j;
      pp = &j->next;
      continue;
    }
    *pp = j->next;
    if (w->tail == j)
      w->tail = prev;
    w->queued--;
    static const char *const headers[] = {"Content-Type: application/json", NULL};
    qs_http_req req = {.method = "POST",
                       .url = w->url,
                       .headers = headers,
                       .body = j->body,
                       .body_len = j->len,
                       .timeout_ms = w->o.timeout_ms};
    if (qs_http_request(w->http, &req, on_response, j) == 0) {
      w->inflight++;
    } else {
      qs_metric_inc(w->m_failed);
      free(j);
    }
  }
  qs_metric_set(w->m_queue, (double)w->queued);
  if (next != UINT64_MAX && !w->closing)
    uv_timer_start(&w->timer, on_timer, next - now, 0);
}

int sa_webhook_post(sa_webhook *w, const char *json, size_t len) {
  if (w->closing)
    return QS_ERR_CLOSED;
  if (w->queued >= w->o.queue_max) {
    qs_metric_inc(w->m_dropped);
    return QS_ERR_FULL;
  }
  sa_webhook_job *j = qs_xmalloc(sizeof *j + len + 1);
  j->w = w;
  j->attempts = 0;
  j->due = 0;
  j->len = len;
  memcpy(j->body, json, len);
  j->body[len] = '\0';
  enqueue(w, j);
  w->queued++;
  pump(w);
  return 0;
}

static void part_closed(sa_webhook *w) {
  if (--w->open_parts == 0 && w->closed_cb)
    w->closed_cb(w->closed_ud);
}

static void on_http_closed(void *ud) { part_closed(ud); }

static void on_timer_closed(uv_handle_t *h) { part_closed(h->data); }

static void abandon_all(sa_webhook *w) {
  while (w->head) {
    sa_webhook_job *j = w->head;
    w->head = j->next;
    qs_metric_inc(w->m_failed);
    free(j);
  }
  w->tail = NULL;
  w->queued = 0;
}

static void finish_close(sa_webhook *w) {
  if (w->open_parts)
    return;
  abandon_all(w);
  w->open_parts = 2;
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, on_timer_closed);
  qs_http_close(w->http, on_http_closed, w);
}

static void maybe_closed(sa_webhook *w) {
  if (w->closing && w->inflight == 0 && w->queued == 0)
    finish_close(w);
}

static void on_grace(uv_timer_t *t) { finish_close(t->data); }

void sa_webhook_close(sa_webhook *w, uint32_t grace_ms, void (*cb)(void *ud), void *ud) {
  w->closing = true;
  w->closed_cb = cb;
  w->closed_ud = ud;
  /* Jobs waiting for a retry are abandoned now; first attempts get the grace period. */
  sa_webhook_job **pp = &w->head, *prev = NULL;
  while (*pp) {
    sa_webhook_job *j = *pp;
    if (j->attempts > 0) {
      *pp = j->next;
      if (w->tail == j)
        w->tail = prev;
      w->queued--;
      qs_metric_inc(w->m_failed);
      free(j);
      continue;
    }
    j->due = 0;
    prev = j;
    pp = &j->next;
  }
  pump(w);
  if (w->inflight == 0 && w->queued == 0) {
    finish_close(w);
    return;
  }
  uv_timer_start(&w->timer, on_grace, grace_ms, 0);
}
