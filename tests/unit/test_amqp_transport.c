/* test_amqp_transport.c — the AMQP transport glue.
 *
 * (1) in memory: two pn_connection_drivers pumped into each other (proton's
 *     driver_pair idea) with the frame padding filter on the server's output;
 * (2) loopback TCP: listener + client in one loop, 10,000 messages with
 *     credit, clean close, uv_loop_close() == 0;
 * (3) the same over TLS with a CA and server cert generated at run time;
 * (4) TLS to a server whose certificate names another host fails with a
 *     verification reason;
 * (5) a peer that stops talking is detected by the idle timeout.
 * A watchdog timer (unref'd) aborts a stuck test instead of hanging it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

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

/* ---- run-time certificates (same recipe as test_tls.c) ------------------ */

static char cert_dir[64];

static int run(const char *cmd) { return system(cmd) == 0 ? 0 : -1; }

static int make_ca(const char *name) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s.key -out %s.crt -days 2 -subj /CN=qs-test-%s "
           "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
           "2>/dev/null",
           cert_dir, name, name, name);
  return run(cmd);
}

static int make_leaf(const char *leaf, const char *san) {
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout %s.key -out %s.csr -subj /CN=%s 2>/dev/null && "
           "printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\n' > %s.ext && "
           "openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
           "-out %s.crt -extfile %s.ext 2>/dev/null",
           cert_dir, leaf, leaf, leaf, san, leaf, leaf, leaf, leaf);
  return run(cmd);
}

static const char *cert_path(const char *name) {
  static char buf[4][128];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof(buf[i]), "%s/%s", cert_dir, name);
  return buf[i];
}

static int group_setup(void **state) {
  (void)state;
  snprintf(cert_dir, sizeof(cert_dir), "/tmp/qs-amqp-XXXXXX");
  if (!mkdtemp(cert_dir))
    return -1;
  if (make_ca("ca") || make_leaf("srv", "IP:127.0.0.1,DNS:localhost") ||
      make_leaf("wrong", "DNS:wrong.example")) {
    fprintf(stderr, "openssl CLI failed to generate test certificates\n");
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", cert_dir);
  return run(cmd);
}

/* ---- a tiny broker and a sending client, as proton handlers ------------- */

typedef struct app {
  /* configuration */
  int to_send;
  size_t body_size;
  uint32_t idle_timeout_ms;
  bool frame_padding;
  /* client */
  int sent, acked, wakes;
  bool client_closed;
  int client_error, client_errors;
  char client_reason[512];
  qs_amqp_conn *client;
  /* server */
  int received;
  int server_conns_open;
  int server_conns_closed;
  int server_error;
  char server_reason[512];
  /* plumbing */
  qs_amqp_listener listener;
  bool listener_open;
  uv_timer_t watchdog;
  bool timed_out;
  bool reject_in_setup;
  bool abort_on_open;
  uint8_t msg[70000];
  size_t msg_len;
} app;

static void encode_message(app *a) {
  pn_message_t *m = pn_message();
  static char body[65536];
  memset(body, 'q', sizeof(body));
  assert_true(a->body_size <= sizeof(body));
  pn_data_put_binary(pn_message_body(m), pn_bytes(a->body_size, body));
  a->msg_len = sizeof(a->msg);
  assert_int_equal(pn_message_encode(m, (char *)a->msg, &a->msg_len), 0);
  pn_message_free(m);
}

static void maybe_close_listener(app *a) {
  if (a->listener_open && a->client_closed && a->server_conns_closed == a->server_conns_open &&
      (a->server_conns_open > 0 || a->reject_in_setup)) {
    a->listener_open = false;
    qs_amqp_listener_close(&a->listener, NULL);
    uv_timer_stop(&a->watchdog);
  }
}

static int broker_setup(qs_amqp_conn *c, void *data) {
  app *a = data;
  pn_transport_t *t = qs_amqp_conn_transport(c);
  pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  pn_transport_set_max_frame(t, 65536);
  if (a->idle_timeout_ms)
    pn_transport_set_idle_timeout(t, a->idle_timeout_ms);
  pn_connection_set_container(qs_amqp_conn_connection(c), "qs-test-broker");
  if (a->frame_padding)
    qs_amqp_conn_use_frame_padding(c);
  if (a->reject_in_setup)
    return QS_ERR_FULL;
  a->server_conns_open++;
  return 0;
}

static void broker_on_event(qs_amqp_conn *c, pn_event_t *e, void *data) {
  app *a = data;
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
    pn_terminus_copy(pn_link_source(l), pn_link_remote_source(l));
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_open(l);
    if (pn_link_is_receiver(l))
      pn_link_flow(l, 500);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    pn_link_t *l = pn_delivery_link(d);
    if (!pn_link_is_receiver(l) || !pn_delivery_readable(d) || pn_delivery_partial(d))
      break;
    char buf[2048];
    while (pn_link_recv(l, buf, sizeof(buf)) > 0) {
    }
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    a->received++;
    if (pn_link_credit(l) < 250)
      pn_link_flow(l, 500 - pn_link_credit(l));
    break;
  }
  case PN_LINK_REMOTE_CLOSE:
    pn_link_close(pn_event_link(e));
    break;
  case PN_SESSION_REMOTE_CLOSE:
    pn_session_close(pn_event_session(e));
    break;
  case PN_CONNECTION_REMOTE_CLOSE:
    pn_connection_close(pn_event_connection(e));
    break;
  default:
    break;
  }
}

static void broker_on_error(qs_amqp_conn *c, int code, const char *reason, void *data) {
  app *a = data;
  (void)c;
  a->server_error = code;
  snprintf(a->server_reason, sizeof(a->server_reason), "%s", reason);
}

