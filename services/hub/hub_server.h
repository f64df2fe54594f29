/* hub_server.h — the hub assembled: AMQP listeners (plain and TLS) -> the Event Hubs broker ->
 * one durable partition log per (hub, partition), SAS authorisation from the hub config's
 * policies, retention, metrics.
 *
 * Life cycle: hub_server_start (recovers every partition log, binds the listeners) ... then
 * hub_server_stop: stop accepting, close every connection with amqp:connection:forced (aborting
 * those that do not answer within a grace period), commit and close every partition log, then
 * call back. main.c only maps environment variables onto hub_server_options.
 */
#ifndef QS_HUB_SERVER_H
#define QS_HUB_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "qs/log.h"
#include "qs/metrics.h"

#include "partition_log.h"

typedef struct hub_server_options {
  const char *config_path; /* NULL or "": the built-in proto/hub-config.json */
  const char *amqp_host;
  int amqp_port;  /* 0 = any free port */
  int amqps_port; /* used when tls_cert and tls_key are set; 0 = any free port */
  const char *tls_cert, *tls_key;
  const char *data_dir;
  const char *capture_dir; /* Capture Avro files of hubs with Capture enabled */
  hub_plog_fsync fsync_policy;
  uint32_t commit_interval_ms;
  size_t max_connections;
  uint32_t shutdown_grace_ms; /* connections that do not close by then are aborted */
  qs_log *log;
  qs_metrics *metrics;
} hub_server_options;

typedef struct hub_server hub_server;
typedef void (*hub_server_stopped_cb)(hub_server *s, void *arg);

void hub_server_options_init(hub_server_options *o);
/* On failure returns a negative code with the reason in err; *out is still set and must be
 * stopped (hub_server_stop), which releases whatever was opened — like a libuv handle. */
int hub_server_start(hub_server **out, uv_loop_t *loop, const hub_server_options *o, char *err,
                     size_t errlen);
int hub_server_amqp_port(const hub_server *s);
int hub_server_amqps_port(const hub_server *s); /* 0 when TLS is off */
/* Readiness for /readyz: listeners bound and every partition log open. */
bool hub_server_ready(void *s, char *reason, size_t cap);
/* cb fires once everything is closed and s is freed (its first argument is then NULL). */
void hub_server_stop(hub_server *s, hub_server_stopped_cb cb, void *arg);

#endif
