/* engine.h — the speed layer's state machine, free of sockets and of Redis I/O.
 *
 * Input: consumed events (partition, sequence, offset, body), one at a time and in partition
 * order; output: the Redis operations that carry the state change, taken in batches
 * (sa_engine_take) and committed atomically together with the partitions' checkpoints by the
 * committer (store.c). All window arithmetic is qs/agg.h's.
 *
 * The engine keeps a cache of the state it needs (per-event records and windows with their
 * member contributions). The cache is a copy of what is committed in Redis plus the changes not
 * yet taken. An item can only be applied when the state it touches is cached: the caller asks
 * sa_engine_collect_needs, fetches what is missing from Redis, hands it over with
 * sa_engine_load_evstate / sa_engine_load_window, then calls sa_engine_apply. After a failed
 * commit the caller drops the cache (sa_engine_reset) and replays from the checkpoints.
 *
 * Semantics (docs/speed-aggregator.md): tumbling epoch-aligned windows per region on event time;
 * per-partition watermark = max event time - tolerance, advanced by wall clock on idle
 * partitions; a window is final once watermark >= end + allowed lateness, later events still
 * update it and count as late; a revision (newer `updated`) retracts the old contribution and
 * applies the new; deleted/superseded retract; an update that is not newer than the last one
 * applied (exact duplicates included) changes nothing.
 *
 * Event records are kept per (region, event_id) (docs/changes.md, "Region moves"): a message only
 * ever reads and writes the record and windows of its own region, which live on its own
 * partition, so two replicas never touch the same record or window. `moved` retracts the event
 * from its region only; the raw event (qs:ev) is global and its writes are decided by `updated`
 * inside the commit (store.c), not here.
 */
#ifndef SA_ENGINE_H
#define SA_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qs/agg.h"
#include "qs/buf.h"
#include "qs/event.h"

#include "argv.h"
#include "smap.h"

#define SA_PARTITIONS_MAX 1024
#define SA_OFFSET_MAX 32
#define SA_KEY_MAX 160
/* An event record's key: "<region>|<event_id>" (the qs:rt:evstate field). */
#define SA_EVKEY_MAX (QS_EVENT_SHORT_MAX + 1 + QS_EVENT_ID_MAX + 1)
#define SA_DLQ_BODY_MAX 4096
#define SA_WCACHE 1024 /* slots of the engine's window cache */

typedef struct sa_engine_opts {
  const char *hub;            /* for the checkpoint and open-window keys */
  const char *consumer_group; /* idem */
  int64_t window_ms;          /* window length; default 5 min */
  int64_t tolerance_ms;       /* out-of-order tolerance of the watermark */
  int64_t lateness_ms;        /* allowed lateness after the watermark passed a window's end */
  int64_t idle_ms;            /* a partition without events this long advances by wall clock */
  double significant;         /* significant_count threshold (>=), default 5.0 */
  double spike_magnitude;     /* MAGNITUDE_SPIKE threshold (>=), default 6.0 */
  int64_t volume_threshold;   /* VOLUME: more than this many events in a window, default 50 */
  double anomaly_sigma;       /* ANOMALY: mean + k sigma, default 2 */
  int64_t dlq_max;            /* dead letters kept */
} sa_engine_opts;

void sa_engine_opts_default(sa_engine_opts *o);

/* What the engine uses of a decoded event (sa_item_parse decodes the whole event into a scratch
 * qs_event, hot in the cache, and keeps only this: thousands of items wait in the queue, and a
 * full qs_event in each made every decode and apply touch cold memory). */
typedef struct sa_event {
  char event_id[QS_EVENT_ID_MAX + 1];
  size_t event_id_len;
  char region[QS_EVENT_SHORT_MAX + 1];
  qs_event_change change;
  bool has_magnitude, has_depth, tsunami_flag;
  int64_t time, updated;
  double magnitude, depth_km;
  char place[QS_EVENT_PLACE_MAX + 1]; /* for alert messages */
} sa_event;

/* One consumed event. body is owned by the item (malloc). */
typedef struct sa_item {
  int partition;
  int64_t sequence;
  char offset[SA_OFFSET_MAX];
  int64_t enqueued_ms;
  char *body; /* small, or malloc'ed when longer */
  size_t len;
  char small[1536];
  int parse_rc; /* 0, or why the event is poison */
  char why[192];
  sa_event ev;
  /* Set by sa_item_parse when parse_rc is 0: the event record's key "<region>|<id>" and its map
   * hash; the record once found (valid while rec_gen is the engine's cache generation). */
  char evkey[SA_EVKEY_MAX]; /* its region is evkey[0, region_len) */
  size_t region_len;
  uint64_t evhash;
  void *rec;
  uint64_t rec_gen;
} sa_item;

