/* log_bench.c — throughput of the hub's partition log.
 *
 * Appends N records of S bytes in batches of B per append call with the chosen fsync policy
 * (default group), keeping as many calls in flight as the pending limit allows, then reads
 * everything back in order. Prints acknowledged (durable) appends/s, reads/s, the fsync
 * latency p50/p99 of the commit groups and the append-to-ack latency p50/p99 of the calls.
 *
 * usage: log_bench [records=1000000] [payload_bytes=500] [batch=100] [group|always|never]
 *                  [max_pending_mib=8]
 * The bench keeps the log saturated, so append->ack latency is about max_pending / throughput
 * (Little's law): a smaller pending limit trades throughput for latency. Data goes to a fresh
 * directory under /tmp, removed at the end.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "partition_log.h"
#include "qs/error.h"

typedef struct timed_req {
  hub_plog_append_req req;
  uint64_t t0;
} timed_req;

typedef struct bench {
  uv_loop_t loop;
  hub_plog *log;
  long total, batch;
  long issued, acked;
  hub_plog_entry *entries;
  uint64_t *fsync_ns;
  size_t nfsync, capfsync;
  uint64_t *ack_ns; /* append call -> durable ack, one per call */
  size_t nack;
  int failed;
} bench;

static void on_commit(void *arg, uint64_t fsync_ns, size_t records, size_t bytes) {
  bench *b = arg;
  (void)records;
  (void)bytes;
  if (b->nfsync == b->capfsync) {
    b->capfsync = b->capfsync ? b->capfsync * 2 : 1024;
    b->fsync_ns = qs_xrealloc(b->fsync_ns, b->capfsync * sizeof *b->fsync_ns);
  }
  b->fsync_ns[b->nfsync++] = fsync_ns;
}

static void issue(bench *b);

static void on_ack(hub_plog_append_req *req, int status) {
  bench *b = req->data;
  if (status != 0)
    b->failed = status;
  b->acked += (long)req->count;
  b->ack_ns[b->nack++] = uv_hrtime() - ((timed_req *)req)->t0;
  free(req);
  issue(b);
}

