/* speed-aggregator — consumes earthquake-events through its consumer group: event-time windows,
 * alerts, raw events, live pushes; state and checkpoints committed atomically to Redis; replicas
 * split the partitions through leases. Wiring only: environment -> objects -> loop.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qs/eh.h"
#include "qs/error.h"
#include "qs/redis.h"
#include "qs/service.h"
#include "qs/timeutil.h"

#include "aggregator.h"
#include "consumer.h"
#include "webhook.h"

#define LOCAL_HUB                                                                                  \
  "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=RootManageSharedAccessKey;"                    \
  "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"

static const qs_cfg_spec speed_config[] = {
    {"EVENTHUBS_CONNECTION_STRING", QS_CFG_STR, LOCAL_HUB, 1, 4096, NULL,
     "Event Hubs connection string (Azure, or the local hub with UseDevelopmentEmulator=true)",
     QS_CFG_SECRET},
    {"EARTHQUAKE_HUB", QS_CFG_STR, "earthquake-events", 1, 256, NULL, "hub to consume", 0},
    {"CONSUMER_GROUP", QS_CFG_STR, "$Default", 1, 256, NULL, "consumer group of the hub", 0},
    {"REDIS_URL", QS_CFG_STR, "redis://127.0.0.1:6379", 1, 1024, NULL,
     "Redis for state, checkpoints, leases and pub/sub: redis://[[user]:password@]host[:port][/db]",
     QS_CFG_SECRET},
    {"START_POSITION", QS_CFG_ENUM, "earliest", 0, 0, "earliest|latest",
     "where a partition without a checkpoint starts", 0},
    {"PREFETCH", QS_CFG_INT, "1000", 1, 100000, NULL, "link credit per partition consumer", 0},
    {"WINDOW", QS_CFG_DURATION, "5m", 1000, 86400000, NULL,
     "tumbling window length (epoch-aligned, half-open); changing it needs fresh speed state", 0},
    {"OUT_OF_ORDER_TOLERANCE", QS_CFG_DURATION, "1m", 0, 86400000, NULL,
     "watermark = max event time seen in the partition minus this", 0},
    {"ALLOWED_LATENESS", QS_CFG_DURATION, "5m", 0, 2592000000, NULL,
     "a window is final when the watermark passes its end plus this; later events still update it "
     "and count in late_count",
     0},
    {"PARTITION_IDLE", QS_CFG_DURATION, "30s", 1000, 86400000, NULL,
     "a partition without events this long advances its watermark by wall clock", 0},
    {"SIGNIFICANT_MAGNITUDE", QS_CFG_DOUBLE, "5.0", -2, 10.5, NULL,
     "significant_count counts magnitudes >= this", 0},
    {"SPIKE_MAGNITUDE", QS_CFG_DOUBLE, "6.0", -2, 10.5, NULL,
     "MAGNITUDE_SPIKE alert for magnitudes >= this", 0},
    {"VOLUME_THRESHOLD", QS_CFG_INT, "50", 0, 1000000000, NULL,
     "VOLUME alert when a window holds more than this many events", 0},
    {"ANOMALY_SIGMA", QS_CFG_DOUBLE, "2.0", 0, 100, NULL,
     "ANOMALY alert when a window's count exceeds the region's batch baseline mean + this many "
     "standard deviations (scaled to the window length)",
     0},
    {"BATCH_EVENTS", QS_CFG_INT, "2000", 1, 100000, NULL,
     "events per atomic Redis commit (state + checkpoints)", 0},
    {"BATCH_INTERVAL", QS_CFG_DURATION, "50ms", 1, 60000, NULL,
     "longest wait before applied events are committed", 0},
    {"QUEUE_MAX", QS_CFG_INT, "5000", 100, 10000000, NULL,
     "consumed events waiting to be applied; consumers pause beyond", 0},
    {"CACHE_MAX", QS_CFG_INT, "500000", 1000, 100000000, NULL,
     "cached event records + windows; the cache is dropped (and re-read on demand) beyond", 0},
    {"LEASE_TTL", QS_CFG_DURATION, "10s", 1000, 600000, NULL,
     "partition lease lifetime: a dead replica's partitions are taken over within it; renewed "
     "every third",
     0},
    {"REPLICA_ID", QS_CFG_STR, "", 0, 100, NULL,
     "lease owner id of this replica; empty: <hostname>-<pid>-<random>", 0},
    {"ROLLING_INTERVAL", QS_CFG_DURATION, "1s", 100, 3600000, NULL,
     "how often the rolling 1-hour window is recomputed (after changes)", 0},
    {"ROLLING_CLOCK", QS_CFG_ENUM, "event", 0, 0, "event|wall",
     "the rolling hour ends at the newest event time (event: replays work) or at now (wall)", 0},
    {"RETENTION_WINDOWS", QS_CFG_DURATION, "30d", 60000, 31622400000, NULL,
     "realtime windows older than this (by window start) are trimmed", 0},
    {"RETENTION_EVENTS", QS_CFG_DURATION, "90d", 60000, 31622400000, NULL,
     "raw events, event records and alerts older than this (by event time) are trimmed", 0},
    {"DLQ_MAX", QS_CFG_INT, "10000", 1, 10000000, NULL,
     "dead letters kept in qs:rt:dlq (newest first)", 0},
    {"ALERT_WEBHOOK_URL", QS_CFG_STR, "", 0, 2000, NULL,
     "when set, every new alert is POSTed there as JSON (retries with backoff)", QS_CFG_SECRET},
    {"WEBHOOK_TIMEOUT", QS_CFG_DURATION, "5s", 100, 300000, NULL, "per webhook attempt", 0},
    {"WEBHOOK_ATTEMPTS", QS_CFG_INT, "6", 1, 100, NULL,
     "webhook attempts per alert (network errors, 408, 429, 5xx are retried)", 0},
    {"WEBHOOK_QUEUE", QS_CFG_INT, "1000", 1, 1000000, NULL,
     "alerts waiting for the webhook; newer ones are dropped (and counted) beyond", 0},
    {NULL},
};

static const qs_service_def def = {
    .name = "speed-aggregator",
    .summary = "consumes the hub: event-time windows, alerts, live pushes to Redis",
    .admin_port = 8092,
    .config = speed_config,
};

typedef struct app {
  qs_service *svc;
  qs_redis redis;
  qs_eh_client *eh;
  sa_consumer consumer;
  sa_agg agg;
  sa_webhook webhook;
  bool has_webhook, started, stopping;
  uv_timer_t props_retry;
  int parts_closing;
} app;

static void on_alert(sa_agg *a, const char *json, size_t len, void *ud) {
  (void)a;
  app *p = ud;
  if (p->has_webhook)
    sa_webhook_post(&p->webhook, json, len);
}

static bool ready_check(void *data, char *reason, size_t cap) {
  app *p = data;
  if (!p->started) {
    const char *why = "";
    if (!qs_eh_client_ready(p->eh, &why)) {
      snprintf(reason, cap, "event hub: %s", why);
      return false;
    }
    snprintf(reason, cap, "waiting for the hub's partitions");
    return false;
  }
  return sa_agg_ready(&p->agg, reason, cap);
}

static void get_props(app *p);

static void on_props_retry(uv_timer_t *t) { get_props(t->data); }

static void on_props(int status, const qs_eh_hub_props *props, const char *reason, void *ud) {
  app *p = ud;
  if (p->stopping)
    return;
  if (status != 0) {
    qs_log_warn(&p->svc->log, "hub properties unavailable, retrying",
                QS_LSTR("reason", reason ? reason : qs_strerror(status)));
    uv_timer_start(&p->props_retry, on_props_retry, 2000, 0);
    return;
  }
  p->started = true;
  qs_log_info(&p->svc->log, "consuming hub", QS_LSTR("hub", props->name),
              QS_LINT("partitions", props->partition_count));
  sa_agg_start(&p->agg, props->partition_count);
}

static void get_props(app *p) {
  const char *hub = qs_config_str(&p->svc->config, "EARTHQUAKE_HUB");
  if (qs_eh_get_hub_props(p->eh, hub, 30000, on_props, p) != 0)
    uv_timer_start(&p->props_retry, on_props_retry, 2000, 0);
}

/* ---- stop: aggregator (final commit, lease release) -> webhook -> hub client -> redis ---- */

