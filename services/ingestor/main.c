/* ingestor — polls USGS and weather feeds (or replays a file), dedupes, sends events to the hub.
 * Wiring: environment -> sources on one loop, one Event Hubs client, one Redis, one HTTP client.
 * `ingestor` runs the configured SOURCES until SIGTERM; `ingestor replay FILE` sends a recorded
 * feed and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qs/error.h"
#include "qs/service.h"

#include "ingest.h"

static const qs_cfg_spec ingest_config[] = {
    {"EVENTHUBS_CONNECTION_STRING", QS_CFG_STR, "", 1, 4096, NULL,
     "Event Hubs connection string (Azure, or the local hub with UseDevelopmentEmulator=true)",
     QS_CFG_SECRET | QS_CFG_REQUIRED},
    {"REDIS_URL", QS_CFG_STR, "redis://127.0.0.1:6379/0", 1, 1024, NULL,
     "Redis for dedupe across restarts: redis://[[user]:password@]host[:port][/db]", QS_CFG_SECRET},
    {"SOURCES", QS_CFG_STR, "usgs", 0, 256, NULL,
     "comma-separated sources to run: usgs, weather, clickstream (empty: none, e.g. replay only)",
     0},
    {"USGS_FEED_URL", QS_CFG_STR,
     "https://earthquake.usgs.gov/earthquakes/feed/v1.0/summary/2.5_hour.geojson", 1, 2048, NULL,
     "USGS GeoJSON summary feed polled by the usgs source (any summary/*.geojson)", 0},
    {"POLL_INTERVAL", QS_CFG_DURATION, "60s", 1000, 86400000, NULL,
     "time between the starts of two polls of the USGS feed", 0},
    {"FDSN_BASE_URL", QS_CFG_STR, "https://earthquake.usgs.gov", 1, 1024, NULL,
     "FDSN event service swept for changes: <base>/fdsnws/event/1/query?updatedafter=...", 0},
    {"FDSN_SWEEP_INTERVAL", QS_CFG_DURATION, "300s", 0, 86400000, NULL,
     "between the starts of two FDSN sweeps (revisions, deletions, associations); 0 disables", 0},
    {"FDSN_BACKFILL", QS_CFG_DURATION, "24h", 0, 31536000000, NULL,
     "how far back the first sweep (no watermark in Redis yet) asks", 0},
    {"FDSN_OVERLAP", QS_CFG_DURATION, "60s", 0, 86400000, NULL,
     "a sweep asks from the stored watermark minus this", 0},
    {"FDSN_PAGE_SIZE", QS_CFG_INT, "20000", 1, 20000, NULL,
     "features per FDSN page (limit=); paging continues while a page is full", 0},
    {"EARTHQUAKE_HUB", QS_CFG_STR, "earthquake-events", 1, 256, NULL,
     "hub the usgs source and replay send to", 0},
    {"WEATHER_URL", QS_CFG_STR, "https://api.weather.gov/alerts/active", 1, 2048, NULL,
     "weather.gov active alerts endpoint polled by the weather source", 0},
    {"WEATHER_AREA", QS_CFG_STR, "CA", 0, 64, NULL,
     "area= filter of the weather.gov query (state or marine area code; empty: all)", 0},
    {"WEATHER_INTERVAL", QS_CFG_DURATION, "300s", 1000, 86400000, NULL,
     "time between two polls of weather.gov", 0},
    {"WEATHER_HUB", QS_CFG_STR, "weather-events", 1, 256, NULL, "hub of weather alerts", 0},
    {"CLICKSTREAM_RATE", QS_CFG_DOUBLE, "10", 0, 1000000, NULL,
     "simulated clickstream events per second", 0},
    {"CLICKSTREAM_HUB", QS_CFG_STR, "clickstream-events", 1, 256, NULL,
     "hub of the simulated clickstream", 0},
    {"DEDUPE_TTL", QS_CFG_DURATION, "30d", 60000, 31536000000, NULL,
     "how long Redis remembers an id's state (newest version, region, association) or a weather "
     "alert id; keep it >= the speed layer's RETENTION_WINDOWS (a region move of an event "
     "forgotten here would be counted in both regions there)",
     0},
    {"HTTP_TIMEOUT", QS_CFG_DURATION, "30s", 100, 600000, NULL, "timeout of one HTTP poll", 0},
    {"BACKOFF_MAX", QS_CFG_DURATION, "300s", 1000, 86400000, NULL,
     "longest delay between polls after repeated errors (429, 5xx, timeouts)", 0},
    {"SEND_QUEUE", QS_CFG_INT, "10000", 1, 10000000, NULL,
     "events queued per hub before the sources are paused (back-pressure)", 0},
    {"REGIONS_FILE", QS_CFG_STR, "", 0, 1024, NULL,
     "region rules (JSON, proto/regions.json shape); empty: the built-in rules", 0},
    {"USER_AGENT", QS_CFG_STR, "quakestream/" QS_VERSION " (self-hosted earthquake pipeline)", 1,
     256, NULL, "User-Agent of HTTP polls (weather.gov requires one that identifies you)", 0},
    {NULL},
};

static const qs_service_def def = {
    .name = "ingestor",
    .summary = "polls USGS and weather feeds (or replays a file), dedupes, sends events to the hub",
    .usage = "usage: ingestor                 run the SOURCES until SIGTERM\n"
             "       ingestor replay FILE [--speed N] [--shift-to-now] [--hub NAME]\n"
             "           send a recorded feed, then exit (0: every message acknowledged):\n"
             "           a GeoJSON FeatureCollection in event-time order, or a change log\n"
             "           (NDJSON, one USGS feature per line, each a new version of its event)\n"
             "           in file order; revisions, deletions, associations and region moves\n"
             "           are sent as the live sources send them (docs/changes.md); at N x real\n"
             "           time (default 1; 0: as fast as possible)",
    .commands = (const char *const[]){"replay", NULL},
    .admin_port = 8091,
    .config = ingest_config,
};

typedef struct app {
  qs_service svc;
  ingest_ctx ctx;
  ingest_metrics m;
  qs_regions regions;
  qs_redis redis;
  bool redis_open;
  usgs_source *usgs;
  weather_source *weather;
  click_source *click;
  bool replay_mode;
  int replay_rc;
  char fdsn_base[1025]; /* FDSN_BASE_URL without a trailing '/' */
} app;

