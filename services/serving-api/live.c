/* live.c — WebSocket fan-out of the Redis live channels (see live.h for the memory policy).
 *
 * The WebSocket layer is our own (ws_frame.c) on the socket h2o hands over after the 101
 * response (h2o_http1_upgrade): h2o 2.2's websocket.c writes one frame per loop turn, which
 * cannot keep up with a burst of updates; here every frame waiting for a client leaves in one
 * writev when its previous write completes.
 *
 * Invariants:
 * - a client is freed only from the reaper (a zero-delay timer) or at close, never inside an h2o
 *   callback, so a client list walk never meets a freed client;
 * - a frame is formatted once per pub/sub message and shared (reference-counted) by every client
 *   queue that holds it, until its write completes;
 * - per client: waiting frames <= max_backlog (after coalescing per window), frames in flight <=
 *   WRITE_BATCH and about send_buffer bytes.
 */
#include "live.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cjson/cJSON.h>
#include <h2o/http1.h>

#include "qs/buf.h"
#include "qs/error.h"
#include "qs/timeutil.h"

#include "api.h"
#include "ws_frame.h"

#define TOPIC_AGGREGATES 1u
#define TOPIC_ALERTS 2u
#define TOPIC_EVENTS 4u
#define MAX_REGIONS 32
#define REGION_MAX 64
#define KEY_MAX 96
#define SNAP_EVENTS 20
#define SNAP_ALERTS 20
#define SNAP_MAX_WINDOWS 5000
#define CLIENT_MSG_MAX 4096
#define WRITE_BATCH 64
#define SNAP_RETRIES 20
#define SNAP_RETRY_MS 250

typedef struct live_msg {
  int refs;
  unsigned topic;
  uint8_t opcode;
  char region[REGION_MAX];
  char key[KEY_MAX]; /* coalescing key ("" = never coalesced) */
  size_t len;
  char text[];
} live_msg;

enum snap_state { SNAP_NONE, SNAP_WAITING, SNAP_INFLIGHT };

typedef struct client {
  live *l;
  h2o_socket_t *sock; /* NULL until the 101 response has been written */
  struct client *prev, *next;
  struct client *reap_next;
  bool upgraded, dead, reaping, writing, close_after_write; /* upgraded: h2o is done with it */
  unsigned topics;
  char regions[MAX_REGIONS][REGION_MAX];
  size_t nregions;
  enum snap_state snap;
  live_msg **wait;       /* frames not yet handed to the socket (the backlog), oldest first */
  size_t nwait, waitcap; /* waitcap grows by doubling up to max_backlog */
  live_msg *inflight[WRITE_BATCH];
  uint8_t hdr[WRITE_BATCH][WS_HEADER_MAX];
  size_t ninflight;
  uint64_t last_seen_ms;
} client;

typedef struct snap_item {
  char region[REGION_MAX];
  const char *s;
  size_t len;
} snap_item;

struct live {
  uv_loop_t *loop;
  live_options opt;
  qs_redis *cmd, *sub;
  qs_log *log;
  client *clients;
  size_t nclients, nwaiting;
  client *reap;
  bool snap_inflight, closing, subscribed_once;
  uv_timer_t reap_timer, ping_timer, snap_retry_timer;
  int snap_failures;
  int handles_open;
  bool sub_closed;
  uint64_t seq;
  void (*close_cb)(void *);
  void *close_arg;
  qs_metric *m_clients, *m_messages, *m_frames, *m_coalesced, *m_dropped, *m_snapshots;
  qs_metric *m_fanout;
};

/* ---- messages ------------------------------------------------------------------------------- */

static void msg_unref(live_msg *m) {
  if (--m->refs == 0)
    free(m);
}

static const char *topic_name(unsigned t) {
  return t == TOPIC_AGGREGATES ? "aggregates" : t == TOPIC_ALERTS ? "alerts" : "events";
}

static unsigned topic_of_channel(const char *ch) {
  if (strcmp(ch, "qs:live:aggregates") == 0)
    return TOPIC_AGGREGATES;
  if (strcmp(ch, "qs:live:alerts") == 0)
    return TOPIC_ALERTS;
  if (strcmp(ch, "qs:live:events") == 0)
    return TOPIC_EVENTS;
  return 0;
}

