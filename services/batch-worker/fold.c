/* fold.c — latest version per event_id, exclusions, hourly and daily rows (see fold.h).
 *
 * Invariants: entries[i] is the winning version of its id so far; index maps the id hash to
 * i + 1 with linear probing; arena holds each entry's id and, when the event names other ids, a
 * list "id\0id\0\0". Space of lists replaced by newer versions is counted in arena_waste and
 * reclaimed by compaction at the next mark (never while an undo log is open).
 */
#include "fold.h"

#include <endian.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "qs/error.h"
#include "qs/event.h"
#include "qs/hash.h"

#include "evfast.h"

#define NO_IDS UINT32_MAX

enum {
  F_HAS_MAG = 1 << 0,
  F_HAS_DEPTH = 1 << 1,
  F_TSUNAMI = 1 << 2,
  F_DELETED = 1 << 3,    /* final version is a deletion */
  F_SUPERSEDED = 1 << 4, /* final version says change: superseded */
  F_ASSOC_OUT = 1 << 5,  /* superseded by another live event's ids (set by finish) */
  F_SIGNIFICANT = 1 << 6,
};

/* What a lookup and a version comparison read comes first: malloc's 16-byte alignment puts the
 * first 48 bytes of an entry in one cache line. */
typedef struct bw_fold_entry {
  uint64_t id_hash;
  int64_t updated;
  int64_t ingested_at;
  uint64_t body_hash;
  uint32_t id_off;
  uint32_t ids_off; /* NO_IDS when the event lists no id but its own */
  uint8_t id_len;
  uint8_t flags;
  uint16_t region;
  int32_t mag_micro;   /* qs_contrib's, within [-2, 10.5] * 1e6 */
  int32_t depth_micro; /* qs_contrib's, within [-10, 1000] * 1e6 */
  int64_t time_ms;
} bw_fold_entry;

_Static_assert(sizeof(bw_fold_entry) == 64, "a fold entry is one cache line");
/* qs_contrib_init keeps magnitude within [QS_AGG_MAG_MIN, QS_AGG_MAG_MAX] = [-2, 10.5] and depth
 * within [QS_AGG_DEPTH_MIN_KM, QS_AGG_DEPTH_MAX_KM] = [-10, 1000]: in micro-units, 32 bits. */
_Static_assert(1000 * (int64_t)QS_AGG_MICRO <= INT32_MAX, "depth micro-units fit 32 bits");

typedef struct bw_fold_undo {
  size_t idx;
  bw_fold_entry old;
} bw_fold_undo;

/* Fresh memory that is about to be written all over (a grown index: its slots are spread over
 * every page), faulted in with one call rather than one page fault per 4 KiB (Linux 5.14+;
 * elsewhere, or on failure, the pages fault in as they are touched). */
static void prefault(void *p, size_t from, size_t to) {
#ifdef MADV_POPULATE_WRITE
  const uintptr_t page = 4096;
  uintptr_t a = ((uintptr_t)p + from + page - 1) & ~(page - 1),
            e = ((uintptr_t)p + to) & ~(page - 1);
  if (e > a && e - a >= ((uintptr_t)1 << 20))
    (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
  (void)p, (void)from, (void)to;
#endif
}

static inline uint64_t load_le64(const uint8_t *b) {
  uint64_t w;
  memcpy(&w, b, 8);
  return le64toh(w);
}

/* One lane step. The empty asm keeps the lane in a general register: GCC otherwise vectorizes
 * the four lanes with SSE2, which has no 64-bit multiply, and spells the multiply as a chain of
 * shifts and adds several times slower than imul. */
static inline uint64_t lane_step(uint64_t h, uint64_t w) {
  h ^= w;
  h *= QS_FNV1A64_PRIME;
  h ^= h >> 32; /* the multiply only carries upward: fold the high half back down */
  __asm__("" : "+r"(h));
  return h;
}

uint64_t bw_body_hash(const void *p, size_t n) {
  const uint8_t *b = p;
  const uint64_t prime = QS_FNV1A64_PRIME, basis = QS_FNV1A64_BASIS;
  uint64_t h0 = basis, h1 = basis ^ 1, h2 = basis ^ 2, h3 = basis ^ 3;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) { /* four independent lanes: the multiplies overlap */
    h0 = lane_step(h0, load_le64(b + i));
    h1 = lane_step(h1, load_le64(b + i + 8));
    h2 = lane_step(h2, load_le64(b + i + 16));
    h3 = lane_step(h3, load_le64(b + i + 24));
  }
  for (; i + 8 <= n; i += 8)
    h0 = lane_step(h0, load_le64(b + i));
  for (; i < n; i++) {
    h0 ^= b[i];
    h0 *= prime;
  }
  uint64_t r = h0;
  r = (r ^ h1) * prime;
  r = (r ^ h2) * prime;
  r = (r ^ h3) * prime;
  r ^= (uint64_t)n;
  r *= prime;
  return r;
}

