/* click.c — simulated clickstream: page/action events at CLICKSTREAM_RATE per second to the
 * clickstream hub, keyed by session (for load). Ticks every 100 ms; when the hub client pushes
 * back, the tick's events are dropped and counted rather than queued without bound. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/timeutil.h"

#include "ingest.h"

struct click_source {
  ingest_ctx *ctx;
  qs_eh_producer *prod;
  uv_timer_t timer;
  double rate, carry;
  uint64_t rng, seq;
  qs_metric *sent, *failed, *dropped;
};

static uint64_t next_rand(click_source *s) {
  uint64_t x = s->rng;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  return s->rng = x;
}

static void on_ack(int status, const char *cond, const char *desc, void *ud) {
  (void)cond, (void)desc;
  click_source *s = ud;
  qs_metric_inc(status == 0 ? s->sent : s->failed);
}

static void on_tick(uv_timer_t *t) {
  click_source *s = t->data;
  static const char *const pages[] = {
      "/", "/map", "/events", "/alerts", "/region/japan", "/region/us-west", "/about"};
  static const char *const actions[] = {"view", "click", "scroll", "share", "subscribe"};
  s->carry += s->rate / 10.0;
  long n = (long)s->carry;
  s->carry -= (double)n;
  int64_t now = qs_time_now_ms();
  for (long i = 0; i < n; i++) {
    uint64_t r = next_rand(s);
    char session[24], body[256];
    snprintf(session, sizeof session, "s%04" PRIu64, r % 5000);
    int len = snprintf(
        body, sizeof body,
        "{\"event_id\":\"c%" PRIu64 "\",\"session_id\":\"%s\",\"user_id\":\"u%05" PRIu64
        "\",\"page\":\"%s\",\"action\":\"%s\",\"ts\":%" PRId64 "}",
        ++s->seq, session, (r >> 16) % 20000, pages[(r >> 32) % 7], actions[(r >> 40) % 5], now);
    qs_eh_event_out ev = {.body = body, .len = (size_t)len, .partition_key = session};
    int rc = qs_eh_send(s->prod, &ev, on_ack, s);
    if (rc != 0) {
      qs_metric_add(s->dropped, (double)(n - i));
      break;
    }
  }
}

int click_source_start(click_source **out, ingest_ctx *ctx, const char *hub, double rate) {
  click_source *s = qs_xcalloc(1, sizeof *s);
  s->ctx = ctx;
  s->rate = rate;
  s->rng = (uint64_t)uv_hrtime() | 1;
  qs_eh_producer_opts po = {.hub = hub, .partition = -1, .queue_max = ctx->queue_max};
  int rc = qs_eh_producer_open(ctx->eh, &po, &s->prod);
  if (rc != 0) {
    free(s);
    return rc;
  }
  s->sent = qs_metric_get(ctx->m->sent, (const char *[]){"clickstream"});
  s->failed = qs_metric_get(ctx->m->send_failed, (const char *[]){"clickstream"});
  s->dropped = qs_metric_get(ctx->m->dropped, (const char *[]){"clickstream"});
  uv_timer_init(ctx->loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_tick, 100, 100);
  *out = s;
  return 0;
}

void click_source_stop(click_source *s) {
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, NULL);
}

void click_source_free(click_source *s) { free(s); }
