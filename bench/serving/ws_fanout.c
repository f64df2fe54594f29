/* ws_fanout.c — how long one live update takes to reach N WebSocket subscribers of serving-api.
 *
 * usage: ws_fanout API_PORT REDIS_PORT [clients=10000] [updates=20]
 * Opens `clients` connections to /api/v1/live (RFC 6455 client, masked frames), subscribes each
 * to "events", then publishes `updates` events on qs:live:events one at a time (each carrying its
 * CLOCK_MONOTONIC publish time, t_ns) and waits until every client has it. Prints, over all
 * deliveries, p50/p99/max of publish-to-receive latency and the median time for an update to
 * reach the last subscriber. Client and server share the machine, so the clock is the same.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t conn;
  char buf[65536];
  size_t len;
  int stage; /* 0 handshake, 1 waiting for subscribed+snapshot, 2 streaming */
  int got;   /* updates received */
} client;

static uv_loop_t *loop;
static client *clients;
static int nclients, ready, nupdates, published, received_this;
static uint64_t *lat;
static size_t nlat;
static redisContext *rc;
static uint64_t spread_sum[1024];

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)sz;
  client *c = h->data;
  b->base = c->buf + c->len;
  b->len = sizeof c->buf - c->len;
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  free(w);
}

static void send_raw(client *c, const char *data, size_t n) {
  uv_write_t *w = malloc(sizeof *w + n);
  memcpy((char *)(w + 1), data, n);
  uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
  uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void send_text(client *c, const char *s) {
  size_t n = strlen(s);
  char f[256];
  f[0] = (char)0x81;
  f[1] = (char)(0x80 | n); /* n < 126 */
  memset(f + 2, 0, 4);     /* mask 0: XOR leaves the payload as is */
  memcpy(f + 6, s, n);
  send_raw(c, f, n + 6);
}

static void publish(void);
static uint64_t t_pub;

static void on_update(client *c, const char *p, size_t n) {
  const char *t = memmem(p, n, "\"t_ns\":", 7);
  if (!t)
    return;
  uint64_t sent = strtoull(t + 7, NULL, 10);
  uint64_t now = uv_hrtime();
  lat[nlat++] = now - sent;
  c->got++;
  if (++received_this == nclients) {
    spread_sum[published - 1] = now - t_pub;
    received_this = 0;
    if (published < nupdates)
      publish();
    else
      uv_stop(loop);
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  (void)b;
  client *c = s->data;
  if (nread < 0) {
    fprintf(stderr, "client closed: %s\n", uv_strerror((int)nread));
    exit(1);
  }
  c->len += (size_t)nread;
  if (c->stage == 0) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
      return;
    if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0) {
      fprintf(stderr, "no upgrade: %.60s\n", c->buf);
      exit(1);
    }
    size_t hl = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + hl, c->len - hl);
    c->len -= hl;
    c->stage = 1;
    send_text(c, "{\"type\":\"subscribe\",\"topics\":[\"events\"]}");
  }
  for (;;) { /* frames */
    if (c->len < 2)
      return;
    uint8_t *u = (uint8_t *)c->buf;
    size_t pl = u[1] & 0x7F, pos = 2;
    if (pl == 126) {
      if (c->len < 4)
        return;
      pl = ((size_t)u[2] << 8) | u[3];
      pos = 4;
    } else if (pl == 127) {
      if (c->len < 10)
        return;
      pl = 0;
      for (int i = 0; i < 8; i++)
        pl = (pl << 8) | u[2 + i];
      pos = 10;
    }
    if (c->len < pos + pl)
      return;
    const char *p = c->buf + pos;
    if ((u[0] & 0x0F) == 1) {
      if (c->stage == 1 && memmem(p, pl, "\"type\":\"snapshot\"", 17)) {
        c->stage = 2;
        if (++ready == nclients) {
          fprintf(stderr, "%d subscribers ready\n", nclients);
          publish();
        }
      } else if (c->stage == 2) {
        on_update(c, p, pl);
      }
    }
    memmove(c->buf, c->buf + pos + pl, c->len - pos - pl);
    c->len -= pos + pl;
  }
}

static int api_port;

static void on_connect(uv_connect_t *req, int status) {
  client *c = req->data;
  if (status != 0) {
    fprintf(stderr, "connect: %s\n", uv_strerror(status));
    exit(1);
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  char hs[256];
  int n = snprintf(hs, sizeof hs,
                   "GET /api/v1/live HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   api_port);
  send_raw(c, hs, (size_t)n);
}

static void publish(void) {
  char msg[512];
  published++;
  t_pub = uv_hrtime();
  snprintf(msg, sizeof msg,
           "{\"type\":\"event\",\"data\":{\"event_id\":\"bench%d\",\"magnitude\":4.2,"
           "\"region\":\"japan\",\"time\":0,\"t_ns\":%llu}}",
           published, (unsigned long long)t_pub);
  redisReply *r = redisCommand(rc, "PUBLISH qs:live:events %s", msg);
  if (!r || r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "PUBLISH failed\n");
    exit(1);
  }
  freeReplyObject(r);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ws_fanout API_PORT REDIS_PORT [clients] [updates]\n");
    return 2;
  }
  api_port = atoi(argv[1]);
  int redis_port = atoi(argv[2]);
  nclients = argc > 3 ? atoi(argv[3]) : 10000;
  nupdates = argc > 4 ? atoi(argv[4]) : 20;
  if (nupdates > 1024)
    nupdates = 1024;
  rc = redisConnect("127.0.0.1", redis_port);
  if (!rc || rc->err) {
    fprintf(stderr, "redis connect failed\n");
    return 1;
  }
  loop = uv_default_loop();
  clients = calloc((size_t)nclients, sizeof *clients);
  lat = calloc((size_t)nclients * (size_t)nupdates, sizeof *lat);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", api_port, &a);
  for (int i = 0; i < nclients; i++) {
    client *c = &clients[i];
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->conn.data = c;
    uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&a, on_connect);
    if (i % 500 == 499) /* let the server accept a wave before the next */
      uv_run(loop, UV_RUN_NOWAIT);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  qsort(lat, nlat, sizeof *lat, cmp_u64);
  qsort(spread_sum, (size_t)nupdates, sizeof *spread_sum, cmp_u64);
  printf("ws_fanout clients=%d updates=%d deliveries=%zu latency_ms p50=%.2f p99=%.2f max=%.2f "
         "all_reached_ms_median=%.2f\n",
         nclients, nupdates, nlat, lat[nlat / 2] / 1e6, lat[nlat * 99 / 100] / 1e6,
         lat[nlat - 1] / 1e6, spread_sum[nupdates / 2] / 1e6);
  redisFree(rc);
  return 0;
}