void bw_fold_init(bw_fold *f, double significant_threshold) {
  memset(f, 0, sizeof *f);
  f->significant_threshold = significant_threshold;
  f->index_mask = 1023;
  f->index = qs_xcalloc(f->index_mask + 1, sizeof *f->index);
  f->region_slots = qs_xcalloc(BW_FOLD_REGION_SLOTS, sizeof *f->region_slots);
}

static uint64_t slot_of(uint64_t id_hash, size_t idx) {
  return (id_hash & UINT64_C(0xffffffff00000000)) | (uint64_t)(idx + 1);
}

void bw_fold_free(bw_fold *f) {
  free(f->entries);
  free(f->index);
  free(f->arena);
  free(f->regions);
  free(f->region_slots);
  free(f->undo);
  memset(f, 0, sizeof *f);
}

size_t bw_fold_memory(const bw_fold *f) {
  return f->cap * sizeof *f->entries + (f->index_mask + 1) * sizeof *f->index + f->arena_cap +
         BW_FOLD_REGION_SLOTS * sizeof *f->region_slots;
}

static const char *entry_id(const bw_fold *f, const bw_fold_entry *e) {
  return f->arena + e->id_off;
}

/* Appends n bytes, and a NUL when nul is set; returns their offset. */
static uint32_t arena_put(bw_fold *f, const void *p, size_t n, int nul) {
  size_t need = n + (nul ? 1 : 0);
  if (f->arena_len + need > f->arena_cap) {
    size_t cap = f->arena_cap ? f->arena_cap : 65536;
    while (cap < f->arena_len + need)
      cap *= 2;
    if (cap > UINT32_MAX)
      QS_FATAL("fold arena over 4 GiB");
    f->arena = qs_xrealloc(f->arena, cap);
    f->arena_cap = cap;
  }
  memcpy(f->arena + f->arena_len, p, n);
  if (nul)
    f->arena[f->arena_len + n] = '\0';
  uint32_t off = (uint32_t)f->arena_len;
  f->arena_len += need;
  return off;
}

static size_t ids_list_len(const char *list) {
  const char *p = list;
  while (*p)
    p += strlen(p) + 1;
  return (size_t)(p - list) + 1;
}

/* An id's first probe: from the hash's upper half, the part its slot keeps, so the index can
 * grow from its own slots without reading the entries. */
static inline size_t home_slot(const bw_fold *f, uint64_t id_hash) {
  return (size_t)(id_hash >> 32) & f->index_mask;
}

static void index_insert(bw_fold *f, size_t idx) {
  size_t s = home_slot(f, f->entries[idx].id_hash);
  while (f->index[s])
    s = (s + 1) & f->index_mask;
  f->index[s] = slot_of(f->entries[idx].id_hash, idx);
}

static void index_rebuild(bw_fold *f, size_t slots) {
  free(f->index);
  f->index_mask = slots - 1;
  f->index = qs_xcalloc(slots, sizeof *f->index);
  for (size_t i = 0; i < f->n; i++)
    index_insert(f, i);
}

