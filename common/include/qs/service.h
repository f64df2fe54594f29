/* service.h — the runtime every quakestream binary uses: configuration, logs, metrics, the admin
 * server, signals and an orderly shutdown. A service's main.c only wires its objects to this.
 *
 *   qs_service svc;
 *   if (qs_service_init(&svc, &def, argc, argv) != 0) return svc.exit_code;  // --help, bad config
 *   ... build the service's objects on &svc.loop, qs_service_on_stop(&svc, stop, obj) ...
 *   return qs_service_run(&svc);
 *
 * On SIGTERM or SIGINT: /readyz turns 503, the stop hook runs (finish in-flight work, commit
 * checkpoints, close handles) and calls qs_service_stopped(); then the admin server closes, the
 * loop ends, "stopped" is logged and qs_service_run returns 0. A second signal while stopping
 * exits at once with status 1 (logged). Config errors exit with status 2 before anything starts.
 */
#ifndef QS_SERVICE_H
#define QS_SERVICE_H

#include <stdbool.h>

#include <uv.h>

#include "qs/config.h"
#include "qs/httpd.h"
#include "qs/log.h"
#include "qs/metrics.h"

#ifndef QS_VERSION
#define QS_VERSION "dev"
#endif

typedef struct qs_service qs_service;
typedef void (*qs_service_stop_fn)(qs_service *svc, void *data);

typedef struct qs_service_def {
  const char *name;            /* "hub", "ingestor", ... */
  const char *summary;         /* one line for --help */
  const char *usage;           /* usage of its subcommands; NULL: the binary takes no arguments */
  const char *const *commands; /* NULL-terminated subcommand names: any other first argument is
                                  refused before the configuration is read (NULL: not checked) */
  int admin_port;              /* default ADMIN_PORT */
  const qs_cfg_spec *config;   /* the service's own variables (NULL-name terminated), or NULL */
} qs_service_def;

enum qs_service_state { QS_SERVICE_RUNNING, QS_SERVICE_STOPPING, QS_SERVICE_STOPPED };

struct qs_service {
  const qs_service_def *def;
  uv_loop_t loop;
  qs_config config;
  qs_log log;
  qs_metrics metrics;
  qs_admin admin;
  uv_signal_t sigterm, sigint;
  qs_service_stop_fn stop_fn;
  void *stop_data;
  qs_service_stop_fn dispose_fn; /* after the loop has ended, outside any loop callback */
  void *dispose_data;
  enum qs_service_state state;
  int exit_code;
  int argc; /* arguments left after options the runtime understands (subcommands) */
  char **argv;
  /* The common table with this service's ADMIN_PORT default. */
  qs_cfg_spec common[4];
  char admin_port_default[8];
  const qs_cfg_spec *tables[3];
};

/* Parse argv (--help, --version), load and validate the configuration, start logging, metrics
 * and the admin server. Returns 0 to go on; otherwise the process should exit with
 * svc->exit_code (0 after --help/--version, 2 for bad configuration or an argument a binary
 * without `usage` does not take, 1 if the admin port cannot be bound), everything already
 * released. Arguments other than --help/-h/--version are left in svc->argc/argv. */
int qs_service_init(qs_service *svc, const qs_service_def *def, int argc, char **argv);
void qs_service_on_stop(qs_service *svc, qs_service_stop_fn fn, void *data);
/* fn runs once the loop has ended (after the stop hook's work), outside any loop callback: the
 * place to dispose what must not be freed inside one, e.g. a qs_httpd (qs_httpd_dispose). */
void qs_service_on_dispose(qs_service *svc, qs_service_stop_fn fn, void *data);
/* Run the loop until stopped; returns the exit status. Releases everything. */
int qs_service_run(qs_service *svc);
/* Called by the stop hook when the service's own work and handles are finished. */
void qs_service_stopped(qs_service *svc);
/* Begin an orderly stop from inside the service (e.g. a run-once job that finished). */
void qs_service_request_stop(qs_service *svc, int exit_code);

#endif