static void part_done(app *p) {
  if (--p->parts_closing == 0)
    qs_service_stopped(p->svc);
}

static void redis_closed(qs_redis *r) { part_done(r->data); }

static void eh_closed(void *ud) {
  app *p = ud;
  qs_redis_close(&p->redis, redis_closed);
}

static void timer_closed(uv_handle_t *h) { part_done(h->data); }

static void webhook_closed(void *ud) {
  app *p = ud;
  qs_eh_client_close(p->eh, 5000, eh_closed, p);
}

static void agg_stopped(sa_agg *a, void *ud) {
  (void)a;
  app *p = ud;
  sa_agg_free(&p->agg);
  if (p->has_webhook)
    sa_webhook_close(&p->webhook, 3000, webhook_closed, p);
  else
    webhook_closed(p);
}

static void stop(qs_service *svc, void *data) {
  (void)svc;
  app *p = data;
  p->stopping = true;
  p->parts_closing = 2; /* redis, the props timer */
  uv_timer_stop(&p->props_retry);
  uv_close((uv_handle_t *)&p->props_retry, timer_closed);
  sa_agg_stop(&p->agg, agg_stopped, p);
}

static void on_eh_state(qs_eh_client *c, bool connected, const char *reason, void *ud) {
  (void)c;
  app *p = ud;
  if (connected)
    qs_log_info(&p->svc->log, "event hub connected");
  else
    qs_log_warn(&p->svc->log, "event hub disconnected", QS_LSTR("reason", reason ? reason : ""));
}

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  const qs_config *c = &svc.config;
  static app p;
  p.svc = &svc;
  char err[512];
  const char *hook = qs_config_str(c, "ALERT_WEBHOOK_URL");
  if (hook[0] && strncmp(hook, "http://", 7) != 0 && strncmp(hook, "https://", 8) != 0) {
    qs_log_error(&svc.log, "ALERT_WEBHOOK_URL must start with http:// or https://");
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  if (qs_redis_init(&p.redis, &svc.loop, qs_config_str(c, "REDIS_URL"), NULL, err, sizeof err) !=
      0) {
    qs_log_error(&svc.log, "REDIS_URL is not usable", QS_LSTR("error", err));
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  p.redis.data = &p;
  qs_eh_client_opts eo;
  memset(&eo, 0, sizeof eo);
  eo.connection_string = qs_config_str(c, "EVENTHUBS_CONNECTION_STRING");
  eo.client_name = "speed-aggregator";
  eo.on_state = on_eh_state;
  eo.ud = &p;
  if (qs_eh_client_open(&p.eh, &svc.loop, &eo, err, sizeof err) != 0) {
    qs_log_error(&svc.log, "EVENTHUBS_CONNECTION_STRING is not usable", QS_LSTR("error", err));
    qs_redis_close(&p.redis, NULL);
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  char owner[128];
  if (qs_config_is_set(c, "REPLICA_ID")) {
    snprintf(owner, sizeof owner, "%s", qs_config_str(c, "REPLICA_ID"));
  } else {
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(owner, sizeof owner, "%s-%d-%04x", host, (int)getpid(),
             (unsigned)(uv_hrtime() & 0xffff));
  }
  sa_agg_opts o;
  sa_agg_opts_default(&o);
  o.engine.hub = qs_config_str(c, "EARTHQUAKE_HUB");
  o.engine.consumer_group = qs_config_str(c, "CONSUMER_GROUP");
  o.engine.window_ms = qs_config_ms(c, "WINDOW");
  o.engine.tolerance_ms = qs_config_ms(c, "OUT_OF_ORDER_TOLERANCE");
  o.engine.lateness_ms = qs_config_ms(c, "ALLOWED_LATENESS");
  o.engine.idle_ms = qs_config_ms(c, "PARTITION_IDLE");
  o.engine.significant = qs_config_double(c, "SIGNIFICANT_MAGNITUDE");
  o.engine.spike_magnitude = qs_config_double(c, "SPIKE_MAGNITUDE");
  o.engine.volume_threshold = qs_config_int(c, "VOLUME_THRESHOLD");
  o.engine.anomaly_sigma = qs_config_double(c, "ANOMALY_SIGMA");
  o.engine.dlq_max = qs_config_int(c, "DLQ_MAX");
  o.batch_max = (size_t)qs_config_int(c, "BATCH_EVENTS");
  o.batch_ms = qs_config_ms(c, "BATCH_INTERVAL");
  o.queue_max = (size_t)qs_config_int(c, "QUEUE_MAX");
  o.cache_max = (size_t)qs_config_int(c, "CACHE_MAX");
  o.lease_ttl_ms = qs_config_ms(c, "LEASE_TTL");
  o.rolling_ms = qs_config_ms(c, "ROLLING_INTERVAL");
  o.rolling_wall = strcmp(qs_config_str(c, "ROLLING_CLOCK"), "wall") == 0;
  o.retention_windows_ms = qs_config_ms(c, "RETENTION_WINDOWS");
  o.retention_events_ms = qs_config_ms(c, "RETENTION_EVENTS");
  o.owner = owner;
  qs_eh_position start = {.kind = strcmp(qs_config_str(c, "START_POSITION"), "latest") == 0
                                      ? QS_EH_POS_LATEST
                                      : QS_EH_POS_EARLIEST};
  sa_consumer_init(&p.consumer, p.eh, o.engine.hub, o.engine.consumer_group, start,
                   (uint32_t)qs_config_int(c, "PREFETCH"));
  sa_agg_init(&p.agg, &svc.loop, &svc.log, &svc.metrics, &p.redis, &o, &sa_consumer_ops,
              &p.consumer);
  p.consumer.agg = &p.agg;
  p.agg.on_alert = on_alert;
  p.agg.alert_ud = &p;
  if (qs_config_is_set(c, "ALERT_WEBHOOK_URL")) {
    sa_webhook_opts wo = {.url = qs_config_str(c, "ALERT_WEBHOOK_URL"),
                          .queue_max = (size_t)qs_config_int(c, "WEBHOOK_QUEUE"),
                          .max_attempts = (int)qs_config_int(c, "WEBHOOK_ATTEMPTS"),
                          .timeout_ms = (uint32_t)qs_config_ms(c, "WEBHOOK_TIMEOUT")};
    if (sa_webhook_init(&p.webhook, &svc.loop, &svc.log, &svc.metrics, &wo) == 0)
      p.has_webhook = true;
    else
      qs_log_warn(&svc.log, "alert webhook disabled: the HTTP client did not initialise");
  }
  uv_timer_init(&svc.loop, &p.props_retry);
  p.props_retry.data = &p;
  qs_admin_add_check(&svc.admin, "speed", ready_check, &p);
  qs_service_on_stop(&svc, stop, &p);
  qs_log_info(&svc.log, "speed aggregator starting", QS_LSTR("replica", owner),
              QS_LSTR("hub", o.engine.hub), QS_LSTR("consumer_group", o.engine.consumer_group));
  get_props(&p);
  return qs_service_run(&svc);
}