/* Doubles the index, moving the slots (the entries are not read). */
static void index_grow(bw_fold *f) {
  size_t old_slots = f->index_mask + 1, slots = old_slots * 2;
  if (slots > (size_t)1 << 32)
    QS_FATAL("fold: index over 2^32 slots");
  uint64_t *old = f->index;
  f->index = qs_xcalloc(slots, sizeof *f->index);
  prefault(f->index, 0, slots * sizeof *f->index);
  f->index_mask = slots - 1;
  for (size_t i = 0; i < old_slots; i++) {
    if (!old[i])
      continue;
    size_t s = (size_t)(old[i] >> 32) & f->index_mask;
    while (f->index[s])
      s = (s + 1) & f->index_mask;
    f->index[s] = old[i];
  }
  free(old);
}

static long find_entry(const bw_fold *f, uint64_t h, const char *id, size_t len) {
  size_t s = home_slot(f, h);
  const uint64_t tag = h & UINT64_C(0xffffffff00000000);
  while (f->index[s]) {
    if ((f->index[s] & UINT64_C(0xffffffff00000000)) == tag) {
      size_t i = (size_t)(f->index[s] & 0xffffffffu) - 1;
      const bw_fold_entry *e = &f->entries[i];
      if (e->id_hash == h && e->id_len == len && memcmp(entry_id(f, e), id, len) == 0)
        return (long)i;
    }
    s = (s + 1) & f->index_mask;
  }
  return -1;
}

static size_t region_slot(const char *name, size_t len) {
  return (size_t)qs_fnv1a64(name, len) & (BW_FOLD_REGION_SLOTS - 1);
}

static void region_index_rebuild(bw_fold *f) {
  memset(f->region_slots, 0, BW_FOLD_REGION_SLOTS * sizeof *f->region_slots);
  for (size_t i = 0; i < f->n_regions; i++) {
    size_t s = region_slot(f->regions[i], strlen(f->regions[i]));
    while (f->region_slots[s])
      s = (s + 1) & (BW_FOLD_REGION_SLOTS - 1);
    f->region_slots[s] = (uint16_t)(i + 1);
  }
}

/* The index of region name[0..len), added when new and well-formed. */
static int region_lookup(bw_fold *f, const char *name, size_t len) {
  if (len == 0 || len > QS_AGG_REGION_MAX)
    return QS_ERR_INVALID;
  size_t s = region_slot(name, len);
  for (; f->region_slots[s]; s = (s + 1) & (BW_FOLD_REGION_SLOTS - 1)) {
    const char *have = f->regions[f->region_slots[s] - 1];
    size_t i = 0; /* names are short: a loop beats a call to memcmp */
    while (i < len && have[i] == name[i])
      i++;
    if (i == len && have[len] == '\0')
      return f->region_slots[s] - 1;
  }
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == ':' || c == '-'))
      return QS_ERR_INVALID;
  }
  if (f->n_regions >= BW_FOLD_MAX_REGIONS)
    return QS_ERR_TOOBIG;
  if ((f->n_regions & 63) == 0)
    f->regions = qs_xrealloc(f->regions, (f->n_regions + 64) * sizeof *f->regions);
  memcpy(f->regions[f->n_regions], name, len);
  f->regions[f->n_regions][len] = '\0';
  f->region_slots[s] = (uint16_t)(f->n_regions + 1);
  return (int)f->n_regions++;
}

int bw_fold_add_region(bw_fold *f, const char *name) {
  return region_lookup(f, name, strlen(name));
}

/* Total order of versions of one id: greater wins. */
static int version_cmp(const bw_fold_entry *a, const bw_fold_entry *b) {
  if (a->updated != b->updated)
    return a->updated < b->updated ? -1 : 1;
  if (a->ingested_at != b->ingested_at)
    return a->ingested_at < b->ingested_at ? -1 : 1;
  if (a->body_hash != b->body_hash)
    return a->body_hash < b->body_hash ? -1 : 1;
  return 0;
}

