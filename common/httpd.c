/* httpd.c — h2o on the service's libuv loop, and the admin endpoints.
 *
 * Invariants:
 * - every accepted connection is a conn_t (listed in h->conns) whose close callback (run by h2o
 * when it disposes the socket) decrements h->connections and frees it; the close callback of
 * qs_httpd_close fires exactly once, after the listener and the last connection have closed;
 * - h2o's own handles (its timers and its cross-thread queue) are unreferenced right after
 *   h2o_context_init, so they never keep the loop running; qs_httpd_dispose closes them, outside
 *   any loop callback, because h2o_context_dispose runs the loop itself.
 */
#include "qs/httpd.h"

#include "qs/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct route {
  h2o_handler_t super; /* first: h2o passes this pointer back */
  qs_httpd *httpd;
  qs_httpd_handler_fn fn;
  void *data;
};

struct qs_httpd_conn {
  uv_tcp_t tcp; /* first: h2o's close callback receives &tcp */
  qs_httpd *httpd;
  struct qs_httpd_conn *prev, *next; /* h->conns: every connection not yet closed */
};
typedef struct qs_httpd_conn conn_t;

void qs_httpd_options_init(qs_httpd_options *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->port = 0;
  o->keepalive = true;
  o->req_timeout_ms = 10000;
  o->max_connections = 1024;
  o->max_request_body = 1024 * 1024;
  o->listen_backlog = 128;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req) {
  struct route *r = (struct route *)self;
  if (!r->httpd->opt.keepalive || r->httpd->closing)
    req->http1_is_persistent = 0;
  if (r->fn && r->fn(r->data, req) == 0)
    return 0;
  qs_httpd_problem(req, 404, "Not Found", "no such path");
  return 0;
}

void qs_httpd_init(qs_httpd *h, uv_loop_t *loop, const qs_httpd_options *opt) {
  memset(h, 0, sizeof *h);
  h->loop = loop;
  h->opt = *opt;
  h2o_config_init(&h->config);
  h->config.http1.req_timeout = opt->req_timeout_ms;
  h->config.max_request_entity_size = opt->max_request_body;
  h->config.server_name = h2o_iovec_init(H2O_STRLIT("quakestream"));
  h->hostconf = h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
  uv_tcp_init(loop, &h->listener);
  h->listener.data = h;
}

void qs_httpd_route(qs_httpd *h, const char *path, qs_httpd_handler_fn fn, void *data) {
  if (h->started)
    QS_FATAL("qs_httpd_route(%s) after start", path);
  h2o_pathconf_t *pc = h2o_config_register_path(h->hostconf, path, 0);
  struct route *r = (struct route *)h2o_create_handler(pc, sizeof *r);
  r->super.on_req = on_req;
  r->httpd = h;
  r->fn = fn;
  r->data = data;
}

void qs_httpd_route_files(qs_httpd *h, const char *path, const char *dir) {
  if (h->started)
    QS_FATAL("qs_httpd_route_files(%s) after start", path);
  h2o_pathconf_t *pc = h2o_config_register_path(h->hostconf, path, 0);
  static const char *index_files[] = {"index.html", NULL};
  h2o_file_register(pc, dir, index_files, NULL, 0);
}

static void conn_closed(uv_handle_t *handle) {
  conn_t *c = (conn_t *)handle;
  qs_httpd *h = c->httpd;
  if (c->prev)
    c->prev->next = c->next;
  else
    h->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
  h->connections--;
  if (h->closing && h->listener_closed && h->connections == 0 && h->close_cb) {
    qs_httpd_close_cb cb = h->close_cb;
    h->close_cb = NULL;
    cb(h);
  }
}

static void rejected_closed(uv_handle_t *handle) { conn_closed(handle); }

static void on_accept(uv_stream_t *listener, int status) {
  qs_httpd *h = listener->data;
  if (status != 0)
    return; /* transient (EMFILE...): libuv keeps listening */
  conn_t *c = qs_xcalloc(1, sizeof *c);
  c->httpd = h;
  uv_tcp_init(h->loop, &c->tcp);
  c->next = h->conns;
  if (h->conns)
    h->conns->prev = c;
  h->conns = c;
  h->connections++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || h->closing ||
      h->connections > h->opt.max_connections) {
    h->rejected++;
    uv_close((uv_handle_t *)&c->tcp, rejected_closed);
    return;
  }
  h->accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed);
  h2o_accept(&h->accept_ctx, sock);
}

struct walk_set {
  uv_handle_t **items;
  size_t n, cap;
  bool unref_new;
};

