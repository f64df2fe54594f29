/* redis.c — async Redis client on libuv with reconnect and readiness
 * (see qs/redis.h).
 *
 * Invariants: r->ac is non-NULL only between a connect attempt and its
 * failure/disconnect callback; every accepted request owes exactly one
 * callback (r->pending counts them); hiredis fails queued requests with a
 * NULL reply when it frees a context, and requests made while no context
 * exists are failed from fail_timer on the next loop turn (never
 * re-entrantly). Close finishes only after the context is gone and the three
 * timers are closed.
 */
#include "qs/redis.h"

#include "qs/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* libuv event glue for hiredis. Same as <hiredis/adapters/libuv.h> from
 * hiredis 0.14 except that a poll error (libuv reports POLLERR, e.g. a refused
 * non-blocking connect, as status UV_EBADF and stops the handle) is passed to
 * hiredis as a write event, so it checks SO_ERROR and fails the connection;
 * the stock adapter drops it and the context would hang forever. */
typedef struct qs_redis_ev {
  redisAsyncContext *context;
  uv_poll_t handle;
  int events;
} qs_redis_ev;

static void ev_poll(uv_poll_t *handle, int status, int events) {
  qs_redis_ev *p = handle->data;
  if (status != 0) {
    if (p->context)
      redisAsyncHandleWrite(p->context);
    if (p->context)
      redisAsyncHandleRead(p->context);
    return;
  }
  if (p->context && (events & UV_READABLE))
    redisAsyncHandleRead(p->context);
  if (p->context && (events & UV_WRITABLE))
    redisAsyncHandleWrite(p->context);
}

static void ev_update(qs_redis_ev *p) {
  if (p->events)
    uv_poll_start(&p->handle, p->events, ev_poll);
  else
    uv_poll_stop(&p->handle);
}

static void ev_add_read(void *d) {
  qs_redis_ev *p = d;
  p->events |= UV_READABLE;
  ev_update(p);
}

static void ev_del_read(void *d) {
  qs_redis_ev *p = d;
  p->events &= ~UV_READABLE;
  ev_update(p);
}

static void ev_add_write(void *d) {
  qs_redis_ev *p = d;
  p->events |= UV_WRITABLE;
  ev_update(p);
}

static void ev_del_write(void *d) {
  qs_redis_ev *p = d;
  p->events &= ~UV_WRITABLE;
  ev_update(p);
}

static void ev_closed(uv_handle_t *h) { free(h->data); }

static void ev_cleanup(void *d) {
  qs_redis_ev *p = d;
  p->context = NULL;
  uv_close((uv_handle_t *)&p->handle, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  if (ac->ev.data)
    return REDIS_ERR;
  qs_redis_ev *p = qs_xcalloc(1, sizeof *p);
  if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
    free(p);
    return REDIS_ERR;
  }
  p->handle.data = p;
  p->context = ac;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  ac->ev.data = p;
  return REDIS_OK;
}

struct qs_redis_req {
  qs_redis *r;
  qs_redis_cb cb;
  void *ud;
  struct qs_redis_req *next;
};

static void set_err(char *err, size_t len, const char *msg) {
  if (err && len)
    snprintf(err, len, "%s", msg);
}

