/* test_redis.c — qs_redis against a real redis-server on a free port in a
 * temp dir: commands, bounded pending, readiness, kill/restart reconnect,
 * AUTH/SELECT, URL parsing, clean close (uv_loop_close == 0). The server is
 * always killed (teardown and atexit). Skips if redis-server is absent. */
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

#include "qs/error.h"
#include "qs/redis.h"

#include "redis_fixture.h"

static void wake(uv_timer_t *t) { (void)t; }

typedef int (*pred_fn)(void *);

/* Runs the loop until pred(arg) or timeout_ms elapse. */
static int run_until(uv_loop_t *loop, pred_fn pred, void *arg, uint64_t timeout_ms) {
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, wake, 10, 10);
  uint64_t end = uv_now(loop) + timeout_ms;
  int ok;
  while (!(ok = pred(arg)) && uv_now(loop) < end)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

static int is_ready(void *a) { return qs_redis_ready(a, NULL); }
static int not_ready(void *a) { return !qs_redis_ready(a, NULL); }
static int auth_failed(void *a) { return strstr(((qs_redis *)a)->reason, "AUTH failed") != NULL; }
static int no_pending(void *a) { return ((qs_redis *)a)->pending == 0; }

struct result {
  int calls, status, type;
  char str[64];
  long long integer;
};

static void record(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  struct result *res = ud;
  res->calls++;
  res->status = status;
  res->type = reply ? reply->type : -1;
  if (reply && reply->str)
    snprintf(res->str, sizeof res->str, "%s", reply->str);
  if (reply)
    res->integer = reply->integer;
}

static int closed;
static void on_closed(qs_redis *r) {
  (void)r;
  closed++;
}
static int is_closed(void *a) {
  (void)a;
  return closed > 0;
}

