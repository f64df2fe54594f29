/* engine.c — the speed layer's state machine (see engine.h for the contract).
 *
 * Invariants:
 * - A cached window's aggregate equals the qs_agg sum of its cached members, and a live event
 *   record's contribution is a member of exactly the window (region, window of its time).
 * - Every change since the last take is reachable from the dirty lists, so one take yields one
 *   atomic commit that moves Redis from one consistent state to the next.
 * - Nothing in here reads a clock: the caller passes now_ms, so tests are deterministic.
 */
#include "engine.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "qs/buf.h"
#include "qs/error.h"
#include "qs/hash.h"

#define CHUNK_PAIRS 400 /* fields per grouped HSET/ZADD: stays far below Lua's unpack limit */

void sa_engine_opts_default(sa_engine_opts *o) {
  memset(o, 0, sizeof *o);
  o->hub = "earthquake-events";
  o->consumer_group = "$Default";
  o->window_ms = QS_AGG_WINDOW_5MIN_MS;
  o->tolerance_ms = 60000;
  o->lateness_ms = 300000;
  o->idle_ms = 30000;
  o->significant = QS_AGG_SIGNIFICANT_DEFAULT;
  o->spike_magnitude = 6.0;
  o->volume_threshold = 50;
  o->anomaly_sigma = 2.0;
  o->dlq_max = 10000;
}

/* ---- items -------------------------------------------------------------------------------- */

static bool region_ok_n(const char *r, size_t n) {
  if (n == 0 || n > QS_AGG_REGION_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = r[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == ':' || ch == '-'))
      return false;
  }
  return true;
}

/* src (n bytes; cut to cap - 1) into dst, NUL-terminated; returns the bytes copied. */
static size_t put_str(char *dst, size_t cap, const char *src, size_t n) {
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return n;
}

/* "<region>|<id>" into buf (SA_EVKEY_MAX bytes), from their lengths; returns the key's length. */
static size_t evrec_key_n(char *buf, const char *region, size_t rl, const char *id, size_t il) {
  size_t n = put_str(buf, QS_EVENT_SHORT_MAX + 1, region, rl);
  buf[n++] = '|';
  return n + put_str(buf + n, QS_EVENT_ID_MAX + 1, id, il);
}

void sa_item_parse(sa_item *it) {
  static qs_event full; /* the aggregator is single-threaded */
  it->why[0] = '\0';
  it->rec = NULL;
  it->parse_rc = qs_event_from_json(&full, it->body, it->len, it->why, sizeof it->why);
  if (it->parse_rc != 0)
    return;
  sa_event *ev = &it->ev;
  size_t il = strlen(full.event_id), rl = strlen(full.region);
  put_str(ev->event_id, sizeof ev->event_id, full.event_id, il);
  ev->event_id_len = il;
  put_str(ev->region, sizeof ev->region, full.region, rl);
  put_str(ev->place, sizeof ev->place, full.place, strlen(full.place));
  ev->change = full.change;
  ev->has_magnitude = full.has_magnitude;
  ev->has_depth = full.has_depth;
  ev->tsunami_flag = full.tsunami_flag;
  ev->time = full.time;
  ev->updated = full.updated;
  ev->magnitude = full.magnitude;
  ev->depth_km = full.depth_km;
  if (!region_ok_n(ev->region, rl)) {
    it->parse_rc = QS_ERR_INVALID;
    snprintf(it->why, sizeof it->why, "region: not a valid region name");
    return;
  }
  evrec_key_n(it->evkey, ev->region, rl, ev->event_id, il);
  it->region_len = rl;
  it->evhash = sa_smap_hash(it->evkey);
}

/* ---- encodings ---------------------------------------------------------------------------- */

static size_t copy_str(char *dst, size_t cap, const char *src) {
  return put_str(dst, cap, src, strlen(src));
}

size_t sa_contrib_encode(const qs_contrib *c, char *buf, size_t cap) {
  char tmp[80];
  /* Straight into buf when it surely fits (the longest encoding is 3 * 20 + 4 bytes). */
  char *t = cap >= sizeof tmp ? buf : tmp;
  size_t n = qs_i64_str(c->time_ms, t);
  t[n++] = ',';
  if (c->has_mag)
    n += qs_i64_str(c->mag_micro, t + n);
  else
    t[n++] = 'n';
  t[n++] = ',';
  if (c->has_depth)
    n += qs_i64_str(c->depth_micro, t + n);
  else
    t[n++] = 'n';
  t[n++] = ',';
  t[n++] = (char)('0' + ((c->tsunami ? 1 : 0) | (c->significant ? 2 : 0)));
  t[n] = '\0';
  return t == buf ? n : copy_str(buf, cap, t);
}

static const char *parse_i64(const char *s, const char *end, int64_t *out) {
  bool neg = false;
  if (s < end && *s == '-') {
    neg = true;
    s++;
  }
  if (s >= end || *s < '0' || *s > '9')
    return NULL;
  int64_t v = 0;
  for (; s < end && *s >= '0' && *s <= '9'; s++) {
    if (v > (INT64_MAX - 9) / 10)
      return NULL;
    v = v * 10 + (*s - '0');
  }
  *out = neg ? -v : v;
  return s;
}

int sa_contrib_decode(qs_contrib *c, const char *s, size_t len) {
  const char *end = s + len;
  memset(c, 0, sizeof *c);
  int64_t v;
  if (!(s = parse_i64(s, end, &c->time_ms)) || s >= end || *s++ != ',')
    return QS_ERR_PARSE;
  if (s < end && *s == 'n') {
    s++;
  } else {
    if (!(s = parse_i64(s, end, &c->mag_micro)))
      return QS_ERR_PARSE;
    c->has_mag = true;
  }
  if (s >= end || *s++ != ',')
    return QS_ERR_PARSE;
  if (s < end && *s == 'n') {
    s++;
  } else {
    if (!(s = parse_i64(s, end, &c->depth_micro)))
      return QS_ERR_PARSE;
    c->has_depth = true;
  }
  if (s >= end || *s++ != ',' || !(s = parse_i64(s, end, &v)) || s != end || v < 0 || v > 3)
    return QS_ERR_PARSE;
  c->tsunami = v & 1;
  c->significant = (v & 2) != 0;
  return 0;
}

/* Event record: "<updated>|<change>|<region>|<contribution or empty>". */
static size_t evrec_encode(const sa_evrec *r, char *buf, size_t cap) {
  char tmp[256];
  char *t = cap >= sizeof tmp ? buf : tmp; /* straight into buf when it surely fits */
  size_t n = qs_i64_str(r->updated, t);
  t[n++] = '|';
  t[n++] = r->change;
  t[n++] = '|';
  memcpy(t + n, r->key, r->region_len);
  n += r->region_len;
  t[n++] = '|';
  n += sa_contrib_encode(&r->c, t + n, sizeof tmp - n);
  return t == buf ? n : copy_str(buf, cap, t);
}

