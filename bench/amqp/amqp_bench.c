/* amqp_bench.c — messages per second through the AMQP transport glue over
 * loopback, plain and TLS: a listener (receiver granting credit, accepting
 * and settling each delivery) and a client sender in ONE libuv loop, so the
 * figure is for both ends sharing one core.
 *
 * Usage: amqp_bench [messages=200000] [body_bytes=500]
 * TLS certificates are generated at start with the openssl CLI into a
 * temporary directory, which is removed at exit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include "qs/amqp_transport.h"
#include "qs/error.h"
#include "qs/tls.h"

typedef struct bench {
  int to_send, sent, acked, received;
  int errors;
  bool client_closed, server_closed;
  qs_amqp_listener listener;
  uint8_t msg[70000];
  size_t msg_len;
} bench;

static int srv_setup(qs_amqp_conn *c, void *data) {
  (void)data;
  pn_sasl_allowed_mechs(pn_sasl(qs_amqp_conn_transport(c)), "ANONYMOUS");
  pn_transport_set_max_frame(qs_amqp_conn_transport(c), 65536);
  qs_amqp_conn_use_frame_padding(c);
  return 0;
}

static void srv_event(qs_amqp_conn *c, pn_event_t *e, void *data) {
  bench *b = data;
  (void)c;
  switch (pn_event_type(e)) {
  case PN_CONNECTION_REMOTE_OPEN:
    pn_connection_open(pn_event_connection(e));
    break;
  case PN_SESSION_REMOTE_OPEN:
    pn_session_open(pn_event_session(e));
    break;
  case PN_LINK_REMOTE_OPEN: {
    pn_link_t *l = pn_event_link(e);
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_open(l);
    pn_link_flow(l, 1000);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    pn_link_t *l = pn_delivery_link(d);
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
      break;
    char buf[4096];
    while (pn_link_recv(l, buf, sizeof(buf)) > 0) {
    }
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    b->received++;
    if (pn_link_credit(l) < 500)
      pn_link_flow(l, 1000 - pn_link_credit(l));
    break;
  }
  case PN_CONNECTION_REMOTE_CLOSE:
    pn_connection_close(pn_event_connection(e));
    break;
  default:
    break;
  }
}

static void on_err(qs_amqp_conn *c, int code, const char *reason, void *data) {
  bench *b = data;
  (void)c;
  b->errors++;
  fprintf(stderr, "transport error %s: %s\n", qs_strerror(code), reason);
}

static void maybe_stop(bench *b) {
  if (b->client_closed && b->server_closed)
    qs_amqp_listener_close(&b->listener, NULL);
}

static void srv_closed(qs_amqp_conn *c, void *data) {
  bench *b = data;
  (void)c;
  b->server_closed = true;
  maybe_stop(b);
}

static int cli_setup(qs_amqp_conn *c, void *data) {
  (void)data;
  pn_sasl_allowed_mechs(pn_sasl(qs_amqp_conn_transport(c)), "ANONYMOUS");
  pn_transport_set_max_frame(qs_amqp_conn_transport(c), 65536);
  return 0;
}

static void cli_event(qs_amqp_conn *c, pn_event_t *e, void *data) {
  bench *b = data;
  (void)c;
  switch (pn_event_type(e)) {
  case PN_CONNECTION_INIT: {
    pn_connection_t *pc = pn_event_connection(e);
    pn_connection_set_container(pc, "bench");
    pn_connection_open(pc);
    pn_session_t *s = pn_session(pc);
    pn_session_open(s);
    pn_link_t *l = pn_sender(s, "bench");
    pn_terminus_set_address(pn_link_target(l), "q");
    pn_link_open(l);
    break;
  }
  case PN_LINK_FLOW: {
    pn_link_t *l = pn_event_link(e);
    while (pn_link_credit(l) > 0 && b->sent < b->to_send) {
      uint64_t tag = (uint64_t)b->sent++;
      pn_delivery(l, pn_dtag((const char *)&tag, sizeof(tag)));
      pn_link_send(l, (const char *)b->msg, b->msg_len);
      pn_link_advance(l);
    }
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    if (pn_delivery_updated(d) && pn_delivery_remote_state(d) == PN_ACCEPTED) {
      pn_delivery_settle(d);
      if (++b->acked == b->to_send)
        pn_connection_close(pn_event_connection(e));
    }
    break;
  }
  default:
    break;
  }
}

static void cli_closed(qs_amqp_conn *c, void *data) {
  bench *b = data;
  (void)c;
  b->client_closed = true;
  maybe_stop(b);
}

static double run_once(int n, size_t body, qs_tls_ctx *stls, qs_tls_ctx *ctls) {
  static const qs_amqp_conn_cbs scbs = {srv_setup, srv_event, on_err, srv_closed};
  static const qs_amqp_conn_cbs ccbs = {cli_setup, cli_event, on_err, cli_closed};
  bench *b = calloc(1, sizeof(*b));
  b->to_send = n;
  pn_message_t *m = pn_message();
  char *payload = calloc(1, body);
  pn_data_put_binary(pn_message_body(m), pn_bytes(body, payload));
  b->msg_len = sizeof(b->msg);
  if (pn_message_encode(m, (char *)b->msg, &b->msg_len) != 0) {
    fprintf(stderr, "message too large\n");
    exit(2);
  }
  pn_message_free(m);
  free(payload);
  uv_loop_t loop;
  uv_loop_init(&loop);
  if (qs_amqp_listener_init(&b->listener, &loop, "127.0.0.1", 0, stls, &scbs, b) != 0) {
    fprintf(stderr, "listen failed\n");
    exit(2);
  }
  qs_amqp_conn *c;
  if (qs_amqp_conn_connect(&loop, "127.0.0.1", qs_amqp_listener_port(&b->listener), ctls,
                           "localhost", &ccbs, b, &c) != 0) {
    fprintf(stderr, "connect failed\n");
    exit(2);
  }
  uint64_t t0 = uv_hrtime();
  uv_run(&loop, UV_RUN_DEFAULT);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  if (uv_loop_close(&loop) != 0 || b->received != n || b->errors) {
    fprintf(stderr, "bench run failed: received %d of %d, %d errors\n", b->received, n, b->errors);
    exit(1);
  }
  free(b);
  return n / secs;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200000;
  size_t body = argc > 2 ? (size_t)atol(argv[2]) : 500;
  if (n <= 0 || body == 0 || body > 60000) {
    fprintf(stderr, "usage: %s [messages>0] [body_bytes 1..60000]\n", argv[0]);
    return 2;
  }
  char dir[] = "/tmp/qs-amqp-bench-XXXXXX";
  if (!mkdtemp(dir))
    return 2;
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null && "
           "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null && "
           "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > srv.ext && "
           "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
           "-out srv.crt -extfile srv.ext 2>/dev/null",
           dir);
  if (system(cmd) != 0) {
    fprintf(stderr, "openssl CLI failed\n");
    return 2;
  }
  char crt[128], key[128], ca[128], err[256];
  snprintf(crt, sizeof(crt), "%s/srv.crt", dir);
  snprintf(key, sizeof(key), "%s/srv.key", dir);
  snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
  qs_tls_ctx stls, ctls;
  if (qs_tls_ctx_init_server(&stls, crt, key, err, sizeof(err)) != 0 ||
      qs_tls_ctx_init_client(&ctls, ca, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  double plain = run_once(n, body, NULL, NULL);
  double tls = run_once(n, body, &stls, &ctls);
  printf("amqp loopback, one loop, %d messages of %zu-byte body, unsettled + accepted:\n", n, body);
  printf("  plain: %.0f msg/s (%.1f MB/s)\n", plain, plain * (double)body / 1e6);
  printf("  tls:   %.0f msg/s (%.1f MB/s)  tls/plain = %.2f\n", tls, tls * (double)body / 1e6,
         tls / plain);
  qs_tls_ctx_close(&stls);
  qs_tls_ctx_close(&ctls);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : 1;
}
