/* serving-api — REST merged views, the live WebSocket feed and the dashboard, over Redis.
 * Wiring only: configuration -> api (api.c) + live feed (live.c) on two Redis connections (one for
 * commands, one subscribed to the live channels); the service runtime does the rest. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/buf.h"

#include "qs/redis.h"
#include "qs/service.h"

#include "api.h"
#include "live.h"

static const qs_cfg_spec serving_config[] = {
    {"REDIS_URL", QS_CFG_STR, "redis://127.0.0.1:6379/0", 1, 1024, NULL,
     "Redis holding the speed and batch tables (redis://[[user]:password@]host[:port][/db])",
     QS_CFG_SECRET},
    {"API_HOST", QS_CFG_IP, "127.0.0.1", 0, 0, NULL,
     "IP address of the public server (REST, WebSocket, dashboard); 0.0.0.0 in containers", 0},
    {"API_PORT", QS_CFG_PORT, "8080", 0, 65535, NULL, "its port (0: any free port)", 0},
    {"STATIC_DIR", QS_CFG_STR, "services/serving-api/www", 0, 1024, NULL,
     "the dashboard's files, served at / (empty: no dashboard)", 0},
    {"VENDOR_DIR", QS_CFG_STR, "web/node_modules", 0, 1024, NULL,
     "npm packages the dashboard uses (installed at build time), served at /vendor/", 0},
    {"API_KEYS", QS_CFG_STR, "", 0, 4096, NULL,
     "comma-separated API keys; when set, /api/v1 requires Authorization: Bearer <key> "
     "(WebSocket: ?access_token=); empty: open",
     QS_CFG_SECRET},
    {"API_KEYS_FILE", QS_CFG_STR, "", 0, 1024, NULL,
     "file with more API keys, one per line (e.g. a mounted Kubernetes secret); read at start", 0},
    {"CORS_ORIGINS", QS_CFG_STR, "", 0, 2048, NULL,
     "origins allowed by CORS, comma-separated, or * (empty: no CORS headers)", 0},
    {"RATE_LIMIT_RPS", QS_CFG_DOUBLE, "100", 0, 1e6, NULL,
     "requests per second per client address (token bucket; 0: no limit)", 0},
    {"RATE_LIMIT_BURST", QS_CFG_DOUBLE, "200", 1, 1e7, NULL, "bucket size of the rate limit", 0},
    {"CACHE_MAX_AGE", QS_CFG_DURATION, "1s", 0, 3600000, NULL,
     "Cache-Control max-age of REST reads, and how long the server reuses a computed answer "
     "(0: no cache)",
     0},
    {"ANOMALY_K", QS_CFG_DOUBLE, "2", 0, 10, NULL,
     "default k of /anomalies: a window is anomalous above mean + k sigma of its region's batch "
     "baseline",
     0},
    {"MAX_ROWS", QS_CFG_INT, "200000", 100, 10000000, NULL,
     "most rows one merged query reads from Redis (more: 400 asking for a narrower since)", 0},
    {"SCAN_MAX", QS_CFG_INT, "100000", 100, 10000000, NULL,
     "most events one /events or /stats call scans", 0},
    {"API_MAX_CONNECTIONS", QS_CFG_INT, "20000", 1, 1000000, NULL,
     "HTTP and WebSocket connections accepted at once", 0},
    {"WS_MAX_CLIENTS", QS_CFG_INT, "20000", 1, 1000000, NULL, "WebSocket clients at once", 0},
    {"WS_SEND_BUFFER", QS_CFG_INT, "65536", 1024, 67108864, NULL,
     "about the most bytes handed to one WebSocket client's socket in one write", 0},
    {"WS_MAX_BACKLOG", QS_CFG_INT, "1000", 1, 1000000, NULL,
     "updates waiting per WebSocket client (after coalescing per window) before it is "
     "disconnected",
     0},
    {"WS_PING_INTERVAL", QS_CFG_DURATION, "30s", 1000, 3600000, NULL,
     "WebSocket ping interval; a client silent for 3 intervals is closed", 0},
    {"REDIS_MAX_PENDING", QS_CFG_INT, "8192", 16, 1000000, NULL,
     "Redis commands in flight at once (more: 503)", 0},
    {NULL},
};

static const qs_service_def def = {
    .name = "serving-api",
    .summary = "REST, WebSocket and the dashboard over the merged views",
    .admin_port = 8094,
    .config = serving_config,
};

typedef struct serving {
  qs_service *svc;
  qs_redis redis, sub;
  live *lv;
  api *api;
  int pending; /* parts still closing */
  qs_buf keys; /* API_KEYS and the lines of API_KEYS_FILE, comma-separated */
} serving;

