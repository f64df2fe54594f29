/* test_partition_log.c — the hub's durable partition log: round trips, rolls, lookups,
 * recovery of torn tails, durability before acknowledgement, retention, back-pressure and a
 * kill -9 crash test. Every test works in its own temp directory and closes its loop clean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "partition_log.h"
#include "qs/error.h"

typedef struct fixture {
  char dir[64];
  uv_loop_t loop;
  hub_plog *log;
  hub_plog_options opt;
  int64_t clock;
  int acked;
  int failed_acks;
  atomic_int syncs;
  int syncs_seen_at_ack;
  bool closed;
  int64_t durable_seq;
} fixture;

static void on_durable(void *arg, int64_t last_seq) { ((fixture *)arg)->durable_seq = last_seq; }

static int64_t fake_clock(void *arg) { return ((fixture *)arg)->clock; }

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  strcpy(f->dir, "/tmp/qs-plog-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  hub_plog_options_init(&f->opt);
  f->clock = 1700000000000;
  f->opt.clock_ms = fake_clock;
  f->opt.clock_arg = f;
  *state = f;
  return 0;
}

static void on_closed(hub_plog *log) { ((fixture *)hub_plog_get_data(log))->closed = true; }

static void close_log(fixture *f) {
  if (!f->log)
    return;
  f->closed = false;
  assert_int_equal(hub_plog_close(f->log, on_closed), 0);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_true(f->closed);
  hub_plog_free(f->log);
  f->log = NULL;
}

static int teardown(void **state) {
  fixture *f = *state;
  close_log(f);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static void open_log(fixture *f) {
  f->log = hub_plog_new();
  hub_plog_set_data(f->log, f);
  assert_int_equal(hub_plog_open(f->log, &f->loop, f->dir, "eh1", 0, &f->opt), 0);
}

static void reopen(fixture *f) {
  close_log(f);
  open_log(f);
}

static void on_ack(hub_plog_append_req *req, int status) {
  fixture *f = req->data;
  if (status == 0)
    f->acked++;
  else
    f->failed_acks++;
  f->syncs_seen_at_ack = atomic_load(&f->syncs);
  free(req);
}

/* Payload of record seq: deterministic bytes of a length that varies with seq. */
static size_t make_payload(int64_t seq, uint8_t *buf, size_t base) {
  size_t len = base + (size_t)(seq % 97);
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)(seq * 31 + (int64_t)i * 7);
  return len;
}

/* Appends n records (next_seq onward) in one call; returns the request's first sequence. */
static int64_t append_n(fixture *f, int64_t next_seq, size_t n, size_t base) {
  hub_plog_entry *e = calloc(n, sizeof *e);
  uint8_t **bufs = calloc(n, sizeof *bufs);
  for (size_t i = 0; i < n; i++) {
    bufs[i] = malloc(base + 100);
    e[i].payload = bufs[i];
    e[i].payload_len = make_payload(next_seq + (int64_t)i, bufs[i], base);
    e[i].key = (i % 2) ? "us-west" : NULL;
    e[i].key_len = (i % 2) ? 7 : 0;
  }
  hub_plog_append_req *req = calloc(1, sizeof *req);
  req->data = f;
  assert_int_equal(hub_plog_append(f->log, req, e, n, on_ack), 0);
  int64_t first = req->first_seq;
  for (size_t i = 0; i < n; i++)
    free(bufs[i]);
  free(bufs);
  free(e);
  return first;
}

static void wait_acks(fixture *f, int n) {
  while (f->acked + f->failed_acks < n)
    uv_run(&f->loop, UV_RUN_ONCE);
}