static void broker_on_closed(qs_amqp_conn *c, void *data) {
  app *a = data;
  (void)c;
  a->server_conns_closed++;
  maybe_close_listener(a);
}

static int client_setup(qs_amqp_conn *c, void *data) {
  app *a = data;
  pn_transport_t *t = qs_amqp_conn_transport(c);
  pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
  pn_transport_set_max_frame(t, 65536);
  if (a->idle_timeout_ms)
    pn_transport_set_idle_timeout(t, a->idle_timeout_ms);
  return 0;
}

static void client_send(app *a, pn_link_t *l) {
  while (pn_link_credit(l) > 0 && a->sent < a->to_send) {
    uint64_t tag = (uint64_t)a->sent;
    pn_delivery(l, pn_dtag((const char *)&tag, sizeof(tag)));
    assert_int_equal(pn_link_send(l, (const char *)a->msg, a->msg_len), (ssize_t)a->msg_len);
    pn_link_advance(l);
    a->sent++;
  }
}

static void client_on_event(qs_amqp_conn *c, pn_event_t *e, void *data) {
  app *a = data;
  switch (pn_event_type(e)) {
  case PN_CONNECTION_INIT: {
    pn_connection_t *pc = pn_event_connection(e);
    pn_connection_set_container(pc, "qs-test-client");
    pn_connection_set_hostname(pc, "localhost");
    pn_connection_open(pc);
    pn_session_t *s = pn_session(pc);
    pn_session_open(s);
    pn_link_t *l = pn_sender(s, "sender");
    pn_terminus_set_address(pn_link_target(l), "q");
    pn_link_open(l);
    break;
  }
  case PN_CONNECTION_REMOTE_OPEN:
    assert_ptr_equal(qs_amqp_conn_from_connection(pn_event_connection(e)), c);
    assert_ptr_equal(qs_amqp_conn_connection(c), pn_event_connection(e));
    if (a->abort_on_open)
      qs_amqp_conn_abort(c, "test gives up");
    else
      qs_amqp_conn_wake(c);
    break;
  case PN_CONNECTION_WAKE:
    a->wakes++;
    break;
  case PN_LINK_FLOW:
    client_send(a, pn_event_link(e));
    break;
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    if (pn_delivery_updated(d) && pn_delivery_remote_state(d) == PN_ACCEPTED) {
      pn_delivery_settle(d);
      if (++a->acked == a->to_send)
        pn_connection_close(pn_event_connection(e));
    }
    break;
  }
  default:
    break;
  }
}

static void client_on_error(qs_amqp_conn *c, int code, const char *reason, void *data) {
  app *a = data;
  (void)c;
  a->client_error = code;
  a->client_errors++;
  snprintf(a->client_reason, sizeof(a->client_reason), "%s", reason);
}

static void client_on_closed(qs_amqp_conn *c, void *data) {
  app *a = data;
  (void)c;
  a->client_closed = true;
  a->client = NULL;
  maybe_close_listener(a);
}

static const qs_amqp_conn_cbs broker_cbs = {broker_setup, broker_on_event, broker_on_error,
                                            broker_on_closed};
static const qs_amqp_conn_cbs client_cbs = {client_setup, client_on_event, client_on_error,
                                            client_on_closed};

static void on_watchdog(uv_timer_t *t) {
  app *a = t->data;
  a->timed_out = true;
  if (a->client)
    qs_amqp_conn_abort(a->client, "test watchdog");
  if (a->listener_open) {
    a->listener_open = false;
    qs_amqp_listener_close(&a->listener, NULL);
  }
}

static void start_watchdog(uv_loop_t *loop, app *a, uint64_t ms) {
  uv_timer_init(loop, &a->watchdog);
  a->watchdog.data = a;
  uv_timer_start(&a->watchdog, on_watchdog, ms, 0);
  uv_unref((uv_handle_t *)&a->watchdog);
}

static void finish_loop(uv_loop_t *loop, app *a) {
  uv_close((uv_handle_t *)&a->watchdog, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(loop), 0);
}

/* Runs a listener and a client sending a->to_send messages in one loop. */
static void run_transfer(app *a, qs_tls_ctx *server_tls, qs_tls_ctx *client_tls,
                         const char *peer_name) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  encode_message(a);
  assert_int_equal(
      qs_amqp_listener_init(&a->listener, &loop, "127.0.0.1", 0, server_tls, &broker_cbs, a), 0);
  a->listener_open = true;
  int port = qs_amqp_listener_port(&a->listener);
  assert_true(port > 0);
  assert_int_equal(qs_amqp_conn_connect(&loop, "127.0.0.1", port, client_tls, peer_name,
                                        &client_cbs, a, &a->client),
                   0);
  start_watchdog(&loop, a, 30000);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish_loop(&loop, a);
  assert_false(a->timed_out);
}

static void test_loopback_transfers_10000_messages_and_closes_clean(void **state) {
  (void)state;
  app *a = calloc(1, sizeof(*a));
  a->to_send = 10000;
  a->body_size = 20;
  run_transfer(a, NULL, NULL, NULL);
  assert_int_equal(a->received, 10000);
  assert_int_equal(a->acked, 10000);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  assert_true(a->wakes >= 1);
  assert_int_equal(a->server_conns_closed, 1);
  free(a);
}

static void test_loopback_with_frame_padding_still_works(void **state) {
  (void)state;
  app *a = calloc(1, sizeof(*a));
  a->to_send = 100;
  a->body_size = 500;
  a->frame_padding = true;
  run_transfer(a, NULL, NULL, NULL);
  assert_int_equal(a->received, 100);
  assert_int_equal(a->acked, 100);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  free(a);
}

