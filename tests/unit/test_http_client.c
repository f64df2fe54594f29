/* test_http_client.c — qs_http (libcurl multi on libuv) against a tiny HTTP server on the same
 * loop (127.0.0.1, free port): a 200 with body and an ETag, a POST body echoed, a 503, a
 * timeout, a body over the limit, a refused connection, a bad URL, and close failing what is in
 * flight — each callback exactly once, never inside the call, and the loop closing clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "qs/error.h"
#include "qs/http_client.h"

/* ---- server: reads one request, answers by path ------------------------------------------- */

typedef struct conn {
  uv_tcp_t tcp;
  char *out; /* the response, alive until its write completes */
  char buf[65536];
  size_t len;
  bool answered;
} conn;

static uv_tcp_t server;
static int port;

static void on_conn_closed(uv_handle_t *h) {
  conn *c = h->data;
  free(c->out);
  free(c);
}

static void on_written(uv_write_t *w, int status) {
  (void)status;
  conn *c = w->data;
  free(w);
  free(c->out);
  c->out = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void reply(conn *c, const char *status, const char *body, size_t blen) {
  char head[256];
  int n =
      snprintf(head, sizeof head,
               "HTTP/1.1 %s\r\nContent-Length: %zu\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
               status, blen);
  char *out = c->out = malloc((size_t)n + blen);
  memcpy(out, head, (size_t)n);
  memcpy(out + n, body, blen);
  uv_buf_t b = uv_buf_init(out, (unsigned)((size_t)n + blen));
  uv_write_t *w = malloc(sizeof *w);
  w->data = c;
  uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)s;
  conn *c = h->data;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  conn *c = s->data;
  if (n < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  c->len += (size_t)n;
  c->buf[c->len] = '\0';
  char *hdr_end = strstr(c->buf, "\r\n\r\n");
  if (!hdr_end || c->answered)
    return;
  const char *cl = strcasestr(c->buf, "Content-Length:");
  size_t want = cl ? (size_t)atol(cl + 15) : 0;
  size_t have = c->len - (size_t)(hdr_end + 4 - c->buf);
  if (have < want)
    return;
  c->answered = true;
  if (strncmp(c->buf, "GET /ok ", 8) == 0) {
    reply(c, "200 OK", "hello", 5);
  } else if (strncmp(c->buf, "POST /echo ", 11) == 0) {
    reply(c, "201 Created", hdr_end + 4, want);
  } else if (strncmp(c->buf, "GET /busy ", 10) == 0) {
    reply(c, "503 Service Unavailable", "", 0);
  } else if (strncmp(c->buf, "GET /big ", 9) == 0) {
    static char big[20000];
    memset(big, 'x', sizeof big);
    reply(c, "200 OK", big, sizeof big);
  } else {
    c->answered = true; /* /slow: never answer; the client times out */
  }
}

static void on_connection(uv_stream_t *s, int status) {
  assert_int_equal(status, 0);
  conn *c = calloc(1, sizeof *c);
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  assert_int_equal(uv_accept(s, (uv_stream_t *)&c->tcp), 0);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

static void start_server(uv_loop_t *loop) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(loop, &server);
  assert_int_equal(uv_tcp_bind(&server, (struct sockaddr *)&a, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&server, 16, on_connection), 0);
  struct sockaddr_in got;
  int len = sizeof got;
  uv_tcp_getsockname(&server, (struct sockaddr *)&got, &len);
  port = ntohs(got.sin_port);
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, h == (uv_handle_t *)&server ? NULL : on_conn_closed);
}

/* ---- client side -------------------------------------------------------------------------- */

typedef struct result {
  int calls, error;
  long status;
  char body[64];
  size_t body_len;
  char xtest[16];
} result;

static void on_done(const qs_http_response *r, void *ud) {
  result *res = ud;
  res->calls++;
  res->status = r->status;
  res->error = r->error;
  res->body_len = r->body_len;
  snprintf(res->body, sizeof res->body, "%.*s", (int)(r->body_len < 63 ? r->body_len : 63),
           r->body);
  snprintf(res->xtest, sizeof res->xtest, "%s", r->etag ? r->etag : "");
}

static char url_buf[128];
static const char *url(const char *path) {
  snprintf(url_buf, sizeof url_buf, "http://127.0.0.1:%d%s", port, path);
  return url_buf;
}