static void undo_push(bw_fold *f, size_t idx) {
  if (!f->marked || idx >= f->mark_n)
    return; /* entries created after the mark are dropped whole by rollback */
  if (f->n_undo == f->undo_cap) {
    f->undo_cap = f->undo_cap ? f->undo_cap * 2 : 256;
    f->undo = qs_xrealloc(f->undo, f->undo_cap * sizeof *f->undo);
  }
  f->undo[f->n_undo].idx = idx;
  f->undo[f->n_undo].old = f->entries[idx];
  f->n_undo++;
}

/* The event's other ids as an arena list, or NO_IDS. */
static uint32_t store_ids(bw_fold *f, const bw_event_view *ev) {
  if (!ev->n_other_ids)
    return NO_IDS;
  uint32_t off = NO_IDS;
  for (size_t i = 0; i < ev->n_other_ids; i++) {
    uint32_t o = arena_put(f, ev->other_ids[i].p, ev->other_ids[i].len, 1);
    if (off == NO_IDS)
      off = o;
  }
  arena_put(f, "", 0, 1);
  return off;
}

/* Producers (qs_event_to_json, the ingestor) write event_id first: hash it straight from the
 * bytes and start loading its index slot, so the cache miss overlaps the whole decode. Only a
 * hint: the decoded id is what counts (the hash is reused when the decoded id is these bytes).
 * Returns the hashed bytes' length, 0 when the body does not start that way. */
#define ID_HEAD "{\"event_id\":\""

static size_t prefetch_slot(const bw_fold *f, const uint8_t *body, size_t len, uint64_t *hash) {
  const size_t hl = sizeof ID_HEAD - 1; /* 13: two overlapping words */
  uint64_t a, b, x, y;
  if (len <= hl)
    return 0;
  memcpy(&a, body, 8);
  memcpy(&b, body + hl - 8, 8);
  memcpy(&x, ID_HEAD, 8);
  memcpy(&y, ID_HEAD + hl - 8, 8);
  if (a != x || b != y)
    return 0;
  size_t room = len - hl < QS_EVENT_ID_MAX + 1 ? len - hl : QS_EVENT_ID_MAX + 1;
  const uint8_t *q = memchr(body + hl, '"', room);
  if (!q)
    return 0;
  size_t n = (size_t)(q - body - hl);
  *hash = qs_fnv1a64(body + hl, n);
  __builtin_prefetch(&f->index[home_slot(f, *hash)]);
  return n;
}