/* {"topic":"<t>","seq":N, <the published object's members>} — built once per message. */
static live_msg *msg_build(live *l, unsigned topic, const char *payload, size_t len) {
  cJSON *o = cJSON_ParseWithLength(payload, len);
  if (!cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return NULL;
  }
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(o, "data");
  const cJSON *region = cJSON_GetObjectItemCaseSensitive(data, "region");
  size_t skip = 0;
  while (skip < len && payload[skip] != '{')
    skip++;
  size_t rest_at = skip + 1;
  while (rest_at < len && (payload[rest_at] == ' ' || payload[rest_at] == '\n' ||
                           payload[rest_at] == '\t' || payload[rest_at] == '\r'))
    rest_at++;
  bool empty = rest_at < len && payload[rest_at] == '}';
  char head[96];
  int hl = snprintf(head, sizeof head, "{\"topic\":\"%s\",\"seq\":%llu%s", topic_name(topic),
                    (unsigned long long)++l->seq, empty ? "" : ",");
  size_t rest = len - rest_at;
  live_msg *m = qs_xmalloc(sizeof *m + (size_t)hl + rest + 1);
  m->refs = 1;
  m->topic = topic;
  m->opcode = WS_OP_TEXT;
  m->region[0] = m->key[0] = '\0';
  if (cJSON_IsString(region) && strlen(region->valuestring) < REGION_MAX)
    snprintf(m->region, sizeof m->region, "%s", region->valuestring);
  if (cJSON_IsString(type) && strcmp(type->valuestring, "window") == 0) {
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(data, "window_start_ms");
    if (cJSON_IsNumber(ws))
      snprintf(m->key, sizeof m->key, "w|%s|%.0f", m->region, ws->valuedouble);
  } else if (cJSON_IsString(type) && strcmp(type->valuestring, "rolling") == 0) {
    snprintf(m->key, sizeof m->key, "rolling");
  }
  memcpy(m->text, head, (size_t)hl);
  memcpy(m->text + hl, payload + rest_at, rest);
  m->len = (size_t)hl + rest;
  m->text[m->len] = '\0';
  cJSON_Delete(o);
  return m;
}

/* ---- clients -------------------------------------------------------------------------------- */

static void schedule_reap(live *l, client *c);

static void kill_client(client *c, const char *why) {
  if (c->dead)
    return;
  c->dead = true;
  if (why)
    qs_log_info(c->l->log, "websocket client disconnected", QS_LSTR("reason", why),
                QS_LINT("backlog", c->nwait));
  if (c->sock)
    h2o_socket_read_stop(c->sock);
  schedule_reap(c->l, c);
}

static live_msg *msg_own(const char *text, size_t len, uint8_t opcode) {
  live_msg *m = qs_xmalloc(sizeof *m + len + 1);
  m->refs = 1;
  m->topic = 0;
  m->opcode = opcode;
  m->region[0] = m->key[0] = '\0';
  memcpy(m->text, text, len);
  m->text[len] = '\0';
  m->len = len;
  return m;
}

/* Room for one more waiting frame (callers have checked nwait < max_backlog). */
static void wait_reserve(client *c) {
  if (c->nwait < c->waitcap)
    return;
  size_t cap = c->waitcap ? c->waitcap * 2 : 8;
  if (cap > c->l->opt.max_backlog)
    cap = c->l->opt.max_backlog;
  c->wait = qs_xrealloc(c->wait, cap * sizeof *c->wait);
  c->waitcap = cap;
}

static void wait_clear(client *c) {
  for (size_t i = 0; i < c->nwait; i++)
    msg_unref(c->wait[i]);
  c->nwait = 0;
}

static void client_write(client *c);

static void on_written(h2o_socket_t *sock, const char *err) {
  client *c = sock->data;
  for (size_t i = 0; i < c->ninflight; i++)
    msg_unref(c->inflight[i]);
  c->ninflight = 0;
  c->writing = false;
  if (err) {
    kill_client(c, NULL);
    return;
  }
  if (c->close_after_write && c->nwait == 0) {
    kill_client(c, NULL);
    return;
  }
  client_write(c);
}

/* Hands every waiting frame (up to WRITE_BATCH, about send_buffer bytes) to one writev. The
 * usual case — the socket takes it all — is a direct writev(2): through libuv every completed
 * write costs a deferred callback and an epoll_ctl to drop POLLOUT again, which at 10,000
 * subscribers was a tenth of the fan-out. What the socket does not take goes to h2o (libuv), which
 * finishes it when the socket drains; no direct write happens while one of those is in flight. */
