/* api.h — the public HTTP server of serving-api: REST under /api/v1, the WebSocket upgrade at
 * /api/v1/live (handed to live.h), the dashboard's static files, OpenAPI.
 *
 * Every REST read is one Lua script call to Redis (EVAL: atomic, one round trip, so a reader never
 * mixes two batch runs). Cross-cutting rules applied in one place, before any handler:
 * method (GET/HEAD; OPTIONS answers CORS preflights), CORS, per-client rate limit (token bucket per
 * peer address, bounded table), optional API keys (Authorization: Bearer), query validation
 * (unknown parameters refused), Redis readiness (503 problem), a short response cache, ETag /
 * If-None-Match and Cache-Control.
 */
#ifndef SERVING_API_H
#define SERVING_API_H

#include <stdbool.h>
#include <stdint.h>

#include "qs/httpd.h"
#include "qs/log.h"
#include "qs/metrics.h"
#include "qs/redis.h"

typedef struct live live;
typedef struct api api;

typedef struct api_options {
  const char *host;
  int port;
  const char *static_dir; /* the dashboard ("" = none) */
  const char *vendor_dir; /* npm packages served under /vendor/ ("" = none) */
  const char *api_keys;   /* comma-separated; "" = open */
  const char *cors_origins;
  double rate_limit_rps; /* 0 = off */
  double rate_limit_burst;
  int64_t cache_max_age_ms; /* Cache-Control max-age and the server's own response cache TTL */
  double anomaly_k;
  int64_t max_rows; /* rows one merged query may read */
  int64_t scan_max; /* events one /events or /stats call may scan */
  size_t max_connections;
} api_options;

/* Creates the server (routes, no socket yet). redis is the command connection. */
api *api_new(uv_loop_t *loop, const api_options *o, qs_redis *redis, live *lv, qs_log *log,
             qs_metrics *metrics);
int api_start(api *a, char *err, size_t errlen);
int api_port(const api *a);
qs_httpd *api_httpd(api *a);
/* Stop accepting; cb when every connection has ended. */
void api_close(api *a, void (*cb)(void *), void *arg);
/* After the loop has ended. */
void api_free(api *a);

/* The Lua scripts (exposed for live.c's snapshot). */
extern const char api_script_snapshot[];

#endif