int bw_fold_add_body(bw_fold *f, const uint8_t *body, size_t len, char *why, size_t whylen) {
  static __thread qs_event scratch; /* 4 KiB: kept off the worker thread's stack */
  static __thread bw_event_view ev;
  uint64_t id_hash = 0;
  size_t hashed = prefetch_slot(f, body, len, &id_hash);
  int rc = bw_event_decode(&ev, &scratch, (const char *)body, len, why, whylen);
  if (rc) {
    f->stats.invalid++;
    return rc;
  }
  int region = region_lookup(f, ev.region.p, ev.region.len);
  if (region < 0) {
    qs_set_reason(why, whylen, "region: \"%.*s\" is not a usable region name", (int)ev.region.len,
                  ev.region.p);
    f->stats.invalid++;
    return region == QS_ERR_TOOBIG ? QS_ERR_TOOBIG : QS_ERR_INVALID;
  }
  qs_contrib c;
  rc = qs_contrib_init(&c, ev.time, ev.has_magnitude ? ev.magnitude : NAN,
                       ev.has_depth ? ev.depth_km : NAN, ev.tsunami_flag, f->significant_threshold);
  if (rc) {
    qs_set_reason(why, whylen, "event %.*s: time, magnitude or depth outside the aggregate bounds",
                  (int)ev.event_id.len, ev.event_id.p);
    f->stats.invalid++;
    f->stats.out_of_range++;
    return QS_ERR_RANGE;
  }
  bw_fold_entry cand = {0};
  size_t id_len = ev.event_id.len;
  cand.id_hash = ev.event_id.p == (const char *)body + sizeof ID_HEAD - 1 && id_len == hashed
                     ? id_hash
                     : qs_fnv1a64(ev.event_id.p, id_len);
  cand.updated = ev.updated;
  cand.ingested_at = ev.ingested_at;
  cand.time_ms = c.time_ms;
  cand.mag_micro = (int32_t)c.mag_micro; /* the bounds qs_contrib_init enforces fit 32 bits */
  cand.depth_micro = (int32_t)c.depth_micro;
  cand.region = (uint16_t)region;
  cand.id_len = (uint8_t)id_len;
  cand.flags = (uint8_t)((c.has_mag ? F_HAS_MAG : 0) | (c.has_depth ? F_HAS_DEPTH : 0) |
                         (c.tsunami ? F_TSUNAMI : 0) | (c.significant ? F_SIGNIFICANT : 0));
  if (ev.change == QS_EVENT_SUPERSEDED)
    cand.flags |= F_SUPERSEDED;
  else if (ev.change == QS_EVENT_DELETED || ev.status_deleted)
    cand.flags |= F_DELETED;

  f->stats.bodies++;
  switch (ev.change) {
  case QS_EVENT_NEW:
    f->stats.kind_new++;
    break;
  case QS_EVENT_REVISION:
    f->stats.kind_revision++;
    break;
  case QS_EVENT_DELETED:
    f->stats.kind_deleted++;
    break;
  case QS_EVENT_SUPERSEDED:
    f->stats.kind_superseded++;
    break;
  case QS_EVENT_MOVED:
    /* Only tells the speed layer to drop the event from its old region; the revision sent with
     * it carries the same version (docs/changes.md). Not a version of the event. */
    f->stats.kind_moved++;
    return 0;
  }

  long at = find_entry(f, cand.id_hash, ev.event_id.p, id_len);
  if (at >= 0) {
    bw_fold_entry *e = &f->entries[at];
    /* The body hash only breaks ties: a version that loses on (updated, ingested_at) needs
     * none. */
    if (cand.updated < e->updated ||
        (cand.updated == e->updated && cand.ingested_at < e->ingested_at)) {
      f->stats.revisions_folded++;
      return 0;
    }
    cand.body_hash = bw_body_hash(body, len);
    int cmp = version_cmp(&cand, e);
    if (cmp == 0) {
      f->stats.duplicates++;
      return 0;
    }
    f->stats.revisions_folded++;
    if (cmp < 0)
      return 0;
    undo_push(f, (size_t)at);
    if (e->ids_off != NO_IDS)
      f->arena_waste += ids_list_len(f->arena + e->ids_off);
    cand.id_off = e->id_off;
    cand.ids_off = store_ids(f, &ev);
    *e = cand;
    return 0;
  }
  cand.body_hash = bw_body_hash(body, len);
  if (f->n == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 4096;
    if (f->cap > UINT32_MAX - 1)
      QS_FATAL("fold: too many event ids");
    f->entries = qs_xrealloc(f->entries, f->cap * sizeof *f->entries);
  }
  cand.id_off = arena_put(f, ev.event_id.p, id_len, 1);
  cand.ids_off = store_ids(f, &ev);
  f->entries[f->n++] = cand;
  index_insert(f, f->n - 1);
  if (f->n * 10 > (f->index_mask + 1) * 7)
    index_grow(f);
  return 0;
}

/* Copies every live id and ids list into a fresh arena (drops lists of replaced versions). */
static void arena_compact(bw_fold *f) {
  char *old = f->arena;
  f->arena = NULL;
  f->arena_len = f->arena_cap = 0;
  for (size_t i = 0; i < f->n; i++) {
    bw_fold_entry *e = &f->entries[i];
    e->id_off = arena_put(f, old + e->id_off, (size_t)e->id_len + 1, 0);
    if (e->ids_off != NO_IDS) {
      const char *list = old + e->ids_off;
      e->ids_off = arena_put(f, list, ids_list_len(list), 0);
    }
  }
  free(old);
}

void bw_fold_mark(bw_fold *f) {
  /* Reclaim replaced ids lists once they are over half the arena (never inside a marked span:
   * the undo log refers to arena offsets). */
  if (f->arena_len > ((size_t)1 << 20) && f->arena_waste * 2 > f->arena_len) {
    arena_compact(f);
    f->arena_waste = 0;
  }
  f->marked = 1;
  f->mark_n = f->n;
  f->mark_arena = f->arena_len;
  f->mark_regions = f->n_regions;
  f->mark_waste = f->arena_waste;
  f->mark_stats = f->stats;
  f->n_undo = 0;
}