static void client_write(client *c) {
  for (;;) {
    if (c->writing || c->dead || !c->sock || c->nwait == 0)
      return;
    h2o_iovec_t iov[2 * WRITE_BATCH];
    size_t n = 0, bytes = 0;
    while (n < c->nwait && n < WRITE_BATCH && (n == 0 || bytes < c->l->opt.send_buffer)) {
      live_msg *m = c->wait[n];
      size_t hl = ws_frame_header(c->hdr[n], m->opcode, m->len);
      iov[2 * n] = h2o_iovec_init(c->hdr[n], hl);
      iov[2 * n + 1] = h2o_iovec_init(m->text, m->len);
      c->inflight[n] = m;
      bytes += hl + m->len;
      n++;
    }
    memmove(c->wait, c->wait + n, (c->nwait - n) * sizeof *c->wait);
    c->nwait -= n;
    c->ninflight = n;
    qs_metric_add(c->l->m_frames, (double)n);
    ssize_t w;
    do
      w = writev(h2o_socket_get_fd(c->sock), (struct iovec *)iov, (int)(2 * n));
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      kill_client(c, NULL); /* reset by the peer: the frames go with the client */
      return;
    }
    size_t done = w > 0 ? (size_t)w : 0, i = 0;
    if (done == bytes) {
      for (size_t k = 0; k < n; k++)
        msg_unref(c->inflight[k]);
      c->ninflight = 0;
      if (c->close_after_write && c->nwait == 0) {
        kill_client(c, NULL);
        return;
      }
      continue; /* more may have waited beyond one batch */
    }
    while (done >= iov[i].len) { /* skip what the kernel took */
      done -= iov[i].len;
      i++;
    }
    iov[i].base += done;
    iov[i].len -= done;
    c->writing = true;
    h2o_socket_write(c->sock, iov + i, 2 * n - i, on_written);
    return;
  }
}

/* Queues m for c (taking a reference). Window and rolling updates replace a waiting update of the
 * same window ("latest per window"); past max_backlog waiting frames the client is disconnected. */
static void client_queue(client *c, live_msg *m) {
  live *l = c->l;
  if (c->dead)
    return;
  if (m->key[0]) {
    for (size_t i = 0; i < c->nwait; i++) {
      if (c->wait[i]->topic == m->topic && strcmp(c->wait[i]->key, m->key) == 0) {
        msg_unref(c->wait[i]);
        c->wait[i] = m;
        m->refs++;
        qs_metric_inc(l->m_coalesced);
        return;
      }
    }
  }
  if (c->nwait >= l->opt.max_backlog) {
    qs_metric_inc(l->m_dropped);
    kill_client(c, "backlog limit reached (slow client)");
    return;
  }
  wait_reserve(c);
  c->wait[c->nwait++] = m;
  m->refs++;
}

static bool wants(const client *c, const live_msg *m) {
  if (!(c->topics & m->topic))
    return false;
  if (c->nregions == 0 || !m->region[0])
    return true; /* region-less updates (rolling window, removals) go to everyone */
  for (size_t i = 0; i < c->nregions; i++)
    if (strcmp(c->regions[i], m->region) == 0)
      return true;
  return false;
}

/* An update: queued; written at once unless the client still waits for its snapshot. */
static void client_send(client *c, live_msg *m) {
  if (c->dead || !wants(c, m))
    return;
  client_queue(c, m);
  if (c->snap == SNAP_NONE)
    client_write(c);
}

/* A protocol message of our own (ack, snapshot, pong, error): ahead of nothing, after nothing. */
static void send_frame(client *c, const char *text, size_t len, uint8_t opcode) {
  if (c->dead)
    return;
  live_msg *m = msg_own(text, len, opcode);
  client_queue(c, m);
  msg_unref(m);
  client_write(c);
}

static void send_text(client *c, const char *text, size_t len) {
  send_frame(c, text, len, WS_OP_TEXT);
}

/* Inserts a text frame at position *at of the waiting frames (snapshots before queued updates). */
static void send_at(client *c, size_t *at, const char *text, size_t len) {
  if (c->dead)
    return;
  if (c->nwait >= c->l->opt.max_backlog) {
    qs_metric_inc(c->l->m_dropped);
    kill_client(c, "backlog limit reached (slow client)");
    return;
  }
  wait_reserve(c);
  memmove(c->wait + *at + 1, c->wait + *at, (c->nwait - *at) * sizeof *c->wait);
  c->wait[(*at)++] = msg_own(text, len, WS_OP_TEXT);
  c->nwait++;
}

static void send_error(client *c, const char *detail) {
  qs_buf b = QS_BUF_INIT;
  qs_buf_puts(&b, "{\"type\":\"error\",\"detail\":\"");
  qs_buf_json_str(&b, detail, strlen(detail));
  qs_buf_puts(&b, "\"}");
  send_text(c, b.p, b.len);
  qs_buf_free(&b);
}