/* Parses and validates the body (and the region name as a window key); fills parse_rc/why. */
void sa_item_parse(sa_item *it);

typedef struct sa_member_list {
  char (*ids)[QS_EVENT_ID_MAX + 1];
  qs_contrib *c; /* parallel to ids: contiguous for qs_agg_recompute_minmax */
  size_t n, cap;
  sa_pidx idx; /* id -> index */
} sa_member_list;

typedef struct sa_window {
  char key[SA_KEY_MAX]; /* region|start */
  qs_agg_row row;
  sa_member_list mem;
  bool final;
  int64_t late_count;
  int partition; /* the partition that last changed it (its open-window set) */
  bool dirty;
  bool volume_alerted, anomaly_alerted; /* emitted in this process (Redis dedupes anyway) */
  /* Records whose membership or contribution here changed since the last take (repeats
   * allowed): at the take each is HSET with its contribution if it is (still) a member, else
   * HDEL'd, from the record's final state. Every one of them is dirty. */
  struct sa_evrec **changed;
  size_t n_changed, cap_changed;
} sa_window;

/* The last applied version of an event id in one region (also for deleted, superseded and moved
 * ids: a tombstone, so an older version arriving later cannot resurrect it there). Allocated to
 * the length of its key (a few hundred thousand are cached: their size is the cache's footprint).
 */
typedef struct sa_evrec {
  int64_t updated;
  qs_contrib c; /* valid when live */
  /* Body of the newest revision applied since the last take (offset into the body arena). */
  size_t body_off, body_len;
  bool exists;   /* false: never seen */
  bool live;     /* counted in a window */
  bool was_live; /* D/S: it was counted here when it was removed (event_removed is due) */
  bool dirty;
  bool has_body;
  struct sa_evrec *moved_to; /* set while sa_engine_trim_cache moves the record */
  uint64_t member_stamp;     /* the take of a window that wrote its membership last */
  char change;               /* 'N', 'R', 'D', 'S', 'M' (moved to another region) */
  uint8_t region_len;        /* key[0, region_len) is the region, the id follows its '|' */
  uint8_t id_len;
  char key[]; /* "<region>|<id>": the cache and qs:rt:evstate key */
} sa_evrec;

static inline const char *sa_evrec_id(const sa_evrec *r) { return r->key + r->region_len + 1; }
static inline size_t sa_evrec_key_len(const sa_evrec *r) {
  return (size_t)r->region_len + 1 + r->id_len;
}

typedef struct sa_partition {
  bool known;       /* restored from a checkpoint or seen an event */
  int64_t sequence; /* last applied; -1: none */
  char offset[SA_OFFSET_MAX];
  int64_t max_time;        /* max event time seen; INT64_MIN: none */
  int64_t watermark;       /* INT64_MIN: none */
  int64_t last_event_wall; /* wall clock of the last event (idle detection) */
  int64_t last_tick_wall;
  bool dirty;
} sa_partition;

typedef struct sa_engine_stats {
  uint64_t events, poison, duplicates, stale, retractions, revisions, late, alerts;
  uint64_t deletions, supersedes, moves; /* retractions = deletions + supersedes + moves */
  uint64_t orphans; /* revisions of events whose old window was trimmed by retention */
} sa_engine_stats;

typedef struct sa_pub {
  int channel;     /* SA_CH_* */
  size_t off, len; /* message in the pub arena */
} sa_pub;

enum { SA_CH_AGGREGATES = 0, SA_CH_ALERTS, SA_CH_EVENTS };

typedef struct sa_engine {
  sa_engine_opts o;
  char hub[257], group[257];
  sa_smap evrecs; /* "<region>|<id>" -> sa_evrec* */
  /* The records live in chunks (no malloc/free per record: a cache of a few hundred thousand is
   * dropped or trimmed as a whole, see sa_engine_trim_cache). */
  struct sa_rec_chunk *rec_chunks;
  uint64_t cache_gen;    /* incremented whenever cached records are freed (items' rec pointers) */
  uint64_t member_stamp; /* one per window taken (a repeated changed member written once) */
  sa_smap windows;       /* key -> sa_window* */
  sa_smap baselines;     /* region -> qs_agg_baseline* */
  sa_partition parts[SA_PARTITIONS_MAX];
  /* window_get's cache of window pointers (emptied whenever windows are freed). */
  sa_window *wcache[SA_WCACHE];
  /* Changes since the last take. */
  sa_evrec **dirty_ev;
  size_t n_dirty_ev, cap_dirty_ev;
  sa_window **dirty_win;
  size_t n_dirty_win, cap_dirty_win;
  char *bodies; /* arena of event bodies of dirty records */
  size_t bodies_used, bodies_cap;
  sa_argv alerts;       /* in decision order: "@ALERT" key score json | "@RETRACT" key */
  sa_argv dlq;          /* dead-letter JSON */
  sa_argv pubs;         /* channel, message pairs (events; windows are added at take) */
  size_t pending_items; /* items applied since the last take */
  sa_engine_stats stats;
  qs_buf scratch; /* alert JSON under construction */
} sa_engine;

