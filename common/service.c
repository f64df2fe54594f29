/* service.c — the shared runtime: config + logs + metrics + admin server + signals + shutdown.
 *
 * Invariants: the stop hook runs at most once; qs_service_stopped may be called from any point of
 * the hook (synchronously or later); the loop is closed only after every handle is closed, and a
 * handle still open at that point is a bug that is logged by type and closed, never ignored.
 */
#include "qs/service.h"

#include "qs/error.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_get(const char *name, void *arg) {
  (void)arg;
  return getenv(name);
}

static void build_tables(qs_service *svc, const qs_service_def *def) {
  snprintf(svc->admin_port_default, sizeof svc->admin_port_default, "%d", def->admin_port);
  const qs_cfg_spec common[] = {
      {"LOG_LEVEL", QS_CFG_ENUM, "info", 0, 0, "debug|info|warn|error",
       "least severe level written to the JSON log on stderr", 0},
      {"ADMIN_HOST", QS_CFG_IP, "127.0.0.1", 0, 0, NULL,
       "IP address of the admin server (/healthz /readyz /metrics); 0.0.0.0 in containers", 0},
      {"ADMIN_PORT", QS_CFG_PORT, svc->admin_port_default, 0, 65535, NULL,
       "port of the admin server; 0 picks a free port (the \"started\" log line names it)", 0},
      {NULL},
  };
  memcpy(svc->common, common, sizeof common);
  svc->tables[0] = svc->common;
  svc->tables[1] = def->config; /* may be NULL: ends the list */
  svc->tables[2] = NULL;
}

static void print_help(qs_service *svc) {
  const qs_service_def *d = svc->def;
  printf("%s %s — %s\n\nUsage: %s [--help] [--version]\n", d->name, QS_VERSION, d->summary,
         d->name);
  if (d->usage)
    printf("%s\n", d->usage);
  printf("\nEnvironment variables (NAME  type  default  meaning):\n");
  qs_config_print_help(svc->tables, stdout);
}

static void on_signal(uv_signal_t *h, int signum);

int qs_service_init(qs_service *svc, const qs_service_def *def, int argc, char **argv) {
  memset(svc, 0, sizeof *svc);
  svc->def = def;
  build_tables(svc, def);
  svc->argc = 0;
  svc->argv = argv;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      print_help(svc);
      return svc->exit_code = 0, 1;
    }
    if (strcmp(argv[i], "--version") == 0) {
      printf("%s %s\n", def->name, QS_VERSION);
      return svc->exit_code = 0, 1;
    }
    svc->argv[svc->argc++] = argv[i]; /* compacted in place: subcommands and their flags */
  }

  /* A peer that closes while we write must cost an EPIPE on that socket, not the process:
   * libuv writes with write(2), which raises SIGPIPE by default. */
  signal(SIGPIPE, SIG_IGN);
  qs_log_init(&svc->log, def->name, QS_LOG_INFO, STDERR_FILENO);
  char err[512];
  bool known = false;
  for (const char *const *c = def->commands; svc->argc > 0 && c && *c; c++)
    known |= strcmp(*c, svc->argv[0]) == 0;
  if (svc->argc > 0 && (!def->usage || (def->commands && !known))) {
    /* no such subcommand: a stray argument is a mistake */
    if (def->usage)
      snprintf(err, sizeof err, "unexpected argument \"%.200s\": not a command of %s", svc->argv[0],
               def->name);
    else
      snprintf(err, sizeof err, "unexpected argument \"%.200s\": %s takes no arguments",
               svc->argv[0], def->name);
    qs_log_error(&svc->log, "invalid arguments", QS_LSTR("error", err));
    fprintf(stderr, "%s: %s\n(see %s --help)\n", def->name, err, def->name);
    return svc->exit_code = 2, 1;
  }
  if (qs_config_load(&svc->config, svc->tables, env_get, NULL, err, sizeof err) != 0) {
    qs_log_write(&svc->log, QS_LOG_ERROR, "invalid configuration",
                 (const qs_log_field[]){QS_LSTR("error", err)}, 1);
    fprintf(stderr, "%s: configuration error: %s\n(see %s --help)\n", def->name, err, def->name);
    return svc->exit_code = 2, 1;
  }
  qs_log_level level = QS_LOG_INFO;
  qs_log_level_parse(qs_config_str(&svc->config, "LOG_LEVEL"), &level);
  svc->log.level = level;

  uv_loop_init(&svc->loop);
  qs_metrics_init(&svc->metrics, def->name, QS_VERSION);
  qs_admin_init(&svc->admin, &svc->loop, qs_config_str(&svc->config, "ADMIN_HOST"),
                (int)qs_config_int(&svc->config, "ADMIN_PORT"), &svc->metrics, def->name);
  int rc = qs_httpd_start(&svc->admin.http, err, sizeof err);
  uv_signal_init(&svc->loop, &svc->sigterm);
  uv_signal_init(&svc->loop, &svc->sigint);
  svc->sigterm.data = svc->sigint.data = svc;
  if (rc != 0) {
    qs_log_error(&svc->log, "admin server failed", QS_LSTR("error", err));
    fprintf(stderr, "%s: %s\n", def->name, err);
    qs_service_request_stop(svc, 1);
    qs_service_run(svc);
    return svc->exit_code = 1, 1;
  }
  uv_signal_start(&svc->sigterm, on_signal, SIGTERM);
  uv_signal_start(&svc->sigint, on_signal, SIGINT);
  return 0;
}