/* ---- snapshots ------------------------------------------------------------------------------ */

static void snapshot_start(live *l);

static void on_snap_retry(uv_timer_t *t) { snapshot_start(t->data); }

static size_t parse_items(const redisReply *arr, snap_item **out) {
  size_t n = 0;
  *out = NULL;
  if (!arr || arr->type != REDIS_REPLY_ARRAY)
    return 0;
  *out = qs_xcalloc(arr->elements + 1, sizeof **out);
  for (size_t i = 0; i < arr->elements; i++) {
    const redisReply *e = arr->element[i];
    if (e->type != REDIS_REPLY_STRING)
      continue;
    cJSON *o = cJSON_ParseWithLength(e->str, e->len);
    if (cJSON_IsObject(o)) {
      const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "region");
      if (cJSON_IsString(r))
        snprintf((*out)[n].region, REGION_MAX, "%s", r->valuestring);
      (*out)[n].s = e->str;
      (*out)[n].len = e->len;
      n++;
    }
    cJSON_Delete(o);
  }
  return n;
}

static bool region_ok(const client *c, const char *region) {
  if (c->nregions == 0 || !region[0])
    return true;
  for (size_t i = 0; i < c->nregions; i++)
    if (strcmp(c->regions[i], region) == 0)
      return true;
  return false;
}

static void put_items(qs_buf *b, const client *c, const snap_item *it, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (!region_ok(c, it[i].region))
      continue;
    if (k++)
      qs_buf_puts(b, ",");
    qs_buf_append(b, it[i].s, it[i].len);
  }
}

static void on_snapshot(qs_redis *r, redisReply *rep, int status, void *ud) {
  (void)r;
  (void)status;
  live *l = ud;
  l->snap_inflight = false;
  bool ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4;
  if (!ok && !rep && !l->closing && l->snap_failures < SNAP_RETRIES) {
    /* the command connection is down (e.g. it reconnects after the subscriber did): the waiting
     * clients keep waiting, their updates queued, and the snapshot is tried again */
    l->snap_failures++;
    for (client *c = l->clients; c; c = c->next) {
      if (c->snap == SNAP_INFLIGHT) {
        c->snap = SNAP_WAITING;
        l->nwaiting++;
      }
    }
    uv_timer_start(&l->snap_retry_timer, on_snap_retry, SNAP_RETRY_MS, 0);
    return;
  }
  l->snap_failures = 0;
  snap_item *win = NULL, *ev = NULL, *al = NULL;
  size_t nwin = 0, nev = 0, nal = 0;
  const redisReply *rolling = NULL;
  if (ok) {
    nwin = parse_items(rep->element[0], &win);
    rolling = rep->element[1]->type == REDIS_REPLY_STRING ? rep->element[1] : NULL;
    nev = parse_items(rep->element[2], &ev);
    nal = parse_items(rep->element[3], &al);
    if (rolling) {
      cJSON *o = cJSON_ParseWithLength(rolling->str, rolling->len);
      if (!cJSON_IsObject(o))
        rolling = NULL;
      cJSON_Delete(o);
    }
  }
  qs_buf b = QS_BUF_INIT;
  for (client *c = l->clients; c; c = c->next) {
    if (c->snap != SNAP_INFLIGHT || c->dead)
      continue;
    c->snap = SNAP_NONE;
    size_t at = 0; /* snapshot frames go ahead of the updates that waited for them */
    if (!ok) {
      static const char err[] = "{\"type\":\"error\",\"detail\":\"snapshot unavailable: the "
                                "data store did not answer; updates follow\"}";
      send_at(c, &at, err, sizeof err - 1);
    } else {
      qs_metric_inc(l->m_snapshots);
      if (c->topics & TOPIC_AGGREGATES) {
        qs_buf_reset(&b);
        qs_buf_puts(&b, "{\"type\":\"snapshot\",\"topic\":\"aggregates\",\"data\":{\"windows\":[");
        put_items(&b, c, win, nwin);
        qs_buf_puts(&b, "],\"rolling\":");
        if (rolling)
          qs_buf_append(&b, rolling->str, rolling->len);
        else
          qs_buf_puts(&b, "null");
        qs_buf_puts(&b, "}}");
        send_at(c, &at, b.p, b.len);
      }
      if (c->topics & TOPIC_EVENTS) {
        qs_buf_reset(&b);
        qs_buf_puts(&b, "{\"type\":\"snapshot\",\"topic\":\"events\",\"data\":{\"events\":[");
        put_items(&b, c, ev, nev);
        qs_buf_puts(&b, "]}}");
        send_at(c, &at, b.p, b.len);
      }
      if (c->topics & TOPIC_ALERTS) {
        qs_buf_reset(&b);
        qs_buf_puts(&b, "{\"type\":\"snapshot\",\"topic\":\"alerts\",\"data\":{\"alerts\":[");
        put_items(&b, c, al, nal);
        qs_buf_puts(&b, "]}}");
        send_at(c, &at, b.p, b.len);
      }
    }
    client_write(c);
  }
  qs_buf_free(&b);
  free(win);
  free(ev);
  free(al);
  if (l->nwaiting && !l->closing)
    snapshot_start(l);
}