static void check_records(fixture *f, int64_t from, int64_t count, size_t base) {
  hub_plog_record out[64];
  uint8_t expect[2048];
  int64_t seq = from;
  int64_t prev_offset = -1;
  while (seq < from + count) {
    size_t n = 0;
    assert_int_equal(hub_plog_read(f->log, seq, 64, 1 << 20, out, &n), 0);
    assert_true(n > 0);
    for (size_t i = 0; i < n && seq < from + count; i++, seq++) {
      assert_int_equal(out[i].seq, seq);
      size_t len = make_payload(seq, expect, base);
      assert_int_equal(out[i].payload_len, len);
      assert_memory_equal(out[i].payload, expect, len);
      assert_true(out[i].offset > prev_offset);
      prev_offset = out[i].offset;
    }
  }
}

static void test_append_then_read_returns_identical_records(void **state) {
  fixture *f = *state;
  open_log(f);
  hub_plog_info in;
  hub_plog_get_info(f->log, &in);
  assert_true(in.empty);
  assert_int_equal(in.last_seq, -1);
  assert_int_equal(in.last_offset, -1);
  assert_int_equal(append_n(f, 0, 10, 100), 0);
  assert_int_equal(append_n(f, 10, 5, 100), 10);
  wait_acks(f, 2);
  assert_int_equal(f->failed_acks, 0);
  check_records(f, 0, 15, 100);
  hub_plog_record out[4];
  size_t n = 0;
  assert_int_equal(hub_plog_read(f->log, 1, 4, 1 << 20, out, &n), 0);
  assert_int_equal(n, 4);
  assert_int_equal(out[0].key_len, 7);
  assert_memory_equal(out[0].key, "us-west", 7);
  assert_null(out[1].key);
  assert_int_equal(out[0].offset, 100 + 0 + 36); /* record 0: header + 100 payload bytes */
  assert_int_equal(hub_plog_read(f->log, 15, 4, 1 << 20, out, &n), 0);
  assert_int_equal(n, 0);
  hub_plog_get_info(f->log, &in);
  assert_false(in.empty);
  assert_int_equal(in.begin_seq, 0);
  assert_int_equal(in.last_seq, 14);
  assert_int_equal(in.last_enqueued_ms, f->clock);
  /* the same data read back from disk after reopen (no tail cache) */
  reopen(f);
  check_records(f, 0, 15, 100);
  assert_true(hub_plog_get_stats(f->log)->reads_from_disk > 0);
}