void qs_service_on_stop(qs_service *svc, qs_service_stop_fn fn, void *data) {
  svc->stop_fn = fn;
  svc->stop_data = data;
}

void qs_service_on_dispose(qs_service *svc, qs_service_stop_fn fn, void *data) {
  svc->dispose_fn = fn;
  svc->dispose_data = data;
}

static void admin_closed(qs_httpd *h) { (void)h; }

void qs_service_stopped(qs_service *svc) {
  if (svc->state == QS_SERVICE_STOPPED)
    return;
  svc->state = QS_SERVICE_STOPPED;
  uv_close((uv_handle_t *)&svc->sigterm, NULL);
  uv_close((uv_handle_t *)&svc->sigint, NULL);
  qs_httpd_close(&svc->admin.http, admin_closed);
}

void qs_service_request_stop(qs_service *svc, int exit_code) {
  if (svc->state != QS_SERVICE_RUNNING)
    return;
  svc->state = QS_SERVICE_STOPPING;
  svc->exit_code = exit_code;
  svc->admin.shutting_down = true;
  if (svc->stop_fn)
    svc->stop_fn(svc, svc->stop_data);
  else
    qs_service_stopped(svc);
}

static void on_signal(uv_signal_t *h, int signum) {
  qs_service *svc = h->data;
  const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
  if (svc->state != QS_SERVICE_RUNNING) {
    qs_log_warn(&svc->log, "second signal while stopping: exiting now", QS_LSTR("signal", name));
    _exit(1);
  }
  qs_log_info(&svc->log, "stopping", QS_LSTR("signal", name));
  qs_service_request_stop(svc, 0);
}

static void close_leftover(uv_handle_t *h, void *arg) {
  qs_service *svc = arg;
  if (uv_is_closing(h))
    return;
  qs_log_error(&svc->log, "handle left open at shutdown (bug): closing it",
               QS_LSTR("type", uv_handle_type_name(uv_handle_get_type(h))));
  uv_close(h, NULL);
}

int qs_service_run(qs_service *svc) {
  if (svc->state == QS_SERVICE_RUNNING) {
    char cfg[4096], admin[96];
    if (qs_config_to_json(&svc->config, cfg, sizeof cfg) < 0)
      snprintf(cfg, sizeof cfg, "null");
    const char *host = qs_config_str(&svc->config, "ADMIN_HOST");
    bool v6 = strchr(host, ':') != NULL; /* an IPv6 literal goes in brackets in a URL */
    snprintf(admin, sizeof admin, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
             qs_httpd_port(&svc->admin.http));
    qs_log_info(&svc->log, "started", QS_LSTR("version", QS_VERSION), QS_LSTR("admin", admin),
                QS_LINT("admin_port", qs_httpd_port(&svc->admin.http)), QS_LJSON("config", cfg));
  }
  uv_run(&svc->loop, UV_RUN_DEFAULT);
  if (svc->dispose_fn)
    svc->dispose_fn(svc, svc->dispose_data);
  qs_httpd_dispose(&svc->admin.http); /* runs the loop once itself: must be outside uv_run */
  uv_walk(&svc->loop, close_leftover, svc);
  uv_run(&svc->loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&svc->loop);
  if (rc != 0)
    qs_log_error(&svc->log, "loop did not close cleanly", QS_LSTR("error", uv_strerror(rc)));
  qs_admin_free(&svc->admin);
  qs_metrics_free(&svc->metrics);
  qs_config_free(&svc->config);
  if (svc->exit_code != 2)
    qs_log_info(&svc->log, "stopped", QS_LINT("exit_code", svc->exit_code));
  return svc->exit_code;
}