static void snapshot_start(live *l) {
  if (l->snap_inflight || l->nwaiting == 0 || l->closing ||
      uv_is_active((uv_handle_t *)&l->snap_retry_timer))
    return;
  for (client *c = l->clients; c; c = c->next)
    if (c->snap == SNAP_WAITING)
      c->snap = SNAP_INFLIGHT;
  l->nwaiting = 0;
  char since[32], ne[16], na[16], nw[16];
  snprintf(since, sizeof since, "%lld", (long long)(qs_time_now_ms() - QS_MS_PER_HOUR));
  snprintf(ne, sizeof ne, "%d", SNAP_EVENTS);
  snprintf(na, sizeof na, "%d", SNAP_ALERTS);
  snprintf(nw, sizeof nw, "%d", SNAP_MAX_WINDOWS);
  int rc = qs_redis_command(l->cmd, on_snapshot, l, "EVAL %s 7 %s %s %s %s %s %s %s %s %s %s %s",
                            api_script_snapshot, "qs:rt:win:idx", "qs:rt:win", "qs:rt:rolling",
                            "qs:ev:idx", "qs:ev", "qs:alerts:idx", "qs:alerts", since, ne, na, nw);
  if (rc == 0) {
    l->snap_inflight = true;
    return;
  }
  on_snapshot(l->cmd, NULL, rc, l); /* answers the waiting clients with an error, flushes */
}

/* ---- client messages ------------------------------------------------------------------------ */

static bool parse_topics(client *c, const cJSON *topics, unsigned *out) {
  unsigned t = 0;
  if (!cJSON_IsArray(topics) || cJSON_GetArraySize(topics) == 0) {
    send_error(c, "topics: must be a non-empty array of \"aggregates\", \"alerts\", \"events\"");
    return false;
  }
  const cJSON *x;
  cJSON_ArrayForEach(x, topics) {
    unsigned one = cJSON_IsString(x) ? (strcmp(x->valuestring, "aggregates") == 0 ? TOPIC_AGGREGATES
                                        : strcmp(x->valuestring, "alerts") == 0   ? TOPIC_ALERTS
                                        : strcmp(x->valuestring, "events") == 0   ? TOPIC_EVENTS
                                                                                  : 0)
                                     : 0;
    if (!one) {
      send_error(c, "topics: unknown topic (allowed: aggregates, alerts, events)");
      return false;
    }
    t |= one;
  }
  *out = t;
  return true;
}

static bool valid_region(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= REGION_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == ':' || ch == '-'))
      return false;
  }
  return true;
}

