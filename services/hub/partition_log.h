/* partition_log.h — the hub's durable, segmented, append-only log of one partition.
 *
 * One hub_plog per partition, living at <data_dir>/<hub>/<partition>/. Records get a dense
 * sequence number (from 0), a byte offset (monotonically increasing position in the partition)
 * and an enqueued time (epoch ms, never decreasing). All calls are made on the loop thread;
 * the blocking write + fdatasync of a commit group runs on the libuv threadpool, exactly one
 * commit in flight per partition.
 *
 * Invariants:
 * - An append's callback fires (once) only after its records are durable per the fsync policy;
 *   readers never see a record before that.
 * - Pending (not yet committed) bytes are bounded by max_pending_bytes: append returns
 *   QS_ERR_FULL beyond it and the caller withholds credit.
 * - The log never logs; everything worth telling is in hub_plog_stats or the on_commit hook.
 */
#ifndef QS_HUB_PARTITION_LOG_H
#define QS_HUB_PARTITION_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define HUB_PLOG_MAX_KEY 128u
#define HUB_PLOG_MAX_PAYLOAD (1024u * 1024u)

typedef enum hub_plog_fsync {
  HUB_PLOG_FSYNC_GROUP = 0, /* default: one write + fdatasync per group of appends */
  HUB_PLOG_FSYNC_ALWAYS,    /* an fdatasync after every append call's records */
  HUB_PLOG_FSYNC_NEVER      /* ack after write(): UNSAFE, loses acked data on power loss */
} hub_plog_fsync;

typedef struct hub_plog_options {
  hub_plog_fsync fsync_policy;
  uint32_t commit_interval_ms; /* group: flush at most this long after the first append (5) */
  size_t commit_bytes;         /* group: flush at once when this much is pending (1 MiB) */
  size_t max_pending_bytes;    /* QS_ERR_FULL beyond (8 MiB; 1 MiB + 164 B..1 GiB) */
  uint64_t segment_bytes;      /* roll the active segment at this size (64 MiB) */
  uint64_t segment_age_ms;     /* ... or when its first record is this old (24 h; 0: never) */
  uint64_t retention_ms;       /* hub_plog_retain deletes segments older than this (7 d) */
  size_t tail_cache_bytes;     /* recent durable records kept in memory for reads (8 MiB) */
  uint32_t index_interval;     /* bytes between sparse index entries (4096) */
  /* Clock for enqueued times, epoch ms; NULL means CLOCK_REALTIME. */
  int64_t (*clock_ms)(void *arg);
  void *clock_arg;
  /* Called on the loop thread after every commit: fsync time in ns (0 for policy never). */
  void (*on_commit)(void *arg, uint64_t fsync_ns, size_t records, size_t bytes);
  void *on_commit_arg;
  /* Called on the loop thread after every commit's callbacks, with the new last durable
   * sequence: the broker wakes receivers parked at the end of the partition. */
  void (*on_durable)(void *arg, int64_t last_seq);
  void *on_durable_arg;
  /* Test hook: called on the worker thread right after each fdatasync returned. */
  void (*after_sync_hook)(void *arg);
  void *after_sync_arg;
} hub_plog_options;

/* Counters and gauges the caller turns into metrics. */
typedef struct hub_plog_stats {
  uint64_t append_calls, records_appended, bytes_appended;
  uint64_t commits, fsyncs;
  uint64_t full_rejections;
  uint64_t recovered_truncated_bytes; /* torn/corrupt tail cut off at open */
  uint64_t corrupt_segments;          /* sealed segments found damaged (reads fail there) */
  uint64_t segments_rolled, segments_deleted;
  uint64_t reads_from_cache, reads_from_disk;
  uint64_t pending_bytes; /* gauge */
} hub_plog_stats;

typedef struct hub_plog_entry {
  const void *key; /* optional partition key, NULL or <= HUB_PLOG_MAX_KEY bytes */
  size_t key_len;
  const void *payload; /* opaque (the encoded AMQP message), <= HUB_PLOG_MAX_PAYLOAD */
  size_t payload_len;
} hub_plog_entry;

typedef struct hub_plog_record {
  int64_t seq;
  int64_t offset;
  int64_t enqueued_ms;
  const uint8_t *key; /* NULL when key_len == 0 */
  size_t key_len;
  const uint8_t *payload;
  size_t payload_len;
} hub_plog_record;

