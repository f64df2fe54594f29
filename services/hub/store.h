/* store.h — the narrow storage interface the hub broker needs.
 *
 * One store serves every (hub, partition). The partition log is adapted to
 * this vtable; store_mem.c is an in-memory implementation for tests.
 * Invariants:
 *  - All calls and callbacks happen on the loop thread.
 *  - append() is asynchronous: on a 0 return its callback fires exactly once,
 *    LATER (never inside append), when the records are durable or failed. On
 *    a negative return the callback never fires.
 *  - append() copies the records' key and payload bytes before it returns:
 *    the caller reuses its buffers at once.
 *  - read() returns durable records only; the pointers it fills stay valid
 *    until the next call into the store.
 *  - Sequence numbers start at 0 and are dense; offsets are opaque int64
 *    values that increase with the sequence number.
 */
#ifndef HUB_STORE_H
#define HUB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One event to append: the encoded AMQP message, stored as is. */
typedef struct hub_record {
  const char *pkey; /* partition key or NULL */
  size_t pkey_len;
  const uint8_t *payload;
  size_t len;
} hub_record;

/* One durable event as read back. */
typedef struct hub_stored {
  int64_t seq;
  int64_t offset;
  int64_t enqueued_ms;
  const char *pkey; /* NULL when the event had none */
  size_t pkey_len;
  const uint8_t *payload;
  size_t len;
} hub_stored;

typedef struct hub_part_info {
  int64_t begin_seq;        /* first retained sequence number (-1 when empty) */
  int64_t last_seq;         /* -1 when empty */
  int64_t last_offset;      /* -1 when empty */
  int64_t last_enqueued_ms; /* 0 when empty */
  bool empty;
} hub_part_info;

/* status 0 and the first assigned sequence number, or a negative code. */
typedef void (*hub_append_cb)(void *arg, int status, int64_t first_seq);
/* Records of (hub, partition) became durable. */
typedef void (*hub_newdata_cb)(void *arg, const char *hub, int partition);

typedef struct hub_store {
  void *ctx;
  int (*append)(void *ctx, const char *hub, int part, const hub_record *recs, size_t n,
                hub_append_cb cb, void *arg);
  /* Up to max_n records (at least one if any, even above max_bytes) from
   * from_seq on; *n_out = 0 at the tail. */
  int (*read)(void *ctx, const char *hub, int part, int64_t from_seq, size_t max_n,
              size_t max_bytes, hub_stored *out, size_t *n_out);
  /* Next sequence number to deliver for a start position. */
  int (*seek_offset)(void *ctx, const char *hub, int part, int64_t offset, bool inclusive,
                     int64_t *seq_out);
  int (*seek_seq)(void *ctx, const char *hub, int part, int64_t seq, bool inclusive,
                  int64_t *seq_out);
  int (*seek_time)(void *ctx, const char *hub, int part, int64_t ms, int64_t *seq_out);
  int (*info)(void *ctx, const char *hub, int part, hub_part_info *out);
  /* One listener per store; cb NULL removes it. */
  void (*set_listener)(void *ctx, hub_newdata_cb cb, void *arg);
} hub_store;

/* ---- memory implementation (tests only) ---- */
typedef struct hub_store_mem hub_store_mem;

/* partitions: per hub name, the count is taken from parts[] (n hubs). */
hub_store_mem *hub_store_mem_new(const char *const *hubs, const int *parts, size_t n);
void hub_store_mem_free(hub_store_mem *m);
/* The vtable bound to m. */
hub_store hub_store_mem_vtable(hub_store_mem *m);
/* Clock used for enqueued times. */
void hub_store_mem_set_time(hub_store_mem *m, int64_t now_ms);
/* Make every pending append durable and fire callbacks + listener.
 * Returns the number of appends completed. */
int hub_store_mem_flush(hub_store_mem *m);
/* Make pending appends fail with code instead. */
int hub_store_mem_fail(hub_store_mem *m, int code);
size_t hub_store_mem_count(hub_store_mem *m, const char *hub, int part);

#endif