static void on_client_text(client *c, const char *s, size_t len) {
  live *l = c->l;
  cJSON *o = cJSON_ParseWithLength(s, len);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
  if (!cJSON_IsObject(o) || !cJSON_IsString(type)) {
    send_error(c, "expected a JSON object with a \"type\" (subscribe, unsubscribe, ping)");
    cJSON_Delete(o);
    return;
  }
  if (strcmp(type->valuestring, "ping") == 0) {
    qs_buf b = QS_BUF_INIT;
    qs_buf_printf(&b, "{\"type\":\"pong\",\"server_time\":%lld", (long long)qs_time_now_ms());
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    char *idtxt = id ? cJSON_PrintUnformatted(id) : NULL;
    if (idtxt && strlen(idtxt) <= 256)
      qs_buf_printf(&b, ",\"id\":%s", idtxt);
    free(idtxt);
    qs_buf_puts(&b, "}");
    send_text(c, b.p, b.len);
    qs_buf_free(&b);
  } else if (strcmp(type->valuestring, "subscribe") == 0) {
    unsigned topics = 0;
    const cJSON *regions = cJSON_GetObjectItemCaseSensitive(o, "regions");
    if (!parse_topics(c, cJSON_GetObjectItemCaseSensitive(o, "topics"), &topics))
      goto done;
    if (regions && !cJSON_IsNull(regions) &&
        (!cJSON_IsArray(regions) || cJSON_GetArraySize(regions) > MAX_REGIONS)) {
      send_error(c, "regions: must be an array of at most 32 region names");
      goto done;
    }
    size_t nr = 0;
    char tmp[MAX_REGIONS][REGION_MAX];
    const cJSON *x;
    if (cJSON_IsArray(regions)) {
      cJSON_ArrayForEach(x, regions) {
        if (!cJSON_IsString(x) || !valid_region(x->valuestring)) {
          send_error(c, "regions: each must be a region name of [A-Za-z0-9._:-], 1..63 bytes");
          goto done;
        }
        snprintf(tmp[nr++], REGION_MAX, "%s", x->valuestring);
      }
    }
    c->topics = topics;
    memcpy(c->regions, tmp, sizeof tmp);
    c->nregions = nr;
    wait_clear(c); /* updates for the old subscription are void: a fresh snapshot follows */
    qs_buf b = QS_BUF_INIT;
    qs_buf_puts(&b, "{\"type\":\"subscribed\",\"topics\":[");
    int k = 0;
    for (unsigned t = 1; t <= TOPIC_EVENTS; t <<= 1)
      if (topics & t)
        qs_buf_printf(&b, "%s\"%s\"", k++ ? "," : "", topic_name(t));
    qs_buf_puts(&b, "],\"regions\":[");
    for (size_t i = 0; i < nr; i++) {
      qs_buf_puts(&b, i ? ",\"" : "\"");
      qs_buf_json_str(&b, tmp[i], strlen(tmp[i]));
      qs_buf_puts(&b, "\"");
    }
    qs_buf_puts(&b, "]}");
    send_text(c, b.p, b.len);
    qs_buf_free(&b);
    if (c->snap == SNAP_NONE) {
      c->snap = SNAP_WAITING;
      l->nwaiting++;
    }
    snapshot_start(l);
  } else if (strcmp(type->valuestring, "unsubscribe") == 0) {
    c->topics = 0;
    wait_clear(c);
    static const char ack[] = "{\"type\":\"unsubscribed\"}";
    send_text(c, ack, sizeof ack - 1);
  } else {
    send_error(c, "unknown message type (allowed: subscribe, unsubscribe, ping)");
  }
done:
  cJSON_Delete(o);
}

static void close_with(client *c, uint16_t code, const char *reason) {
  char buf[128];
  size_t rl = strlen(reason) > 100 ? 100 : strlen(reason);
  buf[0] = (char)(code >> 8);
  buf[1] = (char)(code & 0xFF);
  memcpy(buf + 2, reason, rl);
  send_frame(c, buf, 2 + rl, WS_OP_CLOSE);
  c->close_after_write = true;
  if (c->sock)
    h2o_socket_read_stop(c->sock);
}

static void on_read(h2o_socket_t *sock, const char *err) {
  client *c = sock->data;
  if (err) { /* peer closed or reset */
    kill_client(c, NULL);
    return;
  }
  if (c->dead || c->close_after_write)
    return;
  c->last_seen_ms = uv_now(c->l->loop);
  while (!c->dead && !c->close_after_write && sock->input->size > 0) {
    ws_frame f;
    long n = ws_frame_parse((uint8_t *)sock->input->bytes, sock->input->size, CLIENT_MSG_MAX, &f);
    if (n == 0)
      break;
    if (n < 0) {
      close_with(c,
                 n == QS_ERR_TOOBIG        ? 1009
                 : n == QS_ERR_UNSUPPORTED ? 1003
                                           : 1002,
                 n == QS_ERR_TOOBIG ? "message too big" : "protocol error");
      break;
    }
    switch (f.opcode) {
    case WS_OP_TEXT:
      on_client_text(c, (const char *)f.payload, f.len);
      break;
    case WS_OP_BINARY:
      send_error(c, "binary frames are not part of the protocol; send JSON text");
      break;
    case WS_OP_PING:
      send_frame(c, (const char *)f.payload, f.len, WS_OP_PONG);
      break;
    case WS_OP_CLOSE:
      close_with(c, 1000, "bye");
      break;
    default: /* pong: liveness only */
      break;
    }
    h2o_buffer_consume(&sock->input, (size_t)n);
  }
}

static void maybe_closed(live *l);
static void client_free(client *c);