static int evrec_decode(sa_evrec *r, const char *s, size_t len) {
  const char *end = s + len;
  if (!(s = parse_i64(s, end, &r->updated)) || end - s < 3 || s[0] != '|' || s[2] != '|')
    return QS_ERR_PARSE;
  r->change = s[1];
  if (!strchr("NRDSM", r->change))
    return QS_ERR_PARSE;
  s += 3;
  /* The region field repeats the key's (old tombstones may have it empty): the key is used. */
  const char *bar = memchr(s, '|', (size_t)(end - s));
  if (!bar || (size_t)(bar - s) > QS_EVENT_SHORT_MAX)
    return QS_ERR_PARSE;
  int rc = sa_contrib_decode(&r->c, bar + 1, (size_t)(end - bar - 1));
  if (rc != 0)
    return rc;
  r->live = r->change == 'N' || r->change == 'R';
  r->exists = true;
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

void sa_engine_init(sa_engine *e, const sa_engine_opts *o) {
  memset(e, 0, sizeof *e);
  e->o = *o;
  snprintf(e->hub, sizeof e->hub, "%s", o->hub);
  snprintf(e->group, sizeof e->group, "%s", o->consumer_group);
  e->o.hub = e->hub;
  e->o.consumer_group = e->group;
  sa_smap_init_borrowed(&e->evrecs);  /* key: the record's key, region|id */
  sa_smap_init_borrowed(&e->windows); /* key: the window's key */
  sa_smap_init(&e->baselines);
  sa_argv_init(&e->alerts);
  sa_argv_init(&e->dlq);
  sa_argv_init(&e->pubs);
  for (int p = 0; p < SA_PARTITIONS_MAX; p++) {
    e->parts[p].sequence = -1;
    e->parts[p].max_time = INT64_MIN;
    e->parts[p].watermark = INT64_MIN;
  }
}

static void members_free(sa_member_list *m) {
  sa_pidx_free(&m->idx);
  free(m->ids);
  free(m->c);
  memset(m, 0, sizeof *m);
}

static void window_free(sa_window *w) {
  members_free(&w->mem);
  free(w->changed);
  free(w);
}

/* ---- record chunks ------------------------------------------------------------------------ */

#define REC_CHUNK (1u << 20)

typedef struct sa_rec_chunk {
  struct sa_rec_chunk *next;
  size_t used, cap;
  _Alignas(16) char data[];
} sa_rec_chunk;

static size_t evrec_size(size_t klen) { return (sizeof(sa_evrec) + klen + 1 + 15) & ~(size_t)15; }

/* Room for a record with a key of klen bytes (zeroed up to the key). */
static sa_evrec *evrec_alloc(sa_rec_chunk **chunks, size_t klen) {
  size_t size = evrec_size(klen);
  sa_rec_chunk *c = *chunks;
  if (!c || c->used + size > c->cap) {
    c = qs_xmalloc(sizeof *c + REC_CHUNK);
    c->next = *chunks;
    c->used = 0;
    c->cap = REC_CHUNK;
    *chunks = c;
  }
  sa_evrec *r = (sa_evrec *)(void *)(c->data + c->used);
  c->used += size;
  memset(r, 0, sizeof *r);
  return r;
}

static void rec_chunks_free(sa_rec_chunk *c) {
  while (c) {
    sa_rec_chunk *next = c->next;
    free(c);
    c = next;
  }
}

static void drop_caches(sa_engine *e) {
  memset(e->wcache, 0, sizeof e->wcache);
  e->cache_gen++;
  rec_chunks_free(e->rec_chunks);
  e->rec_chunks = NULL;
  for (size_t i = 0; i < e->windows.cap; i++)
    if (e->windows.slots[i].key)
      window_free(e->windows.slots[i].value);
  sa_smap_free(&e->evrecs);
  sa_smap_free(&e->windows);
}

static void clear_changes(sa_engine *e) {
  e->n_dirty_ev = 0;
  e->n_dirty_win = 0;
  e->bodies_used = 0;
  sa_argv_reset(&e->alerts);
  sa_argv_reset(&e->dlq);
  sa_argv_reset(&e->pubs);
  e->pending_items = 0;
  for (int p = 0; p < SA_PARTITIONS_MAX; p++)
    e->parts[p].dirty = false;
}

void sa_engine_clear_baselines(sa_engine *e) {
  for (size_t i = 0; i < e->baselines.cap; i++)
    if (e->baselines.slots[i].key)
      free(e->baselines.slots[i].value);
  sa_smap_free(&e->baselines);
}

void sa_engine_free(sa_engine *e) {
  drop_caches(e);
  sa_engine_clear_baselines(e);
  free(e->dirty_ev);
  free(e->dirty_win);
  free(e->bodies);
  sa_argv_free(&e->alerts);
  sa_argv_free(&e->dlq);
  sa_argv_free(&e->pubs);
  qs_buf_free(&e->scratch);
}

void sa_engine_reset(sa_engine *e) {
  clear_changes(e);
  drop_caches(e);
  for (int p = 0; p < SA_PARTITIONS_MAX; p++) {
    e->parts[p].known = false;
    e->parts[p].sequence = -1;
    e->parts[p].max_time = INT64_MIN;
    e->parts[p].watermark = INT64_MIN;
  }
}

size_t sa_engine_trim_cache(sa_engine *e, size_t max) {
  size_t n = e->evrecs.len + e->windows.len;
  if (n <= max)
    return n;
  /* Keep what changed since the last take (the dirty lists point at it); drop the rest, which
   * Redis holds (or will, once the commit in flight lands: later fetches queue behind it). */
  e->cache_gen++;
  sa_smap keep;
  sa_smap_init_borrowed(&keep);
  /* The dirty records (exactly those of the dirty list) move to fresh chunks; the rest go with
   * the old chunks. */
  sa_rec_chunk *kept = NULL;
  for (size_t i = 0; i < e->n_dirty_ev; i++) {
    sa_evrec *r = e->dirty_ev[i];
    size_t klen = sa_evrec_key_len(r);
    sa_evrec *moved = evrec_alloc(&kept, klen);
    memcpy(moved, r, sizeof *r + klen + 1);
    r->moved_to = moved;
    e->dirty_ev[i] = moved;
    sa_smap_put(&keep, moved->key, moved);
  }
  /* The dirty windows' changed lists point at dirty records: follow them to their new place. */
  for (size_t i = 0; i < e->n_dirty_win; i++) {
    sa_window *w = e->dirty_win[i];
    for (size_t j = 0; j < w->n_changed; j++) {
      if (!w->changed[j]->moved_to)
        QS_FATAL("window %s: a changed member's record is not dirty", w->key);
      w->changed[j] = w->changed[j]->moved_to;
    }
  }
  rec_chunks_free(e->rec_chunks);
  e->rec_chunks = kept;
  sa_smap_free(&e->evrecs);
  e->evrecs = keep;
  sa_smap_init_borrowed(&keep);
  for (size_t i = 0; i < e->windows.cap; i++) {
    sa_window *w = e->windows.slots[i].value;
    if (!e->windows.slots[i].key)
      continue;
    if (w->dirty)
      sa_smap_put(&keep, e->windows.slots[i].key, w);
    else
      window_free(w);
  }
  sa_smap_free(&e->windows);
  e->windows = keep;
  memset(e->wcache, 0, sizeof e->wcache);
  return e->evrecs.len + e->windows.len;
}

void sa_engine_set_baseline(sa_engine *e, const char *region, const qs_agg_baseline *b) {
  qs_agg_baseline *old = sa_smap_del(&e->baselines, region);
  free(old);
  if (b) {
    qs_agg_baseline *c = qs_xmalloc(sizeof *c);
    *c = *b;
    sa_smap_put(&e->baselines, region, c);
  }
}

/* "<prefix><hub>:<group>:<p>" cut to cap - 1 bytes (snprintf's result, without its cost: the
 * open-window key is built once per changed window per commit). */
static void partition_key(const sa_engine *e, const char *prefix, int p, char *buf, size_t cap) {
  char t[600], num[24];
  size_t n = 0, hl = strlen(e->hub), gl = strlen(e->group), pl = strlen(prefix);
  memcpy(t, prefix, pl);
  n = pl;
  memcpy(t + n, e->hub, hl);
  n += hl;
  t[n++] = ':';
  memcpy(t + n, e->group, gl);
  n += gl;
  t[n++] = ':';
  size_t nl = qs_i64_str(p, num);
  memcpy(t + n, num, nl + 1);
  copy_str(buf, cap, t);
}

void sa_key_ckpt(const sa_engine *e, int p, char *buf, size_t cap) {
  partition_key(e, "qs:ckpt:", p, buf, cap);
}

void sa_key_open(const sa_engine *e, int p, char *buf, size_t cap) {
  partition_key(e, "qs:rt:open:", p, buf, cap);
}

/* ---- partitions --------------------------------------------------------------------------- */

void sa_engine_set_partition(sa_engine *e, int p, int64_t sequence, const char *offset,
                             int64_t max_time, int64_t watermark, int64_t now_ms) {
  if (p < 0 || p >= SA_PARTITIONS_MAX)
    return;
  sa_partition *pt = &e->parts[p];
  pt->known = true;
  pt->sequence = sequence;
  snprintf(pt->offset, sizeof pt->offset, "%s", offset ? offset : "");
  pt->max_time = max_time;
  pt->watermark = watermark;
  pt->last_event_wall = now_ms;
  pt->last_tick_wall = now_ms;
  pt->dirty = false;
}

const sa_partition *sa_engine_partition(const sa_engine *e, int p) {
  return (p >= 0 && p < SA_PARTITIONS_MAX) ? &e->parts[p] : NULL;
}

void sa_engine_forget_partition(sa_engine *e, int p) {
  if (p < 0 || p >= SA_PARTITIONS_MAX)
    return;
  e->parts[p].known = false;
  e->parts[p].dirty = false;
  e->parts[p].sequence = -1;
  e->parts[p].max_time = INT64_MIN;
  e->parts[p].watermark = INT64_MIN;
}

static void advance_watermark(sa_engine *e, sa_partition *pt, int64_t t) {
  if (pt->max_time == INT64_MIN || t > pt->max_time)
    pt->max_time = t;
  int64_t cand = pt->max_time - e->o.tolerance_ms;
  if (pt->watermark == INT64_MIN || cand > pt->watermark)
    pt->watermark = cand;
}

void sa_engine_tick(sa_engine *e, int64_t now_ms) {
  for (int p = 0; p < SA_PARTITIONS_MAX; p++) {
    sa_partition *pt = &e->parts[p];
    if (!pt->known) {
      continue;
    }
    int64_t since = now_ms - pt->last_tick_wall;
    if (pt->watermark != INT64_MIN && since > 0 && now_ms - pt->last_event_wall >= e->o.idle_ms) {
      pt->watermark += since; /* idle: event time is taken to advance with the wall clock */
      pt->dirty = true;
    }
    pt->last_tick_wall = now_ms;
  }
}

/* ---- cache -------------------------------------------------------------------------------- */

/* "<region>|<start>" of a region given with its length (it may be the head of a record key). */
static void window_key_n(char *buf, size_t cap, const char *region, size_t rlen, int64_t start) {
  char t[SA_KEY_MAX + 32];
  if (rlen > SA_KEY_MAX - 1)
    rlen = SA_KEY_MAX - 1;
  memcpy(t, region, rlen);
  size_t n = rlen;
  t[n++] = '|';
  qs_i64_str(start, t + n);
  copy_str(buf, cap, t);
}

static void window_key(char *buf, size_t cap, const char *region, int64_t start) {
  window_key_n(buf, cap, region, strlen(region), start);
}

const sa_window *sa_engine_window(const sa_engine *e, const char *region, int64_t start_ms) {
  char k[SA_KEY_MAX];
  window_key(k, sizeof k, region, start_ms);
  return sa_smap_get(&e->windows, k);
}

static sa_window *window_get(sa_engine *e, const char *region, size_t rlen, int64_t t);

/* The cached record of an item (parse_rc 0), or NULL; looked up with the item's hash once, then
 * kept in the item until the cache drops records. */
static sa_evrec *item_rec(sa_engine *e, sa_item *it) {
  if (it->rec && it->rec_gen == e->cache_gen)
    return it->rec;
  sa_evrec *r = sa_smap_get_h(&e->evrecs, it->evkey, it->evhash);
  it->rec = r;
  it->rec_gen = e->cache_gen;
  return r;
}

const sa_evrec *sa_engine_evrec(const sa_engine *e, const char *region, const char *id) {
  char k[SA_EVKEY_MAX];
  evrec_key_n(k, region, strlen(region), id, strlen(id));
  return sa_smap_get(&e->evrecs, k);
}

void sa_needs_init(sa_needs *n) {
  memset(n, 0, sizeof *n);
  sa_argv_init(&n->ev_ids);
  sa_argv_init(&n->win_keys);
  sa_smap_init(&n->seen);
}

void sa_needs_reset(sa_needs *n) {
  sa_argv_reset(&n->ev_ids);
  n->n_ev_hash = 0;
  sa_argv_reset(&n->win_keys);
  sa_smap_free(&n->seen);
}

void sa_needs_free(sa_needs *n) {
  sa_argv_free(&n->ev_ids);
  free(n->ev_hash);
  n->ev_hash = NULL;
  n->n_ev_hash = n->cap_ev_hash = 0;
  sa_argv_free(&n->win_keys);
  sa_smap_free(&n->seen);
}

/* A window key, once per fetch. */
static void need_window_key(sa_needs *n, const char *k) {
  if (sa_smap_get(&n->seen, k))
    return;
  sa_smap_put(&n->seen, k, (void *)1);
  sa_argv_adds(&n->win_keys, k);
}

static bool need_window(sa_engine *e, sa_needs *n, const char *region, size_t rlen, int64_t t) {
  int64_t start, end;
  if (qs_agg_window_of(t, e->o.window_ms, &start, &end) != 0)
    return true; /* cannot be a window: apply treats it as poison */
  if (window_get(e, region, rlen, t))
    return true;
  if (n) {
    char k[SA_KEY_MAX];
    window_key_n(k, sizeof k, region, rlen, start);
    need_window_key(n, k);
  }
  return false;
}

bool sa_engine_ready_for(sa_engine *e, sa_item *it, sa_needs *n) {
  if (it->parse_rc != 0)
    return true;
  const sa_event *ev = &it->ev;
  sa_evrec *r = item_rec(e, it);
  if (!r) {
    if (n) {
      /* Not deduplicated: a repeated id in the HMGET costs less than a set of them, and its
       * second answer is ignored (the record is cached by then). */
      sa_argv_add(&n->ev_ids, it->evkey, it->region_len + 1 + ev->event_id_len);
      if (n->n_ev_hash == n->cap_ev_hash) {
        n->cap_ev_hash = n->cap_ev_hash ? n->cap_ev_hash * 2 : 1024;
        n->ev_hash = qs_xrealloc(n->ev_hash, n->cap_ev_hash * sizeof *n->ev_hash);
      }
      n->ev_hash[n->n_ev_hash++] = it->evhash;
    }
    return false;
  }
  if (r->exists && ev->updated <= r->updated)
    return true; /* duplicate or stale: no state needed */
  bool ok = true;
  if (r->live)
    ok &= need_window(e, n, r->key, r->region_len, r->c.time_ms);
  if (!qs_event_change_is_retraction(ev->change) && ev->change != QS_EVENT_MOVED)
    ok &= need_window(e, n, ev->region, it->region_len, ev->time);
  return ok;
}

void sa_engine_load_evstate(sa_engine *e, const char *key, const char *val, size_t len) {
  sa_engine_load_evstate_h(e, key, strlen(key), sa_smap_hash(key), val, len);
}

void sa_engine_load_evstate_h(sa_engine *e, const char *key, size_t klen, uint64_t hash,
                              const char *val, size_t len) {
  const char *bar = memchr(key, '|', klen);
  if (!bar || (size_t)(bar - key) > QS_EVENT_SHORT_MAX ||
      klen - (size_t)(bar - key) - 1 > QS_EVENT_ID_MAX)
    return; /* not a key this engine asks for */
  bool found;
  sa_smap_slot *slot = sa_smap_upsert_h(&e->evrecs, key, hash, &found);
  if (found)
    return; /* cached: ours is newer */
  sa_evrec *r = evrec_alloc(&e->rec_chunks, klen);
  /* A record that does not decode is treated as unseen: the next version rebuilds it. */
  if (val && evrec_decode(r, val, len) != 0)
    memset(r, 0, sizeof *r);
  r->region_len = (uint8_t)(bar - key);
  r->id_len = (uint8_t)(klen - (size_t)(bar - key) - 1);
  memcpy(r->key, key, klen + 1);
  slot->key = r->key;
  slot->value = r;
}

#define MEMBER_ID_SIZE (QS_EVENT_ID_MAX + 1)

/* id: idlen bytes (<= QS_EVENT_ID_MAX). */
static void members_push(sa_member_list *m, const char *id, size_t idlen, const qs_contrib *c) {
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 8;
    m->ids = qs_xrealloc(m->ids, m->cap * sizeof *m->ids);
    m->c = qs_xrealloc(m->c, m->cap * sizeof *m->c);
  }
  put_str(m->ids[m->n], sizeof m->ids[m->n], id, idlen);
  sa_pidx_put(&m->idx, m->ids[0], MEMBER_ID_SIZE, (uint32_t)m->n);
  m->c[m->n] = *c;
  m->n++;
}

