/* hub_ingest.c — end-to-end throughput of a running hub, as an Event Hubs client sees it:
 * SASL ANONYMOUS, a $cbs put-token, then N events of B bytes sent to one partition with a window
 * of unsettled deliveries (each acknowledged only once durable), then the same events read back
 * from the earliest position with prefetch credit. Prints events/s both ways and the
 * publish-to-ack latency p50/p99. One connection, one libuv loop, the project's AMQP transport.
 *
 * Usage: hub_ingest HOST PORT KEY [events=200000] [bytes=500] [window=2000] [partition=0]
 * (bench/hub/run.sh starts a hub on free ports and runs this against it.)
 * Peer mode, for a side-by-side run against another AMQP 1.0 broker: KEY = plain:USER:PASSWORD
 * uses SASL PLAIN instead of CBS, addresses /queue/qs-bench-<partition> (RabbitMQ's AMQP 1.0
 * plugin syntax) and no start filter; events are sent durable in both modes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/codec.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "qs/amqp_transport.h"
#include "qs/ehconn.h"
#include "qs/error.h"
#include "qs/timeutil.h"

typedef struct bench {
  const char *host, *key;
  bool peer; /* another broker: SASL PLAIN, queue addresses, no CBS */
  char user[64], password[64];
  int port, partition;
  long events, window, bytes;
  pn_link_t *cbs_out, *cbs_in, *sender, *receiver;
  long sent, acked, received;
  uint64_t *sent_at; /* uv_hrtime of each send, by sequence of sending */
  double *lat_ms;
  uint64_t t_send0, t_send1, t_recv0, t_recv1;
  char *msg;
  size_t msg_len;
  bool failed, done;
  uv_loop_t *loop;
} bench;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int setup(qs_amqp_conn *c, void *data) {
  bench *b = data;
  pn_transport_t *t = qs_amqp_conn_transport(c);
  pn_sasl_allowed_mechs(pn_sasl(t), b->peer ? "PLAIN" : "ANONYMOUS");
  if (b->peer) { /* PLAIN over loopback TCP; credentials must be set before the transport binds */
    pn_sasl_set_allow_insecure_mechs(pn_sasl(t), true);
    pn_connection_set_user(qs_amqp_conn_connection(c), b->user);
    pn_connection_set_password(qs_amqp_conn_connection(c), b->password);
  }
  pn_transport_set_max_frame(t, 65536);
  return 0;
}

static void put_token(bench *b) {
  char audience[256], token[1024];
  snprintf(audience, sizeof audience, "sb://%s:%d/earthquake-events", b->host, b->port);
  qs_sas_token_make(audience, "RootManageSharedAccessKey", b->key, qs_time_now_ms() / 1000 + 3600,
                    token, sizeof token);
  pn_message_t *m = pn_message();
  pn_data_put_string(pn_message_id(m), pn_bytes(sizeof "token-01" - 1, "token-01"));
  pn_message_set_reply_to(m, "cbs-reply");
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  pn_data_put_string(ap, pn_bytes(sizeof "operation" - 1, "operation"));
  pn_data_put_string(ap, pn_bytes(sizeof "put-token" - 1, "put-token"));
  pn_data_put_string(ap, pn_bytes(sizeof "name" - 1, "name"));
  pn_data_put_string(ap, pn_bytes(strlen(audience), audience));
  pn_data_put_string(ap, pn_bytes(sizeof "type" - 1, "type"));
  pn_data_put_string(ap, pn_bytes(sizeof "servicebus.windows.net:sastoken" - 1,
                                  "servicebus.windows.net:sastoken"));
  pn_data_exit(ap);
  pn_data_put_string(pn_message_body(m), pn_bytes(strlen(token), token));
  char buf[4096];
  size_t len = sizeof buf;
  pn_message_encode(m, buf, &len);
  pn_message_free(m);
  pn_delivery(b->cbs_out, pn_dtag("t", 1));
  pn_link_send(b->cbs_out, buf, len);
  pn_link_advance(b->cbs_out);
}

static void send_some(bench *b) {
  while (b->sent < b->events && pn_link_credit(b->sender) > 0 && b->sent - b->acked < b->window) {
    char tag[16];
    int n = snprintf(tag, sizeof tag, "%ld", b->sent);
    pn_delivery(b->sender, pn_dtag(tag, (size_t)n));
    pn_link_send(b->sender, b->msg, b->msg_len);
    pn_link_advance(b->sender);
    b->sent_at[b->sent++] = uv_hrtime();
  }
}