static void on_upgraded(void *ud, h2o_socket_t *sock, size_t reqsize) {
  client *c = ud;
  live *l = c->l;
  c->upgraded = true;
  c->sock = sock;
  if (l->closing) { /* live_close left this client to us: the last one may end the close */
    client_free(c);
    maybe_closed(l);
    return;
  }
  if (!sock) {
    kill_client(c, NULL);
    return;
  }
  sock->data = c;
  h2o_buffer_consume(&sock->input, reqsize);
  h2o_socket_read_start(sock, on_read);
  if (sock->input->size)
    on_read(sock, NULL);
  client_write(c);
}

int live_upgrade(live *l, h2o_req_t *req) {
  ssize_t ki = h2o_find_header_by_str(&req->headers, H2O_STRLIT("sec-websocket-key"), -1);
  if (!qs_httpd_method_is(req, "GET") || req->upgrade.base == NULL ||
      !h2o_lcstris(req->upgrade.base, req->upgrade.len, H2O_STRLIT("websocket")) || ki < 0 ||
      req->headers.entries[ki].value.len != 24 || req->version >= 0x200)
    return -1;
  if (l->closing || l->nclients >= l->opt.max_clients) {
    qs_httpd_problem(req, 503, "Service Unavailable",
                     l->closing ? "shutting down" : "too many WebSocket clients (WS_MAX_CLIENTS)");
    return 1;
  }
  client *c = qs_xcalloc(1, sizeof *c);
  c->l = l;
  c->last_seen_ms = uv_now(l->loop);
  c->next = l->clients;
  if (l->clients)
    l->clients->prev = c;
  l->clients = c;
  l->nclients++;
  qs_metric_set(l->m_clients, (double)l->nclients);
  char accept[29];
  ws_accept_key(req->headers.entries[ki].value.base, 24, accept);
  req->res.status = 101;
  req->res.reason = "Switching Protocols";
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
  h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL,
                        h2o_strdup(&req->pool, accept, 28).base, 28);
  h2o_http1_upgrade(req, NULL, 0, on_upgraded, c);
  return 0;
}

/* ---- reaper, drain, ping -------------------------------------------------------------------- */

static void client_free(client *c) {
  live *l = c->l;
  if (c->snap == SNAP_WAITING)
    l->nwaiting--;
  wait_clear(c);
  free(c->wait);
  for (size_t i = 0; i < c->ninflight; i++) /* h2o drops the write callback on close */
    msg_unref(c->inflight[i]);
  if (c->prev)
    c->prev->next = c->next;
  else
    l->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  l->nclients--;
  qs_metric_set(l->m_clients, (double)l->nclients);
  if (c->sock)
    h2o_socket_close(c->sock);
  free(c);
}

static void on_reap(uv_timer_t *t) {
  live *l = t->data;
  while (l->reap) {
    client *c = l->reap;
    l->reap = c->reap_next;
    client_free(c);
  }
}

static void schedule_reap(live *l, client *c) {
  if (c->reaping)
    return;
  c->reaping = true;
  c->reap_next = l->reap;
  l->reap = c;
  if (!l->closing)
    uv_timer_start(&l->reap_timer, on_reap, 0, 0);
}

static void on_ping(uv_timer_t *t) {
  live *l = t->data;
  uint64_t now = uv_now(l->loop);
  for (client *c = l->clients; c; c = c->next) {
    if (c->dead || !c->sock)
      continue;
    if (now - c->last_seen_ms > 3 * l->opt.ping_interval_ms) {
      kill_client(c, "no answer to pings");
      continue;
    }
    send_frame(c, "", 0, WS_OP_PING);
  }
}

/* ---- the subscription ----------------------------------------------------------------------- */

static void on_pubsub(qs_redis *r, const char *channel, const char *payload, size_t len, void *ud) {
  (void)r;
  live *l = ud;
  unsigned topic = topic_of_channel(channel);
  if (!topic || l->closing)
    return;
  qs_metric_inc(l->m_messages);
  live_msg *m = msg_build(l, topic, payload, len);
  if (!m) {
    qs_log_warn(l->log, "live message is not a JSON object: dropped", QS_LSTR("channel", channel));
    return;
  }
  uint64_t t0 = uv_hrtime();
  for (client *c = l->clients; c; c = c->next)
    client_send(c, m);
  msg_unref(m);
  qs_metric_observe(l->m_fanout, (double)(uv_hrtime() - t0) / 1e9);
}