void bw_fold_rollback(bw_fold *f) {
  if (!f->marked)
    return;
  while (f->n_undo > 0) {
    f->n_undo--;
    f->entries[f->undo[f->n_undo].idx] = f->undo[f->n_undo].old;
  }
  int shrink = f->n != f->mark_n, regions_shrink = f->n_regions != f->mark_regions;
  f->n = f->mark_n;
  f->arena_len = f->mark_arena;
  f->arena_waste = f->mark_waste;
  f->n_regions = f->mark_regions;
  f->stats = f->mark_stats;
  if (shrink)
    index_rebuild(f, f->index_mask + 1);
  if (regions_shrink)
    region_index_rebuild(f);
}

/* ---- finish: exclusions and rows ----------------------------------------------------------- */

typedef struct rowmap {
  qs_agg_row *rows;
  size_t n, cap;
  uint32_t *slots;
  size_t mask;
  uint16_t *regions; /* region index per row */
} rowmap;

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= UINT64_C(0xff51afd7ed558ccd);
  x ^= x >> 33;
  x *= UINT64_C(0xc4ceb9fe1a85ec53);
  x ^= x >> 33;
  return x;
}

static void rowmap_init(rowmap *m) {
  memset(m, 0, sizeof *m);
  m->mask = 255;
  m->slots = qs_xcalloc(m->mask + 1, sizeof *m->slots);
}

static void rowmap_free_index(rowmap *m) {
  free(m->slots);
  free(m->regions);
  m->slots = NULL;
  m->regions = NULL;
}

static size_t rowmap_slot(const rowmap *m, int64_t start, uint16_t region) {
  return (size_t)mix64((uint64_t)start * 65599u + region) & m->mask;
}

/* The row of (window start, region), created empty when new. */
static int rowmap_get(rowmap *m, const bw_fold *f, int64_t start, int64_t len, uint16_t region,
                      qs_agg_row **out) {
  size_t s = rowmap_slot(m, start, region);
  while (m->slots[s]) {
    size_t i = m->slots[s] - 1;
    if (m->rows[i].window_start_ms == start && m->regions[i] == region) {
      *out = &m->rows[i];
      return 0;
    }
    s = (s + 1) & m->mask;
  }
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 256;
    m->rows = qs_xrealloc(m->rows, m->cap * sizeof *m->rows);
    m->regions = qs_xrealloc(m->regions, m->cap * sizeof *m->regions);
  }
  int rc = qs_agg_row_init(&m->rows[m->n], f->regions[region], start, start + len);
  if (rc)
    return rc;
  m->regions[m->n] = region;
  m->slots[s] = (uint32_t)(m->n + 1);
  m->n++;
  if (m->n * 10 > (m->mask + 1) * 7) {
    free(m->slots);
    m->mask = m->mask * 2 + 1;
    m->slots = qs_xcalloc(m->mask + 1, sizeof *m->slots);
    for (size_t i = 0; i < m->n; i++) {
      size_t t = rowmap_slot(m, m->rows[i].window_start_ms, m->regions[i]);
      while (m->slots[t])
        t = (t + 1) & m->mask;
      m->slots[t] = (uint32_t)(i + 1);
    }
  }
  *out = &m->rows[m->n - 1];
  return 0;
}

static int row_cmp(const void *a, const void *b) {
  const qs_agg_row *x = a, *y = b;
  if (x->window_start_ms != y->window_start_ms)
    return x->window_start_ms < y->window_start_ms ? -1 : 1;
  return strcmp(x->region, y->region);
}

static int entry_live(const bw_fold_entry *e) { return !(e->flags & (F_DELETED | F_SUPERSEDED)); }

static int lists_id(const bw_fold *f, const bw_fold_entry *e, const char *id) {
  if (e->ids_off == NO_IDS)
    return 0;
  for (const char *p = f->arena + e->ids_off; *p; p += strlen(p) + 1)
    if (strcmp(p, id) == 0)
      return 1;
  return 0;
}