/* API_KEYS plus the lines of API_KEYS_FILE, comma-separated, into keys. */
static int load_api_keys(const qs_config *c, qs_buf *keys, char *err, size_t errlen) {
  qs_buf_puts(keys, qs_config_str(c, "API_KEYS"));
  const char *path = qs_config_str(c, "API_KEYS_FILE");
  if (!path[0])
    return 0;
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "API_KEYS_FILE=\"%s\": %s", path, strerror(errno));
    return -1;
  }
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f) && n < 4096) {
    size_t l = strcspn(line, "\r\n");
    line[l] = '\0';
    if (l == 0 || line[0] == '#')
      continue;
    if (strchr(line, ',')) {
      snprintf(err, errlen, "API_KEYS_FILE=\"%s\": line %d: a key may not contain a comma", path,
               n + 1);
      fclose(f);
      return -1;
    }
    qs_buf_printf(keys, "%s%s", keys->len ? "," : "", line);
    n++;
  }
  fclose(f);
  return 0;
}

static bool redis_ready(void *data, char *reason, size_t cap) {
  const char *why = NULL;
  int ok = qs_redis_ready(data, &why);
  snprintf(reason, cap, "%s", why);
  return ok;
}

static void part_closed(serving *s) {
  if (--s->pending == 0)
    qs_service_stopped(s->svc);
}

static void redis_closed(qs_redis *r) { part_closed(r->data); }

static void live_closed(void *arg) {
  serving *s = arg;
  part_closed(s);
}

static void api_closed(void *arg) {
  serving *s = arg;
  /* The HTTP server has no request left: only now may Redis go (a request in flight owns a
   * command whose callback answers it). */
  s->redis.data = s;
  qs_redis_close(&s->redis, redis_closed);
  part_closed(s);
}

static void stop(qs_service *svc, void *data) {
  (void)svc;
  serving *s = data;
  s->pending = 3; /* live (its clients and the subscription), the HTTP server, Redis */
  live_close(s->lv, live_closed, s);
  api_close(s->api, api_closed, s);
}

static void dispose(qs_service *svc, void *data) {
  (void)svc;
  serving *s = data;
  api_free(s->api);
  live_free(s->lv);
  qs_buf_free(&s->keys);
}

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  const qs_config *c = &svc.config;
  static serving s;
  s.svc = &svc;
  char err[512];
  if (load_api_keys(c, &s.keys, err, sizeof err) != 0) {
    qs_log_error(&svc.log, "bad API keys", QS_LSTR("error", err));
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  qs_redis_opts ro = {.max_pending = (unsigned)qs_config_int(c, "REDIS_MAX_PENDING")};
  if (qs_redis_init(&s.redis, &svc.loop, qs_config_str(c, "REDIS_URL"), &ro, err, sizeof err) !=
          0 ||
      qs_redis_init(&s.sub, &svc.loop, qs_config_str(c, "REDIS_URL"), NULL, err, sizeof err) != 0) {
    qs_log_error(&svc.log, "bad REDIS_URL", QS_LSTR("error", err));
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  live_options lo = {
      .send_buffer = (size_t)qs_config_int(c, "WS_SEND_BUFFER"),
      .max_backlog = (size_t)qs_config_int(c, "WS_MAX_BACKLOG"),
      .max_clients = (size_t)qs_config_int(c, "WS_MAX_CLIENTS"),
      .ping_interval_ms = (uint64_t)qs_config_ms(c, "WS_PING_INTERVAL"),
  };
  s.lv = live_new(&svc.loop, &lo, &s.redis, &s.sub, &svc.log, &svc.metrics);
  api_options ao = {
      .host = qs_config_str(c, "API_HOST"),
      .port = (int)qs_config_int(c, "API_PORT"),
      .static_dir = qs_config_str(c, "STATIC_DIR"),
      .vendor_dir = qs_config_str(c, "VENDOR_DIR"),
      .api_keys = s.keys.p ? s.keys.p : "",
      .cors_origins = qs_config_str(c, "CORS_ORIGINS"),
      .rate_limit_rps = qs_config_double(c, "RATE_LIMIT_RPS"),
      .rate_limit_burst = qs_config_double(c, "RATE_LIMIT_BURST"),
      .cache_max_age_ms = qs_config_ms(c, "CACHE_MAX_AGE"),
      .anomaly_k = qs_config_double(c, "ANOMALY_K"),
      .max_rows = qs_config_int(c, "MAX_ROWS"),
      .scan_max = qs_config_int(c, "SCAN_MAX"),
      .max_connections = (size_t)qs_config_int(c, "API_MAX_CONNECTIONS"),
  };
  s.api = api_new(&svc.loop, &ao, &s.redis, s.lv, &svc.log, &svc.metrics);
  qs_service_on_stop(&svc, stop, &s);
  qs_service_on_dispose(&svc, dispose, &s);
  qs_admin_add_check(&svc.admin, "redis", redis_ready, &s.redis);
  qs_admin_add_check(&svc.admin, "redis-subscription", redis_ready, &s.sub);
  if (api_start(s.api, err, sizeof err) != 0) {
    qs_log_error(&svc.log, "cannot start the API server", QS_LSTR("error", err));
    qs_service_request_stop(&svc, 1);
    return qs_service_run(&svc);
  }
  qs_log_info(&svc.log, "api listening", QS_LSTR("host", ao.host),
              QS_LINT("api_port", api_port(s.api)), QS_LSTR("static_dir", ao.static_dir));
  return qs_service_run(&svc);
}