static void test_tls_loopback_transfers_10000_messages(void **state) {
  (void)state;
  qs_tls_ctx sctx, cctx;
  char err[256];
  assert_int_equal(
      qs_tls_ctx_init_server(&sctx, cert_path("srv.crt"), cert_path("srv.key"), err, sizeof(err)),
      0);
  assert_int_equal(qs_tls_ctx_init_client(&cctx, cert_path("ca.crt"), err, sizeof(err)), 0);
  app *a = calloc(1, sizeof(*a));
  a->to_send = 10000;
  a->body_size = 20;
  a->frame_padding = true; /* the hub's TLS listener filters, as for pyamqp */
  run_transfer(a, &sctx, &cctx, "localhost");
  assert_int_equal(a->received, 10000);
  assert_int_equal(a->acked, 10000);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  free(a);
  /* The IP literal is verified against the IP SAN. */
  a = calloc(1, sizeof(*a));
  a->to_send = 10;
  a->body_size = 20;
  run_transfer(a, &sctx, &cctx, NULL);
  assert_int_equal(a->received, 10);
  assert_int_equal(a->client_error, 0);
  free(a);
  qs_tls_ctx_close(&sctx);
  qs_tls_ctx_close(&cctx);
}

static void test_tls_name_mismatch_fails_with_verification_reason(void **state) {
  (void)state;
  qs_tls_ctx sctx, cctx;
  char err[256];
  assert_int_equal(qs_tls_ctx_init_server(&sctx, cert_path("wrong.crt"), cert_path("wrong.key"),
                                          err, sizeof(err)),
                   0);
  assert_int_equal(qs_tls_ctx_init_client(&cctx, cert_path("ca.crt"), err, sizeof(err)), 0);
  app *a = calloc(1, sizeof(*a));
  a->to_send = 10;
  a->body_size = 20;
  run_transfer(a, &sctx, &cctx, "localhost");
  assert_int_equal(a->client_error, QS_ERR_AUTH);
  assert_int_equal(a->client_errors, 1);
  assert_non_null(strstr(a->client_reason, "certificate verification failed"));
  assert_non_null(strstr(a->client_reason, "ostname mismatch"));
  assert_int_equal(a->received, 0);
  assert_true(a->server_error != 0); /* the server saw the alert or the abort */
  assert_true(a->client_closed);
  free(a);
  qs_tls_ctx_close(&sctx);
  qs_tls_ctx_close(&cctx);
}

static void test_tls_large_multi_frame_messages_pass_through_filter(void **state) {
  (void)state;
  qs_tls_ctx sctx, cctx;
  char err[256];
  assert_int_equal(
      qs_tls_ctx_init_server(&sctx, cert_path("srv.crt"), cert_path("srv.key"), err, sizeof(err)),
      0);
  assert_int_equal(qs_tls_ctx_init_client(&cctx, cert_path("ca.crt"), err, sizeof(err)), 0);
  app *a = calloc(1, sizeof(*a));
  a->to_send = 300;
  a->body_size = 60000; /* 60 KB messages over 64 KiB frames, staged and encrypted */
  a->frame_padding = true;
  run_transfer(a, &sctx, &cctx, "localhost");
  assert_int_equal(a->received, 300);
  assert_int_equal(a->acked, 300);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  free(a);
  qs_tls_ctx_close(&sctx);
  qs_tls_ctx_close(&cctx);
}

static void test_abort_reports_closed_and_peer_sees_abort(void **state) {
  (void)state;
  app *a = calloc(1, sizeof(*a));
  a->to_send = 10;
  a->body_size = 20;
  a->abort_on_open = true;
  run_transfer(a, NULL, NULL, NULL);
  assert_int_equal(a->client_error, QS_ERR_CLOSED);
  assert_int_equal(a->client_errors, 1);
  assert_non_null(strstr(a->client_reason, "test gives up"));
  assert_int_equal(a->server_error, QS_ERR_IO); /* "connection aborted" */
  assert_non_null(strstr(a->server_reason, "aborted"));
  assert_true(a->client_closed);
  assert_int_equal(a->server_conns_closed, 1);
  free(a);
}

static void test_setup_rejection_drops_connection_without_callbacks(void **state) {
  (void)state;
  app *a = calloc(1, sizeof(*a));
  a->to_send = 10;
  a->body_size = 20;
  a->reject_in_setup = true;
  run_transfer(a, NULL, NULL, NULL);
  assert_int_equal(a->server_conns_open, 0);
  assert_int_equal(a->server_conns_closed, 0); /* no on_closed for a rejected conn */
  assert_int_equal(a->server_error, 0);
  assert_int_equal(a->listener.last_accept_error, QS_ERR_FULL);
  assert_int_equal(a->client_error, QS_ERR_IO);
  assert_int_equal(a->received, 0);
  free(a);
}

static void test_connection_refused_reports_io_error_once(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  /* Find a port nobody listens on: bind one, note it, close it. */
  uv_tcp_t probe;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &probe);
  assert_int_equal(uv_tcp_bind(&probe, (struct sockaddr *)&sa, 0), 0);
  int len = sizeof(sa);
  uv_tcp_getsockname(&probe, (struct sockaddr *)&sa, &len);
  int port = ntohs(sa.sin_port);
  uv_close((uv_handle_t *)&probe, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);

  app *a = calloc(1, sizeof(*a));
  encode_message(a);
  assert_int_equal(
      qs_amqp_conn_connect(&loop, "127.0.0.1", port, NULL, NULL, &client_cbs, a, &a->client), 0);
  start_watchdog(&loop, a, 10000);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish_loop(&loop, a);
  assert_int_equal(a->client_error, QS_ERR_IO);
  assert_int_equal(a->client_errors, 1);
  assert_non_null(strstr(a->client_reason, "connect"));
  assert_non_null(strstr(a->client_reason, "refused"));
  assert_true(a->client_closed);
  free(a);
}