static void test_read_respects_max_bytes_but_returns_one_record(void **state) {
  fixture *f = *state;
  open_log(f);
  append_n(f, 0, 10, 1000);
  wait_acks(f, 1);
  hub_plog_record out[10];
  size_t n = 0;
  assert_int_equal(hub_plog_read(f->log, 0, 10, 10, out, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(hub_plog_read(f->log, 0, 10, 2500, out, &n), 0);
  assert_int_equal(n, 2);
  reopen(f);
  assert_int_equal(hub_plog_read(f->log, 3, 10, 2500, out, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(out[0].seq, 3);
}

static void test_sequence_and_offset_continue_across_rolls_and_reopen(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 4096;
  f->opt.index_interval = 512;
  open_log(f);
  int64_t seq = 0;
  for (int i = 0; i < 20; i++) {
    assert_int_equal(append_n(f, seq, 7, 200), seq);
    seq += 7;
  }
  wait_acks(f, 20);
  assert_true(hub_plog_get_stats(f->log)->segments_rolled >= 5);
  check_records(f, 0, seq, 200);
  hub_plog_info a, b;
  hub_plog_get_info(f->log, &a);
  reopen(f);
  hub_plog_get_info(f->log, &b);
  assert_int_equal(a.last_seq, b.last_seq);
  assert_int_equal(a.last_offset, b.last_offset);
  assert_int_equal(b.last_seq, seq - 1);
  check_records(f, 0, seq, 200);
  /* appends continue the numbering in the reopened log */
  assert_int_equal(append_n(f, seq, 3, 200), seq);
  wait_acks(f, 21);
  check_records(f, 0, seq + 3, 200);
  hub_plog_record out[1];
  size_t n;
  assert_int_equal(hub_plog_read(f->log, seq, 1, 1 << 20, out, &n), 0);
  assert_int_equal(out[0].offset, b.last_offset + 36 + 200 + (int64_t)((seq - 1) % 97));
  /* index files exist for sealed segments only */
  char p[128];
  snprintf(p, sizeof p, "%s/eh1/0/00000000000000000000.index", f->dir);
  assert_int_equal(access(p, F_OK), 0);
}

static void test_find_by_sequence_offset_and_time_with_boundaries(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 2048;
  f->opt.index_interval = 256;
  open_log(f);
  int64_t seq_out = -7;
  /* empty partition: everything points at the next sequence, 0 */
  assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, -1, false, &seq_out), 0);
  assert_int_equal(seq_out, 0);
  assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, -1, false, &seq_out), 0);
  assert_int_equal(seq_out, 0);
  assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_ENQUEUED, 0, false, &seq_out), 0);
  assert_int_equal(seq_out, 0);
  /* 40 records, 4 per append call, each call 10 ms later */
  int64_t t0 = f->clock;
  for (int i = 0; i < 10; i++) {
    append_n(f, i * 4, 4, 50);
    f->clock += 10;
  }
  wait_acks(f, 10);
  hub_plog_record rec[40];
  size_t n = 0;
  assert_int_equal(hub_plog_read(f->log, 0, 40, 1 << 20, rec, &n), 0);
  assert_int_equal(n, 40);
  for (int round = 0; round < 2; round++) {
    /* sequence */
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, 5, false, &seq_out), 0);
    assert_int_equal(seq_out, 6);
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, 5, true, &seq_out), 0);
    assert_int_equal(seq_out, 5);
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, 39, false, &seq_out), 0);
    assert_int_equal(seq_out, 40);
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, 1000, true, &seq_out), 0);
    assert_int_equal(seq_out, 40);
    /* offset: exact offsets, between offsets, before the first, after the last */
    for (int i = 0; i < 40; i++) {
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, rec[i].offset, true, &seq_out), 0);
      assert_int_equal(seq_out, i);
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, rec[i].offset, false, &seq_out),
                       0);
      assert_int_equal(seq_out, i + 1);
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, rec[i].offset + 1, true, &seq_out),
                       0);
      assert_int_equal(seq_out, i + 1);
    }
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, -1, false, &seq_out), 0);
    assert_int_equal(seq_out, 0);
    /* enqueued time: groups of 4 share a time */
    for (int i = 0; i < 10; i++) {
      int64_t t = t0 + i * 10;
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_ENQUEUED, t, true, &seq_out), 0);
      assert_int_equal(seq_out, i * 4);
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_ENQUEUED, t, false, &seq_out), 0);
      assert_int_equal(seq_out, i * 4 + 4);
      assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_ENQUEUED, t - 5, false, &seq_out), 0);
      assert_int_equal(seq_out, i * 4);
    }
    assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_ENQUEUED, t0 + 1000, false, &seq_out), 0);
    assert_int_equal(seq_out, 40);
    reopen(f); /* second round: sealed indexes loaded from disk */
  }
}

static char *seg_file(fixture *f, int64_t base) {
  static char p[160];
  snprintf(p, sizeof p, "%s/eh1/0/%020lld.log", f->dir, (long long)base);
  return p;
}

static void test_torn_tail_is_truncated_and_sequence_continues(void **state) {
  fixture *f = *state;
  open_log(f);
  append_n(f, 0, 10, 100);
  wait_acks(f, 1);
  close_log(f);
  /* tear the last record: cut the file in the middle of record 9 */
  struct stat st;
  assert_int_equal(stat(seg_file(f, 0), &st), 0);
  assert_int_equal(truncate(seg_file(f, 0), st.st_size - 20), 0);
  open_log(f);
  const hub_plog_stats *s = hub_plog_get_stats(f->log);
  assert_int_equal(s->recovered_truncated_bytes, 36 + 7 + 100 + 9 - 20); /* record 9 has a key */
  hub_plog_info in;
  hub_plog_get_info(f->log, &in);
  assert_int_equal(in.last_seq, 8);
  assert_int_equal(append_n(f, 9, 3, 100), 9);
  wait_acks(f, 2);
  check_records(f, 0, 12, 100);
}