static bool ready_hub(void *data, char *reason, size_t cap) {
  app *a = data;
  const char *why = NULL;
  if (qs_eh_client_ready(a->ctx.eh, &why))
    return true;
  qs_set_reason(reason, cap, "event hub: %s", why && *why ? why : "not connected");
  return false;
}

static bool ready_redis(void *data, char *reason, size_t cap) {
  app *a = data;
  const char *why = NULL;
  if (qs_redis_ready(&a->redis, &why))
    return true;
  qs_set_reason(reason, cap, "redis: %s", why ? why : "not connected");
  return false;
}

static void redis_closed(qs_redis *r) {
  app *a = r->data;
  qs_service_stopped(&a->svc);
}

static void http_closed(void *ud) {
  app *a = ud;
  a->ctx.http = NULL;
  if (a->redis_open)
    qs_redis_close(&a->redis, redis_closed);
  else
    qs_service_stopped(&a->svc);
}

static void eh_closed(void *ud) {
  app *a = ud;
  a->ctx.eh = NULL;
  qs_http_close(a->ctx.http, http_closed, a);
}

static void stop(qs_service *svc, void *data) {
  (void)svc;
  app *a = data;
  a->ctx.stopping = true;
  if (a->usgs)
    usgs_source_stop(a->usgs);
  if (a->weather)
    weather_source_stop(a->weather);
  if (a->click)
    click_source_stop(a->click);
  /* the client flushes queued and in-flight sends first; their callbacks mark events seen */
  qs_eh_client_close(a->ctx.eh, 10000, eh_closed, a);
}

static void replay_done(int rc, void *ud) {
  app *a = ud;
  a->replay_rc = rc;
  qs_service_request_stop(&a->svc, rc);
}

static void on_eh_state(qs_eh_client *c, bool connected, const char *reason, void *ud) {
  (void)c;
  app *a = ud;
  if (connected && reason && *reason)
    qs_log_error(&a->svc.log, "event hub refused a link", QS_LSTR("reason", reason));
  else if (connected)
    qs_log_info(&a->svc.log, "event hub connected");
  else if (!a->ctx.stopping)
    qs_log_warn(&a->svc.log, "event hub not connected", QS_LSTR("reason", reason ? reason : ""));
}

static bool has_source(const char *list, const char *name) {
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    while (*p == ',' || *p == ' ')
      p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ')
      e++;
    if ((size_t)(e - p) == n && strncmp(p, name, n) == 0)
      return true;
    p = e;
  }
  return false;
}

