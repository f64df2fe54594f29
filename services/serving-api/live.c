/* live.c — WebSocket fan-out of the Redis live channels (see live.h for the memory policy).
 *
 * Invariants:
 * - a client is freed only from the reaper (a zero-delay timer) or at close, never inside an h2o
 *   or wslay callback: h2o_websocket_proceed may report the end of the connection synchronously
 *   (cb with NULL) from deep inside a send, and the caller still walks the client list;
 * - a frame is formatted once per pub/sub message; clients hold references to it only in their
 *   backlog (wslay copies what it queues);
 * - per client: bytes queued in wslay <= send_buffer + one frame, backlog <= max_backlog.
 */
#include "live.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <h2o/websocket.h>

#include "qs/buf.h"
#include "qs/error.h"
#include "qs/timeutil.h"

#include "api.h"

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

typedef struct live_msg {
  int refs;
  unsigned topic;
  char region[REGION_MAX];
  char key[KEY_MAX]; /* coalescing key ("" = never coalesced) */
  size_t len;
  char text[];
} live_msg;

enum snap_state { SNAP_NONE, SNAP_WAITING, SNAP_INFLIGHT };

typedef struct client {
  live *l;
  h2o_websocket_conn_t *ws;
  struct client *prev, *next;
  struct client *reap_next;
  bool dead, reaping, in_ws_callback;
  unsigned topics;
  char regions[MAX_REGIONS][REGION_MAX];
  size_t nregions;
  enum snap_state snap;
  live_msg **backlog;
  size_t nbacklog;
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
  api *api;
  qs_log *log;
  client *clients;
  size_t nclients, nbacklogged, nwaiting;
  client *reap;
  bool snap_inflight, closing, subscribed_once;
  uv_timer_t reap_timer, drain_timer, ping_timer;
  int handles_open;
  bool sub_closed;
  uint64_t seq;
  void (*close_cb)(void *);
  void *close_arg;
  qs_metric *m_clients, *m_messages, *m_frames, *m_coalesced, *m_dropped, *m_snapshots;
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
                QS_LINT("backlog", c->nbacklog));
  schedule_reap(c->l, c);
}

static size_t queued_bytes(client *c) {
  return c->ws && c->ws->ws_ctx ? wslay_event_get_queued_msg_length(c->ws->ws_ctx) : 0;
}

static void proceed(client *c) {
  if (!c->dead && !c->in_ws_callback && c->ws->sock)
    h2o_websocket_proceed(c->ws);
}

/* Queues text in wslay (which copies it); the caller calls proceed(). */
static bool ws_queue(client *c, const char *text, size_t len, uint8_t opcode) {
  struct wslay_event_msg msg = {opcode, (const uint8_t *)text, len};
  if (wslay_event_queue_msg(c->ws->ws_ctx, &msg) != 0) {
    kill_client(c, "websocket queue refused a frame");
    return false;
  }
  qs_metric_inc(c->l->m_frames);
  return true;
}

static void backlog_clear(client *c) {
  for (size_t i = 0; i < c->nbacklog; i++)
    msg_unref(c->backlog[i]);
  if (c->nbacklog)
    c->l->nbacklogged--;
  c->nbacklog = 0;
}

static void backlog_put(client *c, live_msg *m) {
  live *l = c->l;
  if (m->key[0]) {
    for (size_t i = 0; i < c->nbacklog; i++) {
      if (c->backlog[i]->topic == m->topic && strcmp(c->backlog[i]->key, m->key) == 0) {
        msg_unref(c->backlog[i]); /* latest per window: the newer state replaces the older */
        c->backlog[i] = m;
        m->refs++;
        qs_metric_inc(l->m_coalesced);
        return;
      }
    }
  }
  if (c->nbacklog >= l->opt.max_backlog) {
    qs_metric_inc(l->m_dropped);
    kill_client(c, "backlog limit reached (slow client)");
    return;
  }
  if (!c->backlog)
    c->backlog = qs_xmalloc(l->opt.max_backlog * sizeof *c->backlog);
  if (c->nbacklog == 0)
    l->nbacklogged++;
  c->backlog[c->nbacklog++] = m;
  m->refs++;
}