int qs_redis_url_parse(qs_redis_url *u, const char *url, char *err, size_t errlen) {
  memset(u, 0, sizeof *u);
  u->port = 6379;
  if (!url || strlen(url) > 1024) {
    set_err(err, errlen, "missing or overlong Redis URL");
    return QS_ERR_INVALID;
  }
  if (strncasecmp(url, "rediss://", 9) == 0) {
    set_err(err, errlen, "rediss:// (TLS) is not supported by this hiredis build");
    return QS_ERR_UNSUPPORTED;
  }
  if (strncasecmp(url, "redis://", 8) != 0) {
    set_err(err, errlen, "Redis URL must start with redis://");
    return QS_ERR_PARSE;
  }
  const char *p = url + 8;
  const char *at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon) {
      set_err(err, errlen, "Redis URL credentials must be [user]:password@");
      return QS_ERR_PARSE;
    }
    size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
    if (ul >= sizeof u->user || pl >= sizeof u->password || pl == 0) {
      set_err(err, errlen, "Redis URL user or password empty or too long");
      return QS_ERR_PARSE;
    }
    memcpy(u->user, p, ul);
    memcpy(u->password, colon + 1, pl);
    p = at + 1;
  }
  const char *h = p;
  while (*p && *p != ':' && *p != '/')
    p++;
  size_t hl = (size_t)(p - h);
  if (hl == 0 || hl >= sizeof u->host) {
    set_err(err, errlen, "Redis URL has an empty or overlong host");
    return QS_ERR_PARSE;
  }
  memcpy(u->host, h, hl);
  if (*p == ':') {
    p++;
    long v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < 6) {
      v = v * 10 + (*p++ - '0');
      n++;
    }
    if (n == 0 || v < 1 || v > 65535 || (*p && *p != '/')) {
      set_err(err, errlen, "Redis URL port must be 1..65535");
      return QS_ERR_PARSE;
    }
    u->port = (int)v;
  }
  if (*p == '/') {
    p++;
    if (*p) {
      long v = 0;
      int n = 0;
      while (*p >= '0' && *p <= '9' && n < 6) {
        v = v * 10 + (*p++ - '0');
        n++;
      }
      if (n == 0 || *p || v > 65535) {
        set_err(err, errlen, "Redis URL database must be a number 0..65535");
        return QS_ERR_PARSE;
      }
      u->db = (int)v;
    }
  }
  return 0;
}

static uint64_t next_rand(qs_redis *r) {
  r->rng ^= r->rng << 13;
  r->rng ^= r->rng >> 7;
  r->rng ^= r->rng << 17;
  return r->rng;
}

static void on_handle_closed(uv_handle_t *h) {
  qs_redis *r = h->data;
  if (--r->handles_open > 0)
    return;
  for (size_t i = 0; i < r->nchannels; i++) {
    free(r->channels[i]);
    r->channels[i] = NULL;
  }
  if (r->close_cb)
    r->close_cb(r);
}

static void flush_failed(qs_redis *r) {
  while (r->failed) {
    struct qs_redis_req *q = r->failed;
    r->failed = q->next;
    r->pending--;
    q->cb(r, NULL, r->closing ? QS_ERR_CLOSED : QS_ERR_IO, q->ud);
    free(q);
  }
}

static void finish_close(qs_redis *r) {
  flush_failed(r);
  uv_close((uv_handle_t *)&r->reconnect_timer, on_handle_closed);
  uv_close((uv_handle_t *)&r->ping_timer, on_handle_closed);
  uv_close((uv_handle_t *)&r->fail_timer, on_handle_closed);
}

static void connect_now(qs_redis *r);
static void on_reconnect_timer(uv_timer_t *t);

static void schedule_reconnect(qs_redis *r) {
  if (r->closing)
    return;
  uint64_t b = r->backoff_ms;
  uint64_t delay = b / 2 + (b > 1 ? next_rand(r) % (b / 2 + 1) : 0);
  r->backoff_ms = b * 2 > r->opts.backoff_max_ms ? r->opts.backoff_max_ms : b * 2;
  uv_timer_start(&r->reconnect_timer, on_reconnect_timer, delay, 0);
}

static void on_reconnect_timer(uv_timer_t *t) {
  qs_redis *r = t->data;
  r->reconnects++;
  connect_now(r);
}

static void setup_cb(redisAsyncContext *ac, void *reply, void *priv) {
  qs_redis *r = ac->data;
  redisReply *rep = reply;
  const char *what = priv;
  if (!rep || r->keep_reason)
    return; /* disconnect handles it; a first setup failure stays the reason */
  if (rep->type == REDIS_REPLY_ERROR) {
    snprintf(r->reason, sizeof r->reason, "%s failed: %.100s", what, rep->str);
    r->ready = 0;
    r->keep_reason = 1;
    redisAsyncDisconnect(ac);
    return;
  }
  if (strcmp(what, "PING") == 0 && !r->nchannels) {
    r->ready = 1;
    r->reason[0] = '\0';
    r->backoff_ms = r->opts.backoff_min_ms;
  }
}

static void send_subscribe(qs_redis *r, redisAsyncContext *ac);