static int check_sources(const char *list, qs_log *log) {
  for (const char *p = list; *p;) {
    while (*p == ',' || *p == ' ')
      p++;
    const char *e = p;
    while (*e && *e != ',' && *e != ' ')
      e++;
    if (e > p && !((e - p == 4 && strncmp(p, "usgs", 4) == 0) ||
                   (e - p == 7 && strncmp(p, "weather", 7) == 0) ||
                   (e - p == 11 && strncmp(p, "clickstream", 11) == 0))) {
      char bad[64];
      snprintf(bad, sizeof bad, "%.*s", (int)(e - p < 60 ? e - p : 60), p);
      qs_log_error(log, "SOURCES: unknown source (usgs, weather, clickstream)",
                   QS_LSTR("source", bad));
      return -1;
    }
    p = e;
  }
  return 0;
}

static int parse_replay_args(app *a, replay_opts *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->speed = 1;
  o->hub = qs_config_str(&a->svc.config, "EARTHQUAKE_HUB");
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--speed") == 0 && i + 1 < argc) {
      char *end;
      o->speed = strtod(argv[++i], &end);
      if (*end || o->speed < 0 || o->speed > 1e9) {
        fprintf(stderr, "ingestor replay: --speed takes a number >= 0 (0: as fast as possible)\n");
        return -1;
      }
    } else if (strcmp(argv[i], "--shift-to-now") == 0) {
      o->shift_to_now = true;
    } else if (strcmp(argv[i], "--hub") == 0 && i + 1 < argc) {
      o->hub = argv[++i];
    } else if (argv[i][0] == '-' || o->path) {
      fprintf(stderr, "ingestor replay: unexpected argument %s\n%s\n", argv[i], def.usage);
      return -1;
    } else {
      o->path = argv[i];
    }
  }
  if (!o->path) {
    fprintf(stderr, "ingestor replay: which FILE?\n%s\n", def.usage);
    return -1;
  }
  o->progress = isatty(STDERR_FILENO);
  return 0;
}