/* Moves backlog frames into wslay while its queue is under the send buffer. */
static void backlog_flush(client *c) {
  if (c->dead || c->snap != SNAP_NONE || c->nbacklog == 0)
    return;
  size_t i = 0;
  while (i < c->nbacklog && queued_bytes(c) < c->l->opt.send_buffer) {
    if (!ws_queue(c, c->backlog[i]->text, c->backlog[i]->len, WSLAY_TEXT_FRAME))
      return;
    i++;
  }
  for (size_t k = 0; k < i; k++)
    msg_unref(c->backlog[k]);
  memmove(c->backlog, c->backlog + i, (c->nbacklog - i) * sizeof *c->backlog);
  c->nbacklog -= i;
  if (c->nbacklog == 0)
    c->l->nbacklogged--;
  proceed(c);
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

static void client_send(client *c, live_msg *m) {
  if (c->dead || !wants(c, m))
    return;
  if (c->snap != SNAP_NONE || c->nbacklog > 0 || queued_bytes(c) >= c->l->opt.send_buffer) {
    backlog_put(c, m);
    return;
  }
  if (ws_queue(c, m->text, m->len, WSLAY_TEXT_FRAME))
    proceed(c);
}

static void send_text(client *c, const char *text, size_t len) {
  if (!c->dead && ws_queue(c, text, len, WSLAY_TEXT_FRAME))
    proceed(c);
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
    if (!ok) {
      send_error(c, "snapshot unavailable: the data store did not answer; updates follow");
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
        send_text(c, b.p, b.len);
      }
      if (c->topics & TOPIC_EVENTS) {
        qs_buf_reset(&b);
        qs_buf_puts(&b, "{\"type\":\"snapshot\",\"topic\":\"events\",\"data\":{\"events\":[");
        put_items(&b, c, ev, nev);
        qs_buf_puts(&b, "]}}");
        send_text(c, b.p, b.len);
      }
      if (c->topics & TOPIC_ALERTS) {
        qs_buf_reset(&b);
        qs_buf_puts(&b, "{\"type\":\"snapshot\",\"topic\":\"alerts\",\"data\":{\"alerts\":[");
        put_items(&b, c, al, nal);
        qs_buf_puts(&b, "]}}");
        send_text(c, b.p, b.len);
      }
    }
    backlog_flush(c);
  }
  qs_buf_free(&b);
  free(win);
  free(ev);
  free(al);
  if (l->nwaiting && !l->closing)
    snapshot_start(l);
}

static void snapshot_start(live *l) {
  if (l->snap_inflight || l->nwaiting == 0)
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
    backlog_clear(c); /* updates for the old subscription are void: a fresh snapshot follows */
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
    backlog_clear(c);
    static const char ack[] = "{\"type\":\"unsubscribed\"}";
    send_text(c, ack, sizeof ack - 1);
  } else {
    send_error(c, "unknown message type (allowed: subscribe, unsubscribe, ping)");
  }
done:
  cJSON_Delete(o);
}

static void on_ws(h2o_websocket_conn_t *ws, const struct wslay_event_on_msg_recv_arg *arg) {
  client *c = ws->data;
  if (!arg) { /* the connection ended (peer close, error, or our own proceed failed) */
    kill_client(c, NULL);
    return;
  }
  if (c->dead)
    return;
  c->last_seen_ms = uv_now(c->l->loop);
  c->in_ws_callback = true; /* h2o_websocket_proceed is running: frames are sent after return */
  if (arg->opcode == WSLAY_TEXT_FRAME)
    on_client_text(c, (const char *)arg->msg, arg->msg_length);
  else if (arg->opcode == WSLAY_BINARY_FRAME)
    send_error(c, "binary frames are not part of the protocol; send JSON text");
  c->in_ws_callback = false;
}