static void on_connect(const redisAsyncContext *ac, int status) {
  qs_redis *r = ac->data;
  if (status != REDIS_OK) {
    snprintf(r->reason, sizeof r->reason, "connect to %.60s:%d failed: %.80s", r->url.host,
             r->url.port, ac->errstr);
    r->ac = NULL; /* hiredis frees it after this callback */
    r->ready = 0;
    if (r->closing)
      finish_close(r);
    else
      schedule_reconnect(r);
    return;
  }
  r->connected = 1;
  redisAsyncContext *c = (redisAsyncContext *)ac;
  if (r->url.password[0]) {
    if (r->url.user[0])
      redisAsyncCommand(c, setup_cb, "AUTH", "AUTH %s %s", r->url.user, r->url.password);
    else
      redisAsyncCommand(c, setup_cb, "AUTH", "AUTH %s", r->url.password);
  }
  if (r->url.db)
    redisAsyncCommand(c, setup_cb, "SELECT", "SELECT %d", r->url.db);
  redisAsyncCommand(c, setup_cb, "PING", "PING");
  if (r->nchannels)
    send_subscribe(r, c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  qs_redis *r = ac->data;
  if (!r->keep_reason && (status != REDIS_OK || !r->closing))
    snprintf(r->reason, sizeof r->reason, "disconnected from %.60s:%d: %.60s", r->url.host,
             r->url.port, ac->errstr[0] ? ac->errstr : "connection closed");
  r->keep_reason = 0;
  r->ac = NULL;
  r->ready = 0;
  r->connected = 0;
  r->subscribed = 0;
  r->ping_inflight = 0;
  if (r->closing)
    finish_close(r);
  else
    schedule_reconnect(r);
}

static void connect_now(qs_redis *r) {
  redisAsyncContext *ac = redisAsyncConnect(r->url.host, r->url.port);
  if (!ac) {
    snprintf(r->reason, sizeof r->reason, "out of memory creating Redis context");
    schedule_reconnect(r);
    return;
  }
  if (ac->err) {
    snprintf(r->reason, sizeof r->reason, "connect to %.60s:%d failed: %.80s", r->url.host,
             r->url.port, ac->errstr);
    redisAsyncFree(ac);
    schedule_reconnect(r);
    return;
  }
  ac->data = r;
  if (ev_attach(ac, r->loop) != REDIS_OK) {
    snprintf(r->reason, sizeof r->reason, "cannot attach Redis context to the loop");
    redisAsyncFree(ac);
    schedule_reconnect(r);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  r->ac = ac;
  r->connect_started_ms = uv_now(r->loop);
}

static void ping_cb(redisAsyncContext *ac, void *reply, void *priv) {
  (void)priv;
  qs_redis *r = ac->data;
  redisReply *rep = reply;
  r->ping_inflight = 0;
  if (!rep || r->keep_reason)
    return;
  if (rep->type == REDIS_REPLY_ERROR) {
    snprintf(r->reason, sizeof r->reason, "PING failed: %.100s", rep->str);
    r->ready = 0;
  } else if (r->connected) {
    r->ready = 1;
    r->reason[0] = '\0';
  }
}

static void on_ping_timer(uv_timer_t *t) {
  qs_redis *r = t->data;
  if (r->ac && !r->connected &&
      uv_now(r->loop) - r->connect_started_ms >= r->opts.connect_timeout_ms) {
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    snprintf(r->reason, sizeof r->reason, "connect to %.60s:%d timed out", r->url.host,
             r->url.port);
    redisAsyncFree(ac); /* fails queued requests; no callbacks into on_connect */
    schedule_reconnect(r);
    return;
  }
  if (!r->ac || !r->connected || r->nchannels)
    return; /* a subscribed connection takes no PING here: its replies would lose their callback */
  if (r->ping_inflight) {
    r->ready = 0;
    snprintf(r->reason, sizeof r->reason, "PING unanswered for %llu ms",
             (unsigned long long)r->opts.ping_interval_ms);
    return;
  }
  if (redisAsyncCommand(r->ac, ping_cb, NULL, "PING") == REDIS_OK)
    r->ping_inflight = 1;
}

static void on_fail_timer(uv_timer_t *t) { flush_failed(t->data); }

int qs_redis_init(qs_redis *r, uv_loop_t *loop, const char *url, const qs_redis_opts *opts,
                  char *err, size_t errlen) {
  memset(r, 0, sizeof *r);
  int rc = qs_redis_url_parse(&r->url, url, err, errlen);
  if (rc)
    return rc;
  r->loop = loop;
  if (opts)
    r->opts = *opts;
  if (!r->opts.max_pending)
    r->opts.max_pending = 1024;
  if (!r->opts.ping_interval_ms)
    r->opts.ping_interval_ms = 1000;
  if (!r->opts.connect_timeout_ms)
    r->opts.connect_timeout_ms = 5000;
  if (!r->opts.backoff_min_ms)
    r->opts.backoff_min_ms = 100;
  if (!r->opts.backoff_max_ms)
    r->opts.backoff_max_ms = 5000;
  if (r->opts.backoff_max_ms < r->opts.backoff_min_ms)
    r->opts.backoff_max_ms = r->opts.backoff_min_ms;
  r->backoff_ms = r->opts.backoff_min_ms;
  r->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)r) | 1;
  snprintf(r->reason, sizeof r->reason, "connecting to %.60s:%d", r->url.host, r->url.port);
  uv_timer_init(loop, &r->reconnect_timer);
  uv_timer_init(loop, &r->ping_timer);
  uv_timer_init(loop, &r->fail_timer);
  r->reconnect_timer.data = r->ping_timer.data = r->fail_timer.data = r;
  r->handles_open = 3;
  uv_timer_start(&r->ping_timer, on_ping_timer, r->opts.ping_interval_ms, r->opts.ping_interval_ms);
  connect_now(r);
  return 0;
}