typedef struct hub_plog_info {
  int64_t begin_seq;        /* first readable sequence (after retention) */
  int64_t last_seq;         /* last durable sequence, begin_seq - 1 when empty */
  int64_t last_offset;      /* offset of the last durable record, -1 when empty */
  int64_t last_enqueued_ms; /* 0 when empty */
  bool empty;
} hub_plog_info;

typedef struct hub_plog hub_plog;
typedef struct hub_plog_append_req hub_plog_append_req;

/* status: 0 when durable, else a negative code (the log is then failed). */
typedef void (*hub_plog_append_cb)(hub_plog_append_req *req, int status);
typedef void (*hub_plog_close_cb)(hub_plog *log);

/* Caller-owned request, alive until its callback. */
struct hub_plog_append_req {
  void *data;        /* the caller's; never touched */
  int64_t first_seq; /* assigned at append time */
  int64_t first_offset;
  int64_t enqueued_ms;
  size_t count;
  /* private */
  hub_plog_append_cb cb_;
  size_t end_;
  hub_plog_append_req *next_;
};

typedef enum hub_plog_find_by {
  HUB_PLOG_BY_SEQ = 0,
  HUB_PLOG_BY_OFFSET,
  HUB_PLOG_BY_ENQUEUED
} hub_plog_find_by;

/* Defaults as documented above. */
void hub_plog_options_init(hub_plog_options *opt);

/* Allocates a log handle (freed by the close callback path: hub_plog_free after close_cb). */
hub_plog *hub_plog_new(void);
void hub_plog_free(hub_plog *log);

/* Opens (creating if needed) <data_dir>/<hub>/<partition>/ and recovers it: verifies the
 * active segment by CRC and length and truncates a torn tail; loads or rebuilds the sealed
 * segments' indexes. hub must be 1..256 of [A-Za-z0-9._-] and not "." or "..". Blocking;
 * call before serving. */
int hub_plog_open(hub_plog *log, uv_loop_t *loop, const char *data_dir, const char *hub,
                  int partition, const hub_plog_options *opt);

/* Assigns sequence numbers, offsets and one enqueued time to n entries and queues them for
 * the next commit. On 0 the callback fires exactly once, on the loop thread, after the records
 * are durable. Errors (no callback): QS_ERR_INVALID (n == 0), QS_ERR_TOOBIG (key or payload
 * over its limit), QS_ERR_FULL (pending limit), QS_ERR_CLOSED, or the failure that broke the
 * log (e.g. QS_ERR_IO). */
int hub_plog_append(hub_plog *log, hub_plog_append_req *req, const hub_plog_entry *entries,
                    size_t n, hub_plog_append_cb cb);

/* Reads durable records from from_seq (clamped up to begin_seq) into out[], at most
 * max_records and at most max_bytes of key+payload (but always one record when one exists).
 * *n_out = 0 when from_seq is past the end. Pointers in out[] stay valid until the next
 * hub_plog_read or hub_plog_close. QS_ERR_IO when a record on disk fails its CRC. */
int hub_plog_read(hub_plog *log, int64_t from_seq, size_t max_records, size_t max_bytes,
                  hub_plog_record *out, size_t *n_out);

/* First sequence whose key (seq, offset or enqueued time) is > value (>= when inclusive).
 * When no durable record qualifies, the next sequence to be written (a reader parked there
 * sees only new records). Values before the beginning give begin_seq. */
int hub_plog_find(hub_plog *log, hub_plog_find_by by, int64_t value, bool inclusive,
                  int64_t *seq_out);

void hub_plog_get_info(const hub_plog *log, hub_plog_info *info);
const hub_plog_stats *hub_plog_get_stats(const hub_plog *log);

/* Deletes whole sealed segments whose newest record is older than now_ms - retention_ms;
 * never the active segment. Returns the number deleted or a negative code. */
int hub_plog_retain(hub_plog *log, int64_t now_ms);

/* Starts committing what is pending now instead of waiting for the interval. */
void hub_plog_flush(hub_plog *log);

/* Commits what is pending, waits for the commit in flight, closes the timer and calls cb.
 * Appends after this fail with QS_ERR_CLOSED. */
int hub_plog_close(hub_plog *log, hub_plog_close_cb cb);

/* Caller's pointer, never touched by the log. */
void hub_plog_set_data(hub_plog *log, void *data);
void *hub_plog_get_data(const hub_plog *log);

/* CRC32C (Castagnoli), the record checksum. Exposed for tests and tools. */
uint32_t hub_plog_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
