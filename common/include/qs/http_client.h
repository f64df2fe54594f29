/* http_client.h — HTTP requests with libcurl's multi interface driven by a libuv loop.
 *
 * One qs_http per loop serves any number of concurrent requests. Every request's callback fires
 * exactly once, from the loop (never inside qs_http_request): with the HTTP status and body, or
 * with status 0 and an error (DNS, connect, TLS, timeout, response too large, closed).
 * Responses are held in memory up to max_response_bytes (a larger one fails with QS_ERR_TOOBIG).
 */
#ifndef QS_HTTP_CLIENT_H
#define QS_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct qs_http qs_http;

typedef struct qs_http_opts {
  const char *user_agent;      /* default "quakestream/<version>" */
  size_t max_response_bytes;   /* default 64 MiB */
  uint32_t connect_timeout_ms; /* default 10000 */
} qs_http_opts;

typedef struct qs_http_req {
  const char *method;         /* default "GET" */
  const char *url;            /* required: http:// or https:// */
  const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
  const void *body;           /* copied by libcurl's POSTFIELDS semantics: keep until callback */
  size_t body_len;
  uint32_t timeout_ms; /* whole request; default 30000 */
} qs_http_req;

typedef struct qs_http_response {
  long status;            /* HTTP status; 0 when no response arrived */
  int error;              /* 0, or QS_ERR_TIMEOUT / QS_ERR_IO / QS_ERR_TOOBIG / QS_ERR_CLOSED */
  const char *error_text; /* why, when error != 0 */
  const char *body;       /* NUL-terminated; valid during the callback */
  size_t body_len;
  const char *etag; /* response headers of interest ("" when absent) */
  const char *last_modified;
  const char *retry_after;
  const char *content_type;
  double total_s; /* request duration */
} qs_http_response;

typedef void (*qs_http_cb)(const qs_http_response *r, void *ud);

int qs_http_init(qs_http **out, uv_loop_t *loop, const qs_http_opts *opts);
/* 0 and cb later, or QS_ERR_INVALID (bad request) / QS_ERR_CLOSED with no callback. */
int qs_http_request(qs_http *h, const qs_http_req *req, qs_http_cb cb, void *ud);
/* Requests in flight. */
size_t qs_http_pending(const qs_http *h);
/* Aborts requests in flight (callbacks with QS_ERR_CLOSED), closes handles; cb fires last and h
 * is freed right before it. */
void qs_http_close(qs_http *h, void (*cb)(void *ud), void *ud);

#endif
