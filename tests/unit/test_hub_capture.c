/* test_hub_capture.c — Capture windows of one partition: size limit, time limit (with a test
 * clock, no sleeps), empty windows, distinct paths, and resume from the checkpoint without a gap
 * or a repeat. Files are read back with the project's Capture reader. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "qs/capture.h"
#include "qs/error.h"

#include "capture_sched.h"

static int64_t fake_now; /* the capture's clock in these tests */
static int64_t clock_now(void) { return fake_now; }
static int64_t plog_clock(void *arg) {
  (void)arg;
  return fake_now;
}

typedef struct fx {
  char dir[64];
  uv_loop_t loop;
  hub_plog *log;
  int appended;
  qs_log qlog;
} fx;

static void appended(hub_plog_append_req *req, int status) {
  assert_int_equal(status, 0);
  (*(int *)req->data)++;
}

/* Append n events whose body is "e<i>" wrapped in an AMQP data section; wait until durable. */
static void append_events(fx *f, int from, int n) {
  hub_plog_append_req reqs[64];
  for (int i = 0; i < n; i++) {
    uint8_t msg[32];
    int len = snprintf((char *)msg + 5, sizeof msg - 5, "e%d", from + i);
    msg[0] = 0x00, msg[1] = 0x53, msg[2] = 0x75, msg[3] = 0xa0, msg[4] = (uint8_t)len;
    hub_plog_entry e = {"k", 1, msg, (size_t)len + 5};
    reqs[i].data = &f->appended;
    assert_int_equal(hub_plog_append(f->log, &reqs[i], &e, 1, appended), 0);
  }
  int want = f->appended + n;
  while (f->appended < want)
    uv_run(&f->loop, UV_RUN_ONCE);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/qs-cap-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  uv_loop_init(&f->loop);
  f->log = hub_plog_new();
  hub_plog_options o;
  hub_plog_options_init(&o);
  o.clock_ms = plog_clock; /* enqueued times on the test clock too */
  assert_int_equal(hub_plog_open(f->log, &f->loop, f->dir, "eh", 0, &o), 0);
  qs_log_init(&f->qlog, "test", QS_LOG_ERROR, 2);
  fake_now = 1795588800000LL; /* 2026-11-25T06:40:00Z */
  *state = f;
  return 0;
}

static void closed(hub_plog *log) { hub_plog_free(log); }

static int teardown(void **state) {
  fx *f = *state;
  hub_plog_close(f->log, closed);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static hub_capture *start(fx *f, uint32_t interval_s, uint64_t size_limit, bool skip_empty) {
  char cap[128];
  snprintf(cap, sizeof cap, "%s/cap", f->dir);
  static char capdir[128];
  snprintf(capdir, sizeof capdir, "%s", cap);
  hub_capture_options o = {.capture_dir = capdir,
                           .data_dir = f->dir,
                           .namespace_name = "ns",
                           .hub = "eh",
                           .partition = 0,
                           .interval_s = interval_s,
                           .size_limit_bytes = size_limit,
                           .skip_empty = skip_empty,
                           .log = f->log,
                           .qlog = &f->qlog,
                           .now_ms = clock_now};
  hub_capture *c;
  char err[256];
  assert_int_equal(hub_capture_start(&c, &f->loop, &o, err, sizeof err), 0);
  return c;
}

static void stopped(void *arg) { *(bool *)arg = true; }

static void stop(fx *f, hub_capture *c) {
  bool done = false;
  hub_capture_stop(c, stopped, &done);
  while (!done)
    uv_run(&f->loop, UV_RUN_ONCE);
}

/* Run the loop until the capture's next sequence reaches want. */
static void run_until_captured(fx *f, hub_capture *c, int64_t want) {
  for (int i = 0; i < 10000 && hub_capture_next_seq(c) < want; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(hub_capture_next_seq(c), want);
}

/* Every .avro file under dir/cap, sorted, read back: bodies concatenated with ',' per file. */
static int read_files(fx *f, char out[][256], int max) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "find %s/cap -name '*.avro' | sort", f->dir);
  FILE *p = popen(cmd, "r");
  char path[512];
  int n = 0;
  while (n < max && fgets(path, sizeof path, p)) {
    path[strcspn(path, "\n")] = '\0';
    qs_capture_reader r;
    assert_int_equal(qs_capture_reader_open_file(&r, path, NULL), 0);
    qs_capture_record rec;
    out[n][0] = '\0';
    while (qs_capture_reader_next(&r, &rec) == 1) {
      strncat(out[n], (const char *)rec.body, rec.body_len);
      strcat(out[n], ",");
      assert_int_equal(rec.partition_key_len, 1);
    }
    assert_string_equal(r.error, "");
    qs_capture_reader_close(&r);
    n++;
  }
  pclose(p);
  return n;
}

static void test_size_limit_closes_windows_with_distinct_paths(void **state) {
  fx *f = *state;
  append_events(f, 0, 10); /* each stored message is 7-8 bytes */
  hub_capture *c = start(f, 300, 20, true);
  run_until_captured(f, c, 9); /* three full windows of 3 events (3 x 7 >= 20) */
  stop(f, c);
  char files[8][256];
  assert_int_equal(read_files(f, files, 8), 3);
  assert_string_equal(files[0], "e0,e1,e2,");
  assert_string_equal(files[1], "e3,e4,e5,");
  assert_string_equal(files[2], "e6,e7,e8,");
}

static void test_time_limit_closes_the_window_and_restart_resumes_without_gap(void **state) {
  fx *f = *state;
  append_events(f, 0, 4);
  hub_capture *c = start(f, 60, 1 << 20, true);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(hub_capture_next_seq(c), 0); /* window still open */
  fake_now += 61000;                            /* the window's time is up */
  hub_capture_poke(c);
  run_until_captured(f, c, 4);
  stop(f, c);
  append_events(f, 4, 3);
  c = start(f, 60, 1 << 20, true); /* as after a restart: from the checkpoint */
  fake_now += 61000;
  hub_capture_poke(c);
  run_until_captured(f, c, 7);
  stop(f, c);
  char files[8][256];
  assert_int_equal(read_files(f, files, 8), 2);
  assert_string_equal(files[0], "e0,e1,e2,e3,");
  assert_string_equal(files[1], "e4,e5,e6,");
}

static void test_empty_windows_are_written_unless_skipped(void **state) {
  fx *f = *state;
  hub_capture *c = start(f, 60, 1 << 20, false);
  for (int i = 0; i < 5; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  fake_now += 61000;
  hub_capture_poke(c);
  for (int i = 0; i < 1000; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
  stop(f, c);
  char files[8][256];
  int n = read_files(f, files, 8);
  assert_true(n >= 1);
  assert_string_equal(files[0], "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_size_limit_closes_windows_with_distinct_paths, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_time_limit_closes_the_window_and_restart_resumes_without_gap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_windows_are_written_unless_skipped, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