static long members_find(const sa_member_list *m, const char *id) {
  return m->n ? sa_pidx_find(&m->idx, m->ids[0], MEMBER_ID_SIZE, id) : -1;
}

static void members_remove_at(sa_member_list *m, size_t i) {
  sa_pidx_del(&m->idx, m->ids[0], MEMBER_ID_SIZE, m->ids[i]);
  m->n--;
  if (i != m->n) {
    /* The last member moves into the hole: re-index it at its new position. */
    sa_pidx_del(&m->idx, m->ids[0], MEMBER_ID_SIZE, m->ids[m->n]);
    memcpy(m->ids[i], m->ids[m->n], sizeof m->ids[i]);
    m->c[i] = m->c[m->n];
    sa_pidx_put(&m->idx, m->ids[0], MEMBER_ID_SIZE, (uint32_t)i);
  }
}

static int parse_window_key(const char *key, char *region, size_t rcap, int64_t *start) {
  const char *bar = strrchr(key, '|');
  if (!bar || (size_t)(bar - key) >= rcap)
    return QS_ERR_INVALID;
  memcpy(region, key, (size_t)(bar - key));
  region[bar - key] = '\0';
  const char *end = key + strlen(key);
  if (parse_i64(bar + 1, end, start) != end)
    return QS_ERR_INVALID;
  return 0;
}