static void test_garbage_tail_is_truncated(void **state) {
  fixture *f = *state;
  open_log(f);
  append_n(f, 0, 5, 100);
  wait_acks(f, 1);
  close_log(f);
  int fd = open(seg_file(f, 0), O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  char junk[300];
  memset(junk, 0x5a, sizeof junk);
  assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  open_log(f);
  assert_int_equal(hub_plog_get_stats(f->log)->recovered_truncated_bytes, 300);
  assert_int_equal(append_n(f, 5, 2, 100), 5);
  wait_acks(f, 2);
  check_records(f, 0, 7, 100);
}

static void test_flipped_bit_in_active_segment_truncates_from_there(void **state) {
  fixture *f = *state;
  open_log(f);
  append_n(f, 0, 6, 100);
  wait_acks(f, 1);
  close_log(f);
  /* corrupt a payload byte of record 3: CRC catches it, records 3.. are cut */
  int fd = open(seg_file(f, 0), O_RDWR);
  off_t rec3 = 24 + (36 + 100) + (36 + 7 + 101) + (36 + 102); /* odd records have a key */
  char b = 0;
  assert_int_equal(pread(fd, &b, 1, rec3 + 50), 1);
  b ^= 1;
  assert_int_equal(pwrite(fd, &b, 1, rec3 + 50), 1);
  close(fd);
  open_log(f);
  hub_plog_info in;
  hub_plog_get_info(f->log, &in);
  assert_int_equal(in.last_seq, 2);
}

static void test_corrupt_sealed_segment_is_reported_not_used(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 1024;
  open_log(f);
  for (int i = 0; i < 6; i++)
    append_n(f, i * 4, 4, 100);
  wait_acks(f, 6);
  close_log(f);
  char ip[160];
  snprintf(ip, sizeof ip, "%s/eh1/0/00000000000000000000.index", f->dir);
  assert_int_equal(unlink(ip), 0); /* force a rescan of the first sealed segment */
  int fd = open(seg_file(f, 0), O_RDWR);
  char b = 0;
  assert_int_equal(pread(fd, &b, 1, 24 + 36 + 10), 1);
  b ^= 0x40;
  assert_int_equal(pwrite(fd, &b, 1, 24 + 36 + 10), 1);
  close(fd);
  open_log(f);
  assert_int_equal(hub_plog_get_stats(f->log)->corrupt_segments, 1);
  hub_plog_record out[4];
  size_t n = 0;
  assert_int_equal(hub_plog_read(f->log, 0, 4, 1 << 20, out, &n), QS_ERR_IO);
  hub_plog_info in;
  hub_plog_get_info(f->log, &in);
  assert_int_equal(in.last_seq, 23);
  assert_int_equal(hub_plog_read(f->log, 23, 4, 1 << 20, out, &n), 0);
  assert_int_equal(n, 1);
}

static void test_damaged_index_file_is_rebuilt_from_its_segment(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 1024;
  open_log(f);
  for (int i = 0; i < 6; i++)
    append_n(f, i * 4, 4, 100);
  wait_acks(f, 6);
  close_log(f);
  char ip[160];
  snprintf(ip, sizeof ip, "%s/eh1/0/00000000000000000000.index", f->dir);
  int fd = open(ip, O_RDWR);
  assert_true(fd >= 0);
  char b = 0;
  assert_int_equal(pread(fd, &b, 1, 60), 1);
  b ^= 0x10;
  assert_int_equal(pwrite(fd, &b, 1, 60), 1);
  close(fd);
  open_log(f);
  assert_int_equal(hub_plog_get_stats(f->log)->corrupt_segments, 0);
  check_records(f, 0, 24, 100);
  int64_t s = -1;
  assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_SEQ, 3, true, &s), 0);
  assert_int_equal(s, 3);
  /* the rewritten index loads cleanly next time */
  reopen(f);
  assert_int_equal(hub_plog_get_stats(f->log)->corrupt_segments, 0);
  check_records(f, 0, 24, 100);
}