static void test_connect_rejects_bad_arguments_without_callbacks(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  app *a = calloc(1, sizeof(*a));
  qs_amqp_conn *c = NULL;
  assert_int_equal(qs_amqp_conn_connect(&loop, "", 5672, NULL, NULL, &client_cbs, a, &c),
                   QS_ERR_INVALID);
  assert_int_equal(qs_amqp_conn_connect(&loop, "127.0.0.1", 0, NULL, NULL, &client_cbs, a, &c),
                   QS_ERR_INVALID);
  qs_amqp_listener l;
  assert_int_equal(qs_amqp_listener_init(&l, &loop, "not-an-ip", 0, NULL, &broker_cbs, a),
                   QS_ERR_INVALID);
  qs_amqp_listener_close(&l, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_false(a->client_closed);
  free(a);
}

/* ---- (5) idle timeout: a raw TCP peer that says hello and goes silent ---- */

typedef struct silent_peer {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  uint8_t hello[512];
  size_t hello_len;
  char rbuf[4096];
  bool got_eof;
} silent_peer;

/* The AMQP header and open frame a proton client sends, captured in memory. */
static size_t capture_client_hello(uint8_t *out, size_t cap) {
  pn_connection_driver_t d;
  assert_int_equal(pn_connection_driver_init(&d, NULL, NULL), 0);
  pn_connection_set_container(d.connection, "silent-peer");
  pn_connection_open(d.connection);
  pn_connection_driver_bind(&d);
  while (pn_connection_driver_next_event(&d)) {
  }
  pn_bytes_t wb = pn_connection_driver_write_buffer(&d);
  assert_true(wb.size > 8 && wb.size <= cap);
  memcpy(out, wb.start, wb.size);
  size_t n = wb.size;
  pn_connection_driver_destroy(&d);
  return n;
}

static void silent_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  silent_peer *p = h->data;
  (void)s;
  *b = uv_buf_init(p->rbuf, sizeof(p->rbuf));
}

static void silent_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  silent_peer *p = s->data;
  (void)b;
  if (n < 0) { /* EOF after the server gave up on us */
    p->got_eof = true;
    uv_close((uv_handle_t *)&p->tcp, NULL);
  }
}

static void silent_connected(uv_connect_t *req, int status) {
  silent_peer *p = req->data;
  assert_int_equal(status, 0);
  uv_buf_t b = uv_buf_init((char *)p->hello, (unsigned)p->hello_len);
  assert_int_equal(uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, NULL), 0);
  uv_read_start((uv_stream_t *)&p->tcp, silent_alloc, silent_read);
}

static void test_idle_timeout_detects_silent_peer(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  app *a = calloc(1, sizeof(*a));
  a->idle_timeout_ms = 200;
  a->client_closed = true; /* no qs client in this test */
  assert_int_equal(qs_amqp_listener_init(&a->listener, &loop, "127.0.0.1", 0, NULL, &broker_cbs, a),
                   0);
  a->listener_open = true;

  silent_peer *p = calloc(1, sizeof(*p));
  p->hello_len = capture_client_hello(p->hello, sizeof(p->hello));
  uv_tcp_init(&loop, &p->tcp);
  p->tcp.data = p->creq.data = p;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", qs_amqp_listener_port(&a->listener), &sa);
  assert_int_equal(uv_tcp_connect(&p->creq, &p->tcp, (struct sockaddr *)&sa, silent_connected), 0);

  start_watchdog(&loop, a, 10000);
  uint64_t t0 = uv_now(&loop);
  uv_run(&loop, UV_RUN_DEFAULT);
  uint64_t elapsed = uv_now(&loop) - t0;
  finish_loop(&loop, a);
  assert_false(a->timed_out);
  assert_int_equal(a->server_error, QS_ERR_TIMEOUT);
  assert_non_null(strstr(a->server_reason, "idle"));
  assert_true(p->got_eof);
  assert_true(elapsed >= 150); /* not before the timeout */
  free(p);
  free(a);
}

static void test_heartbeats_keep_quiet_connection_alive(void **state) {
  (void)state;
  /* Both sides advertise a 200 ms idle timeout; proton's empty frames must
   * keep the connection up while the client stays quiet for ~1 s. */
  app *a = calloc(1, sizeof(*a));
  a->idle_timeout_ms = 200;
  a->to_send = 0;
  a->body_size = 10;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  encode_message(a);
  assert_int_equal(qs_amqp_listener_init(&a->listener, &loop, "127.0.0.1", 0, NULL, &broker_cbs, a),
                   0);
  a->listener_open = true;
  assert_int_equal(qs_amqp_conn_connect(&loop, "127.0.0.1", qs_amqp_listener_port(&a->listener),
                                        NULL, NULL, &client_cbs, a, &a->client),
                   0);
  start_watchdog(&loop, a, 10000);
  /* Run ~1 s (five idle periods), then close cleanly from the client. */
  uint64_t t0 = uv_now(&loop);
  while (uv_now(&loop) - t0 < 1000 && a->client)
    uv_run(&loop, UV_RUN_ONCE);
  assert_non_null(a->client);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  pn_connection_close(qs_amqp_conn_connection(a->client));
  qs_amqp_conn_wake(a->client);
  uv_run(&loop, UV_RUN_DEFAULT);
  finish_loop(&loop, a);
  assert_int_equal(a->client_error, 0);
  assert_int_equal(a->server_error, 0);
  assert_false(a->timed_out);
  free(a);
}

