/* test_service.c — the runtime: --help/--version exit 0, bad configuration exits 2 with a message,
 * a signal runs the stop hook once and run() returns 0 with the loop closed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "qs/service.h"

static const qs_cfg_spec own[] = {
    {"TEST_POLL", QS_CFG_DURATION, "5s", 1000, 60000, NULL, "how often to poll", 0},
    {NULL},
};
static const qs_service_def def = {.name = "tester",
                                   .summary = "a test service",
                                   .usage = "  tester replay FILE [--speed N]",
                                   .admin_port = 0,
                                   .config = own};
static const qs_service_def no_args_def = {
    .name = "plain", .summary = "a service without subcommands", .admin_port = 0};

static void clear_env(void) {
  unsetenv("ADMIN_PORT");
  unsetenv("ADMIN_HOST");
  unsetenv("LOG_LEVEL");
  unsetenv("TEST_POLL");
  setenv("LOG_LEVEL", "error", 1); /* keep the test output quiet */
}

static void test_help_and_version_return_exit_code_0(void **state) {
  (void)state;
  clear_env();
  qs_service svc;
  char *argv1[] = {"tester", "--help", NULL};
  assert_int_not_equal(qs_service_init(&svc, &def, 2, argv1), 0);
  assert_int_equal(svc.exit_code, 0);
  char *argv2[] = {"tester", "--version", NULL};
  assert_int_not_equal(qs_service_init(&svc, &def, 2, argv2), 0);
  assert_int_equal(svc.exit_code, 0);
}

static void test_invalid_service_variable_returns_exit_code_2(void **state) {
  (void)state;
  clear_env();
  setenv("TEST_POLL", "2h", 1);
  qs_service svc;
  char *argv[] = {"tester", NULL};
  assert_int_not_equal(qs_service_init(&svc, &def, 1, argv), 0);
  assert_int_equal(svc.exit_code, 2);
  unsetenv("TEST_POLL");
}

static void test_subcommand_arguments_are_left_for_the_service(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_PORT", "0", 1);
  qs_service svc;
  char *argv[] = {"tester", "replay", "feed.geojson", "--speed", "0", NULL};
  assert_int_equal(qs_service_init(&svc, &def, 5, argv), 0);
  assert_int_equal(svc.argc, 4);
  assert_string_equal(svc.argv[0], "replay");
  assert_string_equal(svc.argv[3], "0");
  assert_int_equal(qs_config_ms(&svc.config, "TEST_POLL"), 5000);
  qs_service_request_stop(&svc, 0);
  assert_int_equal(qs_service_run(&svc), 0);
}

static void test_argument_to_a_binary_without_subcommands_returns_exit_code_2(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_PORT", "0", 1);
  qs_service svc;
  char *argv[] = {"plain", "--config", "x.json", NULL};
  assert_int_not_equal(qs_service_init(&svc, &no_args_def, 3, argv), 0);
  assert_int_equal(svc.exit_code, 2);
}

static void test_invalid_admin_host_returns_exit_code_2(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_HOST", "localhost", 1);
  qs_service svc;
  char *argv[] = {"tester", NULL};
  assert_int_not_equal(qs_service_init(&svc, &def, 1, argv), 0);
  assert_int_equal(svc.exit_code, 2);
  unsetenv("ADMIN_HOST");
}

typedef struct hook_state {
  qs_service *svc;
  int calls;
  uv_timer_t later;
} hook_state;

static void finish_later(uv_timer_t *t) {
  hook_state *h = t->data;
  uv_close((uv_handle_t *)t, NULL);
  qs_service_stopped(h->svc); /* the hook's work completes asynchronously */
}

static void stop_hook(qs_service *svc, void *data) {
  hook_state *h = data;
  h->calls++;
  assert_true(svc->admin.shutting_down); /* /readyz already says so */
  uv_timer_init(&svc->loop, &h->later);
  h->later.data = h;
  uv_timer_start(&h->later, finish_later, 1, 0);
}

