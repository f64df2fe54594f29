/* redis_fixture.c — see redis_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis_fixture.h"

static pid_t fixture_pid = -1;
char redis_fixture_dir[64];

void redis_fixture_kill(void) {
  if (fixture_pid > 0) {
    kill(fixture_pid, SIGKILL);
    waitpid(fixture_pid, NULL, 0);
    fixture_pid = -1;
  }
}

int redis_fixture_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Starts redis-server and waits until it accepts a connection. */
int redis_fixture_start(int port, const char *pass) {
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  redis_fixture_kill(); /* one server at a time: a failed test may have left one */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    const char *argv[16] = {"redis-server",    "--port",    portstr,        "--bind", "127.0.0.1",
                            "--save",          "",          "--appendonly", "no",     "--dir",
                            redis_fixture_dir, "--logfile", "/dev/null",    NULL};
    if (pass) {
      argv[13] = "--requirepass";
      argv[14] = pass;
      argv[15] = NULL;
    }
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  fixture_pid = pid;
  for (int i = 0; i < 500; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    if (ok)
      return 0;
    if (waitpid(pid, NULL, WNOHANG) == pid) {
      fixture_pid = -1;
      return -1;
    }
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL); /* poll interval while the server starts, not a sync */
  }
  return -1;
}

int redis_fixture_setup(void **state) {
  (void)state;
  snprintf(redis_fixture_dir, sizeof redis_fixture_dir, "/tmp/qs_redis_XXXXXX");
  if (!mkdtemp(redis_fixture_dir))
    return -1;
  if (system("command -v redis-server >/dev/null 2>&1") != 0)
    redis_fixture_dir[0] = '\0';
  return 0;
}

int redis_fixture_teardown(void **state) {
  (void)state;
  redis_fixture_kill();
  if (redis_fixture_dir[0] == '/')
    rmdir(redis_fixture_dir);
  return 0;
}

int redis_fixture_kill_after_test(void **state) {
  (void)state;
  redis_fixture_kill();
  return 0;
}
