/* webhook.h — POSTs alerts (their JSON as stored in qs:alerts) to ALERT_WEBHOOK_URL with
 * qs_http: a bounded queue (when full the new alert is dropped and counted: alerts are stored in
 * Redis and pushed live regardless), a few POSTs in flight, retries with exponential backoff and
 * jitter on network errors, timeouts, 408, 429 and 5xx; any other status is final. Delivery is
 * at most once per stored alert (an alert whose commit succeeded but whose POST was still queued
 * when the process died is not re-sent).
 */
#ifndef SA_WEBHOOK_H
#define SA_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "qs/http_client.h"
#include "qs/log.h"
#include "qs/metrics.h"

typedef struct sa_webhook_opts {
  const char *url;
  size_t queue_max;        /* default 1000 */
  int max_attempts;        /* default 6 */
  uint32_t timeout_ms;     /* per attempt; default 5000 */
  uint32_t backoff_min_ms; /* default 500, doubled per attempt */
  uint32_t backoff_max_ms; /* default 30000 */
  size_t concurrency;      /* POSTs in flight; default 4 */
} sa_webhook_opts;

typedef struct sa_webhook_job sa_webhook_job;

typedef struct sa_webhook {
  uv_loop_t *loop;
  qs_log *log;
  sa_webhook_opts o;
  char url[2048];
  qs_http *http;
  sa_webhook_job *head, *tail; /* waiting (for their turn or their backoff) */
  size_t queued, inflight;
  uv_timer_t timer;
  bool closing;
  uint64_t rng;
  void (*closed_cb)(void *ud);
  void *closed_ud;
  int open_parts;
  qs_metric *m_sent, *m_failed, *m_dropped, *m_retries, *m_queue;
} sa_webhook;

int sa_webhook_init(sa_webhook *w, uv_loop_t *loop, qs_log *log, qs_metrics *metrics,
                    const sa_webhook_opts *o);
/* Queues one alert; QS_ERR_FULL (dropped, counted) when the queue is full. */
int sa_webhook_post(sa_webhook *w, const char *json, size_t len);
size_t sa_webhook_pending(const sa_webhook *w);
/* Waits up to grace_ms for what is queued, then abandons the rest; cb when closed. */
void sa_webhook_close(sa_webhook *w, uint32_t grace_ms, void (*cb)(void *ud), void *ud);

#endif