/* Keeps appending until the log pushes back (QS_ERR_FULL) or everything is issued. */
static void issue(bench *b) {
  while (b->issued < b->total && !b->failed) {
    long n = b->total - b->issued < b->batch ? b->total - b->issued : b->batch;
    timed_req *tr = qs_xcalloc(1, sizeof *tr);
    hub_plog_append_req *req = &tr->req;
    req->data = b;
    tr->t0 = uv_hrtime();
    int rc = hub_plog_append(b->log, req, b->entries, (size_t)n, on_ack);
    if (rc == QS_ERR_FULL) {
      free(tr);
      return;
    }
    if (rc != 0) {
      free(tr);
      b->failed = rc;
      return;
    }
    b->issued += n;
  }
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
  return a < c ? -1 : a > c;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void on_closed(hub_plog *log) { (void)log; }

int main(int argc, char **argv) {
  bench b = {0};
  b.total = argc > 1 ? atol(argv[1]) : 1000000;
  long size = argc > 2 ? atol(argv[2]) : 500;
  b.batch = argc > 3 ? atol(argv[3]) : 100;
  const char *policy = argc > 4 ? argv[4] : "group";
  char dir[256] = "/tmp/qs-log-bench-XXXXXX";
  long max_pending_mib = argc > 5 ? atol(argv[5]) : 8;
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  if (b.total <= 0 || size < 0 || size > (long)HUB_PLOG_MAX_PAYLOAD || b.batch <= 0 ||
      b.batch > 10000 || max_pending_mib < 2 || max_pending_mib > 1024) {
    fprintf(stderr, "usage: log_bench [records] [payload_bytes] [batch] [group|always|never] "
                    "[max_pending_mib]\n");
    return 2;
  }
  hub_plog_options opt;
  hub_plog_options_init(&opt);
  if (strcmp(policy, "always") == 0)
    opt.fsync_policy = HUB_PLOG_FSYNC_ALWAYS;
  else if (strcmp(policy, "never") == 0)
    opt.fsync_policy = HUB_PLOG_FSYNC_NEVER;
  opt.max_pending_bytes = (size_t)max_pending_mib * 1024 * 1024;
  opt.on_commit = on_commit;
  opt.on_commit_arg = &b;

  uint8_t *payload = qs_xmalloc((size_t)size + 1);
  for (long i = 0; i < size; i++)
    payload[i] = (uint8_t)(i * 131 + 7);
  b.entries = qs_xcalloc((size_t)b.batch, sizeof *b.entries);
  for (long i = 0; i < b.batch; i++)
    b.entries[i] = (hub_plog_entry){"us-west", 7, payload, (size_t)size};

  b.ack_ns = qs_xcalloc((size_t)(b.total / b.batch + 1), sizeof *b.ack_ns);
  uv_loop_init(&b.loop);
  b.log = hub_plog_new();
  int rc = hub_plog_open(b.log, &b.loop, dir, "bench", 0, &opt);
  if (rc != 0) {
    fprintf(stderr, "open %s: %s\n", dir, qs_strerror(rc));
    return 1;
  }
  uint64_t t0 = uv_hrtime();
  issue(&b);
  while (b.acked < b.total && !b.failed)
    uv_run(&b.loop, UV_RUN_ONCE);
  uint64_t t1 = uv_hrtime();
  if (b.failed) {
    fprintf(stderr, "append failed: %s\n", qs_strerror(b.failed));
    return 1;
  }

  hub_plog_record *out = qs_xcalloc(1000, sizeof *out);
  long seen = 0;
  uint64_t sum = 0;
  uint64_t t2 = uv_hrtime();
  while (seen < b.total) {
    size_t n = 0;
    rc = hub_plog_read(b.log, seen, 1000, 1 << 20, out, &n);
    if (rc != 0 || n == 0) {
      fprintf(stderr, "read at %ld: %s\n", seen, rc ? qs_strerror(rc) : "no records");
      return 1;
    }
    for (size_t i = 0; i < n; i++)
      sum += out[i].payload[out[i].payload_len / 2];
    seen += (long)n;
  }
  uint64_t t3 = uv_hrtime();

  const hub_plog_stats *st = hub_plog_get_stats(b.log);
  qsort(b.fsync_ns, b.nfsync, sizeof *b.fsync_ns, cmp_u64);
  double p50 = b.nfsync ? (double)b.fsync_ns[b.nfsync / 2] / 1e6 : 0;
  double p99 = b.nfsync ? (double)b.fsync_ns[(b.nfsync * 99) / 100] / 1e6 : 0;
  double app_s = (double)(t1 - t0) / 1e9, rd_s = (double)(t3 - t2) / 1e9;
  printf("policy=%s records=%ld payload=%ld batch=%ld max_pending=%ld MiB\n", policy, b.total, size,
         b.batch, max_pending_mib);
  printf("appends/s (acked, durable): %.0f  (%.2f s, %.1f MB/s, %llu commits, %llu fsyncs)\n",
         (double)b.total / app_s, app_s, (double)st->bytes_appended / app_s / 1e6,
         (unsigned long long)st->commits, (unsigned long long)st->fsyncs);
  printf("reads/s: %.0f  (%.2f s, %llu from cache, %llu from disk calls, check %llu)\n",
         (double)b.total / rd_s, rd_s, (unsigned long long)st->reads_from_cache,
         (unsigned long long)st->reads_from_disk, (unsigned long long)sum);
  printf("fsync latency per commit: p50 %.3f ms  p99 %.3f ms\n", p50, p99);
  qsort(b.ack_ns, b.nack, sizeof *b.ack_ns, cmp_u64);
  printf("append->ack latency per call: p50 %.3f ms  p99 %.3f ms\n",
         b.nack ? (double)b.ack_ns[b.nack / 2] / 1e6 : 0,
         b.nack ? (double)b.ack_ns[(b.nack * 99) / 100] / 1e6 : 0);

  hub_plog_close(b.log, on_closed);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  hub_plog_free(b.log);
  rc = uv_loop_close(&b.loop);
  free(out);
  free(b.entries);
  free(payload);
  free(b.fsync_ns);
  free(b.ack_ns);
  nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return rc == 0 ? 0 : 1;
}