static void count_sync(void *arg) { atomic_fetch_add(&((fixture *)arg)->syncs, 1); }

static void test_group_commit_acks_only_after_fdatasync(void **state) {
  fixture *f = *state;
  f->opt.after_sync_hook = count_sync;
  f->opt.after_sync_arg = f;
  f->opt.commit_interval_ms = 20;
  f->opt.on_durable = on_durable;
  f->opt.on_durable_arg = f;
  f->durable_seq = -1;
  open_log(f);
  append_n(f, 0, 3, 100);
  append_n(f, 3, 3, 100);
  /* nothing is acknowledged or readable before the commit */
  assert_int_equal(f->acked, 0);
  hub_plog_record out[8];
  size_t n = 9;
  assert_int_equal(hub_plog_read(f->log, 0, 8, 1 << 20, out, &n), 0);
  assert_int_equal(n, 0);
  wait_acks(f, 2);
  assert_true(f->syncs_seen_at_ack >= 1);
  /* both calls shared one group: one commit, one fdatasync */
  assert_int_equal(hub_plog_get_stats(f->log)->commits, 1);
  assert_int_equal(hub_plog_get_stats(f->log)->fsyncs, 1);
  assert_int_equal(atomic_load(&f->syncs), 1);
  assert_int_equal(hub_plog_read(f->log, 0, 8, 1 << 20, out, &n), 0);
  assert_int_equal(n, 6);
  assert_int_equal(f->durable_seq, 5);
}

static void test_always_policy_syncs_each_append_call(void **state) {
  fixture *f = *state;
  f->opt.fsync_policy = HUB_PLOG_FSYNC_ALWAYS;
  f->opt.after_sync_hook = count_sync;
  f->opt.after_sync_arg = f;
  open_log(f);
  for (int i = 0; i < 5; i++)
    append_n(f, i * 2, 2, 64);
  wait_acks(f, 5);
  assert_int_equal(atomic_load(&f->syncs), 5);
  check_records(f, 0, 10, 64);
}

static void test_never_policy_acks_without_fdatasync(void **state) {
  fixture *f = *state;
  f->opt.fsync_policy = HUB_PLOG_FSYNC_NEVER;
  f->opt.after_sync_hook = count_sync;
  f->opt.after_sync_arg = f;
  open_log(f);
  append_n(f, 0, 4, 64);
  wait_acks(f, 1);
  assert_int_equal(atomic_load(&f->syncs), 0);
  check_records(f, 0, 4, 64);
}