/* ---- (1) in memory: driver pair and the frame padding filter -------------------- */

typedef struct side {
  pn_connection_driver_t d;
  qs_amqp_buf raw;     /* everything this side wrote */
  qs_amqp_buf sent;    /* what the peer received (after the filter) */
  qs_amqp_buf pending; /* filtered bytes not yet read by the peer */
  bool filter;
  qs_amqp_frame_pad_state bf;
} side;

typedef void (*handler_fn)(pn_event_t *e, void *ctx);

static bool move_bytes(side *from, side *to) {
  bool moved = false;
  pn_bytes_t wb = pn_connection_driver_write_buffer(&from->d);
  if (wb.size > 0) {
    qs_amqp_buf_append(&from->raw, wb.start, wb.size);
    /* Feed the filter in odd-sized pieces to exercise split frames. */
    size_t off = 0;
    while (off < wb.size) {
      size_t n = wb.size - off < 7 ? wb.size - off : 7;
      if (from->filter)
        assert_int_equal(
            qs_amqp_frame_pad(&from->bf, (const uint8_t *)wb.start + off, n, &from->pending), 0);
      else
        qs_amqp_buf_append(&from->pending, wb.start + off, n);
      off += n;
    }
    pn_connection_driver_write_done(&from->d, wb.size);
    moved = true;
  }
  while (from->pending.len > 0) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(&to->d);
    if (rb.size == 0)
      break;
    size_t n = rb.size < from->pending.len ? rb.size : from->pending.len;
    memcpy(rb.start, from->pending.data, n);
    qs_amqp_buf_append(&from->sent, from->pending.data, n);
    pn_connection_driver_read_done(&to->d, n);
    memmove(from->pending.data, from->pending.data + n, from->pending.len - n);
    from->pending.len -= n;
    moved = true;
  }
  return moved;
}

typedef struct pair_state {
  int server_session_opens, client_session_opens, client_link_opens;
  int received, sent, acked;
} pair_state;

static void pair_client(pn_event_t *e, pair_state *ps) {
  switch (pn_event_type(e)) {
  case PN_SESSION_REMOTE_OPEN:
    ps->client_session_opens++;
    break;
  case PN_LINK_REMOTE_OPEN:
    ps->client_link_opens++;
    break;
  case PN_LINK_FLOW: {
    pn_link_t *l = pn_event_link(e);
    while (pn_link_is_sender(l) && pn_link_credit(l) > 0 && ps->sent < 5) {
      char tag = (char)ps->sent;
      pn_delivery(l, pn_dtag(&tag, 1));
      pn_link_send(l, "hello", 5);
      pn_link_advance(l);
      ps->sent++;
    }
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    if (pn_delivery_updated(d) && pn_delivery_remote_state(d) == PN_ACCEPTED) {
      pn_delivery_settle(d);
      ps->acked++;
    }
    break;
  }
  default:
    break;
  }
}

static void pair_server(pn_event_t *e, pair_state *ps) {
  switch (pn_event_type(e)) {
  case PN_CONNECTION_REMOTE_OPEN:
    pn_connection_open(pn_event_connection(e));
    break;
  case PN_SESSION_REMOTE_OPEN:
    ps->server_session_opens++;
    pn_session_open(pn_event_session(e));
    break;
  case PN_LINK_REMOTE_OPEN: {
    pn_link_t *l = pn_event_link(e);
    pn_terminus_copy(pn_link_target(l), pn_link_remote_target(l));
    pn_link_open(l);
    pn_link_flow(l, 10);
    break;
  }
  case PN_DELIVERY: {
    pn_delivery_t *d = pn_event_delivery(e);
    char buf[64];
    while (pn_link_recv(pn_delivery_link(d), buf, sizeof(buf)) > 0) {
    }
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    ps->received++;
    break;
  }
  default:
    break;
  }
}

/* A client and a server driver, both with SASL ANONYMOUS; the server's
 * output goes through the frame padding filter (as the hub's does). */
static void run_pair(side *cli, side *srv, pair_state *ps, int sessions) {
  memset(cli, 0, sizeof(*cli));
  memset(srv, 0, sizeof(*srv));
  assert_int_equal(pn_connection_driver_init(&cli->d, NULL, NULL), 0);
  assert_int_equal(pn_connection_driver_init(&srv->d, NULL, NULL), 0);
  pn_transport_set_server(srv->d.transport);
  pn_sasl_allowed_mechs(pn_sasl(srv->d.transport), "ANONYMOUS");
  pn_sasl_allowed_mechs(pn_sasl(cli->d.transport), "ANONYMOUS");
  pn_transport_set_max_frame(srv->d.transport, 65536);
  srv->filter = true;
  qs_amqp_frame_pad_init(&srv->bf);
  pn_connection_driver_bind(&cli->d);
  pn_connection_driver_bind(&srv->d);
  pn_connection_open(cli->d.connection);
  for (int i = 0; i < sessions; i++) {
    pn_session_t *s = pn_session(cli->d.connection);
    pn_session_open(s);
    pn_link_t *l = pn_sender(s, i == 0 ? "s0" : "s1");
    pn_terminus_set_address(pn_link_target(l), "q");
    pn_link_open(l);
  }
  for (int round = 0; round < 1000; round++) {
    pn_event_t *e;
    bool any = false;
    while ((e = pn_connection_driver_next_event(&cli->d)) != NULL) {
      pair_client(e, ps);
      any = true;
    }
    while ((e = pn_connection_driver_next_event(&srv->d)) != NULL) {
      pair_server(e, ps);
      any = true;
    }
    any |= move_bytes(cli, srv);
    any |= move_bytes(srv, cli);
    if (!any)
      return;
  }
  fail_msg("driver pair did not settle");
}