static void req_cb(redisAsyncContext *ac, void *reply, void *priv) {
  struct qs_redis_req *q = priv;
  qs_redis *r = q->r;
  (void)ac;
  r->pending--;
  q->cb(r, reply, reply ? 0 : (r->closing ? QS_ERR_CLOSED : QS_ERR_IO), q->ud);
  free(q);
}

/* The checks and bookkeeping every command shares; NULL (with *rc set) when it is refused. */
static struct qs_redis_req *req_new(qs_redis *r, qs_redis_cb cb, void *ud, int *rc) {
  *rc = !r || !cb                           ? QS_ERR_INVALID
        : r->closing                        ? QS_ERR_CLOSED
        : r->nchannels                      ? QS_ERR_STATE /* a subscriber takes no commands */
        : r->pending >= r->opts.max_pending ? QS_ERR_FULL
                                            : 0;
  if (*rc)
    return NULL;
  struct qs_redis_req *q = qs_xcalloc(1, sizeof *q);
  q->r = r;
  q->cb = cb;
  q->ud = ud;
  r->pending++;
  return q;
}

/* A command hiredis could not queue fails from the loop, never inside the call. */
static int req_sent(qs_redis *r, struct qs_redis_req *q, int hiredis_rc) {
  if (hiredis_rc == REDIS_OK)
    return 0;
  q->next = r->failed;
  r->failed = q;
  uv_timer_start(&r->fail_timer, on_fail_timer, 0, 0);
  return 0;
}

int qs_redis_command(qs_redis *r, qs_redis_cb cb, void *ud, const char *fmt, ...) {
  int rc;
  struct qs_redis_req *q = fmt ? req_new(r, cb, ud, &rc) : NULL;
  if (!q)
    return fmt ? rc : QS_ERR_INVALID;
  int hrc = REDIS_ERR;
  if (r->ac) {
    va_list ap;
    va_start(ap, fmt);
    hrc = redisvAsyncCommand(r->ac, req_cb, q, fmt, ap);
    va_end(ap);
  }
  return req_sent(r, q, hrc);
}

int qs_redis_command_argv(qs_redis *r, qs_redis_cb cb, void *ud, int argc, const char **argv,
                          const size_t *argvlen) {
  int rc;
  struct qs_redis_req *q = argc > 0 && argv ? req_new(r, cb, ud, &rc) : NULL;
  if (!q)
    return argc > 0 && argv ? rc : QS_ERR_INVALID;
  int hrc = r->ac ? redisAsyncCommandArgv(r->ac, req_cb, q, argc, argv, argvlen) : REDIS_ERR;
  return req_sent(r, q, hrc);
}

