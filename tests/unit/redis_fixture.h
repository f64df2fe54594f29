/* redis_fixture.h — a throw-away redis-server for C unit tests: a free loopback port, a temp
 * dir, persistence off; killed after each test that uses it (teardown) and at exit. A test whose
 * machine has no redis-server checks redis_fixture_dir[0] == 0 and skips. */
#ifndef REDIS_FIXTURE_H
#define REDIS_FIXTURE_H

extern char redis_fixture_dir[64];

int redis_fixture_free_port(void);
/* Starts redis-server on port (with requirepass when pass is not NULL) and waits until it
 * accepts a connection; 0 or -1. One server at a time: a running one is killed first. */
int redis_fixture_start(int port, const char *pass);
void redis_fixture_kill(void);
/* cmocka group setup / teardown, and a per-test teardown that kills the server. */
int redis_fixture_setup(void **state);
int redis_fixture_teardown(void **state);
int redis_fixture_kill_after_test(void **state);

#endif