static void walk_cb(uv_handle_t *handle, void *arg) {
  struct walk_set *s = arg;
  if (s->unref_new) {
    for (size_t i = 0; i < s->n; i++)
      if (s->items[i] == handle)
        return;
    uv_unref(handle);
    return;
  }
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->items = qs_xrealloc(s->items, s->cap * sizeof *s->items);
  }
  s->items[s->n++] = handle;
}

int qs_httpd_start(qs_httpd *h, char *err, size_t errlen) {
  struct walk_set before = {0};
  uv_walk(h->loop, walk_cb, &before);
  h2o_context_init(&h->ctx, h->loop, &h->config);
  before.unref_new = true;
  uv_walk(h->loop, walk_cb, &before); /* h2o's timers and queue must not hold the loop open */
  free(before.items);
  h->accept_ctx.ctx = &h->ctx;
  h->accept_ctx.hosts = h->config.hosts;
  h->started = true;

  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(h->opt.host, h->opt.port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    rc = uv_ip6_addr(h->opt.host, h->opt.port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) {
    snprintf(err, errlen, "invalid listen address \"%s\": an IPv4 or IPv6 literal is required",
             h->opt.host);
    return rc;
  }
  if ((rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&h->listener,
                      h->opt.listen_backlog > 0 ? h->opt.listen_backlog : 128, on_accept)) != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", h->opt.host, h->opt.port, uv_strerror(rc));
    return rc;
  }
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &len);
  h->bound_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
  return 0;
}

int qs_httpd_port(const qs_httpd *h) { return h->bound_port; }

static void listener_closed(uv_handle_t *handle) {
  qs_httpd *h = handle->data;
  h->listener_closed = true;
  if (h->connections == 0 && h->close_cb) {
    qs_httpd_close_cb cb = h->close_cb;
    h->close_cb = NULL;
    cb(h);
  }
}