static void run_until(uv_loop_t *loop, int *calls, int want) {
  for (int i = 0; i < 100000 && *calls < want; i++)
    uv_run(loop, UV_RUN_ONCE);
  assert_int_equal(*calls, want);
}

static void closed(void *ud) { *(int *)ud = 1; }

static void finish(uv_loop_t *loop, qs_http *c) {
  int done = 0;
  qs_http_close(c, closed, &done);
  while (!done)
    uv_run(loop, UV_RUN_ONCE);
  uv_walk(loop, close_walk, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void test_get_returns_status_body_and_headers(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  start_server(&loop);
  qs_http *c;
  assert_int_equal(qs_http_init(&c, &loop, NULL), 0);
  result r = {0};
  qs_http_req req = {.url = url("/ok")};
  assert_int_equal(qs_http_request(c, &req, on_done, &r), 0);
  assert_int_equal(r.calls, 0); /* never inside the start call */
  run_until(&loop, &r.calls, 1);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.error, 0);
  assert_string_equal(r.body, "hello");
  assert_string_equal(r.xtest, "\"v1\"");
  finish(&loop, c);
}

static void test_post_sends_body_and_non_2xx_is_a_status_not_an_error(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  start_server(&loop);
  qs_http *c;
  assert_int_equal(qs_http_init(&c, &loop, NULL), 0);
  result a = {0}, b = {0};
  static const char *const h[] = {"Content-Type: application/json", NULL};
  qs_http_req post = {
      .method = "POST", .url = url("/echo"), .headers = h, .body = "{\"a\":1}", .body_len = 7};
  assert_int_equal(qs_http_request(c, &post, on_done, &a), 0);
  qs_http_req busy = {.url = url("/busy")};
  assert_int_equal(qs_http_request(c, &busy, on_done, &b), 0);
  int total = 0;
  for (int i = 0; i < 100000 && a.calls + b.calls < 2; i++)
    uv_run(&loop, UV_RUN_ONCE);
  total = a.calls + b.calls;
  assert_int_equal(total, 2);
  assert_int_equal(a.status, 201);
  assert_string_equal(a.body, "{\"a\":1}");
  assert_int_equal(b.status, 503);
  assert_int_equal(b.error, 0);
  finish(&loop, c);
}

static void test_timeout_too_big_and_refused_are_errors(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  start_server(&loop);
  qs_http *c;
  qs_http_opts o = {.max_response_bytes = 1000};
  assert_int_equal(qs_http_init(&c, &loop, &o), 0);
  result slow = {0}, big = {0}, refused = {0};
  qs_http_req r1 = {.url = url("/slow"), .timeout_ms = 200};
  assert_int_equal(qs_http_request(c, &r1, on_done, &slow), 0);
  qs_http_req r2 = {.url = url("/big")};
  assert_int_equal(qs_http_request(c, &r2, on_done, &big), 0);
  qs_http_req r3 = {.url = "http://127.0.0.1:1/none"};
  assert_int_equal(qs_http_request(c, &r3, on_done, &refused), 0);
  for (int i = 0; i < 100000 && slow.calls + big.calls + refused.calls < 3; i++)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(slow.error, QS_ERR_TIMEOUT);
  assert_int_equal(big.error, QS_ERR_TOOBIG);
  assert_int_equal(refused.error, QS_ERR_IO);
  assert_int_equal(slow.calls + big.calls + refused.calls, 3);
  finish(&loop, c);
}

static void test_bad_url_is_refused_and_close_fails_in_flight_once(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  start_server(&loop);
  qs_http *c;
  assert_int_equal(qs_http_init(&c, &loop, NULL), 0);
  result a = {0}, b = {0};
  qs_http_req slow = {.url = url("/slow"), .timeout_ms = 60000};
  assert_int_equal(qs_http_request(c, &slow, on_done, &a), 0);
  qs_http_req bad = {.url = "ftp://x/"};
  assert_int_equal(qs_http_request(c, &bad, on_done, &b), QS_ERR_INVALID);
  for (int i = 0; i < 50; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(qs_http_pending(c), 1);
  finish(&loop, c);
  assert_int_equal(a.calls, 1);
  assert_int_equal(a.error, QS_ERR_CLOSED);
  assert_int_equal(b.calls, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_returns_status_body_and_headers),
      cmocka_unit_test(test_post_sends_body_and_non_2xx_is_a_status_not_an_error),
      cmocka_unit_test(test_timeout_too_big_and_refused_are_errors),
      cmocka_unit_test(test_bad_url_is_refused_and_close_fails_in_flight_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