int main(int argc, char **argv) {
  static app a;
  if (qs_service_init(&a.svc, &def, argc, argv) != 0)
    return a.svc.exit_code;
  qs_service *svc = &a.svc;
  const qs_config *c = &svc->config;
  replay_opts ro;
  if (svc->argc > 0) {
    if (strcmp(svc->argv[0], "replay") != 0) {
      qs_log_error(&svc->log, "unknown command (try --help)", QS_LSTR("command", svc->argv[0]));
      qs_service_request_stop(svc, 2);
      return qs_service_run(svc);
    }
    if (parse_replay_args(&a, &ro, svc->argc, svc->argv) != 0) {
      qs_service_request_stop(svc, 2);
      return qs_service_run(svc);
    }
    a.replay_mode = true;
  }
  const char *sources = a.replay_mode ? "" : qs_config_str(c, "SOURCES");
  const char *fb = qs_config_str(c, "FDSN_BASE_URL");
  if (strncmp(fb, "http://", 7) != 0 && strncmp(fb, "https://", 8) != 0) {
    qs_log_error(&svc->log, "FDSN_BASE_URL: must start with http:// or https://",
                 QS_LSTR("value", fb));
    qs_service_request_stop(svc, 2);
    return qs_service_run(svc);
  }
  snprintf(a.fdsn_base, sizeof a.fdsn_base, "%s", fb);
  for (size_t n = strlen(a.fdsn_base); n > 0 && a.fdsn_base[n - 1] == '/'; n--)
    a.fdsn_base[n - 1] = 0;
  if (check_sources(sources, &svc->log) != 0) {
    qs_service_request_stop(svc, 2);
    return qs_service_run(svc);
  }
  char err[512];
  qs_regions_init(&a.regions);
  const char *rf = qs_config_str(c, "REGIONS_FILE");
  if ((*rf ? qs_regions_load_file(&a.regions, rf, err, sizeof err)
           : qs_regions_load_default(&a.regions, err, sizeof err)) != 0) {
    qs_log_error(&svc->log, "REGIONS_FILE: cannot load region rules", QS_LSTR("reason", err));
    qs_service_request_stop(svc, 2);
    return qs_service_run(svc);
  }
  ingest_metrics_init(&a.m, &svc->metrics);
  a.ctx.loop = &svc->loop;
  a.ctx.log = &svc->log;
  a.ctx.m = &a.m;
  a.ctx.regions = &a.regions;
  a.ctx.dedupe_ttl_s = qs_config_ms(c, "DEDUPE_TTL") / 1000;
  a.ctx.http_timeout_ms = (uint32_t)qs_config_ms(c, "HTTP_TIMEOUT");
  a.ctx.backoff_max_ms = (uint32_t)qs_config_ms(c, "BACKOFF_MAX");
  a.ctx.queue_max = (size_t)qs_config_int(c, "SEND_QUEUE");
  qs_eh_client_opts eo = {.connection_string = qs_config_str(c, "EVENTHUBS_CONNECTION_STRING"),
                          .client_name = "ingestor",
                          .on_state = on_eh_state,
                          .ud = &a};
  if (qs_eh_client_open(&a.ctx.eh, &svc->loop, &eo, err, sizeof err) != 0) {
    qs_log_error(&svc->log, "EVENTHUBS_CONNECTION_STRING: invalid", QS_LSTR("reason", err));
    qs_regions_close(&a.regions);
    qs_service_request_stop(svc, 2);
    return qs_service_run(svc);
  }
  qs_http_opts ho = {.user_agent = qs_config_str(c, "USER_AGENT")};
  qs_http_init(&a.ctx.http, &svc->loop, &ho);
  qs_service_on_stop(svc, stop, &a);
  bool polling = has_source(sources, "usgs") || has_source(sources, "weather");
  if (polling) {
    /* a page of up to FDSN_PAGE_SIZE features stores a few records per feature as the hub
     * acknowledges them: room for all of them in flight */
    qs_redis_opts ro_ = {.max_pending = 262144};
    if (qs_redis_init(&a.redis, &svc->loop, qs_config_str(c, "REDIS_URL"), &ro_, err, sizeof err) !=
        0) {
      qs_log_error(&svc->log, "REDIS_URL: invalid", QS_LSTR("reason", err));
      a.ctx.stopping = true;
      qs_service_request_stop(svc, 2);
      return qs_service_run(svc);
    }
    a.redis.data = &a;
    a.redis_open = true;
    a.ctx.redis = &a.redis;
    qs_admin_add_check(&svc->admin, "redis", ready_redis, &a);
  }
  qs_admin_add_check(&svc->admin, "event_hub", ready_hub, &a);
  int rc = 0;
  if (a.replay_mode) {
    rc = replay_start(&a.ctx, &ro, replay_done, &a);
    if (rc != 0)
      qs_service_request_stop(svc, 1);
  }
  if (rc == 0 && has_source(sources, "usgs")) {
    usgs_sweep_opts so = {.base_url = a.fdsn_base,
                          .interval_ms = (uint32_t)qs_config_ms(c, "FDSN_SWEEP_INTERVAL"),
                          .backfill_ms = qs_config_ms(c, "FDSN_BACKFILL"),
                          .overlap_ms = qs_config_ms(c, "FDSN_OVERLAP"),
                          .page_size = (uint32_t)qs_config_int(c, "FDSN_PAGE_SIZE")};
    rc = usgs_source_start(&a.usgs, &a.ctx, qs_config_str(c, "USGS_FEED_URL"),
                           qs_config_str(c, "EARTHQUAKE_HUB"),
                           (uint32_t)qs_config_ms(c, "POLL_INTERVAL"), &so);
  }
  if (rc == 0 && has_source(sources, "weather"))
    rc = weather_source_start(&a.weather, &a.ctx, qs_config_str(c, "WEATHER_URL"),
                              qs_config_str(c, "WEATHER_AREA"), qs_config_str(c, "WEATHER_HUB"),
                              (uint32_t)qs_config_ms(c, "WEATHER_INTERVAL"));
  if (rc == 0 && has_source(sources, "clickstream") && qs_config_double(c, "CLICKSTREAM_RATE") > 0)
    rc = click_source_start(&a.click, &a.ctx, qs_config_str(c, "CLICKSTREAM_HUB"),
                            qs_config_double(c, "CLICKSTREAM_RATE"));
  if (rc != 0 && !a.replay_mode) {
    qs_log_error(&svc->log, "cannot start a source", QS_LSTR("reason", qs_strerror(rc)));
    qs_service_request_stop(svc, 1);
  }
  qs_log_info(&svc->log, "ingestor running", QS_LSTR("sources", sources),
              QS_LBOOL("replay", a.replay_mode));
  int exit_code = qs_service_run(svc);
  usgs_source_free(a.usgs);
  weather_source_free(a.weather);
  if (a.click)
    click_source_free(a.click);
  qs_regions_close(&a.regions);
  return exit_code;
}