int sa_engine_load_window(sa_engine *e, const char *key, const char *row, size_t rowlen,
                          const char *const *ids, const char *const *vals, const size_t *val_lens,
                          size_t n) {
  if (sa_smap_get(&e->windows, key))
    return 0;
  char region[QS_AGG_REGION_MAX + 1];
  int64_t start, ws, we;
  int rc = parse_window_key(key, region, sizeof region, &start);
  if (rc == 0)
    rc = qs_agg_window_of(start, e->o.window_ms, &ws, &we);
  if (rc == 0 && ws != start)
    rc = QS_ERR_INVALID;
  if (rc != 0)
    return QS_ERR_INVALID;
  sa_window *w = qs_xcalloc(1, sizeof *w);
  snprintf(w->key, sizeof w->key, "%s", key);
  w->partition = -1;
  int result = 0;
  if (qs_agg_row_init(&w->row, region, ws, we) != 0) {
    free(w);
    return QS_ERR_INVALID;
  }
  /* The aggregate is rebuilt from the members (committed atomically with the row); the row
   * contributes only the window's own fields: final and late_count. */
  for (size_t i = 0; i < n; i++) {
    qs_contrib c;
    if (sa_contrib_decode(&c, vals[i], val_lens[i]) != 0 || qs_agg_row_add(&w->row, &c) != 0) {
      result = QS_ERR_INVALID;
      continue;
    }
    members_push(&w->mem, ids[i], strlen(ids[i]), &c);
  }
  if (row) {
    cJSON *j = cJSON_ParseWithLength(row, rowlen);
    if (j) {
      w->final = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "final"));
      const cJSON *lc = cJSON_GetObjectItemCaseSensitive(j, "late_count");
      if (cJSON_IsNumber(lc) && lc->valuedouble >= 0)
        w->late_count = (int64_t)lc->valuedouble;
      cJSON_Delete(j);
    } else {
      result = QS_ERR_INVALID;
    }
  }
  sa_smap_put(&e->windows, w->key, w);
  return result;
}

/* ---- changes ------------------------------------------------------------------------------ */

static void mark_window(sa_engine *e, sa_window *w) {
  if (w->dirty)
    return;
  w->dirty = true;
  if (e->n_dirty_win == e->cap_dirty_win) {
    e->cap_dirty_win = e->cap_dirty_win ? e->cap_dirty_win * 2 : 64;
    e->dirty_win = qs_xrealloc(e->dirty_win, e->cap_dirty_win * sizeof *e->dirty_win);
  }
  e->dirty_win[e->n_dirty_win++] = w;
}

static void mark_evrec(sa_engine *e, sa_evrec *r) {
  if (r->dirty)
    return;
  r->dirty = true;
  if (e->n_dirty_ev == e->cap_dirty_ev) {
    e->cap_dirty_ev = e->cap_dirty_ev ? e->cap_dirty_ev * 2 : 256;
    e->dirty_ev = qs_xrealloc(e->dirty_ev, e->cap_dirty_ev * sizeof *e->dirty_ev);
  }
  e->dirty_ev[e->n_dirty_ev++] = r;
}

static void store_body(sa_engine *e, sa_evrec *r, const char *body, size_t len) {
  if (e->bodies_used + len > e->bodies_cap) {
    size_t ncap = e->bodies_cap ? e->bodies_cap : 65536;
    while (ncap < e->bodies_used + len)
      ncap *= 2;
    e->bodies = qs_xrealloc(e->bodies, ncap);
    e->bodies_cap = ncap;
  }
  memcpy(e->bodies + e->bodies_used, body, len);
  r->body_off = e->bodies_used;
  r->body_len = len;
  r->has_body = true;
  e->bodies_used += len;
}

/* Records that r's membership of w changed (the take writes its final state, see sa_window). */
static void window_touch_member(sa_window *w, sa_evrec *r) {
  if (w->n_changed == w->cap_changed) {
    w->cap_changed = w->cap_changed ? w->cap_changed * 2 : 16;
    w->changed = qs_xrealloc(w->changed, w->cap_changed * sizeof *w->changed);
  }
  w->changed[w->n_changed++] = r;
}

