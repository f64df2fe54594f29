/* test_httpd.c — the h2o server and admin endpoints on a real loop: status codes, bodies, content
 * types, readiness failures, and a clean close (uv_loop_close == 0). A client thread makes blocking
 * requests while the test thread runs the loop; it wakes the loop with uv_async when done. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "qs/httpd.h"

typedef struct reply {
  int status;
  char head[2048];
  char body[16384];
} reply;

/* One HTTP/1.1 request on a fresh connection; reads until the server closes. */
static void http(int port, const char *method, const char *path, reply *r) {
  memset(r, 0, sizeof *r);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return;
  }
  char req[256];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                   method, path);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return;
  }
  static char all[32768];
  size_t len = 0;
  ssize_t got;
  while (len < sizeof all - 1 && (got = read(fd, all + len, sizeof all - 1 - len)) > 0)
    len += (size_t)got;
  all[len] = '\0';
  close(fd);
  sscanf(all, "HTTP/1.1 %d", &r->status);
  char *sep = strstr(all, "\r\n\r\n");
  if (sep) {
    snprintf(r->head, sizeof r->head, "%.*s", (int)(sep - all), all);
    snprintf(r->body, sizeof r->body, "%s", sep + 4);
  }
}

typedef struct fixture {
  uv_loop_t loop;
  uv_async_t done;
  qs_metrics metrics;
  qs_admin admin;
  bool redis_ok;
  int port;
  reply healthz, readyz, readyz_down, metrics_r, head, notfound, post, subpath;
  bool closed;
} fixture;

static bool check_redis(void *data, char *reason, size_t cap) {
  fixture *f = data;
  if (!f->redis_ok)
    snprintf(reason, cap, "redis: connection refused");
  return f->redis_ok;
}

static void *client(void *arg) {
  fixture *f = arg;
  http(f->port, "GET", "/healthz", &f->healthz);
  http(f->port, "GET", "/readyz", &f->readyz);
  __atomic_store_n(&f->redis_ok, false, __ATOMIC_SEQ_CST);
  http(f->port, "GET", "/readyz", &f->readyz_down);
  http(f->port, "GET", "/metrics", &f->metrics_r);
  http(f->port, "HEAD", "/healthz", &f->head);
  http(f->port, "GET", "/nope", &f->notfound);
  http(f->port, "POST", "/metrics", &f->post);
  http(f->port, "GET", "/healthz/extra", &f->subpath);
  uv_async_send(&f->done);
  return NULL;
}

static void on_closed_flag(qs_httpd *h) {
  qs_admin *a = h->data;
  fixture *f = (fixture *)((char *)a - offsetof(fixture, admin));
  f->closed = true;
}

static void on_done(uv_async_t *h) {
  fixture *f = h->data;
  uv_close((uv_handle_t *)&f->done, NULL);
  qs_httpd_close(&f->admin.http, on_closed_flag);
}