void qs_httpd_close(qs_httpd *h, qs_httpd_close_cb cb) {
  if (h->closing)
    QS_FATAL("qs_httpd_close called twice");
  h->closing = true;
  h->close_cb = cb;
  if (h->started)
    h2o_context_request_shutdown(&h->ctx); /* in-flight responses end their connection */
  /* h2o 2.2 leaves idle keep-alive connections open until their timeout. Shutting down the read
   * side makes h2o see EOF on each one: an idle connection closes at once, a request in flight
   * is answered first (h2o does not read while it handles one), then the connection ends. */
  for (conn_t *c = h->conns; c; c = c->next) {
    uv_os_fd_t fd;
    if (!uv_is_closing((uv_handle_t *)&c->tcp) && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
      shutdown(fd, SHUT_RD);
  }
  uv_close((uv_handle_t *)&h->listener, listener_closed);
}

void qs_httpd_dispose(qs_httpd *h) {
  if (h->disposed)
    return;
  h->disposed = true;
  if (h->started) {
    /* h2o_context_request_shutdown arms HTTP/2's graceful-shutdown timer on one_sec_timeout;
     * h2o_context_dispose asserts every timeout is empty, so disarm it first. */
    if (h2o_timeout_is_linked(&h->ctx.http2._graceful_shutdown_timeout))
      h2o_timeout_unlink(&h->ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&h->ctx);
  }
  h2o_config_dispose(&h->config);
}

bool qs_httpd_method_is(const h2o_req_t *req, const char *method) {
  return h2o_memis(req->method.base, req->method.len, method, strlen(method));
}

h2o_iovec_t qs_httpd_path(const h2o_req_t *req) {
  size_t len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
  return h2o_iovec_init(req->path.base, len);
}

void qs_httpd_respond(h2o_req_t *req, int status, const char *reason, const char *content_type,
                      const char *body, size_t len) {
  req->res.status = status;
  req->res.reason = reason;
  req->res.content_length = len;
  if (content_type)
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
  h2o_send_inline(req, body, len);
}

void qs_httpd_problem(h2o_req_t *req, int status, const char *title, const char *detail) {
  qs_buf b = QS_BUF_INIT;
  qs_buf_puts(&b, "{\"type\":\"about:blank\",\"title\":\"");
  qs_buf_json_str(&b, title, strlen(title));
  qs_buf_printf(&b, "\",\"status\":%d,\"detail\":\"", status);
  qs_buf_json_str(&b, detail, strlen(detail));
  qs_buf_puts(&b, "\"}");
  qs_httpd_respond(req, status, title, "application/problem+json", b.p, b.len);
  qs_buf_free(&b);
}

/* ---- admin endpoints --------------------------------------------------------------------- */

static bool exact_path(const h2o_req_t *req, const char *path) {
  h2o_iovec_t p = qs_httpd_path(req);
  return h2o_memis(p.base, p.len, path, strlen(path));
}

/* Admin endpoints answer GET and HEAD only, on their exact path. */
static int admin_precheck(h2o_req_t *req, const char *path) {
  if (!exact_path(req, path)) {
    qs_httpd_problem(req, 404, "Not Found", "no such path");
    return 1;
  }
  if (!qs_httpd_method_is(req, "GET") && !qs_httpd_method_is(req, "HEAD")) {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
    qs_httpd_problem(req, 405, "Method Not Allowed", "use GET or HEAD");
    return 1;
  }
  return 0;
}

static int on_healthz(void *data, h2o_req_t *req) {
  (void)data;
  if (admin_precheck(req, "/healthz"))
    return 0;
  static const char body[] = "{\"status\":\"ok\"}";
  qs_httpd_respond(req, 200, "OK", "application/json", body, sizeof body - 1);
  return 0;
}

bool qs_admin_ready(qs_admin *a, qs_buf *body) {
  bool all = !a->shutting_down;
  if (body) {
    qs_buf_reset(body);
    qs_buf_puts(body, "{\"status\":\"");
  }
  qs_buf checks = QS_BUF_INIT;
  for (size_t i = 0; i < a->nchecks; i++) {
    char reason[256] = "";
    bool ok = a->checks[i].fn(a->checks[i].data, reason, sizeof reason);
    all = all && ok;
    qs_buf_printf(&checks, "%s{\"name\":\"", i ? "," : "");
    qs_buf_json_str(&checks, a->checks[i].name, strlen(a->checks[i].name));
    qs_buf_printf(&checks, "\",\"ok\":%s,\"reason\":\"", ok ? "true" : "false");
    qs_buf_json_str(&checks, reason, strlen(reason));
    qs_buf_puts(&checks, "\"}");
  }
  if (body) {
    qs_buf_puts(body, all ? "ready" : (a->shutting_down ? "shutting down" : "not ready"));
    qs_buf_puts(body, "\",\"checks\":[");
    if (checks.len)
      qs_buf_append(body, checks.p, checks.len);
    qs_buf_puts(body, "]}");
  }
  qs_buf_free(&checks);
  return all;
}

static int on_readyz(void *data, h2o_req_t *req) {
  qs_admin *a = data;
  if (admin_precheck(req, "/readyz"))
    return 0;
  bool ok = qs_admin_ready(a, &a->scratch);
  qs_httpd_respond(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "application/json",
                   a->scratch.p, a->scratch.len);
  return 0;
}

static int on_metrics(void *data, h2o_req_t *req) {
  qs_admin *a = data;
  if (admin_precheck(req, "/metrics"))
    return 0;
  qs_buf_reset(&a->scratch);
  qs_metrics_render(a->metrics, &a->scratch);
  qs_httpd_respond(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", a->scratch.p,
                   a->scratch.len);
  return 0;
}

static int on_other(void *data, h2o_req_t *req) {
  (void)data;
  qs_httpd_problem(req, 404, "Not Found", "admin endpoints: /healthz /readyz /metrics");
  return 0;
}

void qs_admin_init(qs_admin *a, uv_loop_t *loop, const char *host, int port, qs_metrics *metrics,
                   const char *service) {
  memset(a, 0, sizeof *a);
  qs_httpd_options o;
  qs_httpd_options_init(&o);
  o.host = host;
  o.port = port;
  o.keepalive = false; /* scrapes are rare; no idle connection may delay a shutdown */
  o.req_timeout_ms = 5000;
  o.max_connections = 64;
  o.max_request_body = 4096; /* GET and HEAD only: a body is never needed */
  qs_httpd_init(&a->http, loop, &o);
  a->http.data = a;
  a->metrics = metrics;
  a->service = service;
  qs_httpd_route(&a->http, "/healthz", on_healthz, a);
  qs_httpd_route(&a->http, "/readyz", on_readyz, a);
  qs_httpd_route(&a->http, "/metrics", on_metrics, a);
  qs_httpd_route(&a->http, "/", on_other, a);
}

void qs_admin_add_check(qs_admin *a, const char *name, qs_ready_fn fn, void *data) {
  if (a->nchecks == QS_HTTPD_MAX_READY_CHECKS)
    QS_FATAL("too many readiness checks");
  a->checks[a->nchecks].name = name;
  a->checks[a->nchecks].fn = fn;
  a->checks[a->nchecks].data = data;
  a->nchecks++;
}

void qs_admin_free(qs_admin *a) { qs_buf_free(&a->scratch); }