static void free_pair(side *cli, side *srv) {
  pn_connection_driver_destroy(&cli->d);
  pn_connection_driver_destroy(&srv->d);
  side *both[2] = {cli, srv};
  for (int i = 0; i < 2; i++) {
    qs_amqp_buf_free(&both[i]->raw);
    qs_amqp_buf_free(&both[i]->sent);
    qs_amqp_buf_free(&both[i]->pending);
  }
}

/* Splits a byte stream into its protocol headers and frames. */
typedef struct frame {
  const uint8_t *p;
  size_t len;
} frame;

static size_t split_frames(const qs_amqp_buf *b, frame *out, size_t max) {
  size_t n = 0, off = 0;
  while (off < b->len && n < max) {
    size_t len = memcmp(b->data + off, "AMQP", 4) == 0
                     ? 8
                     : (size_t)b->data[off] << 24 | (size_t)b->data[off + 1] << 16 |
                           (size_t)b->data[off + 2] << 8 | b->data[off + 3];
    assert_true(len >= 8 && off + len <= b->len);
    out[n].p = b->data + off;
    out[n].len = len;
    n++;
    off += len;
  }
  assert_int_equal(off, b->len);
  return n;
}

/* A performative frame's list: descriptor code, field count, element bytes and what follows. */
typedef struct plist {
  unsigned code;
  size_t count;
  const uint8_t *elems;
  size_t elems_len;
  const uint8_t *rest; /* after the list (a transfer's payload) */
  size_t rest_len;
} plist;

static bool parse_performative(const frame *f, plist *l) {
  if (f->len < 11 || memcmp(f->p, "AMQP", 4) == 0 || f->p[5] != 0)
    return false;
  const uint8_t *body = f->p + f->p[4] * 4, *end = f->p + f->len;
  if (body + 3 > end || body[0] != 0x00 || body[1] != 0x53)
    return false;
  l->code = body[2];
  const uint8_t *p = body + 3;
  if (p[0] == 0x45) {
    l->count = 0, l->elems = p + 1, l->elems_len = 0;
  } else if (p[0] == 0xc0) {
    l->count = p[2], l->elems = p + 3, l->elems_len = (size_t)p[1] - 1;
  } else {
    assert_int_equal(p[0], 0xd0);
    l->count = (size_t)p[5] << 24 | (size_t)p[6] << 16 | (size_t)p[7] << 8 | p[8];
    l->elems = p + 9;
    l->elems_len = ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4]) - 4;
  }
  l->rest = l->elems + l->elems_len;
  l->rest_len = (size_t)(end - l->rest);
  return true;
}

static void test_driver_pair_padding_completes_every_performative_and_keeps_flow(void **state) {
  (void)state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  pair_state ps = {0};
  run_pair(cli, srv, &ps, 2);
  /* The event flow is intact through the filter. */
  assert_int_equal(ps.server_session_opens, 2);
  assert_int_equal(ps.client_session_opens, 2);
  assert_int_equal(ps.client_link_opens, 2);
  assert_int_equal(ps.sent, 5);
  assert_int_equal(ps.received, 5);
  assert_int_equal(ps.acked, 5);

  static const size_t arity[] = {10, 8, 14, 11, 11, 6, 3, 1, 1}; /* open .. close */
  frame raw[64], out[64];
  size_t nraw = split_frames(&srv->raw, raw, 64);
  size_t nout = split_frames(&srv->sent, out, 64);
  assert_int_equal(nraw, nout);
  int begins = 0, padded = 0;
  for (size_t i = 0; i < nraw; i++) {
    plist r, o;
    if (!parse_performative(&raw[i], &r)) { /* headers, SASL, heartbeats: byte-identical */
      assert_int_equal(raw[i].len, out[i].len);
      assert_memory_equal(raw[i].p, out[i].p, raw[i].len);
      continue;
    }
    assert_true(parse_performative(&out[i], &o));
    assert_int_equal(o.code, r.code);
    assert_true(r.code >= 0x10 && r.code <= 0x18);
    assert_int_equal(o.count, arity[r.code - 0x10]); /* every field present */
    assert_true(o.elems_len >= r.elems_len);         /* the sent fields, unchanged, first */
    assert_memory_equal(o.elems, r.elems, r.elems_len);
    assert_int_equal(o.rest_len, r.rest_len); /* payload untouched */
    assert_memory_equal(o.rest, r.rest, r.rest_len);
    padded += o.count > r.count;
    if (r.code == 0x11) { /* proton 0.37 sent 4 fields; handle-max follows, then 3 nulls */
      begins++;
      static const uint8_t want_tail[] = {0x70, 0xff, 0xff, 0xff, 0xff, 0x40, 0x40, 0x40};
      assert_memory_equal(o.elems + o.elems_len - 8, want_tail, 8);
    }
  }
  assert_int_equal(begins, 2);
  assert_true(padded >= 5);
  free_pair(cli, srv);
  free(cli);
  free(srv);
}

static void run_filter(const uint8_t *in, size_t n, size_t chunk, qs_amqp_buf *out) {
  qs_amqp_frame_pad_state f;
  qs_amqp_frame_pad_init(&f);
  for (size_t off = 0; off < n; off += chunk) {
    size_t k = n - off < chunk ? n - off : chunk;
    assert_int_equal(qs_amqp_frame_pad(&f, in + off, k, out), 0);
  }
}