void sa_engine_init(sa_engine *e, const sa_engine_opts *o);
void sa_engine_free(sa_engine *e);

/* Needs of items: what must be fetched before they can be applied. Window keys are
 * deduplicated; event ids may repeat (a repeated answer is ignored). */
typedef struct sa_needs {
  sa_argv ev_ids;    /* record keys "<region>|<id>", for HMGET qs:rt:evstate */
  uint64_t *ev_hash; /* their map hashes (n_ev_hash of them; the first ones, or none) */
  size_t n_ev_hash, cap_ev_hash;
  sa_argv win_keys; /* for HGET qs:rt:win + HGETALL qs:rt:mem:<key> */
  sa_smap seen;
} sa_needs;
void sa_needs_init(sa_needs *n);
void sa_needs_reset(sa_needs *n);
void sa_needs_free(sa_needs *n);

/* true if `it` can be applied now; otherwise adds what is missing to n (n may be NULL). Event
 * records are needed before windows can be known, so an item may need two rounds. */
bool sa_engine_ready_for(sa_engine *e, sa_item *it, sa_needs *n);

/* Hands over a fetched event record of key "<region>|<id>" (val NULL: never seen in that region).
 * Ignored if cached. */
void sa_engine_load_evstate(sa_engine *e, const char *key, const char *val, size_t len);
/* The same with the key's length and sa_smap_hash given. */
void sa_engine_load_evstate_h(sa_engine *e, const char *key, size_t klen, uint64_t hash,
                              const char *val, size_t len);
/* Hands over a fetched window: its row JSON (NULL: none) and member (id, contribution) pairs.
 * Ignored if cached. QS_ERR_INVALID if the stored state is inconsistent (it is then dropped). */
int sa_engine_load_window(sa_engine *e, const char *key, const char *row, size_t rowlen,
                          const char *const *ids, const char *const *vals, const size_t *val_lens,
                          size_t n);

/* Restores a partition from its checkpoint (sequence -1: none). */
void sa_engine_set_partition(sa_engine *e, int p, int64_t sequence, const char *offset,
                             int64_t max_time, int64_t watermark, int64_t now_ms);
const sa_partition *sa_engine_partition(const sa_engine *e, int p);
/* Forget a partition (lease released or lost); its cached state stays valid. */
void sa_engine_forget_partition(sa_engine *e, int p);

/* Applies one item; sa_engine_ready_for(e, it, ...) must be true. */
void sa_engine_apply(sa_engine *e, sa_item *it, int64_t now_ms);
/* Applies the item if the state it touches is cached (true), else changes nothing (false). One
 * set of lookups instead of ready_for + apply: the pipeline's hot path. */
bool sa_engine_try_apply(sa_engine *e, sa_item *it, int64_t now_ms);

/* Advances watermarks of idle partitions by wall clock. */
void sa_engine_tick(sa_engine *e, int64_t now_ms);

/* Sets (or with b NULL removes) a region's ANOMALY baseline. */
void sa_engine_set_baseline(sa_engine *e, const char *region, const qs_agg_baseline *b);
void sa_engine_clear_baselines(sa_engine *e);

bool sa_engine_has_changes(const sa_engine *e);
/* Appends the commit ops (see store.c's script) for every change since the last take, and the
 * partitions it covers into parts (at most SA_PARTITIONS_MAX); returns the number of items
 * covered. */
size_t sa_engine_take(sa_engine *e, sa_argv *ops, int *parts, size_t *nparts, int64_t now_ms);

/* Drops every cached record and window and every change not taken (after a failed commit). */
void sa_engine_reset(sa_engine *e);
/* When the cache holds more than max entries, drops every entry not changed since the last take
 * (they are re-read from Redis on demand); returns the entries left. Call it with no fetch in
 * flight. */
size_t sa_engine_trim_cache(sa_engine *e, size_t max);

/* Cached window of a region and start, or NULL (for tests and the rolling window). */
const sa_window *sa_engine_window(const sa_engine *e, const char *region, int64_t start_ms);
const sa_evrec *sa_engine_evrec(const sa_engine *e, const char *region, const char *id);

/* Key names (hub and group from the options). */
void sa_key_ckpt(const sa_engine *e, int p, char *buf, size_t cap);
void sa_key_open(const sa_engine *e, int p, char *buf, size_t cap);

/* Encoding of a member contribution and of an event record as stored in Redis. */
size_t sa_contrib_encode(const qs_contrib *c, char *buf, size_t cap);
int sa_contrib_decode(qs_contrib *c, const char *s, size_t len);

#endif