/* Removes r (a member: live here) from w. */
static int window_retract(sa_engine *e, sa_window *w, sa_evrec *r) {
  long i = members_find(&w->mem, sa_evrec_id(r));
  if (i < 0)
    return QS_ERR_STATE;
  qs_contrib c = w->mem.c[i];
  int rc = qs_agg_retract(&w->row.agg, &c);
  if (rc < 0)
    return rc;
  members_remove_at(&w->mem, (size_t)i);
  if (w->mem.n == 0) {
    /* An empty window is deleted from Redis at the next commit. Forget its own fields now (not
     * at the commit, whose timing varies), so that the cached copy always equals what a restarted
     * process would load, and both go on identically. */
    w->late_count = 0;
    w->final = false;
  }
  if (rc == QS_AGG_MINMAX_STALE && qs_agg_recompute_minmax(&w->row.agg, w->mem.c, w->mem.n) != 0)
    QS_FATAL("window %s: members disagree with the aggregate", w->key);
  window_touch_member(w, r);
  mark_window(e, w);
  return 0;
}

/* The cached window of (region, the window of t), through a small direct-mapped cache of
 * window pointers in front of the map (a map lookup builds and hashes the "region|start" key;
 * the cache is emptied whenever windows are freed). */
static sa_window *window_get(sa_engine *e, const char *region, size_t rlen, int64_t t) {
  int64_t start, end;
  if (qs_agg_window_of(t, e->o.window_ms, &start, &end) != 0)
    return NULL;
  uint64_t h = (uint64_t)(start / e->o.window_ms) * 0x9E3779B97F4A7C15ULL;
  for (size_t i = 0; i < rlen; i++)
    h = (h ^ (unsigned char)region[i]) * QS_FNV1A64_PRIME;
  sa_window **slot = &e->wcache[(h >> 32) % SA_WCACHE];
  sa_window *w = *slot;
  if (w && w->row.window_start_ms == start && strncmp(w->row.region, region, rlen) == 0 &&
      w->row.region[rlen] == '\0')
    return w;
  char k[SA_KEY_MAX];
  window_key_n(k, sizeof k, region, rlen, start);
  w = sa_smap_get(&e->windows, k);
  if (w)
    *slot = w;
  return w;
}

/* An alert op: "@ALERT key score json event_id updated". An event alert (event_id set) is stored
 * only if no newer version of the event is stored (store.c), so a replica that lags on another
 * region cannot raise an alert the newest version does not meet. */
static void alert_add(sa_engine *e, const char *type, const char *subject, const char *region,
                      int64_t window_start, const char *event_id, int64_t updated,
                      const qs_contrib *c, int64_t count, double threshold, const char *message,
                      int64_t now_ms) {
  qs_buf b = e->scratch; /* reused: no malloc per alert */
  b.len = 0;
  char key[SA_KEY_MAX + 32], num[40];
  size_t tl = strlen(type), sl = strlen(subject);
  if (tl + 1 + sl >= sizeof key)
    sl = sizeof key - tl - 2;
  memcpy(key, type, tl);
  key[tl] = '|';
  memcpy(key + tl + 1, subject, sl);
  key[tl + 1 + sl] = '\0';
  qs_buf_puts(&b, "{\"id\":\"");
  qs_buf_json_str(&b, key, tl + 1 + sl);
  qs_buf_puts(&b, "\",\"type\":\"");
  qs_buf_puts(&b, type);
  qs_buf_puts(&b, "\",\"created_at\":");
  qs_buf_append(&b, num, qs_i64_str(now_ms, num));
  qs_buf_puts(&b, ",\"region\":\"");
  qs_buf_json_str(&b, region, strlen(region));
  qs_buf_puts(&b, "\",\"window_start\":");
  if (window_start != INT64_MIN)
    qs_buf_append(&b, num, qs_i64_str(window_start, num));
  else
    qs_buf_puts(&b, "null");
  qs_buf_puts(&b, ",\"event_id\":");
  if (event_id) {
    qs_buf_puts(&b, "\"");
    qs_buf_json_str(&b, event_id, strlen(event_id));
    qs_buf_puts(&b, "\"");
  } else {
    qs_buf_puts(&b, "null");
  }
  qs_buf_puts(&b, ",\"magnitude\":");
  if (c && c->has_mag) {
    qs_double_shortest(num, sizeof num, qs_agg_micro_to_double(c->mag_micro));
    qs_buf_puts(&b, num);
  } else {
    qs_buf_puts(&b, "null");
  }
  qs_buf_puts(&b, ",\"count\":");
  if (count >= 0)
    qs_buf_append(&b, num, qs_i64_str(count, num));
  else
    qs_buf_puts(&b, "null");
  qs_buf_puts(&b, ",\"threshold\":");
  if (isfinite(threshold)) {
    qs_double_shortest(num, sizeof num, threshold);
    qs_buf_puts(&b, num);
  } else {
    qs_buf_puts(&b, "null");
  }
  qs_buf_puts(&b, ",\"message\":\"");
  qs_buf_json_str(&b, message, strlen(message));
  qs_buf_puts(&b, "\",\"retracted\":false}");
  sa_argv_adds(&e->alerts, "@ALERT");
  sa_argv_adds(&e->alerts, key);
  sa_argv_addi(&e->alerts, now_ms);
  sa_argv_add(&e->alerts, b.p, b.len);
  sa_argv_adds(&e->alerts, event_id ? event_id : "");
  sa_argv_addi(&e->alerts, event_id ? updated : 0);
  e->scratch = b;
  e->stats.alerts++;
}

static void window_alerts(sa_engine *e, sa_window *w, int64_t now_ms) {
  int64_t count = w->row.agg.event_count;
  char msg[256];
  if (!w->volume_alerted && count > e->o.volume_threshold) {
    w->volume_alerted = true;
    snprintf(msg, sizeof msg, "%" PRId64 " events in %s window starting %" PRId64, count,
             w->row.region, w->row.window_start_ms);
    alert_add(e, "VOLUME", w->key, w->row.region, w->row.window_start_ms, NULL, 0, NULL, count,
              (double)e->o.volume_threshold, msg, now_ms);
  }
  const qs_agg_baseline *b = sa_smap_get(&e->baselines, w->row.region);
  double thr;
  if (!w->anomaly_alerted && b &&
      qs_agg_baseline_threshold(b, e->o.window_ms, e->o.anomaly_sigma, &thr) == 0 &&
      (double)count > thr) {
    w->anomaly_alerted = true;
    snprintf(msg, sizeof msg, "%" PRId64 " events in %s window, above the baseline threshold %.2f",
             count, w->row.region, thr);
    alert_add(e, "ANOMALY", w->key, w->row.region, w->row.window_start_ms, NULL, 0, NULL, count,
              thr, msg, now_ms);
  }
}

/* "@RETRACT key event_id updated": marks the stored alert retracted (only if it exists, and only
 * if no newer version of the event is stored; published when it changes). */
static void alert_retract(sa_engine *e, const char *type, const char *id, int64_t updated) {
  char key[QS_EVENT_ID_MAX + 32];
  snprintf(key, sizeof key, "%s|%s", type, id);
  sa_argv_adds(&e->alerts, "@RETRACT");
  sa_argv_adds(&e->alerts, key);
  sa_argv_adds(&e->alerts, id);
  sa_argv_addi(&e->alerts, updated);
}

static bool is_spike(const sa_engine *e, const qs_contrib *c) {
  return c && c->has_mag && c->mag_micro >= llround(e->o.spike_magnitude * QS_AGG_MICRO);
}

/* An event alert whose condition no longer holds for the newest version (deleted, superseded,
 * or revised below the threshold / without the tsunami flag) is marked retracted. A later
 * version that meets the condition again stores it again, un-retracted (@ALERT). `old` is the
 * record's live version here; NULL when there is none in this region (the event arrives from
 * another region, or its deletion finds nothing counted here): then every alert the new version
 * does not meet is retracted, if it exists. */