static void send_sigterm(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, NULL);
  raise(SIGTERM);
}

static void test_sigterm_runs_the_stop_hook_once_and_run_returns_0(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_PORT", "0", 1);
  qs_service svc;
  char *argv[] = {"tester", NULL};
  assert_int_equal(qs_service_init(&svc, &def, 1, argv), 0);
  hook_state h = {.svc = &svc};
  qs_service_on_stop(&svc, stop_hook, &h);
  uv_timer_t kick;
  uv_timer_init(&svc.loop, &kick);
  uv_timer_start(&kick, send_sigterm, 1, 0);
  assert_int_equal(qs_service_run(&svc), 0);
  assert_int_equal(h.calls, 1);
  assert_int_equal(svc.state, QS_SERVICE_STOPPED);
}

static void test_init_ignores_sigpipe_so_a_closed_peer_cannot_kill_the_process(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_PORT", "0", 1);
  signal(SIGPIPE, SIG_DFL);
  qs_service svc;
  char *argv[] = {"tester", NULL};
  assert_int_equal(qs_service_init(&svc, &def, 1, argv), 0);
  struct sigaction sa;
  sigaction(SIGPIPE, NULL, &sa);
  assert_true(sa.sa_handler == SIG_IGN);
  raise(SIGPIPE); /* would end the test binary if it were not ignored */
  qs_service_request_stop(&svc, 0);
  assert_int_equal(qs_service_run(&svc), 0);
}

static void hook_never_finishes(qs_service *svc, void *data) {
  (void)svc;
  (void)data; /* in-flight work that hangs: only a second signal ends the process */
}

static void test_second_signal_while_stopping_exits_at_once_with_status_1(void **state) {
  (void)state;
  clear_env();
  setenv("ADMIN_PORT", "0", 1);
  setenv("LOG_LEVEL", "info", 1);
  int out[2];
  assert_int_equal(pipe(out), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(10); /* a hang ends the child with SIGALRM, failing the test, never blocking it */
    dup2(out[1], STDERR_FILENO);
    close(out[0]);
    qs_service svc;
    char *argv[] = {"tester", NULL};
    if (qs_service_init(&svc, &def, 1, argv) != 0)
      _exit(3);
    qs_service_on_stop(&svc, hook_never_finishes, NULL);
    uv_timer_t first, second;
    uv_timer_init(&svc.loop, &first);
    uv_timer_init(&svc.loop, &second);
    uv_timer_start(&first, send_sigterm, 1, 0);
    uv_timer_start(&second, send_sigterm, 5, 0);
    qs_service_run(&svc);
    _exit(4); /* not reached: the second signal exits */
  }
  close(out[1]);
  static char log[16384];
  size_t len = 0;
  ssize_t got;
  while (len < sizeof log - 1 && (got = read(out[0], log + len, sizeof log - 1 - len)) > 0)
    len += (size_t)got;
  log[len] = '\0';
  close(out[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  unsetenv("LOG_LEVEL");
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 1);
  assert_non_null(strstr(log, "\"msg\":\"stopping\""));
  assert_non_null(strstr(log, "\"msg\":\"second signal while stopping: exiting now\""));
  assert_null(strstr(log, "\"msg\":\"stopped\""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_help_and_version_return_exit_code_0),
      cmocka_unit_test(test_invalid_service_variable_returns_exit_code_2),
      cmocka_unit_test(test_subcommand_arguments_are_left_for_the_service),
      cmocka_unit_test(test_argument_to_a_binary_without_subcommands_returns_exit_code_2),
      cmocka_unit_test(test_invalid_admin_host_returns_exit_code_2),
      cmocka_unit_test(test_sigterm_runs_the_stop_hook_once_and_run_returns_0),
      cmocka_unit_test(test_second_signal_while_stopping_exits_at_once_with_status_1),
      cmocka_unit_test(test_init_ignores_sigpipe_so_a_closed_peer_cannot_kill_the_process),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