static void test_retention_deletes_old_segments_but_never_the_active(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 1024;
  f->opt.retention_ms = 3600 * 1000;
  open_log(f);
  for (int i = 0; i < 10; i++) {
    append_n(f, i * 4, 4, 100);
    f->clock += 60 * 1000;
  }
  wait_acks(f, 10);
  hub_plog_info in;
  hub_plog_get_info(f->log, &in);
  assert_int_equal(in.begin_seq, 0);
  /* nothing is older than an hour yet */
  assert_int_equal(hub_plog_retain(f->log, f->clock), 0);
  /* 2 hours later: every sealed segment goes, the active one stays */
  int deleted = hub_plog_retain(f->log, f->clock + 2 * 3600 * 1000);
  assert_true(deleted >= 3);
  hub_plog_get_info(f->log, &in);
  assert_false(in.empty);
  assert_true(in.begin_seq > 0);
  assert_int_equal(in.last_seq, 39);
  assert_int_equal(access(seg_file(f, 0), F_OK), -1);
  assert_int_equal(access(seg_file(f, in.begin_seq), F_OK), 0);
  /* reads before the beginning start at it; lookups too */
  hub_plog_record out[2];
  size_t n = 0;
  assert_int_equal(hub_plog_read(f->log, 0, 2, 1 << 20, out, &n), 0);
  assert_int_equal(out[0].seq, in.begin_seq);
  int64_t s = -1;
  assert_int_equal(hub_plog_find(f->log, HUB_PLOG_BY_OFFSET, -1, false, &s), 0);
  assert_int_equal(s, in.begin_seq);
  /* an active segment alone is never deleted, however old */
  assert_int_equal(hub_plog_retain(f->log, f->clock + 100LL * 24 * 3600 * 1000), 0);
  reopen(f);
  hub_plog_get_info(f->log, &in);
  assert_int_equal(in.last_seq, 39);
  check_records(f, in.begin_seq, 40 - in.begin_seq, 100);
}

static void test_segment_rolls_by_age(void **state) {
  fixture *f = *state;
  f->opt.segment_age_ms = 1000;
  open_log(f);
  append_n(f, 0, 2, 10);
  f->clock += 1500;
  append_n(f, 2, 2, 10);
  wait_acks(f, 2);
  assert_int_equal(hub_plog_get_stats(f->log)->segments_rolled, 1);
  assert_int_equal(access(seg_file(f, 2), F_OK), 0);
}

static void on_ack_nofree(hub_plog_append_req *req, int status) {
  fixture *f = req->data;
  if (status == 0)
    f->acked++;
}

static void test_append_beyond_pending_limit_returns_full(void **state) {
  fixture *f = *state;
  f->opt.max_pending_bytes = 2 * 1024 * 1024;
  f->opt.commit_interval_ms = 1000;
  f->opt.commit_bytes = 64 * 1024 * 1024;
  open_log(f);
  static uint8_t big[512 * 1024];
  hub_plog_entry e = {.payload = big, .payload_len = sizeof big};
  int ok = 0, rc = 0;
  hub_plog_append_req reqs[8];
  for (int i = 0; i < 8; i++) {
    reqs[i].data = f;
    rc = hub_plog_append(f->log, &reqs[i], &e, 1, on_ack_nofree);
    if (rc != 0)
      break;
    ok++;
  }
  assert_int_equal(rc, QS_ERR_FULL);
  assert_int_equal(ok, 3);
  assert_int_equal(hub_plog_get_stats(f->log)->full_rejections, 1);
  /* the requests live on this stack: flush and wait for them */
  hub_plog_flush(f->log);
  while (f->acked < ok)
    uv_run(&f->loop, UV_RUN_ONCE);
  /* once the commit drained the buffer, appends are accepted again */
  assert_int_equal(hub_plog_get_stats(f->log)->pending_bytes, 0);
  reqs[7].data = f;
  assert_int_equal(hub_plog_append(f->log, &reqs[7], &e, 1, on_ack_nofree), 0);
  assert_int_equal(reqs[7].first_seq, 3);
  hub_plog_flush(f->log);
  while (f->acked < ok + 1)
    uv_run(&f->loop, UV_RUN_ONCE);
}