static void close_and_check(uv_loop_t *loop, qs_redis *r) {
  closed = 0;
  qs_redis_close(r, on_closed);
  assert_true(run_until(loop, is_closed, NULL, 5000));
  assert_int_equal(closed, 1);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void test_url_parse_accepts_forms_and_rejects_bad(void **state) {
  (void)state;
  qs_redis_url u;
  char err[128];
  assert_int_equal(qs_redis_url_parse(&u, "redis://localhost", err, sizeof err), 0);
  assert_string_equal(u.host, "localhost");
  assert_int_equal(u.port, 6379);
  assert_int_equal(u.db, 0);
  assert_string_equal(u.password, "");
  assert_int_equal(qs_redis_url_parse(&u, "redis://:s3cr:et@10.0.0.1:6380/3", err, sizeof err), 0);
  assert_string_equal(u.password, "s3cr:et");
  assert_string_equal(u.user, "");
  assert_string_equal(u.host, "10.0.0.1");
  assert_int_equal(u.port, 6380);
  assert_int_equal(u.db, 3);
  assert_int_equal(qs_redis_url_parse(&u, "redis://bob:pw@h/", err, sizeof err), 0);
  assert_string_equal(u.user, "bob");
  assert_int_equal(qs_redis_url_parse(&u, "rediss://h:6380", err, sizeof err), QS_ERR_UNSUPPORTED);
  assert_non_null(strstr(err, "TLS"));
  const char *bad[] = {"http://h",     "redis://",       "redis://h:0",  "redis://h:70000",
                       "redis://h:x",  "redis://h/abc",  "redis://pw@h", "redis://:@h",
                       "redis://h/1x", "redis://h:6379x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (qs_redis_url_parse(&u, bad[i], err, sizeof err) != QS_ERR_PARSE)
      fail_msg("accepted '%s'", bad[i]);
  }
}

static void test_commands_bounded_pending_kill_and_reconnect(void **state) {
  (void)state;
  if (!redis_fixture_dir[0])
    skip();
  int port = redis_fixture_free_port();
  assert_int_equal(redis_fixture_start(port, NULL), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  qs_redis r;
  char url[64], err[128];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
  qs_redis_opts o = {
      .max_pending = 3, .ping_interval_ms = 50, .backoff_min_ms = 20, .backoff_max_ms = 200};
  assert_int_equal(qs_redis_init(&r, &loop, url, &o, err, sizeof err), 0);
  assert_true(run_until(&loop, is_ready, &r, 5000));

  struct result a = {0}, b = {0}, c = {0}, d = {0};
  assert_int_equal(qs_redis_command(&r, record, &a, "SET %s %s", "k", "v1"), 0);
  assert_int_equal(qs_redis_command(&r, record, &b, "GET %s", "k"), 0);
  assert_int_equal(qs_redis_command(&r, record, &c, "INCR %s", "n"), 0);
  assert_int_equal(qs_redis_command(&r, record, &d, "GET %s", "k"), QS_ERR_FULL);
  assert_true(run_until(&loop, no_pending, &r, 5000));
  assert_int_equal(a.calls, 1);
  assert_string_equal(a.str, "OK");
  assert_int_equal(b.calls, 1);
  assert_string_equal(b.str, "v1");
  assert_int_equal(c.type, REDIS_REPLY_INTEGER);
  assert_int_equal(c.integer, 1);
  assert_int_equal(d.calls, 0);

  /* Server dies: ready goes false with a reason, commands fail via callback. */
  redis_fixture_kill();
  assert_true(run_until(&loop, not_ready, &r, 5000));
  const char *why = NULL;
  assert_false(qs_redis_ready(&r, &why));
  assert_non_null(strstr(why, "127.0.0.1"));
  struct result e = {0};
  assert_int_equal(qs_redis_command(&r, record, &e, "GET %s", "k"), 0);
  assert_true(run_until(&loop, no_pending, &r, 5000));
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.type, -1);
  assert_true(e.status < 0);

  /* Server returns: the client reconnects by itself. */
  assert_int_equal(redis_fixture_start(port, NULL), 0);
  if (!run_until(&loop, is_ready, &r, 10000))
    fail_msg("no reconnect: %s (ac %p, connected %d)", r.reason, (void *)r.ac, r.connected);
  assert_true(r.reconnects > 0);
  struct result f = {0};
  assert_int_equal(qs_redis_command(&r, record, &f, "PING"), 0);
  assert_true(run_until(&loop, no_pending, &r, 5000));
  assert_int_equal(f.calls, 1);
  assert_string_equal(f.str, "PONG");

  /* A command handed over already in RESP form (binary-safe value) behaves like any other. */
  static const char set[] = "*3\r\n$3\r\nSET\r\n$2\r\nbk\r\n$3\r\na\0b\r\n";
  static const char get[] = "*2\r\n$6\r\nSTRLEN\r\n$2\r\nbk\r\n";
  struct result h = {0}, i = {0};
  assert_int_equal(qs_redis_command_formatted(&r, record, &h, NULL, 0), QS_ERR_INVALID);
  assert_int_equal(qs_redis_command_formatted(&r, record, &h, set, sizeof set - 1), 0);
  assert_int_equal(qs_redis_command_formatted(&r, record, &i, get, sizeof get - 1), 0);
  assert_true(run_until(&loop, no_pending, &r, 5000));
  assert_int_equal(h.calls, 1);
  assert_string_equal(h.str, "OK");
  assert_int_equal(i.type, REDIS_REPLY_INTEGER);
  assert_int_equal(i.integer, 3);

  /* A command in flight at close still gets exactly one callback. */
  struct result g = {0};
  assert_int_equal(qs_redis_command(&r, record, &g, "GET %s", "k"), 0);
  close_and_check(&loop, &r);
  assert_int_equal(g.calls, 1);
  assert_int_equal(qs_redis_command(&r, record, &g, "GET %s", "k"), QS_ERR_CLOSED);
  redis_fixture_kill();
}

static void test_auth_and_select_applied(void **state) {
  (void)state;
  if (!redis_fixture_dir[0])
    skip();
  int port = redis_fixture_free_port();
  assert_int_equal(redis_fixture_start(port, "s3cret"), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  qs_redis_opts o = {.ping_interval_ms = 50, .backoff_min_ms = 20, .backoff_max_ms = 100};
  char url[96], err[128];

  qs_redis bad;
  snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", port);
  assert_int_equal(qs_redis_init(&bad, &loop, url, &o, err, sizeof err), 0);
  const char *why = NULL;
  assert_true(run_until(&loop, auth_failed, &bad, 5000));
  assert_false(qs_redis_ready(&bad, &why));
  assert_non_null(strstr(why, "AUTH failed"));
  closed = 0;
  qs_redis_close(&bad, on_closed);
  assert_true(run_until(&loop, is_closed, NULL, 5000));

  qs_redis r;
  snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/2", port);
  assert_int_equal(qs_redis_init(&r, &loop, url, &o, err, sizeof err), 0);
  assert_true(run_until(&loop, is_ready, &r, 5000));
  struct result a = {0}, b = {0}, c = {0};
  assert_int_equal(qs_redis_command(&r, record, &a, "SET dbkey here"), 0);
  assert_int_equal(qs_redis_command(&r, record, &b, "SELECT 0"), 0);
  assert_int_equal(qs_redis_command(&r, record, &c, "EXISTS dbkey"), 0);
  assert_true(run_until(&loop, no_pending, &r, 5000));
  assert_string_equal(a.str, "OK");
  assert_int_equal(c.integer, 0); /* the SET went to db 2 */
  close_and_check(&loop, &r);
  redis_fixture_kill();
}

struct sub_state {
  int subscribed, messages;
  char last_channel[32], last[64];
};

static void sub_message(qs_redis *r, const char *channel, const char *payload, size_t len,
                        void *ud) {
  (void)r;
  struct sub_state *s = ud;
  s->messages++;
  snprintf(s->last_channel, sizeof s->last_channel, "%s", channel);
  snprintf(s->last, sizeof s->last, "%.*s", (int)len, payload);
}

static void sub_subscribed(qs_redis *r, void *ud) {
  (void)r;
  ((struct sub_state *)ud)->subscribed++;
}

static struct sub_state *watched;
static int got_messages(void *a) { return watched->messages >= *(int *)a; }
static int got_subscribed(void *a) { return watched->subscribed >= *(int *)a; }

/* Publishes through the command client until the subscriber has seen `want` messages: a PUBLISH
 * sent before the re-SUBSCRIBE has landed is lost by design of pub/sub, so it is repeated. */
static void publish_until(uv_loop_t *loop, qs_redis *cmd, const char *ch, const char *msg,
                          int want) {
  for (int i = 0; i < 50 && watched->messages < want; i++) {
    struct result p = {0};
    assert_int_equal(qs_redis_command(cmd, record, &p, "PUBLISH %s %s", ch, msg), 0);
    assert_true(run_until(loop, no_pending, cmd, 5000));
    run_until(loop, got_messages, &want, 100);
  }
  assert_int_equal(watched->messages, want);
}

static void test_subscriber_receives_and_resubscribes_after_reconnect(void **state) {
  (void)state;
  if (!redis_fixture_dir[0])
    skip();
  int port = redis_fixture_free_port();
  assert_int_equal(redis_fixture_start(port, NULL), 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  char url[64], err[128];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
  qs_redis_opts o = {.ping_interval_ms = 50, .backoff_min_ms = 20, .backoff_max_ms = 100};
  qs_redis cmd, sub;
  assert_int_equal(qs_redis_init(&cmd, &loop, url, &o, err, sizeof err), 0);
  assert_int_equal(qs_redis_init(&sub, &loop, url, &o, err, sizeof err), 0);
  struct sub_state st = {0};
  watched = &st;
  const char *chans[] = {"qs:live:a", "qs:live:b"};
  assert_int_equal(qs_redis_subscribe(&sub, chans, 0, sub_message, NULL, &st), QS_ERR_INVALID);
  assert_int_equal(qs_redis_subscribe(&sub, chans, 2, sub_message, sub_subscribed, &st), 0);
  assert_int_equal(qs_redis_subscribe(&sub, chans, 2, sub_message, sub_subscribed, &st),
                   QS_ERR_STATE);
  struct result x = {0};
  assert_int_equal(qs_redis_command(&sub, record, &x, "GET k"), QS_ERR_STATE);
  int one = 1, two = 2;
  assert_true(run_until(&loop, got_subscribed, &one, 5000));
  assert_true(run_until(&loop, is_ready, &cmd, 5000));
  assert_true(qs_redis_ready(&sub, NULL));
  publish_until(&loop, &cmd, "qs:live:b", "{\"n\":1}", 1);
  assert_string_equal(st.last_channel, "qs:live:b");
  assert_string_equal(st.last, "{\"n\":1}");
  /* Subscription stays ready across PING ticks (no PING is sent on a subscribed connection). */
  run_until(&loop, not_ready, &sub, 300);
  assert_true(qs_redis_ready(&sub, NULL));

  redis_fixture_kill();
  assert_true(run_until(&loop, not_ready, &sub, 5000));
  assert_int_equal(redis_fixture_start(port, NULL), 0);
  assert_true(run_until(&loop, got_subscribed, &two, 10000));
  assert_true(run_until(&loop, is_ready, &cmd, 10000));
  publish_until(&loop, &cmd, "qs:live:a", "again", 2);
  assert_string_equal(st.last_channel, "qs:live:a");
  assert_string_equal(st.last, "again");

  closed = 0;
  qs_redis_close(&sub, on_closed);
  qs_redis_close(&cmd, on_closed);
  run_until(&loop, is_closed, NULL, 5000);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed, 2);
  assert_int_equal(uv_loop_close(&loop), 0);
  redis_fixture_kill();
}

int main(void) {
  atexit(redis_fixture_kill);
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_parse_accepts_forms_and_rejects_bad),
      cmocka_unit_test_teardown(test_commands_bounded_pending_kill_and_reconnect,
                                redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_auth_and_select_applied, redis_fixture_kill_after_test),
      cmocka_unit_test_teardown(test_subscriber_receives_and_resubscribes_after_reconnect,
                                redis_fixture_kill_after_test),
  };
  return cmocka_run_group_tests(tests, redis_fixture_setup, redis_fixture_teardown);
}
