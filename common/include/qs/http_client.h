/* http_client.h — asynchronous HTTP(S) requests on the service's libuv loop: libcurl's multi
 * interface driven by uv_poll_t (one per socket) and one uv_timer_t (curl's
 * docs/examples/multi-uv.c pattern). Generic on purpose: the speed aggregator POSTs alerts to a
 * webhook with it, the ingestor polls feeds.
 *
 * Contract:
 * - qs_http_request_start copies the request (url, headers, body) and returns 0; cb then fires
 *   exactly once, always from the loop (never inside the start call). A start that fails
 *   (QS_ERR_INVALID, QS_ERR_CLOSED, QS_ERR_FULL over max_inflight) never calls cb.
 * - The response says either an HTTP status (any, 1xx..5xx: deciding what is success is the
 *   caller's) or an error: QS_ERR_TIMEOUT, QS_ERR_TOOBIG (body over max_response), QS_ERR_IO
 *   (connect, TLS, protocol; error_text has curl's reason), QS_ERR_CLOSED (client closed).
 * - Response headers and body are valid during the callback only.
 * - qs_http_client_close fails what is in flight with QS_ERR_CLOSED, closes every handle and
 *   then calls its cb; the client is freed right after.
 */
#ifndef QS_HTTP_CLIENT_H
#define QS_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct qs_http_client qs_http_client;

typedef struct qs_http_header {
  const char *name;
  const char *value;
} qs_http_header;

typedef struct qs_http_request {
  const char *method; /* "GET", "POST", ... (default "GET") */
  const char *url;    /* http:// or https:// */
  const qs_http_header *headers;
  size_t nheaders;
  const void *body; /* copied; NULL for none */
  size_t body_len;
  uint32_t timeout_ms; /* whole request; default 30000 */
  size_t max_response; /* body bytes kept; default 1 MiB */
} qs_http_request;

typedef struct qs_http_response {
  int status;             /* HTTP status, 0 when there is none (error != 0) */
  int error;              /* 0 or a negative qs_err */
  const char *error_text; /* "" when error == 0 */
  const char *headers;    /* the raw header lines of the last response */
  size_t headers_len;
  const char *body;
  size_t body_len;
  double total_seconds;
} qs_http_response;

typedef void (*qs_http_cb)(const qs_http_response *res, void *ud);

typedef struct qs_http_client_opts {
  size_t max_inflight;    /* default 64 */
  const char *user_agent; /* default "quakestream" */
} qs_http_client_opts;

int qs_http_client_init(qs_http_client **out, uv_loop_t *loop, const qs_http_client_opts *opts);
int qs_http_request_start(qs_http_client *c, const qs_http_request *req, qs_http_cb cb, void *ud);
size_t qs_http_client_inflight(const qs_http_client *c);
void qs_http_client_close(qs_http_client *c, void (*cb)(void *ud), void *ud);

/* Value of header `name` (case-insensitive) in a raw header block, copied into buf; 0 or
 * QS_ERR_NOTFOUND. */
int qs_http_header_get(const char *headers, size_t len, const char *name, char *buf, size_t cap);

#endif