static void test_oversized_payload_and_key_are_rejected(void **state) {
  fixture *f = *state;
  open_log(f);
  uint8_t *big = calloc(1, HUB_PLOG_MAX_PAYLOAD + 1);
  hub_plog_append_req req = {.data = f};
  hub_plog_entry e = {.payload = big, .payload_len = HUB_PLOG_MAX_PAYLOAD + 1};
  assert_int_equal(hub_plog_append(f->log, &req, &e, 1, on_ack_nofree), QS_ERR_TOOBIG);
  e.payload_len = HUB_PLOG_MAX_PAYLOAD;
  char key[HUB_PLOG_MAX_KEY + 1];
  memset(key, 'k', sizeof key);
  e.key = key;
  e.key_len = sizeof key;
  assert_int_equal(hub_plog_append(f->log, &req, &e, 1, on_ack_nofree), QS_ERR_TOOBIG);
  assert_int_equal(hub_plog_append(f->log, &req, &e, 0, on_ack_nofree), QS_ERR_INVALID);
  /* exactly at the limits is accepted and reads back whole, from cache and from disk */
  e.key_len = HUB_PLOG_MAX_KEY;
  big[HUB_PLOG_MAX_PAYLOAD - 1] = 0x7e;
  assert_int_equal(hub_plog_append(f->log, &req, &e, 1, on_ack_nofree), 0);
  while (f->acked < 1)
    uv_run(&f->loop, UV_RUN_ONCE);
  for (int round = 0; round < 2; round++) {
    hub_plog_record out[1];
    size_t n = 0;
    assert_int_equal(hub_plog_read(f->log, 0, 1, 100, out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].payload_len, HUB_PLOG_MAX_PAYLOAD);
    assert_int_equal(out[0].payload[HUB_PLOG_MAX_PAYLOAD - 1], 0x7e);
    assert_int_equal(out[0].key_len, HUB_PLOG_MAX_KEY);
    reopen(f);
  }
  free(big);
}

static void test_close_commits_pending_appends(void **state) {
  fixture *f = *state;
  f->opt.commit_interval_ms = 10000;
  open_log(f);
  append_n(f, 0, 3, 80);
  append_n(f, 3, 3, 80);
  assert_int_equal(f->acked, 0);
  close_log(f); /* runs the loop: the pending group is committed before the close callback */
  assert_int_equal(f->acked, 2);
  open_log(f);
  check_records(f, 0, 6, 80);
  hub_plog_append_req req = {.data = f};
  hub_plog_entry e = {.payload = "x", .payload_len = 1};
  assert_int_equal(hub_plog_close(f->log, on_closed), 0);
  assert_int_equal(hub_plog_append(f->log, &req, &e, 1, on_ack), QS_ERR_CLOSED);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  hub_plog_free(f->log);
  f->log = NULL;
}

static void test_open_rejects_unsafe_hub_names(void **state) {
  fixture *f = *state;
  hub_plog *log = hub_plog_new();
  assert_int_equal(hub_plog_open(log, &f->loop, f->dir, "..", 0, NULL), QS_ERR_INVALID);
  assert_int_equal(hub_plog_open(log, &f->loop, f->dir, "a/b", 0, NULL), QS_ERR_INVALID);
  assert_int_equal(hub_plog_open(log, &f->loop, f->dir, "", 0, NULL), QS_ERR_INVALID);
  assert_int_equal(hub_plog_open(log, &f->loop, f->dir, "ok", -1, NULL), QS_ERR_INVALID);
  hub_plog_free(log);
}

/* ---- crash test: kill -9 a writer, every acknowledged record must be there ---- */

typedef struct child_ctx {
  hub_plog *log;
  int pipe_fd;
  int64_t next;
  int inflight;
} child_ctx;

static void child_append(child_ctx *c);

static void child_ack(hub_plog_append_req *req, int status) {
  child_ctx *c = req->data;
  if (status != 0)
    _exit(3);
  int64_t msg[2] = {req->first_seq, (int64_t)req->count};
  if (write(c->pipe_fd, msg, sizeof msg) != (ssize_t)sizeof msg)
    _exit(4);
  free(req);
  c->inflight--;
  child_append(c);
}