static void test_admin_endpoints_answer_and_server_closes_clean(void **state) {
  (void)state;
  fixture *f = calloc(1, sizeof *f);
  f->redis_ok = true;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  qs_metrics_init(&f->metrics, "test", "0");
  qs_metric_inc(qs_metric_series(qs_metrics_counter(&f->metrics, "t_total", "test counter", NULL)));
  qs_admin_init(&f->admin, &f->loop, "127.0.0.1", 0, &f->metrics, "test");
  qs_admin_add_check(&f->admin, "redis", check_redis, f);
  char err[256];
  assert_int_equal(qs_httpd_start(&f->admin.http, err, sizeof err), 0);
  f->port = qs_httpd_port(&f->admin.http);
  assert_true(f->port > 0);
  uv_async_init(&f->loop, &f->done, on_done);
  f->done.data = f;
  pthread_t th;
  pthread_create(&th, NULL, client, f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  assert_true(f->closed);
  qs_httpd_dispose(&f->admin.http);
  assert_int_equal(uv_loop_close(&f->loop), 0);

  assert_int_equal(f->healthz.status, 200);
  assert_string_equal(f->healthz.body, "{\"status\":\"ok\"}");
  assert_non_null(strstr(f->healthz.head, "content-type: application/json"));
  assert_non_null(strstr(f->healthz.head, "Connection: close"));
  assert_int_equal(f->readyz.status, 200);
  assert_string_equal(f->readyz.body,
                      "{\"status\":\"ready\",\"checks\":[{\"name\":\"redis\",\"ok\":true,"
                      "\"reason\":\"\"}]}");
  assert_int_equal(f->readyz_down.status, 503);
  assert_string_equal(f->readyz_down.body,
                      "{\"status\":\"not ready\",\"checks\":[{\"name\":\"redis\",\"ok\":false,"
                      "\"reason\":\"redis: connection refused\"}]}");
  assert_int_equal(f->metrics_r.status, 200);
  assert_non_null(strstr(f->metrics_r.head, "content-type: text/plain; version=0.0.4"));
  assert_non_null(strstr(f->metrics_r.body, "\nt_total 1\n"));
  assert_int_equal(f->head.status, 200);
  assert_string_equal(f->head.body, "");
  assert_int_equal(f->notfound.status, 404);
  assert_non_null(strstr(f->notfound.head, "content-type: application/problem+json"));
  assert_int_equal(f->post.status, 405);
  assert_non_null(strstr(f->post.head, "allow: GET, HEAD"));
  assert_int_equal(f->subpath.status, 404);
  qs_admin_free(&f->admin);
  qs_metrics_free(&f->metrics);
  free(f);
}

static void test_bind_failure_reports_address_and_still_closes_clean(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  qs_httpd a, b;
  qs_httpd_options o;
  qs_httpd_options_init(&o);
  qs_httpd_init(&a, &loop, &o);
  char err[256];
  assert_int_equal(qs_httpd_start(&a, err, sizeof err), 0);
  o.port = qs_httpd_port(&a);
  qs_httpd_init(&b, &loop, &o);
  assert_int_not_equal(qs_httpd_start(&b, err, sizeof err), 0);
  assert_non_null(strstr(err, "address already in use"));
  o.host = "not-an-ip";
  qs_httpd c;
  qs_httpd_init(&c, &loop, &o);
  assert_int_not_equal(qs_httpd_start(&c, err, sizeof err), 0);
  assert_non_null(strstr(err, "invalid listen address"));
  qs_httpd_close(&a, NULL);
  qs_httpd_close(&b, NULL);
  qs_httpd_close(&c, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  qs_httpd_dispose(&a);
  qs_httpd_dispose(&b);
  qs_httpd_dispose(&c);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A general server (keep-alive on) with an idle keep-alive connection open: closing the server must
 * end that connection at once, not after the request timeout. */
typedef struct ka_fixture {
  uv_loop_t loop;
  uv_async_t done;
  qs_httpd http;
  int port;
  int first_status;
  ssize_t after_close; /* read() result once the server closed: 0 = EOF */
  uint64_t close_started, close_finished;
} ka_fixture;

static int on_hello(void *data, h2o_req_t *req) {
  (void)data;
  qs_httpd_respond(req, 200, "OK", "text/plain", "hello", 5);
  return 0;
}

static void *ka_client(void *arg) {
  ka_fixture *f = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  f->after_close = -2;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[4096];
    size_t len = 0;
    if (write(fd, req, sizeof req - 1) == (ssize_t)(sizeof req - 1)) {
      ssize_t got;
      /* read until the whole 5-byte body is in: the connection stays open (keep-alive) */
      while ((got = read(fd, buf + len, sizeof buf - 1 - len)) > 0) {
        len += (size_t)got;
        buf[len] = '\0';
        char *sep = strstr(buf, "\r\n\r\n");
        if (sep && strlen(sep + 4) >= 5)
          break;
      }
      sscanf(buf, "HTTP/1.1 %d", &f->first_status);
    }
    uv_async_send(&f->done);
    char c;
    f->after_close = read(fd, &c, 1);
  } else {
    uv_async_send(&f->done);
  }
  close(fd);
  return NULL;
}

static void ka_closed(qs_httpd *h) {
  ka_fixture *f = h->data;
  f->close_finished = uv_now(&f->loop);
}

static void ka_done(uv_async_t *h) {
  ka_fixture *f = h->data;
  uv_close((uv_handle_t *)&f->done, NULL);
  uv_update_time(&f->loop);
  f->close_started = uv_now(&f->loop);
  qs_httpd_close(&f->http, ka_closed);
}

static void test_close_ends_idle_keepalive_connections_at_once(void **state) {
  (void)state;
  ka_fixture *f = calloc(1, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  qs_httpd_options o;
  qs_httpd_options_init(&o);
  o.keepalive = true;
  o.req_timeout_ms = 30000;
  qs_httpd_init(&f->http, &f->loop, &o);
  f->http.data = f;
  qs_httpd_route(&f->http, "/hello", on_hello, NULL);
  char err[256];
  assert_int_equal(qs_httpd_start(&f->http, err, sizeof err), 0);
  f->port = qs_httpd_port(&f->http);
  uv_async_init(&f->loop, &f->done, ka_done);
  f->done.data = f;
  pthread_t th;
  pthread_create(&th, NULL, ka_client, f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  qs_httpd_dispose(&f->http);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_int_equal(f->first_status, 200);
  assert_int_equal(f->after_close, 0);
  assert_true(f->close_finished >= f->close_started);
  assert_true(f->close_finished - f->close_started < 1000);
  free(f);
}

/* A request in flight when the server closes still gets its response; then the connection ends. */
typedef struct inflight_fixture {
  uv_loop_t loop;
  uv_timer_t timer;
  qs_httpd http;
  int port;
  h2o_req_t *pending;
  bool closed;
  reply r;
} inflight_fixture;

static void answer_late(uv_timer_t *t) {
  inflight_fixture *f = t->data;
  uv_close((uv_handle_t *)&f->timer, NULL);
  qs_httpd_respond(f->pending, 200, "OK", "text/plain", "late", 4);
}

static void inflight_closed(qs_httpd *h) {
  inflight_fixture *f = h->data;
  f->closed = true;
}

static void close_with_request_pending(uv_timer_t *t) {
  inflight_fixture *f = t->data;
  qs_httpd_close(&f->http, inflight_closed);
  uv_timer_start(&f->timer, answer_late, 0, 0);
}

static int on_slow(void *data, h2o_req_t *req) {
  inflight_fixture *f = data;
  f->pending = req;
  uv_timer_start(&f->timer, close_with_request_pending, 0, 0);
  return 0;
}

static void *inflight_client(void *arg) {
  inflight_fixture *f = arg;
  http(f->port, "GET", "/slow", &f->r);
  return NULL;
}

static void test_close_lets_a_request_in_flight_finish(void **state) {
  (void)state;
  inflight_fixture *f = calloc(1, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->timer);
  f->timer.data = f;
  qs_httpd_options o;
  qs_httpd_options_init(&o);
  qs_httpd_init(&f->http, &f->loop, &o);
  f->http.data = f;
  qs_httpd_route(&f->http, "/slow", on_slow, f);
  char err[256];
  assert_int_equal(qs_httpd_start(&f->http, err, sizeof err), 0);
  f->port = qs_httpd_port(&f->http);
  pthread_t th;
  pthread_create(&th, NULL, inflight_client, f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  qs_httpd_dispose(&f->http);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_true(f->closed);
  assert_int_equal(f->r.status, 200);
  assert_string_equal(f->r.body, "late");
  free(f);
}

/* Request bodies are bounded by max_request_body: a larger one is refused, not buffered. */
typedef struct body_fixture {
  uv_loop_t loop;
  uv_async_t done;
  qs_httpd http;
  int port;
  int small_status, big_status;
  size_t handled;
} body_fixture;

static int on_upload(void *data, h2o_req_t *req) {
  body_fixture *f = data;
  f->handled++;
  qs_httpd_respond(req, 200, "OK", "text/plain", "ok", 2);
  return 0;
}

static int post_status(int port, size_t body_len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  int status = -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     body_len);
    static char body[8192];
    memset(body, 'b', sizeof body);
    if (write(fd, head, (size_t)n) == n && body_len <= sizeof body &&
        write(fd, body, body_len) == (ssize_t)body_len) {
      char buf[512] = "";
      if (read(fd, buf, sizeof buf - 1) > 0)
        sscanf(buf, "HTTP/1.1 %d", &status);
    }
  }
  close(fd);
  return status;
}

static void *body_client(void *arg) {
  body_fixture *f = arg;
  f->small_status = post_status(f->port, 1000);
  f->big_status = post_status(f->port, 5000);
  uv_async_send(&f->done);
  return NULL;
}

static void body_done(uv_async_t *h) {
  body_fixture *f = h->data;
  uv_close((uv_handle_t *)&f->done, NULL);
  qs_httpd_close(&f->http, NULL);
}

static void test_request_body_over_the_limit_is_refused_with_413(void **state) {
  (void)state;
  body_fixture *f = calloc(1, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  qs_httpd_options o;
  qs_httpd_options_init(&o);
  o.max_request_body = 4096;
  qs_httpd_init(&f->http, &f->loop, &o);
  qs_httpd_route(&f->http, "/upload", on_upload, f);
  char err[256];
  assert_int_equal(qs_httpd_start(&f->http, err, sizeof err), 0);
  f->port = qs_httpd_port(&f->http);
  uv_async_init(&f->loop, &f->done, body_done);
  f->done.data = f;
  pthread_t th;
  pthread_create(&th, NULL, body_client, f);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  qs_httpd_dispose(&f->http);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  assert_int_equal(f->small_status, 200);
  assert_int_equal(f->big_status, 413);
  assert_int_equal(f->handled, 1);
  free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admin_endpoints_answer_and_server_closes_clean),
      cmocka_unit_test(test_bind_failure_reports_address_and_still_closes_clean),
      cmocka_unit_test(test_close_ends_idle_keepalive_connections_at_once),
      cmocka_unit_test(test_close_lets_a_request_in_flight_finish),
      cmocka_unit_test(test_request_body_over_the_limit_is_refused_with_413),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
