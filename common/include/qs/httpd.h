/* httpd.h — a small HTTP server on h2o 2.2 (libuv build), on the service's own loop, and the admin
 * endpoints every service embeds: /healthz, /readyz, /metrics.
 *
 * Life cycle (h2o's context owns libuv handles that must be closed outside any loop callback):
 *   qs_httpd_init -> qs_httpd_route ... -> qs_httpd_start -> (loop runs)
 *   qs_httpd_close(cb)  stop accepting, end idle keep-alive connections at once and the others
 *                     after their response; cb fires once the last connection has closed
 *   (uv_run returns)    qs_httpd_dispose  outside uv_run: frees h2o's context; then uv_loop_close()
 * h2o's internal handles are unreferenced, so an idle server never keeps the loop alive by itself;
 * its listener and connections do.
 *
 * Routes match by path prefix, longest first (h2o's rule); a handler returns 0 when it responded
 * and -1 to fall through to the next route (the last resort is a 404 problem document).
 */
#ifndef QS_HTTPD_H
#define QS_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <h2o.h>
#include <uv.h>

#include "qs/buf.h"
#include "qs/metrics.h"

#define QS_HTTPD_MAX_ROUTES 32
#define QS_HTTPD_MAX_READY_CHECKS 16

typedef struct qs_httpd qs_httpd;
typedef int (*qs_httpd_handler_fn)(void *data, h2o_req_t *req);
typedef void (*qs_httpd_close_cb)(qs_httpd *h);

typedef struct qs_httpd_options {
  const char *host;        /* IP literal to bind, e.g. "127.0.0.1" or "0.0.0.0" */
  int port;                /* 0 = any free port */
  bool keepalive;          /* false: every response closes its connection (admin endpoints) */
  uint64_t req_timeout_ms; /* idle/slow request timeout (h2o http1 req_timeout) */
  size_t max_connections;  /* accepted connections beyond this are closed at once */
  size_t max_request_body; /* larger request bodies are refused with 413 (h2o's default: 1 GiB) */
  int listen_backlog;      /* listen(2) backlog; default 128 */
} qs_httpd_options;

struct qs_httpd {
  uv_loop_t *loop;
  qs_httpd_options opt;
  h2o_globalconf_t config;
  h2o_context_t ctx;
  h2o_accept_ctx_t accept_ctx;
  h2o_hostconf_t *hostconf;
  uv_tcp_t listener;
  int bound_port;
  size_t connections;
  struct qs_httpd_conn *conns; /* open connections (private) */
  bool started, closing, listener_closed, disposed;
  qs_httpd_close_cb close_cb;
  uint64_t accepted, rejected;
  void *data; /* for the owner */
};

void qs_httpd_options_init(qs_httpd_options *o);
/* Prepare the server (no socket yet). */
void qs_httpd_init(qs_httpd *h, uv_loop_t *loop, const qs_httpd_options *opt);
/* Register a handler for a path prefix before qs_httpd_start. */
void qs_httpd_route(qs_httpd *h, const char *path, qs_httpd_handler_fn fn, void *data);
/* Serve the files under dir (h2o's file handler: ETag, Last-Modified, Range, index.html) for a
 * path prefix, before qs_httpd_start. dir must exist for the server's life. */
void qs_httpd_route_files(qs_httpd *h, const char *path, const char *dir);
/* Bind and listen. On failure returns a libuv error code with a message in err; the server must
 * then still be closed (qs_httpd_close, run the loop, qs_httpd_dispose). */
int qs_httpd_start(qs_httpd *h, char *err, size_t errlen);
int qs_httpd_port(const qs_httpd *h);
void qs_httpd_close(qs_httpd *h, qs_httpd_close_cb cb);
void qs_httpd_dispose(qs_httpd *h);

/* Respond with a complete body (copied into the request's pool). */
void qs_httpd_respond(h2o_req_t *req, int status, const char *reason, const char *content_type,
                      const char *body, size_t len);
/* RFC 7807 application/problem+json: {"type":"about:blank","title":..,"status":..,"detail":..}. */
void qs_httpd_problem(h2o_req_t *req, int status, const char *title, const char *detail);
bool qs_httpd_method_is(const h2o_req_t *req, const char *method);
/* The request path without the query string (points into the request; not NUL-terminated). */
h2o_iovec_t qs_httpd_path(const h2o_req_t *req);

/* ---- admin endpoints --------------------------------------------------------------------- */

/* A readiness check: fill reason (e.g. "redis: connection refused") and return true when ready. */
typedef bool (*qs_ready_fn)(void *data, char *reason, size_t cap);

typedef struct qs_admin {
  qs_httpd http;
  qs_metrics *metrics;
  const char *service;
  struct {
    const char *name;
    qs_ready_fn fn;
    void *data;
  } checks[QS_HTTPD_MAX_READY_CHECKS];
  size_t nchecks;
  bool shutting_down; /* /readyz answers 503 "shutting down" once set */
  qs_buf scratch;
} qs_admin;

/* Routes /healthz, /readyz, /metrics on a fresh qs_httpd (keep-alive off). */
void qs_admin_init(qs_admin *a, uv_loop_t *loop, const char *host, int port, qs_metrics *metrics,
                   const char *service);
void qs_admin_add_check(qs_admin *a, const char *name, qs_ready_fn fn, void *data);
/* Run every check; true when all pass. body (may be NULL) gets the JSON answer of /readyz. */
bool qs_admin_ready(qs_admin *a, qs_buf *body);
void qs_admin_free(qs_admin *a); /* after qs_httpd_dispose */

#endif