static void open_receiver(bench *b, pn_session_t *s) {
  char addr[128];
  if (b->peer)
    snprintf(addr, sizeof addr, "/queue/qs-bench-%d", b->partition);
  else
    snprintf(addr, sizeof addr, "earthquake-events/ConsumerGroups/$Default/Partitions/%d",
             b->partition);
  b->receiver = pn_receiver(s, "bench-recv");
  pn_terminus_set_address(pn_link_source(b->receiver), addr);
  if (b->peer) {
    pn_link_open(b->receiver);
    pn_link_flow(b->receiver, 5000);
    b->t_recv0 = uv_hrtime();
    return;
  }
  pn_data_t *f = pn_terminus_filter(pn_link_source(b->receiver));
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, pn_bytes(sizeof "apache.org:selector-filter:string" - 1,
                                 "apache.org:selector-filter:string"));
  pn_data_put_described(f);
  pn_data_enter(f);
  pn_data_put_ulong(f, 0x0000468C00000004ull);
  static const char expr[] = "amqp.annotation.x-opt-offset > '-1'";
  pn_data_put_string(f, pn_bytes(sizeof expr - 1, expr));
  pn_data_exit(f);
  pn_data_exit(f);
  pn_link_open(b->receiver);
  pn_link_flow(b->receiver, 5000);
  b->t_recv0 = uv_hrtime();
}

static void on_event(qs_amqp_conn *c, pn_event_t *e, void *data) {
  bench *b = data;
  switch (pn_event_type(e)) {
  case PN_CONNECTION_INIT: {
    pn_connection_t *pc = pn_event_connection(e);
    pn_connection_set_container(pc, "hub-ingest-bench");
    pn_connection_set_hostname(pc, b->host);
    pn_connection_open(pc);
    pn_session_t *s = pn_session(pc);
    pn_session_open(s);
    if (b->peer) { /* no CBS: straight to the queue */
      char addr[64];
      snprintf(addr, sizeof addr, "/queue/qs-bench-%d", b->partition);
      b->sender = pn_sender(s, "bench-send");
      pn_terminus_set_address(pn_link_target(b->sender), addr);
      pn_link_open(b->sender);
      b->t_send0 = uv_hrtime();
      break;
    }
    b->cbs_out = pn_sender(s, "cbs-out");
    pn_terminus_set_address(pn_link_target(b->cbs_out), "$cbs");
    pn_link_open(b->cbs_out);
    b->cbs_in = pn_receiver(s, "cbs-reply");
    pn_terminus_set_address(pn_link_source(b->cbs_in), "$cbs");
    pn_link_open(b->cbs_in);
    pn_link_flow(b->cbs_in, 10);
    break;
  }
  case PN_LINK_FLOW: {
    pn_link_t *l = pn_event_link(e);
    if (l == b->cbs_out && pn_link_credit(l) > 0 && !b->sender && pn_link_queued(l) == 0 &&
        pn_link_unsettled(l) == 0)
      put_token(b);
    else if (l == b->sender)
      send_some(b);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    pn_link_t *l = pn_delivery_link(d);
    if (l == b->cbs_out) {
      pn_delivery_settle(d);
    } else if (l == b->cbs_in) {
      if (pn_delivery_partial(d))
        break;
      char buf[4096];
      ssize_t n = pn_link_recv(l, buf, sizeof buf);
      pn_message_t *m = pn_message();
      pn_message_decode(m, buf, (size_t)(n > 0 ? n : 0));
      pn_data_t *ap = pn_message_properties(m);
      int status = 0;
      pn_data_rewind(ap);
      if (pn_data_next(ap) && pn_data_enter(ap)) {
        while (pn_data_next(ap)) {
          pn_bytes_t k = pn_data_get_string(ap);
          pn_data_next(ap);
          if (k.size == 11 && memcmp(k.start, "status-code", 11) == 0)
            status = pn_data_get_int(ap);
        }
      }
      pn_message_free(m);
      pn_delivery_update(d, PN_ACCEPTED);
      pn_delivery_settle(d);
      if (status != 202) {
        fprintf(stderr, "put-token refused: status %d\n", status);
        b->failed = true;
        pn_connection_close(qs_amqp_conn_connection(c));
        break;
      }
      char addr[64];
      snprintf(addr, sizeof addr, "earthquake-events/Partitions/%d", b->partition);
      b->sender = pn_sender(pn_link_session(l), "bench-send");
      pn_terminus_set_address(pn_link_target(b->sender), addr);
      pn_link_open(b->sender);
      b->t_send0 = uv_hrtime();
    } else if (l == b->sender) {
      if (!pn_delivery_updated(d))
        break;
      if (pn_delivery_remote_state(d) != PN_ACCEPTED) {
        fprintf(stderr, "event refused (state %" PRIu64 ")\n", pn_delivery_remote_state(d));
        b->failed = true;
      }
      pn_delivery_tag_t tag = pn_delivery_tag(d);
      long i = strtol(tag.start, NULL, 10); /* tags are decimal, short, NUL-free prefixes */
      if (i >= 0 && i < b->events)
        b->lat_ms[b->acked] = (double)(uv_hrtime() - b->sent_at[i]) / 1e6;
      b->acked++;
      pn_delivery_settle(d);
      if (b->acked == b->events) {
        b->t_send1 = uv_hrtime();
        open_receiver(b, pn_link_session(l));
      } else {
        send_some(b);
      }
    } else if (l == b->receiver) {
      if (pn_delivery_partial(d))
        break;
      char buf[70000];
      while (pn_link_recv(l, buf, sizeof buf) > 0) {
      }
      pn_delivery_update(d, PN_ACCEPTED);
      pn_delivery_settle(d);
      if (++b->received == b->events) {
        b->t_recv1 = uv_hrtime();
        b->done = true;
        pn_connection_close(qs_amqp_conn_connection(c));
      } else if (pn_link_credit(l) < 2500) {
        pn_link_flow(l, 5000 - pn_link_credit(l));
      }
    }
    break;
  }
  case PN_LINK_REMOTE_CLOSE: {
    pn_condition_t *cond = pn_link_remote_condition(pn_event_link(e));
    if (pn_condition_is_set(cond)) {
      fprintf(stderr, "link closed: %s %s\n", pn_condition_get_name(cond),
              pn_condition_get_description(cond));
      b->failed = true;
      pn_connection_close(qs_amqp_conn_connection(c));
    }
    break;
  }
  default:
    break;
  }
}

