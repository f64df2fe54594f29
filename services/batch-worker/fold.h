/* fold.h — the batch layer's computation: event bodies in, hourly and daily rows out.
 *
 * Every valid event body is folded into one entry per event_id (DESIGN.md "The event"): the
 * entry keeps the version with the greatest (updated, ingested_at, bw_body_hash of the body bytes),
 * so the winner does not depend on the order of the files or records. After the last body,
 * bw_fold_finish excludes deleted and superseded ids (explicit `change: superseded`, or listed in
 * the `ids` of another live event: the association rule; when two live events list each other,
 * the one with the greater (updated, event_id) survives) and aggregates the survivors into hourly
 * and daily rows per region with qs/agg.h. Rows come out sorted by (window start, region).
 *
 * Memory is per distinct event_id, never per record: an entry is 64 bytes plus the id and, for
 * events that carry ids other than their own, those ids; the index is a power-of-two array of
 * 8-byte slots (entry number and 32 bits of the id hash, so a probe rarely touches an entry) kept
 * at most 70% full (about 112 bytes per event in all, see README).
 *
 * A file that turns out corrupt half-way must leave no trace: bw_fold_mark / bw_fold_rollback
 * undo every change made since the mark (entries, ids, regions, counters).
 */
#ifndef BW_FOLD_H
#define BW_FOLD_H

#include <stddef.h>
#include <stdint.h>

#include "qs/agg.h"

#define BW_FOLD_MAX_REGIONS 4096
#define BW_FOLD_REGION_SLOTS 8192 /* region name hash slots: at most half full */

typedef struct bw_fold_stats {
  uint64_t bodies;   /* valid event bodies folded */
  uint64_t invalid;  /* bodies that are not a valid event */
  uint64_t kind_new; /* valid bodies by their `change` */
  uint64_t kind_revision;
  uint64_t kind_deleted;
  uint64_t kind_superseded;
  uint64_t kind_moved;       /* ignored: see docs/changes.md */
  uint64_t duplicates;       /* identical to the version already kept */
  uint64_t revisions_folded; /* bodies replaced by (or losing to) another version of their id */
  uint64_t out_of_range;     /* valid events qs_agg refuses (time/magnitude bounds): invalid */
} bw_fold_stats;

typedef struct bw_fold_result {
  qs_agg_row *hourly; /* sorted by (window_start_ms, region) */
  size_t n_hourly;
  qs_agg_row *daily; /* 1-day windows, same order */
  size_t n_daily;
  uint64_t events;              /* distinct event ids */
  uint64_t events_live;         /* counted in the rows */
  uint64_t excluded_deleted;    /* ids whose final version is a deletion */
  uint64_t excluded_superseded; /* ids superseded (explicitly or by another event's ids) */
} bw_fold_result;

struct bw_fold_entry;
struct bw_fold_undo;

typedef struct bw_fold {
  double significant_threshold;
  bw_fold_stats stats;
  struct bw_fold_entry *entries;
  size_t n, cap;
  uint64_t *index; /* (id hash >> 32) << 32 | (entry index + 1); 0 = empty */
  size_t index_mask;
  char *arena; /* event ids and ids lists */
  size_t arena_len, arena_cap;
  size_t arena_waste; /* bytes of ids lists of replaced versions (reclaimed by compaction) */
  char (*regions)[QS_AGG_REGION_MAX + 1];
  size_t n_regions;
  uint16_t *region_slots; /* hash of region names: index + 1, 0 = empty */
  /* Undo log since the last mark. */
  int marked;
  size_t mark_n, mark_arena, mark_regions, mark_waste;
  bw_fold_stats mark_stats;
  struct bw_fold_undo *undo;
  size_t n_undo, undo_cap;
} bw_fold;

void bw_fold_init(bw_fold *f, double significant_threshold);
void bw_fold_free(bw_fold *f);

/* Adds a region name to the known set (so the baseline covers regions without events). */
int bw_fold_add_region(bw_fold *f, const char *name);

/* Folds one Capture body. 0 = folded; QS_ERR_INVALID / QS_ERR_PARSE / QS_ERR_TOOBIG / QS_ERR_RANGE
 * when the body is not a usable event (counted in stats.invalid, why says what). */
int bw_fold_add_body(bw_fold *f, const uint8_t *body, size_t len, char *why, size_t whylen);

/* Starts recording undo information (discarding the previous mark). */
void bw_fold_mark(bw_fold *f);
/* Undo everything since the mark. */
void bw_fold_rollback(bw_fold *f);

/* Computes the rows. May be called once; the result is freed with bw_fold_result_free. */
int bw_fold_finish(bw_fold *f, bw_fold_result *res);
void bw_fold_result_free(bw_fold_result *res);

/* Bytes of memory the fold holds now (entries, index, arena), for the README's figure. */
size_t bw_fold_memory(const bw_fold *f);

/* The tie-break hash of a body: four FNV-1a style lanes over 32-byte blocks of little-endian
 * 64-bit words (lane k takes word k; each multiply followed by h ^= h >> 32), the remaining words
 * into lane 0, the tail bytes into lane 0, then the lanes and the length folded together.
 * tests/integration/batch_ref.py reproduces it. */
uint64_t bw_body_hash(const void *p, size_t n);

#endif