static void alerts_retract_stale(sa_engine *e, const char *id, const sa_evrec *old,
                                 const qs_contrib *now, bool tsunami_now, int64_t updated) {
  if ((!old || is_spike(e, &old->c)) && !is_spike(e, now))
    alert_retract(e, "MAGNITUDE_SPIKE", id, updated);
  if ((!old || old->c.tsunami) && !tsunami_now)
    alert_retract(e, "TSUNAMI", id, updated);
}

/* printf's "%.1f" of v (finite, |v| < 1e15), without printf: v * 10 is exact in a long double
 * (64-bit mantissa), and a tie rounds to even, as glibc rounds the exact binary value. */
static size_t fixed1(double v, char *out) {
  long double t = fabsl((long double)v * 10.0L);
  long double k = floorl(t), frac = t - k;
  uint64_t q = (uint64_t)k;
  if (frac > 0.5L || (frac == 0.5L && (q & 1)))
    q++;
  size_t n = 0;
  if (signbit(v))
    out[n++] = '-';
  n += qs_i64_str((int64_t)(q / 10), out + n);
  out[n++] = '.';
  out[n++] = (char)('0' + q % 10);
  out[n] = '\0';
  return n;
}

static void event_alerts(sa_engine *e, const sa_event *ev, const qs_contrib *c, int64_t now_ms) {
  char msg[QS_EVENT_PLACE_MAX + 128];
  if (is_spike(e, c)) {
    /* "M%.1f earthquake: %s" (magnitudes are validated to [-2, 10.5]) */
    static const char tail[] = " earthquake: ";
    size_t n = 1;
    msg[0] = 'M';
    n += fixed1(ev->magnitude, msg + n);
    memcpy(msg + n, tail, sizeof tail - 1);
    n += sizeof tail - 1;
    copy_str(msg + n, sizeof msg - n, ev->place);
    alert_add(e, "MAGNITUDE_SPIKE", ev->event_id, ev->region, INT64_MIN, ev->event_id, ev->updated,
              c, -1, NAN, msg, now_ms);
  }
  if (ev->tsunami_flag) {
    snprintf(msg, sizeof msg, "tsunami flag set: %s", ev->place);
    alert_add(e, "TSUNAMI", ev->event_id, ev->region, INT64_MIN, ev->event_id, ev->updated, c, -1,
              NAN, msg, now_ms);
  }
}

static void dead_letter(sa_engine *e, const sa_item *it, const char *reason) {
  qs_buf b = QS_BUF_INIT;
  qs_buf_printf(&b, "{\"partition\":%d,\"sequence\":%" PRId64 ",\"offset\":\"", it->partition,
                it->sequence);
  qs_buf_json_str(&b, it->offset, strlen(it->offset));
  qs_buf_puts(&b, "\",\"reason\":\"");
  qs_buf_json_str(&b, reason, strlen(reason));
  qs_buf_puts(&b, "\",\"body\":\"");
  size_t n = it->len > SA_DLQ_BODY_MAX ? SA_DLQ_BODY_MAX : it->len;
  /* Cut on a UTF-8 boundary so the JSON stays valid text. */
  while (n > 0 && n < it->len && ((unsigned char)it->body[n] & 0xC0) == 0x80)
    n--;
  qs_buf_json_str(&b, it->body, n);
  qs_buf_puts(&b, "\"}");
  sa_argv_add(&e->dlq, b.p, b.len);
  qs_buf_free(&b);
  e->stats.poison++;
}

/* Applies `it` with the state it touches already looked up (see sa_engine_try_apply): its
 * record r in the message's region, the window of r's live version (old) and the window of the
 * new version (w). */
static void apply_found(sa_engine *e, const sa_item *it, int64_t now_ms, sa_evrec *r,
                        sa_window *old, sa_window *w) {
  if (it->partition < 0 || it->partition >= SA_PARTITIONS_MAX)
    QS_FATAL("partition %d out of range", it->partition);
  sa_partition *pt = &e->parts[it->partition];
  if (!pt->known) {
    pt->known = true;
    pt->last_tick_wall = now_ms;
  }
  pt->sequence = it->sequence;
  copy_str(pt->offset, sizeof pt->offset, it->offset);
  pt->last_event_wall = now_ms;
  pt->dirty = true;
  e->pending_items++;
  e->stats.events++;
  if (it->parse_rc != 0) {
    dead_letter(e, it, it->why[0] ? it->why : qs_strerror(it->parse_rc));
    return;
  }
  const sa_event *ev = &it->ev;
  qs_contrib c;
  bool moved = ev->change == QS_EVENT_MOVED;
  bool retraction = qs_event_change_is_retraction(ev->change); /* deleted or superseded */
  bool counts = !retraction && !moved; /* the message is a version to count here */
  if (counts && qs_contrib_init(&c, ev->time, ev->has_magnitude ? ev->magnitude : NAN,
                                ev->has_depth ? ev->depth_km : NAN, ev->tsunami_flag,
                                e->o.significant) != 0) {
    dead_letter(e, it, "magnitude, depth or time outside the aggregate bounds");
    return;
  }
  advance_watermark(e, pt, ev->time);
  if (r->exists && ev->updated <= r->updated) {
    if (ev->updated == r->updated)
      e->stats.duplicates++;
    else
      e->stats.stale++;
    return;
  }
  bool was_live = r->live;
  /* Event alerts follow the newest version: a `moved` says nothing about them (the version it
   * carries is applied, alerts included, on the new region). A version counted here re-checks
   * the alerts its live predecessor here raised; a revision without one (it comes from another
   * region: the second half of a move) or a deletion of an event not counted here re-checks all
   * of them. A new event raises what it meets and retracts nothing: it costs nothing extra. */
  if (!moved && (was_live || retraction || ev->change == QS_EVENT_REVISION))
    alerts_retract_stale(e, ev->event_id, was_live ? r : NULL, counts ? &c : NULL,
                         counts && ev->tsunami_flag, ev->updated);
  if (was_live) {
    /* The window may have been trimmed by retention (windows are kept 30 days, event records
     * 90): then there is nothing left to retract. */
    if (!old || window_retract(e, old, r) != 0)
      e->stats.orphans++;
    else if (old->partition < 0)
      old->partition = it->partition;
  }
  r->exists = true;
  r->updated = ev->updated;
  r->has_body = false;
  mark_evrec(e, r);
  if (!counts) {
    /* A tombstone at `updated`: an older version arriving later on this region changes nothing.
     * D/S also remove the raw event and publish event_removed (the commit decides, by
     * `updated`, see store.c); M keeps both: the event lives on in another region. */
    e->stats.retractions++;
    if (moved)
      e->stats.moves++;
    else if (ev->change == QS_EVENT_DELETED)
      e->stats.deletions++;
    else
      e->stats.supersedes++;
    r->live = false;
    r->was_live = was_live;
    r->change = moved ? 'M' : ev->change == QS_EVENT_DELETED ? 'D' : 'S';
    memset(&r->c, 0, sizeof r->c);
    r->c.time_ms = ev->time;
    return;
  }
  if (was_live)
    e->stats.revisions++;
  if (!w)
    QS_FATAL("window of %s is not cached", ev->event_id);
  if (!w->final && w->row.window_end_ms + e->o.lateness_ms <= pt->watermark)
    w->final = true;
  if (w->final) {
    w->late_count++;
    e->stats.late++;
  }
  if (qs_agg_row_add(&w->row, &c) != 0)
    QS_FATAL("window %s refused a member", w->key);
  members_push(&w->mem, ev->event_id, ev->event_id_len, &c);
  window_touch_member(w, r);
  w->partition = it->partition;
  mark_window(e, w);
  r->change = (was_live || ev->change == QS_EVENT_REVISION) ? 'R' : 'N';
  r->live = true;
  r->c = c;
  store_body(e, r, it->body, it->len);
  event_alerts(e, ev, &c, now_ms);
  window_alerts(e, w, now_ms);
}