static void on_error(qs_amqp_conn *c, int code, const char *reason, void *data) {
  (void)c;
  bench *b = data;
  if (!b->done) {
    fprintf(stderr, "connection failed: %s (%s)\n", reason, qs_strerror(code));
    b->failed = true;
  }
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s HOST PORT KEY [events] [bytes] [window] [partition]\n", argv[0]);
    return 2;
  }
  bench b = {.host = argv[1], .port = atoi(argv[2]), .key = argv[3]};
  if (strncmp(b.key, "plain:", 6) == 0) {
    b.peer = true;
    if (sscanf(b.key + 6, "%63[^:]:%63s", b.user, b.password) != 2) {
      fprintf(stderr, "peer mode: KEY must be plain:USER:PASSWORD\n");
      return 2;
    }
  }
  b.events = argc > 4 ? atol(argv[4]) : 200000;
  b.bytes = argc > 5 ? atol(argv[5]) : 500;
  b.window = argc > 6 ? atol(argv[6]) : 2000;
  b.partition = argc > 7 ? atoi(argv[7]) : 0;
  if (b.events < 1 || b.bytes < 1 || b.bytes > 60000 || b.window < 1) {
    fprintf(stderr, "events >= 1, 1 <= bytes <= 60000, window >= 1\n");
    return 2;
  }
  /* One event: an AMQP message whose body is a data section of `bytes` bytes. */
  pn_message_t *m = pn_message();
  char *body = malloc((size_t)b.bytes);
  memset(body, 'q', (size_t)b.bytes);
  pn_data_put_binary(pn_message_body(m), pn_bytes((size_t)b.bytes, body));
  pn_message_set_inferred(m, true);
  pn_message_set_durable(m, true); /* a peer broker must persist it before accepting */
  b.msg = malloc((size_t)b.bytes + 256);
  b.msg_len = (size_t)b.bytes + 256;
  pn_message_encode(m, b.msg, &b.msg_len);
  pn_message_free(m);
  free(body);
  b.sent_at = calloc((size_t)b.events, sizeof *b.sent_at);
  b.lat_ms = calloc((size_t)b.events, sizeof *b.lat_ms);

  uv_loop_t loop;
  uv_loop_init(&loop);
  b.loop = &loop;
  qs_amqp_conn_cbs cbs = {.setup = setup, .on_event = on_event, .on_error = on_error};
  qs_amqp_conn *conn;
  if (qs_amqp_conn_connect(&loop, b.host, b.port, NULL, NULL, &cbs, &b, &conn) != 0) {
    fprintf(stderr, "cannot connect to %s:%d\n", b.host, b.port);
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (b.failed || !b.done) {
    fprintf(stderr, "benchmark did not complete (acked %ld, received %ld of %ld)\n", b.acked,
            b.received, b.events);
    return 1;
  }
  qsort(b.lat_ms, (size_t)b.acked, sizeof *b.lat_ms, cmp_double);
  double send_s = (double)(b.t_send1 - b.t_send0) / 1e9,
         recv_s = (double)(b.t_recv1 - b.t_recv0) / 1e9;
  printf("%s ingest: %ld events of %ld bytes, window %ld, partition %d\n", b.peer ? "peer" : "hub",
         b.events, b.bytes, b.window, b.partition);
  printf("  send (acked, durable): %.0f events/s (%.2f s)\n", (double)b.events / send_s, send_s);
  printf("  publish->ack latency:  p50 %.2f ms  p99 %.2f ms\n", b.lat_ms[b.acked / 2],
         b.lat_ms[(size_t)((double)b.acked * 0.99)]);
  printf("  consume from earliest: %.0f events/s (%.2f s)\n", (double)b.events / recv_s, recv_s);
  free(b.sent_at);
  free(b.lat_ms);
  free(b.msg);
  return 0;
}