static void test_frame_padding_output_is_independent_of_splits(void **state) {
  (void)state;
  side *cli = calloc(1, sizeof(*cli)), *srv = calloc(1, sizeof(*srv));
  pair_state ps = {0};
  run_pair(cli, srv, &ps, 1);
  qs_amqp_buf whole = {0};
  run_filter(srv->raw.data, srv->raw.len, srv->raw.len, &whole);
  assert_int_equal(whole.len, srv->sent.len);
  assert_memory_equal(whole.data, srv->sent.data, whole.len);
  for (size_t chunk = 1; chunk <= 64; chunk++) {
    qs_amqp_buf part = {0};
    run_filter(srv->raw.data, srv->raw.len, chunk, &part);
    assert_int_equal(part.len, whole.len);
    assert_memory_equal(part.data, whole.data, whole.len);
    qs_amqp_buf_free(&part);
  }
  /* The client's stream (SASL, open, begin, attach, transfers) too. */
  qs_amqp_buf c1 = {0}, c2 = {0};
  run_filter(cli->raw.data, cli->raw.len, 1, &c1);
  run_filter(cli->raw.data, cli->raw.len, cli->raw.len, &c2);
  assert_int_equal(c1.len, c2.len);
  assert_memory_equal(c1.data, c2.data, c1.len);
  qs_amqp_buf_free(&c1);
  qs_amqp_buf_free(&c2);
  qs_amqp_buf_free(&whole);
  free_pair(cli, srv);
  free(cli);
  free(srv);
}

static void test_frame_padding_handles_ulong_descriptor_and_full_begin(void **state) {
  (void)state;
  /* begin with an 8-byte ulong descriptor, list8 of 3 fields, channel 1 */
  static const uint8_t ulong_begin[] = {
      0,    0,    0,    0x1d, 2,    0,    0, 1, /* header: size 29 */
      0x00, 0x80, 0,    0,    0,    0,    0, 0, 0x00, 0x11, 0xc0,
      0x09, 0x03, 0x40, 0x52, 0x01, 0x70, 0, 0, 0,    0x10 /* list */
  };
  qs_amqp_buf out = {0};
  run_filter(ulong_begin, sizeof(ulong_begin), 3, &out);
  static const uint8_t want[] = {
      0,    0,    0,    0x26, 2,    0,    0,    1, /* size 38 */
      0x00, 0x80, 0,    0,    0,    0,    0,    0,    0x00, 0x11, 0xc0,
      0x12, 0x08, 0x40, 0x52, 0x01, 0x70, 0,    0,    0,    0x10, /* the 3 fields as sent */
      0x40, 0x70, 0xff, 0xff, 0xff, 0xff, 0x40, 0x40, 0x40        /* outgoing-window..properties */
  };
  assert_int_equal(out.len, sizeof(want));
  assert_memory_equal(out.data, want, sizeof(want));
  /* A begin that already has 8 fields passes unchanged. */
  qs_amqp_buf again = {0};
  run_filter(out.data, out.len, 5, &again);
  assert_int_equal(again.len, out.len);
  assert_memory_equal(again.data, out.data, out.len);
  /* An empty (heartbeat) frame and a SASL frame pass unchanged. */
  static const uint8_t other[] = {0, 0,    0, 8, 2, 0, 0, 0,    0,    0,
                                  0, 0x0c, 2, 1, 0, 0, 0, 0x53, 0x11, 0x45};
  qs_amqp_buf o2 = {0};
  run_filter(other, sizeof(other), 1, &o2);
  assert_int_equal(o2.len, sizeof(other));
  assert_memory_equal(o2.data, other, sizeof(other));
  qs_amqp_buf_free(&out);
  qs_amqp_buf_free(&again);
  qs_amqp_buf_free(&o2);
}

static void test_frame_padding_rejects_malformed_frame_header(void **state) {
  (void)state;
  static const uint8_t bad_size[] = {0, 0, 0, 4, 2, 0, 0, 0};
  static const uint8_t bad_doff[] = {0, 0, 0, 16, 1, 0, 0, 0};
  static const uint8_t bad_list[] = {0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x11, 0xa1};
  qs_amqp_frame_pad_state f;
  qs_amqp_buf out = {0};
  qs_amqp_frame_pad_init(&f);
  assert_int_equal(qs_amqp_frame_pad(&f, bad_size, sizeof(bad_size), &out), QS_ERR_PARSE);
  qs_amqp_frame_pad_init(&f);
  assert_int_equal(qs_amqp_frame_pad(&f, bad_doff, sizeof(bad_doff), &out), QS_ERR_PARSE);
  qs_amqp_frame_pad_init(&f);
  assert_int_equal(qs_amqp_frame_pad(&f, bad_list, sizeof(bad_list), &out), QS_ERR_PARSE);
  qs_amqp_buf_free(&out);
}

/* ---- batch marking (the Event Hubs client's filter) ---------------------------------------- */

/* A transfer frame on channel 1: fields handle 0, delivery-id, tag "0", message-format 0,
 * settled false[, more], then payload. */
static size_t make_transfer(uint8_t *f, uint8_t delivery_id, bool with_more, bool more,
                            const uint8_t *payload, size_t plen) {
  uint8_t fields[32];
  size_t n = 0;
  fields[n++] = 0x43;                                     /* handle 0 */
  fields[n++] = 0x52, fields[n++] = delivery_id;          /* delivery-id */
  fields[n++] = 0xa0, fields[n++] = 1, fields[n++] = '0'; /* tag */
  fields[n++] = 0x43;                                     /* message-format 0 */
  fields[n++] = 0x42;                                     /* settled false */
  size_t count = 5;
  if (with_more) {
    fields[n++] = more ? 0x41 : 0x42;
    count = 6;
  }
  size_t size = 8 + 3 + 3 + n + plen;
  uint8_t h[] = {(uint8_t)(size >> 24),
                 (uint8_t)(size >> 16),
                 (uint8_t)(size >> 8),
                 (uint8_t)size,
                 2,
                 0,
                 0,
                 1,
                 0x00,
                 0x53,
                 0x14,
                 0xc0,
                 (uint8_t)(n + 1),
                 (uint8_t)count};
  memcpy(f, h, sizeof h);
  memcpy(f + sizeof h, fields, n);
  memcpy(f + sizeof h + n, payload, plen);
  return size;
}