int qs_redis_command_formatted(qs_redis *r, qs_redis_cb cb, void *ud, const char *cmd, size_t len) {
  int rc;
  struct qs_redis_req *q = len > 0 && cmd ? req_new(r, cb, ud, &rc) : NULL;
  if (!q)
    return len > 0 && cmd ? rc : QS_ERR_INVALID;
  int hrc = r->ac ? redisAsyncFormattedCommand(r->ac, req_cb, q, cmd, len) : REDIS_ERR;
  return req_sent(r, q, hrc);
}

int qs_redis_ready(const qs_redis *r, const char **reason) {
  if (reason)
    *reason = r->ready ? "ready" : r->reason;
  return r->ready;
}

void qs_redis_close(qs_redis *r, qs_redis_close_cb cb) {
  if (r->closing)
    return;
  r->closing = 1;
  r->close_cb = cb;
  r->ready = 0;
  snprintf(r->reason, sizeof r->reason, "closing");
  uv_timer_stop(&r->reconnect_timer);
  uv_timer_stop(&r->ping_timer);
  if (!r->ac) {
    finish_close(r);
  } else if (r->connected) {
    redisAsyncDisconnect(r->ac); /* may call on_disconnect synchronously */
  } else {
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    redisAsyncFree(ac); /* fails queued requests; no disconnect callback */
    finish_close(r);
  }
}

/* ---- subscriber mode ------------------------------------------------------------------------ */

/* hiredis keeps this callback registered per channel for the connection's life and calls it for
 * the "subscribe" confirmation, for every "message", and with NULL when the context is freed. */
static void sub_cb(redisAsyncContext *ac, void *reply, void *priv) {
  (void)priv;
  qs_redis *r = ac->data;
  redisReply *rep = reply;
  if (!rep || r->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
      rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = rep->element[0]->str;
  if (strcasecmp(kind, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
    r->messages++;
    r->on_message(r, rep->element[1]->str, rep->element[2]->str, rep->element[2]->len, r->sub_ud);
  } else if (strcasecmp(kind, "subscribe") == 0) {
    if (++r->subscribed == r->nchannels) {
      r->ready = 1;
      r->reason[0] = '\0';
      r->backoff_ms = r->opts.backoff_min_ms;
      if (r->on_subscribed)
        r->on_subscribed(r, r->sub_ud);
    }
  }
}

static void send_subscribe(qs_redis *r, redisAsyncContext *ac) {
  const char *argv[QS_REDIS_MAX_CHANNELS + 1];
  size_t lens[QS_REDIS_MAX_CHANNELS + 1];
  argv[0] = "SUBSCRIBE";
  lens[0] = 9;
  for (size_t i = 0; i < r->nchannels; i++) {
    argv[i + 1] = r->channels[i];
    lens[i + 1] = strlen(r->channels[i]);
  }
  r->subscribed = 0;
  if (redisAsyncCommandArgv(ac, sub_cb, NULL, (int)r->nchannels + 1, argv, lens) != REDIS_OK)
    snprintf(r->reason, sizeof r->reason, "SUBSCRIBE could not be sent");
}

int qs_redis_subscribe(qs_redis *r, const char *const *channels, size_t n,
                       qs_redis_msg_cb on_message, qs_redis_subscribed_cb on_subscribed, void *ud) {
  if (!r || !channels || !on_message || n == 0 || n > QS_REDIS_MAX_CHANNELS)
    return QS_ERR_INVALID;
  for (size_t i = 0; i < n; i++)
    if (!channels[i] || !channels[i][0] || strlen(channels[i]) > 256)
      return QS_ERR_INVALID;
  if (r->nchannels || r->pending || r->closing)
    return QS_ERR_STATE;
  for (size_t i = 0; i < n; i++)
    r->channels[i] = qs_xstrdup(channels[i]);
  r->nchannels = n;
  r->on_message = on_message;
  r->on_subscribed = on_subscribed;
  r->sub_ud = ud;
  r->ready = 0;
  if (r->ac && r->connected)
    send_subscribe(r, r->ac);
  return 0;
}
