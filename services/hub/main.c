/* hub — a local Azure Event Hubs: AMQP 1.0 in the Event Hubs dialect, durable partitions.
 * Wiring only: environment -> hub_server_options, the service runtime does the rest. */
#include <string.h>

#include "qs/service.h"

#include "hub_server.h"

static const qs_cfg_spec hub_config[] = {
    {"HUB_CONFIG", QS_CFG_STR, "", 0, 1024, NULL,
     "hub topology file in the Event Hubs emulator's Config.json shape; empty: the built-in "
     "proto/hub-config.json",
     0},
    {"AMQP_HOST", QS_CFG_STR, "127.0.0.1", 0, 255, NULL,
     "IP address the AMQP listeners bind; 0.0.0.0 in containers", 0},
    {"AMQP_PORT", QS_CFG_PORT, "5672", 0, 65535, NULL, "plain AMQP port (0: any free port)", 0},
    {"AMQPS_PORT", QS_CFG_PORT, "5671", 0, 65535, NULL,
     "AMQP over TLS port, used when TLS_CERT and TLS_KEY are set (0: any free port)", 0},
    {"TLS_CERT", QS_CFG_STR, "", 0, 1024, NULL, "PEM certificate chain of the TLS listener", 0},
    {"TLS_KEY", QS_CFG_STR, "", 0, 1024, NULL, "PEM private key of the TLS listener", 0},
    {"DATA_DIR", QS_CFG_STR, "var/hub", 1, 1024, NULL,
     "where the partition logs live (one directory per hub and partition)", 0},
    {"CAPTURE_DIR", QS_CFG_STR, "var/capture", 1, 1024, NULL,
     "where Capture Avro files of hubs with Capture enabled are written", 0},
    {"FSYNC", QS_CFG_ENUM, "group", 0, 0, "group|always|never",
     "when an event is durable before it is acknowledged: group commit, every append, or never "
     "(unsafe)",
     0},
    {"COMMIT_INTERVAL", QS_CFG_DURATION, "5ms", 1, 1000, NULL,
     "group commit: longest wait before pending events are written and synced", 0},
    {"MAX_CONNECTIONS", QS_CFG_INT, "1000", 1, 100000, NULL, "AMQP connections accepted at once",
     0},
    {NULL},
};

static const qs_service_def def = {
    .name = "hub",
    .summary = "a local Azure Event Hubs: AMQP 1.0 broker with durable partitions",
    .admin_port = 8090,
    .config = hub_config,
};

static void stopped(hub_server *s, void *arg) {
  (void)s;
  qs_service_stopped(arg);
}

static void stop(qs_service *svc, void *data) { hub_server_stop(data, stopped, svc); }

int main(int argc, char **argv) {
  qs_service svc;
  if (qs_service_init(&svc, &def, argc, argv) != 0)
    return svc.exit_code;
  const qs_config *c = &svc.config;
  if (qs_config_is_set(c, "TLS_CERT") != qs_config_is_set(c, "TLS_KEY")) {
    qs_log_error(&svc.log, "TLS_CERT and TLS_KEY must be set together");
    qs_service_request_stop(&svc, 2);
    return qs_service_run(&svc);
  }
  hub_server_options o;
  hub_server_options_init(&o);
  o.config_path = qs_config_str(c, "HUB_CONFIG");
  o.amqp_host = qs_config_str(c, "AMQP_HOST");
  o.amqp_port = (int)qs_config_int(c, "AMQP_PORT");
  o.amqps_port = (int)qs_config_int(c, "AMQPS_PORT");
  o.tls_cert = qs_config_str(c, "TLS_CERT");
  o.tls_key = qs_config_str(c, "TLS_KEY");
  o.data_dir = qs_config_str(c, "DATA_DIR");
  o.capture_dir = qs_config_str(c, "CAPTURE_DIR");
  const char *fs = qs_config_str(c, "FSYNC");
  o.fsync_policy = strcmp(fs, "always") == 0  ? HUB_PLOG_FSYNC_ALWAYS
                   : strcmp(fs, "never") == 0 ? HUB_PLOG_FSYNC_NEVER
                                              : HUB_PLOG_FSYNC_GROUP;
  o.commit_interval_ms = (uint32_t)qs_config_ms(c, "COMMIT_INTERVAL");
  o.max_connections = (size_t)qs_config_int(c, "MAX_CONNECTIONS");
  o.log = &svc.log;
  o.metrics = &svc.metrics;
  hub_server *hub = NULL;
  char err[512];
  if (hub_server_start(&hub, &svc.loop, &o, err, sizeof err) != 0) {
    qs_log_error(&svc.log, "hub failed to start", QS_LSTR("error", err));
    qs_service_on_stop(&svc, stop, hub);
    qs_service_request_stop(&svc, 1);
    return qs_service_run(&svc);
  }
  qs_admin_add_check(&svc.admin, "hub", hub_server_ready, hub);
  qs_service_on_stop(&svc, stop, hub);
  return qs_service_run(&svc);
}