bool sa_engine_try_apply(sa_engine *e, sa_item *it, int64_t now_ms) {
  sa_evrec *r = NULL;
  sa_window *old = NULL, *w = NULL;
  if (it->parse_rc == 0) {
    const sa_event *ev = &it->ev;
    r = item_rec(e, it);
    if (!r)
      return false;
    if (!(r->exists && ev->updated <= r->updated)) {
      int64_t ws, we;
      if (r->live && !(old = window_get(e, r->key, r->region_len, r->c.time_ms)))
        return false;
      if (!qs_event_change_is_retraction(ev->change) && ev->change != QS_EVENT_MOVED &&
          !(w = window_get(e, ev->region, it->region_len, ev->time)) &&
          qs_agg_window_of(ev->time, e->o.window_ms, &ws, &we) == 0)
        return false;
    }
  }
  apply_found(e, it, now_ms, r, old, w);
  return true;
}

void sa_engine_apply(sa_engine *e, sa_item *it, int64_t now_ms) {
  if (!sa_engine_try_apply(e, it, now_ms))
    QS_FATAL("apply of an item whose state is not cached");
}

/* ---- take --------------------------------------------------------------------------------- */

typedef struct opcmd {
  sa_argv *a;
  size_t count_idx, nargs;
} opcmd;

static void op_begin(opcmd *c, sa_argv *a, const char *cmd, const char *key) {
  c->a = a;
  c->count_idx = sa_argv_count(a);
  sa_argv_add_count(a);
  sa_argv_adds(a, cmd);
  c->nargs = 1;
  if (key) {
    sa_argv_adds(a, key);
    c->nargs++;
  }
}

static void op_arg(opcmd *c, const char *s, size_t len) {
  sa_argv_add(c->a, s, len);
  c->nargs++;
}

static void op_args(opcmd *c, const char *s) { op_arg(c, s, strlen(s)); }

static void op_argi(opcmd *c, int64_t v) {
  sa_argv_addi(c->a, v);
  c->nargs++;
}

static void op_end(opcmd *c) { sa_argv_set_i(c->a, c->count_idx, (int64_t)c->nargs); }

static const char *channel_name(int ch) {
  return ch == SA_CH_AGGREGATES ? "qs:live:aggregates"
         : ch == SA_CH_ALERTS   ? "qs:live:alerts"
                                : "qs:live:events";
}

/* One grouped command per CHUNK_PAIRS records that pass `want`. */
typedef bool (*rec_filter)(const sa_evrec *r);
typedef void (*rec_emit)(sa_engine *e, opcmd *c, const sa_evrec *r);

static void emit_grouped(sa_engine *e, sa_argv *ops, const char *cmd, const char *key,
                         rec_filter want, rec_emit emit) {
  opcmd c;
  size_t in_cmd = 0;
  for (size_t i = 0; i < e->n_dirty_ev; i++) {
    const sa_evrec *r = e->dirty_ev[i];
    if (!want(r))
      continue;
    if (in_cmd == 0)
      op_begin(&c, ops, cmd, key);
    emit(e, &c, r);
    if (++in_cmd == CHUNK_PAIRS) {
      op_end(&c);
      in_cmd = 0;
    }
  }
  if (in_cmd)
    op_end(&c);
}

static bool want_all(const sa_evrec *r) {
  (void)r;
  return true;
}
static bool want_body(const sa_evrec *r) { return r->live && r->has_body; }
static bool want_gone(const sa_evrec *r) { return r->change == 'D' || r->change == 'S'; }

static void emit_evstate(sa_engine *e, opcmd *c, const sa_evrec *r) {
  (void)e;
  char buf[256];
  op_arg(c, r->key, sa_evrec_key_len(r));
  op_arg(c, buf, evrec_encode(r, buf, sizeof buf));
}
static void emit_evstate_idx(sa_engine *e, opcmd *c, const sa_evrec *r) {
  (void)e;
  op_argi(c, r->c.time_ms);
  op_arg(c, r->key, sa_evrec_key_len(r));
}
/* @EV tuple: id, updated, time, body (written if newer than the stored version). */
static void emit_body(sa_engine *e, opcmd *c, const sa_evrec *r) {
  op_arg(c, sa_evrec_id(r), r->id_len);
  op_argi(c, r->updated);
  op_argi(c, r->c.time_ms);
  op_arg(c, e->bodies + r->body_off, r->body_len);
}
/* @EVDEL tuple: id, updated, reason, whether it was counted (removed if not older than the stored
 * version; event_removed published if it was stored or counted). */
static void emit_gone(sa_engine *e, opcmd *c, const sa_evrec *r) {
  (void)e;
  op_arg(c, sa_evrec_id(r), r->id_len);
  op_argi(c, r->updated);
  op_args(c, r->change == 'D' ? "deleted" : "superseded");
  op_args(c, r->was_live ? "1" : "0");
}

/* Conditional ops "0 @EV|@EVDEL <tuples> <tuple>...", CHUNK_PAIRS tuples at most each. */
static void emit_versioned(sa_engine *e, sa_argv *ops, const char *op, rec_filter want,
                           rec_emit emit) {
  opcmd c;
  size_t in_op = 0, n_idx = 0;
  for (size_t i = 0; i < e->n_dirty_ev; i++) {
    const sa_evrec *r = e->dirty_ev[i];
    if (!want(r))
      continue;
    if (in_op == 0) {
      sa_argv_addi(ops, 0);
      sa_argv_adds(ops, op);
      n_idx = sa_argv_count(ops);
      sa_argv_add_count(ops); /* rewritten when the op is complete */
      c.a = ops;
      c.nargs = 0;
    }
    emit(e, &c, r);
    if (++in_op == CHUNK_PAIRS) {
      sa_argv_set_i(ops, n_idx, (int64_t)in_op);
      in_op = 0;
    }
  }
  if (in_op)
    sa_argv_set_i(ops, n_idx, (int64_t)in_op);
}