int live_upgrade(live *l, h2o_req_t *req) {
  const char *key = NULL;
  if (h2o_is_websocket_handshake(req, &key) != 0 || key == NULL)
    return -1;
  if (l->closing || l->nclients >= l->opt.max_clients) {
    qs_httpd_problem(req, 503, "Service Unavailable",
                     l->closing ? "shutting down" : "too many WebSocket clients (WS_MAX_CLIENTS)");
    return 0;
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
  c->ws = h2o_upgrade_to_websocket(req, key, c, on_ws);
  wslay_event_config_set_max_recv_msg_length(c->ws->ws_ctx, CLIENT_MSG_MAX);
  return 0;
}

/* ---- reaper, drain, ping -------------------------------------------------------------------- */

static void client_free(client *c) {
  live *l = c->l;
  if (c->snap == SNAP_WAITING)
    l->nwaiting--;
  backlog_clear(c);
  free(c->backlog);
  if (c->prev)
    c->prev->next = c->next;
  else
    l->clients = c->next;
  if (c->next)
    c->next->prev = c->prev;
  l->nclients--;
  qs_metric_set(l->m_clients, (double)l->nclients);
  h2o_websocket_close(c->ws);
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

static void on_drain(uv_timer_t *t) {
  live *l = t->data;
  for (client *c = l->clients; c && l->nbacklogged; c = c->next)
    backlog_flush(c);
  if (!l->nbacklogged)
    uv_timer_stop(t);
}

static void on_ping(uv_timer_t *t) {
  live *l = t->data;
  uint64_t now = uv_now(l->loop);
  for (client *c = l->clients; c; c = c->next) {
    if (c->dead || !c->ws->sock)
      continue;
    if (now - c->last_seen_ms > 3 * l->opt.ping_interval_ms) {
      kill_client(c, "no answer to pings");
      continue;
    }
    if (ws_queue(c, "", 0, WSLAY_PING))
      proceed(c);
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
  for (client *c = l->clients; c; c = c->next)
    client_send(c, m);
  msg_unref(m);
  if (l->nbacklogged && !uv_is_active((uv_handle_t *)&l->drain_timer))
    uv_timer_start(&l->drain_timer, on_drain, 10, 10);
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
  uv_timer_init(loop, &l->drain_timer);
  uv_timer_init(loop, &l->ping_timer);
  l->reap_timer.data = l->drain_timer.data = l->ping_timer.data = l;
  l->handles_open = 3;
  uv_timer_start(&l->ping_timer, on_ping, o->ping_interval_ms, o->ping_interval_ms);
  l->m_clients = qs_metric_series(
      qs_metrics_gauge(metrics, "quakestream_ws_clients", "open WebSocket clients", NULL));
  l->m_messages =
      qs_metric_series(qs_metrics_counter(metrics, "quakestream_ws_pubsub_messages_total",
                                          "messages received from Redis pub/sub", NULL));
  l->m_frames = qs_metric_series(qs_metrics_counter(metrics, "quakestream_ws_frames_total",
                                                    "frames queued to WebSocket clients", NULL));
  l->m_coalesced = qs_metric_series(
      qs_metrics_counter(metrics, "quakestream_ws_coalesced_total",
                         "updates replaced by a newer one of the same window in a backlog", NULL));
  l->m_dropped = qs_metric_series(
      qs_metrics_counter(metrics, "quakestream_ws_slow_disconnects_total",
                         "clients disconnected because their backlog was full", NULL));
  l->m_snapshots = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_ws_snapshots_total", "snapshots sent to subscribing clients", NULL));
  static const char *const channels[] = {"qs:live:aggregates", "qs:live:alerts", "qs:live:events"};
  if (qs_redis_subscribe(sub, channels, 3, on_pubsub, on_subscribed, l) != 0)
    QS_FATAL("qs_redis_subscribe on a fresh client failed");
  return l;
}

void live_set_api(live *l, api *a) { l->api = a; }

size_t live_clients(const live *l) { return l->nclients; }

static void maybe_closed(live *l) {
  if (l->handles_open == 0 && l->sub_closed && l->close_cb) {
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
  while (l->clients) { /* not inside any h2o callback here: closing at once is safe */
    client *c = l->clients;
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
  uv_close((uv_handle_t *)&l->drain_timer, timer_closed);
  uv_close((uv_handle_t *)&l->ping_timer, timer_closed);
  l->sub->data = l;
  qs_redis_close(l->sub, sub_closed);
}

void live_free(live *l) { free(l); }