static void child_append(child_ctx *c) {
  while (c->inflight < 8) {
    enum { N = 50 };
    hub_plog_entry e[N];
    static uint8_t bufs[N][700];
    for (int i = 0; i < N; i++) {
      e[i].payload = bufs[i];
      e[i].payload_len = make_payload(c->next + i, bufs[i], 300);
      e[i].key = NULL;
      e[i].key_len = 0;
    }
    hub_plog_append_req *req = calloc(1, sizeof *req);
    req->data = c;
    if (hub_plog_append(c->log, req, e, N, child_ack) != 0)
      _exit(5);
    c->next += N;
    c->inflight++;
  }
}

static void test_acknowledged_records_survive_kill_9(void **state) {
  fixture *f = *state;
  f->opt.segment_bytes = 256 * 1024; /* several rolls during the run */
  f->opt.clock_ms = NULL;
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  for (int round = 0; round < 3; round++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int64_t start = 0;
    if (round > 0) {
      open_log(f);
      hub_plog_info in;
      hub_plog_get_info(f->log, &in);
      start = in.last_seq + 1;
      close_log(f);
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      uv_loop_t loop;
      uv_loop_init(&loop);
      child_ctx c = {.log = hub_plog_new(), .pipe_fd = fds[1], .next = start};
      if (hub_plog_open(c.log, &loop, f->dir, "eh1", 0, &f->opt) != 0)
        _exit(2);
      child_append(&c);
      uv_run(&loop, UV_RUN_DEFAULT);
      _exit(6);
    }
    close(fds[1]);
    int want = 5 + rand() % 60;
    int64_t acked_end = start;
    int64_t msg[2];
    for (int i = 0; i < want; i++) {
      assert_int_equal(read(fds[0], msg, sizeof msg), (ssize_t)sizeof msg);
      assert_int_equal(msg[0], acked_end);
      acked_end += msg[1];
    }
    kill(pid, SIGKILL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    /* acks already in the pipe were given before the kill: they count too */
    ssize_t r;
    while ((r = read(fds[0], msg, sizeof msg)) == (ssize_t)sizeof msg) {
      assert_int_equal(msg[0], acked_end);
      acked_end += msg[1];
    }
    close(fds[0]);
    open_log(f);
    hub_plog_info in;
    hub_plog_get_info(f->log, &in);
    assert_true(in.last_seq + 1 >= acked_end);
    /* every acknowledged record, identical bytes */
    hub_plog_record out[256];
    uint8_t expect[700];
    for (int64_t s = 0; s < acked_end;) {
      size_t n = 0;
      assert_int_equal(hub_plog_read(f->log, s, 256, 1 << 20, out, &n), 0);
      assert_true(n > 0);
      for (size_t i = 0; i < n && s < acked_end; i++, s++) {
        assert_int_equal(out[i].seq, s);
        size_t len = make_payload(s, expect, 300);
        assert_int_equal(out[i].payload_len, len);
        assert_memory_equal(out[i].payload, expect, len);
      }
    }
    close_log(f);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_append_then_read_returns_identical_records, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_read_respects_max_bytes_but_returns_one_record, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sequence_and_offset_continue_across_rolls_and_reopen,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_find_by_sequence_offset_and_time_with_boundaries, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_torn_tail_is_truncated_and_sequence_continues, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_garbage_tail_is_truncated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flipped_bit_in_active_segment_truncates_from_there,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_sealed_segment_is_reported_not_used, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_damaged_index_file_is_rebuilt_from_its_segment, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_group_commit_acks_only_after_fdatasync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_always_policy_syncs_each_append_call, setup, teardown),
      cmocka_unit_test_setup_teardown(test_never_policy_acks_without_fdatasync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retention_deletes_old_segments_but_never_the_active,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_segment_rolls_by_age, setup, teardown),
      cmocka_unit_test_setup_teardown(test_append_beyond_pending_limit_returns_full, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_oversized_payload_and_key_are_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_commits_pending_appends, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_rejects_unsafe_hub_names, setup, teardown),
      cmocka_unit_test_setup_teardown(test_acknowledged_records_survive_kill_9, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