static void take_window(sa_engine *e, sa_argv *ops, sa_window *w, int64_t now_ms) {
  opcmd c;
  char memkey[SA_KEY_MAX + 16], open[600];
  memcpy(memkey, "qs:rt:mem:", 10);
  copy_str(memkey + 10, sizeof memkey - 10, w->key);
  int p = w->partition;
  if (p >= 0) {
    sa_key_open(e, p, open, sizeof open);
    /* The commit's @FINAL op may have finalised it in Redis while it sat in the cache. */
    const sa_partition *pt = &e->parts[p];
    if (!w->final && pt->watermark != INT64_MIN &&
        w->row.window_end_ms + e->o.lateness_ms <= pt->watermark)
      w->final = true;
  }
  /* The qs_agg row without its closing brace, then the window's own fields. */
  char rowtext[QS_AGG_JSON_MAX + 96];
  size_t rl = 0;
  if (qs_agg_row_to_json_buf(&w->row, rowtext, QS_AGG_JSON_MAX, &rl) != 0 || rl < 2)
    QS_FATAL("window %s: row does not encode", w->key);
  rl--;
  static const char fin_t[] = ",\"final\":true,\"late_count\":",
                    fin_f[] = ",\"final\":false,\"late_count\":", upd[] = ",\"updated_at\":";
  memcpy(rowtext + rl, w->final ? fin_t : fin_f, w->final ? sizeof fin_t - 1 : sizeof fin_f - 1);
  rl += w->final ? sizeof fin_t - 1 : sizeof fin_f - 1;
  rl += qs_i64_str(w->late_count, rowtext + rl);
  memcpy(rowtext + rl, upd, sizeof upd - 1);
  rl += sizeof upd - 1;
  rl += qs_i64_str(now_ms, rowtext + rl);
  rowtext[rl++] = '}';
  rowtext[rl] = '\0';
  if (w->row.agg.event_count == 0) {
    op_begin(&c, ops, "HDEL", "qs:rt:win");
    op_args(&c, w->key);
    op_end(&c);
    op_begin(&c, ops, "ZREM", "qs:rt:win:idx");
    op_args(&c, w->key);
    op_end(&c);
    op_begin(&c, ops, "DEL", memkey);
    op_end(&c);
    if (p >= 0) {
      op_begin(&c, ops, "ZREM", open);
      op_args(&c, w->key);
      op_end(&c);
    }
  } else {
    op_begin(&c, ops, "HSET", "qs:rt:win");
    op_args(&c, w->key);
    op_arg(&c, rowtext, rl);
    op_end(&c);
    op_begin(&c, ops, "ZADD", "qs:rt:win:idx");
    op_argi(&c, w->row.window_start_ms);
    op_args(&c, w->key);
    op_end(&c);
    /* Member changes, from the records' final states: the contributions of those that are
     * members, then the ids of those that are not any more. */
    uint64_t stamp = ++e->member_stamp;
    for (int pass = 0; pass < 2; pass++) {
      size_t in_cmd = 0;
      for (size_t i = 0; i < w->n_changed; i++) {
        sa_evrec *r = w->changed[i];
        if (r->member_stamp == stamp)
          continue; /* written already */
        int64_t rs, re;
        bool present = r->live && qs_agg_window_of(r->c.time_ms, e->o.window_ms, &rs, &re) == 0 &&
                       rs == w->row.window_start_ms;
        if (pass == 0 ? !present : present)
          continue;
        r->member_stamp = stamp;
        if (in_cmd == 0)
          op_begin(&c, ops, pass == 0 ? "HSET" : "HDEL", memkey);
        op_arg(&c, sa_evrec_id(r), r->id_len);
        if (pass == 0) {
          char cb[128];
          op_arg(&c, cb, sa_contrib_encode(&r->c, cb, sizeof cb));
        }
        if (++in_cmd == CHUNK_PAIRS) {
          op_end(&c);
          in_cmd = 0;
        }
      }
      if (in_cmd)
        op_end(&c);
    }
    if (p >= 0) {
      if (w->final) {
        op_begin(&c, ops, "ZREM", open);
        op_args(&c, w->key);
      } else {
        op_begin(&c, ops, "ZADD", open);
        op_argi(&c, w->row.window_end_ms);
        op_args(&c, w->key);
      }
      op_end(&c);
    }
  }
  static const char pre[] = "{\"type\":\"window\",\"data\":";
  sa_argv_addi(&e->pubs, SA_CH_AGGREGATES);
  sa_argv_add3(&e->pubs, pre, sizeof pre - 1, rowtext, rl, "}", 1);
  w->n_changed = 0;
  w->dirty = false;
}

bool sa_engine_has_changes(const sa_engine *e) {
  if (e->n_dirty_ev || e->n_dirty_win || e->pending_items || e->dlq.n || e->alerts.n)
    return true;
  for (int p = 0; p < SA_PARTITIONS_MAX; p++)
    if (e->parts[p].dirty)
      return true;
  return false;
}

size_t sa_engine_take(sa_engine *e, sa_argv *ops, int *parts, size_t *nparts, int64_t now_ms) {
  opcmd c;
  size_t items = e->pending_items;
  emit_grouped(e, ops, "HSET", "qs:rt:evstate", want_all, emit_evstate);
  emit_grouped(e, ops, "ZADD", "qs:rt:evstate:idx", want_all, emit_evstate_idx);
  /* Raw events are global (another replica may hold a newer version from another region):
   * written, removed and announced by the script only when newer than what it stored. */
  emit_versioned(e, ops, "@EV", want_body, emit_body);
  emit_versioned(e, ops, "@EVDEL", want_gone, emit_gone);
  for (size_t i = 0; i < e->n_dirty_ev; i++) {
    e->dirty_ev[i]->dirty = false;
    e->dirty_ev[i]->has_body = false;
    e->dirty_ev[i]->was_live = false;
  }
  for (size_t i = 0; i < e->n_dirty_win; i++)
    take_window(e, ops, e->dirty_win[i], now_ms);
  for (size_t i = 0; i + 1 < e->pubs.n; i += 2) {
    size_t chlen, mlen;
    const char *ch = sa_argv_at(&e->pubs, i, &chlen);
    const char *m = sa_argv_at(&e->pubs, i + 1, &mlen);
    op_begin(&c, ops, "PUBLISH", channel_name(atoi(ch)));
    op_arg(&c, m, mlen);
    op_end(&c);
  }
  /* Alerts and retractions in the order they were decided: their outcome depends on it.
   * "@ALERT key score json event_id updated", "@RETRACT key event_id updated". */
  for (size_t i = 0; i < e->alerts.n;) {
    const char *op = sa_argv_at(&e->alerts, i, NULL);
    size_t nargs = strcmp(op, "@ALERT") == 0 ? 6 : 4;
    sa_argv_addi(ops, 0);
    for (size_t k = 0; k < nargs; k++) {
      size_t l;
      const char *a = sa_argv_at(&e->alerts, i + k, &l);
      sa_argv_add(ops, a, l);
    }
    i += nargs;
  }
  if (e->dlq.n) {
    for (size_t i = 0; i < e->dlq.n; i++) {
      size_t l;
      const char *d = sa_argv_at(&e->dlq, i, &l);
      op_begin(&c, ops, "LPUSH", "qs:rt:dlq");
      op_arg(&c, d, l);
      op_end(&c);
    }
    op_begin(&c, ops, "LTRIM", "qs:rt:dlq");
    op_argi(&c, 0);
    op_argi(&c, e->o.dlq_max - 1);
    op_end(&c);
  }
  *nparts = 0;
  for (int p = 0; p < SA_PARTITIONS_MAX; p++) {
    sa_partition *pt = &e->parts[p];
    if (!pt->dirty)
      continue;
    parts[(*nparts)++] = p;
    char key[600];
    sa_key_ckpt(e, p, key, sizeof key);
    op_begin(&c, ops, "HSET", key);
    op_args(&c, "sequence");
    op_argi(&c, pt->sequence);
    op_args(&c, "offset");
    op_args(&c, pt->offset);
    op_args(&c, "max_event_time");
    op_argi(&c, pt->max_time == INT64_MIN ? QS_AGG_TIME_MIN_MS : pt->max_time);
    op_args(&c, "watermark");
    op_argi(&c, pt->watermark == INT64_MIN ? QS_AGG_TIME_MIN_MS : pt->watermark);
    op_args(&c, "updated_at");
    op_argi(&c, now_ms);
    op_end(&c);
    if (pt->watermark != INT64_MIN) {
      sa_key_open(e, p, key, sizeof key);
      sa_argv_addi(ops, 0);
      sa_argv_adds(ops, "@FINAL");
      sa_argv_adds(ops, key);
      sa_argv_addi(ops, pt->watermark - e->o.lateness_ms);
    }
    pt->dirty = false;
  }
  clear_changes(e);
  return items;
}