/* Association: a live event that lists another live id supersedes it; of two live events that
 * list each other, the greater (updated, event_id) survives. */
static void apply_associations(bw_fold *f) {
  for (size_t i = 0; i < f->n; i++) {
    bw_fold_entry *e = &f->entries[i];
    if (!entry_live(e) || e->ids_off == NO_IDS)
      continue;
    for (const char *p = f->arena + e->ids_off; *p; p += strlen(p) + 1) {
      size_t len = strlen(p);
      long j = find_entry(f, qs_fnv1a64(p, len), p, len);
      if (j < 0 || (size_t)j == i)
        continue;
      bw_fold_entry *x = &f->entries[j];
      if (!entry_live(x))
        continue;
      if (lists_id(f, x, entry_id(f, e))) {
        int e_wins = e->updated != x->updated ? e->updated > x->updated
                                              : strcmp(entry_id(f, e), entry_id(f, x)) > 0;
        (e_wins ? x : e)->flags |= F_ASSOC_OUT;
      } else {
        x->flags |= F_ASSOC_OUT;
      }
    }
  }
}

int bw_fold_finish(bw_fold *f, bw_fold_result *res) {
  memset(res, 0, sizeof *res);
  f->marked = 0;
  apply_associations(f);
  rowmap hours, days;
  rowmap_init(&hours);
  rowmap_init(&days);
  int rc = 0;
  res->events = f->n;
  for (size_t i = 0; i < f->n && rc == 0; i++) {
    const bw_fold_entry *e = &f->entries[i];
    if (e->flags & F_DELETED) {
      res->excluded_deleted++;
      continue;
    }
    if (e->flags & (F_SUPERSEDED | F_ASSOC_OUT)) {
      res->excluded_superseded++;
      continue;
    }
    res->events_live++;
    /* The contribution qs_contrib_init built when the body was folded, field for field. */
    qs_contrib c = {.time_ms = e->time_ms,
                    .mag_micro = e->mag_micro,
                    .depth_micro = e->depth_micro,
                    .has_mag = (e->flags & F_HAS_MAG) != 0,
                    .has_depth = (e->flags & F_HAS_DEPTH) != 0,
                    .tsunami = (e->flags & F_TSUNAMI) != 0,
                    .significant = (e->flags & F_SIGNIFICANT) != 0};
    int64_t start, end;
    qs_agg_row *row;
    if ((rc = qs_agg_window_of(e->time_ms, QS_AGG_HOUR_MS, &start, &end)) ||
        (rc = rowmap_get(&hours, f, start, QS_AGG_HOUR_MS, e->region, &row)) ||
        (rc = qs_agg_row_add(row, &c)))
      break;
  }
  for (size_t i = 0; i < hours.n && rc == 0; i++) {
    int64_t start, end;
    qs_agg_row *day;
    if ((rc = qs_agg_window_of(hours.rows[i].window_start_ms, QS_AGG_DAY_MS, &start, &end)) ||
        (rc = rowmap_get(&days, f, start, QS_AGG_DAY_MS, hours.regions[i], &day)) ||
        (rc = qs_agg_row_rollup(day, &hours.rows[i])))
      break;
  }
  rowmap_free_index(&hours);
  rowmap_free_index(&days);
  res->hourly = hours.rows;
  res->n_hourly = hours.n;
  res->daily = days.rows;
  res->n_daily = days.n;
  if (rc) {
    bw_fold_result_free(res);
    return rc;
  }
  if (res->n_hourly > 1) /* qsort's base must not be NULL, even for 0 rows */
    qsort(res->hourly, res->n_hourly, sizeof *res->hourly, row_cmp);
  if (res->n_daily > 1)
    qsort(res->daily, res->n_daily, sizeof *res->daily, row_cmp);
  return 0;
}

void bw_fold_result_free(bw_fold_result *res) {
  free(res->hourly);
  free(res->daily);
  memset(res, 0, sizeof *res);
}
