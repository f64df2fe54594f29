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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admin_endpoints_answer_and_server_closes_clean),
      cmocka_unit_test(test_bind_failure_reports_address_and_still_closes_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