/* Runs bytes through a fresh marking filter, in chunks of `chunk` bytes. */
static void mark_run(qs_amqp_frame_pad_state *st, const uint8_t *in, size_t n, size_t chunk,
                     qs_amqp_buf *out) {
  for (size_t off = 0; off < n; off += chunk)
    assert_int_equal(qs_amqp_frame_pad(st, in + off, n - off < chunk ? n - off : chunk, out), 0);
}

static bool has_batch_format(const uint8_t *fr) {
  static const uint8_t fmt[] = {0x70, 0x80, 0x01, 0x37, 0x00};
  return memcmp(fr + 8 + 3 + 3 + 6, fmt, sizeof fmt) == 0;
}

static void test_batch_marking_sets_the_format_only_on_batches(void **state) {
  (void)state;
  static const uint8_t batch[] = {0x00, 0x53, 0x72, 0xc1, 0x01, 0x00,
                                  0x00, 0x53, 0x75, 0xa0, 0x01, 'x'};
  static const uint8_t cbs[] = {0x00, 0x53, 0x73, 0x45, 0x00, 0x53, 0x77, 0xa1, 0x01, 't'};
  for (size_t chunk = 1; chunk <= 64; chunk += 63) {
    uint8_t in[256];
    size_t n1 = make_transfer(in, 0, false, false, batch, sizeof batch);
    size_t n2 = make_transfer(in + n1, 1, false, false, cbs, sizeof cbs);
    qs_amqp_frame_pad_state st;
    qs_amqp_frame_mark_init(&st);
    qs_amqp_buf out = {0};
    mark_run(&st, in, n1 + n2, chunk, &out);
    assert_int_equal(out.len, n1 + 4 + n2);
    const uint8_t *o = out.data;
    assert_int_equal((size_t)o[3], n1 + 4); /* frame size grew by the 4 format bytes */
    assert_int_equal(o[12], in[12] + 4);    /* and so did the list */
    assert_true(has_batch_format(o));
    assert_memory_equal(o + 8 + 3 + 3 + 6 + 5 + 1, batch, sizeof batch); /* payload intact */
    assert_memory_equal(o + n1 + 4, in + n1, n2); /* a request frame passes byte-identical */
    qs_amqp_buf_free(&out);
  }
}

static void test_batch_marking_follows_a_multi_frame_delivery(void **state) {
  (void)state;
  static const uint8_t first[] = {0x00, 0x53, 0x72, 0xc1, 0x01, 0x00, 0x00, 0x53, 0x75};
  static const uint8_t cont[] = {0xa0, 0x01, 'x'};
  static const uint8_t other[] = {0x00, 0x53, 0x70, 0x45, 0x00, 0x53, 0x75, 0xa0, 0x01, 'y'};
  uint8_t in[256];
  size_t n1 = make_transfer(in, 0, true, true, first, sizeof first);
  size_t n2 = make_transfer(in + n1, 0, true, false, cont, sizeof cont);
  size_t n3 = make_transfer(in + n1 + n2, 1, true, false, other, sizeof other);
  qs_amqp_frame_pad_state st;
  qs_amqp_frame_mark_init(&st);
  qs_amqp_buf out = {0};
  mark_run(&st, in, n1 + n2 + n3, 7, &out);
  assert_int_equal(out.len, n1 + n2 + n3 + 8);
  const uint8_t *o = out.data;
  assert_true(has_batch_format(o));
  assert_true(has_batch_format(o + n1 + 4)); /* the continuation carries the same format */
  assert_memory_equal(o + n1 + n2 + 8, in + n1 + n2, n3); /* a plain message is left alone */
  assert_int_equal(st.npartial, 0);
  qs_amqp_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_driver_pair_padding_completes_every_performative_and_keeps_flow),
      cmocka_unit_test(test_frame_padding_output_is_independent_of_splits),
      cmocka_unit_test(test_frame_padding_handles_ulong_descriptor_and_full_begin),
      cmocka_unit_test(test_frame_padding_rejects_malformed_frame_header),
      cmocka_unit_test(test_connect_rejects_bad_arguments_without_callbacks),
      cmocka_unit_test(test_loopback_transfers_10000_messages_and_closes_clean),
      cmocka_unit_test(test_loopback_with_frame_padding_still_works),
      cmocka_unit_test(test_tls_loopback_transfers_10000_messages),
      cmocka_unit_test(test_tls_name_mismatch_fails_with_verification_reason),
      cmocka_unit_test(test_tls_large_multi_frame_messages_pass_through_filter),
      cmocka_unit_test(test_abort_reports_closed_and_peer_sees_abort),
      cmocka_unit_test(test_setup_rejection_drops_connection_without_callbacks),
      cmocka_unit_test(test_connection_refused_reports_io_error_once),
      cmocka_unit_test(test_idle_timeout_detects_silent_peer),
      cmocka_unit_test(test_heartbeats_keep_quiet_connection_alive),
      cmocka_unit_test(test_batch_marking_sets_the_format_only_on_batches),
      cmocka_unit_test(test_batch_marking_follows_a_multi_frame_delivery),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