static void on_subscribed(qs_redis *r, void *ud) {
  (void)r;
  live *l = ud;
  qs_log_info(l->log, "live subscription ready",
              QS_LSTR("channels", "qs:live:aggregates qs:live:alerts qs:live:events"));
  if (!l->subscribed_once) {
    l->subscribed_once = true;
    return;
  }
  /* Reconnected: what was published meanwhile is lost to pub/sub, so every subscribed client
   * gets a fresh snapshot. */
  for (client *c = l->clients; c; c = c->next) {
    if (!c->dead && c->topics && c->snap == SNAP_NONE) {
      c->snap = SNAP_WAITING;
      l->nwaiting++;
    }
  }
  snapshot_start(l);
}

live *live_new(uv_loop_t *loop, const live_options *o, qs_redis *cmd, qs_redis *sub, qs_log *log,
               qs_metrics *metrics) {
  live *l = qs_xcalloc(1, sizeof *l);
  l->loop = loop;
  l->opt = *o;
  if (l->opt.max_backlog == 0)
    l->opt.max_backlog = 1;
  l->cmd = cmd;
  l->sub = sub;
  l->log = log;
  uv_timer_init(loop, &l->reap_timer);
  uv_timer_init(loop, &l->ping_timer);
  uv_timer_init(loop, &l->snap_retry_timer);
  l->reap_timer.data = l->ping_timer.data = l->snap_retry_timer.data = l;
  l->handles_open = 3;
  uv_timer_start(&l->ping_timer, on_ping, o->ping_interval_ms, o->ping_interval_ms);
  l->m_clients = qs_metric_series(
      qs_metrics_gauge(metrics, "quakestream_ws_clients", "open WebSocket clients", NULL));
  l->m_messages =
      qs_metric_series(qs_metrics_counter(metrics, "quakestream_ws_pubsub_messages_total",
                                          "messages received from Redis pub/sub", NULL));
  l->m_frames = qs_metric_series(qs_metrics_counter(metrics, "quakestream_ws_frames_total",
                                                    "frames queued to WebSocket clients", NULL));
  l->m_coalesced = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_ws_coalesced_total",
      "updates replaced by a newer one of the same window while waiting to be sent", NULL));
  l->m_dropped = qs_metric_series(
      qs_metrics_counter(metrics, "quakestream_ws_slow_disconnects_total",
                         "clients disconnected because their backlog was full", NULL));
  double bounds[12];
  qs_metrics_exp_buckets(bounds, 0.0001, 2.5, 12);
  l->m_fanout = qs_metric_series(qs_metrics_histogram(
      metrics, "quakestream_ws_fanout_seconds",
      "time to hand one live message to every interested client's socket", NULL, bounds, 12));
  l->m_snapshots = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_ws_snapshots_total", "snapshots sent to subscribing clients", NULL));
  static const char *const channels[] = {"qs:live:aggregates", "qs:live:alerts", "qs:live:events"};
  if (qs_redis_subscribe(sub, channels, 3, on_pubsub, on_subscribed, l) != 0)
    QS_FATAL("qs_redis_subscribe on a fresh client failed");
  return l;
}

size_t live_clients(const live *l) { return l->nclients; }

static void maybe_closed(live *l) {
  if (l->handles_open == 0 && l->sub_closed && l->nclients == 0 && l->close_cb) {
    void (*cb)(void *) = l->close_cb;
    l->close_cb = NULL;
    cb(l->close_arg);
  }
}

static void timer_closed(uv_handle_t *h) {
  live *l = h->data;
  l->handles_open--;
  maybe_closed(l);
}

static void sub_closed(qs_redis *r) {
  live *l = r->data;
  l->sub_closed = true;
  maybe_closed(l);
}

void live_close(live *l, void (*cb)(void *), void *arg) {
  l->closing = true;
  l->close_cb = cb;
  l->close_arg = arg;
  client *next;
  for (client *c = l->clients; c; c = next) { /* not inside an h2o callback: closing is safe */
    next = c->next;
    if (!c->upgraded) { /* h2o still writes its 101: on_upgraded frees it */
      c->dead = true;
      continue;
    }
    if (c->reaping) { /* unlink from the reap list first */
      client **pp = &l->reap;
      while (*pp && *pp != c)
        pp = &(*pp)->reap_next;
      if (*pp)
        *pp = c->reap_next;
    }
    client_free(c);
  }
  l->reap = NULL;
  uv_close((uv_handle_t *)&l->reap_timer, timer_closed);
  uv_close((uv_handle_t *)&l->ping_timer, timer_closed);
  uv_close((uv_handle_t *)&l->snap_retry_timer, timer_closed);
  l->sub->data = l;
  qs_redis_close(l->sub, sub_closed);
}

void live_free(live *l) { free(l); }
