/* changes.c — the classifier of docs/changes.md ("Classifying a feature"). */
#include "changes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/hash.h"

const char *const ch_kind_names[CH_KINDS] = {"new",   "revision", "deleted",  "superseded",
                                             "moved", "folded",   "duplicate"};

/* ---- records ------------------------------------------------------------------------------ */

int ch_rec_parse(ch_rec *r, const char *s, size_t n) {
  memset(r, 0, sizeof *r);
  size_t i = 0;
  int64_t v = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9' && v < INT64_MAX / 10 - 10)
    v = v * 10 + (s[i++] - '0');
  if (i == 0)
    return QS_ERR_PARSE;
  r->updated = v;
  if (i == n) { /* an older ingestor's value: the updated it sent */
    r->state = 'L';
    return 0;
  }
  if (s[i] != '|' || i + 2 >= n || !strchr("LDSA", s[i + 1]) || s[i + 1] == 0 || s[i + 2] != '|')
    return QS_ERR_PARSE;
  char state = s[i + 1];
  i += 3;
  const char *bar = memchr(s + i, '|', n - i);
  if (!bar)
    return QS_ERR_PARSE;
  size_t rl = (size_t)(bar - (s + i)), pl = n - (size_t)(bar + 1 - s);
  if (rl > QS_EVENT_SHORT_MAX || pl > QS_EVENT_ID_MAX)
    return QS_ERR_PARSE;
  memcpy(r->region, s + i, rl);
  r->region[rl] = 0;
  memcpy(r->pref, bar + 1, pl);
  r->pref[pl] = 0;
  if ((state == 'S' || state == 'A') && !qs_event_id_is_valid(r->pref, pl))
    return QS_ERR_PARSE;
  r->state = state;
  return 0;
}

size_t ch_rec_format(const ch_rec *r, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%" PRId64 "|%c|%s|%s", r->updated, r->state ? r->state : 'L',
                   r->region, r->pref);
  return n < 0 ? 0 : (size_t)n;
}

/* ---- store: open addressing, string keys ------------------------------------------------- */

typedef struct slot {
  char *id; /* NULL: empty */
  ch_rec rec;
} slot;

struct ch_store {
  slot *v;
  size_t cap, n;
};

ch_store *ch_store_new(void) {
  ch_store *s = qs_xcalloc(1, sizeof *s);
  s->cap = 256;
  s->v = qs_xcalloc(s->cap, sizeof *s->v);
  return s;
}

void ch_store_clear(ch_store *s) {
  for (size_t i = 0; i < s->cap; i++) {
    free(s->v[i].id);
    s->v[i].id = NULL;
  }
  s->n = 0;
}

void ch_store_free(ch_store *s) {
  if (!s)
    return;
  ch_store_clear(s);
  free(s->v);
  free(s);
}

size_t ch_store_count(const ch_store *s) { return s->n; }

static slot *lookup(ch_store *s, const char *id) {
  size_t i = (size_t)qs_fnv1a64_str(id) & (s->cap - 1);
  while (s->v[i].id && strcmp(s->v[i].id, id) != 0)
    i = (i + 1) & (s->cap - 1);
  return &s->v[i];
}

ch_rec *ch_store_find(ch_store *s, const char *id) {
  slot *sl = lookup(s, id);
  return sl->id ? &sl->rec : NULL;
}

ch_rec *ch_store_add(ch_store *s, const char *id) {
  slot *sl = lookup(s, id);
  if (sl->id)
    return &sl->rec;
  if ((s->n + 1) * 2 > s->cap) {
    slot *old = s->v;
    size_t oldcap = s->cap;
    s->cap *= 2;
    s->v = qs_xcalloc(s->cap, sizeof *s->v);
    for (size_t i = 0; i < oldcap; i++)
      if (old[i].id)
        *lookup(s, old[i].id) = old[i];
    free(old);
    sl = lookup(s, id);
  }
  sl->id = qs_xstrdup(id);
  memset(&sl->rec, 0, sizeof sl->rec);
  s->n++;
  return &sl->rec;
}

/* ---- classification ------------------------------------------------------------------------ */

#define CHAIN_MAX 8 /* hops followed from an old id to its current preferred id */

/* The current preferred id of id (itself when not associated), following S/A records. */
static const char *resolve(ch_store *s, const char *id) {
  const char *cur = id;
  for (int hop = 0; hop < CHAIN_MAX; hop++) {
    ch_rec *r = ch_store_find(s, cur);
    if (!r || (r->state != 'S' && r->state != 'A') || !r->pref[0] || strcmp(r->pref, cur) == 0)
      return cur;
    cur = r->pref;
  }
  return cur;
}

size_t ch_needed_ids(ch_store *s, const feed_entry *e, void (*fn)(const char *id, void *ud),
                     void *ud) {
  size_t n = 0;
  const char *other = e->ids;
  for (size_t i = 0; i <= e->nids; i++) {
    const char *id = e->id;
    if (i > 0) { /* the packed list, walked once */
      id = other;
      other += strlen(other) + 1;
    }
    /* the end of its chain as far as it is loaded: not loaded means needed */
    const char *end = resolve(s, id);
    if (!ch_store_find(s, end)) {
      fn(end, ud);
      n++;
    }
  }
  return n;
}

static bool u_newer(const ch_rec *r, int64_t u) { return r && u > r->updated; }

static char *encode(const qs_event *ev, size_t *len) {
  char buf[QS_EVENT_JSON_MAX];
  size_t n = qs_event_to_json(ev, buf, sizeof buf);
  if (n >= sizeof buf)
    return NULL;
  char *out = qs_xmalloc(n + 1);
  memcpy(out, buf, n + 1);
  *len = n;
  return out;
}

static int emit(const ch_sink *sink, const qs_event *ev, ch_kind kind) {
  size_t len;
  char *json = encode(ev, &len);
  if (!json)
    return QS_ERR_TOOBIG;
  sink->send(sink->ud, json, len, ev->region, kind);
  return 0;
}

static void set_rec(ch_rec *r, char state, int64_t updated, const char *region, const char *pref) {
  r->state = state;
  r->updated = updated;
  if (region != r->region)
    snprintf(r->region, sizeof r->region, "%s", region);
  if (pref != r->pref)
    snprintf(r->pref, sizeof r->pref, "%s", pref);
}

static void put_str(char *dst, size_t cap, const char *src) {
  qs_event_set_str(dst, cap, src, strlen(src)); /* bounds equal: the sources are events' fields */
}

/* Supersedes the live id x (its record rx) by p: the retraction goes to x's region. */
static int supersede(const ch_sink *sink, const qs_event *ev, const char *x, ch_rec *rx,
                     const char *p) {
  qs_event m = *ev;
  put_str(m.event_id, sizeof m.event_id, x);
  m.change = QS_EVENT_SUPERSEDED;
  put_str(m.superseded_by, sizeof m.superseded_by, p);
  if (rx->region[0])
    put_str(m.region, sizeof m.region, rx->region);
  if (m.updated <= rx->updated)
    m.updated = rx->updated + 1;
  if (m.updated > QS_EVENT_TIME_MAX)
    m.updated = QS_EVENT_TIME_MAX;
  int rc = emit(sink, &m, CH_SUPERSEDED);
  if (rc)
    return rc;
  set_rec(rx, 'S', m.updated, m.region, p);
  sink->write(sink->ud, x, rx);
  return 0;
}

/* The event of e, decoded on first use (most features need none: a new event without
 * associations, or a duplicate, goes as it came or not at all). */
typedef struct lazy_ev {
  feed_entry *e;
  bool ok;
  qs_event ev;
} lazy_ev;

static qs_event *get_ev(lazy_ev *l) {
  if (!l->ok) {
    if (qs_event_from_json(&l->ev, l->e->json, l->e->len, NULL, 0) != 0)
      return NULL;
    l->ok = true;
  }
  return &l->ev;
}

/* Sends e as it came (it already says new, or deleted for a deleted feature). */
static void emit_as_is(const ch_sink *sink, feed_entry *e, ch_kind kind) {
  sink->send(sink->ud, e->json, e->len, e->region, kind);
  e->json = NULL;
  e->len = 0;
}

int ch_classify(ch_store *s, feed_entry *e, const ch_sink *sink, ch_kind *kind, bool *folded) {
  *folded = false;
  *kind = CH_DUPLICATE;
  lazy_ev lz = {.e = e};
  qs_event *ev;
  int rc = 0;
  const int64_t u = e->updated;
  const bool deleted = e->deleted;
  char p[QS_EVENT_ID_MAX + 1];
  put_str(p, sizeof p, e->id);

  /* 1. a version under an id that was associated into another: it is that one's version */
  const char *pref = resolve(s, e->id);
  if (strcmp(pref, e->id) != 0) {
    if (deleted) {
      /* USGS deleting an id it associated into another: that id is already retracted; the
       * survivor is not touched */
      ch_rec *r = ch_store_find(s, e->id);
      if (u_newer(r, u)) {
        r->updated = u;
        sink->write(sink->ud, e->id, r);
      }
      goto done;
    }
    if (!(ev = get_ev(&lz)))
      return QS_ERR_PARSE;
    put_str(ev->event_id, sizeof ev->event_id, pref);
    if (!qs_event_ids_contains(ev, e->id))
      qs_event_ids_add(ev, e->id, strlen(e->id));
    if (!qs_event_ids_contains(ev, pref))
      qs_event_ids_add(ev, pref, strlen(pref));
    put_str(p, sizeof p, pref);
    *folded = true;
  }

  /* 2. associations: every other id of the event belongs to p from now on */
  if (!deleted) {
    /* the list is fixed before the loop: decoding the event inside it changes what "ids" is */
    char list[QS_EVENT_IDS_MAX][QS_EVENT_ID_MAX + 1];
    size_t nids = lz.ok ? qs_event_ids_count(&lz.ev) : e->nids;
    if (nids > QS_EVENT_IDS_MAX)
      nids = QS_EVENT_IDS_MAX;
    for (size_t i = 0; i < nids; i++)
      put_str(list[i], sizeof list[i], lz.ok ? qs_event_ids_at(&lz.ev, i) : feed_entry_id_at(e, i));
    for (size_t i = 0; i < nids; i++) {
      const char *x = list[i];
      if (strcmp(x, p) == 0)
        continue;
      ch_rec *rx = ch_store_add(s, x);
      if (rx->state == 'S' || rx->state == 'A') {
        /* x was associated before: its current preferred id t, if live and not p, is
         * superseded by p; x itself now points at p */
        char t[QS_EVENT_ID_MAX + 1];
        put_str(t, sizeof t, resolve(s, x));
        if (strcmp(t, p) != 0 && strcmp(t, x) != 0) {
          ch_rec *rt = ch_store_add(s, t);
          if (rt->state == 'L') {
            if (!(ev = get_ev(&lz)))
              return QS_ERR_PARSE;
            if ((rc = supersede(sink, ev, t, rt, p)))
              return rc;
          }
        }
        rx = ch_store_find(s, x); /* the store may have grown */
        if (strcmp(rx->pref, p) != 0) {
          put_str(rx->pref, sizeof rx->pref, p);
          sink->write(sink->ud, x, rx);
        }
      } else if (rx->state == 'L') {
        if (!(ev = get_ev(&lz)))
          return QS_ERR_PARSE;
        if ((rc = supersede(sink, ev, x, rx, p)))
          return rc;
      } else if (rx->state == 0) {
        set_rec(rx, 'A', u, "", p);
        sink->write(sink->ud, x, rx);
      } /* 'D': a deleted id stays deleted */
    }
  }

  /* 3. the event itself */
  ch_rec *r = ch_store_add(s, p);
  switch (r->state) {
  case 'L':
    if (u <= r->updated)
      goto done;
    if (!(ev = get_ev(&lz)))
      return QS_ERR_PARSE;
    if (deleted) {
      /* to the region it was last counted in, after its earlier messages */
      if (r->region[0])
        put_str(ev->region, sizeof ev->region, r->region);
      ev->change = QS_EVENT_DELETED;
      if ((rc = emit(sink, ev, CH_DELETED)))
        return rc;
      *kind = CH_DELETED;
      set_rec(r, 'D', u, ev->region, "");
      break;
    }
    if (r->region[0] && strcmp(r->region, ev->region) != 0) {
      qs_event m = *ev;
      put_str(m.region, sizeof m.region, r->region);
      m.change = QS_EVENT_MOVED;
      if ((rc = emit(sink, &m, CH_MOVED)))
        return rc;
    }
    ev->change = QS_EVENT_REVISION;
    if ((rc = emit(sink, ev, CH_REVISION)))
      return rc;
    *kind = CH_REVISION;
    set_rec(r, 'L', u, ev->region, "");
    break;
  case 'D':
    if (u <= r->updated)
      goto done;
    if (deleted) { /* deleted again: nothing more to retract */
      r->updated = u;
      break;
    }
    /* un-deleted: counted again as new */
    __attribute__((fallthrough));
  default: /* unknown (or an S/A record whose chain could not be followed) */
    if (r->state && r->state != 'D' && u <= r->updated)
      goto done;
    if (lz.ok) {
      lz.ev.change = deleted ? QS_EVENT_DELETED : QS_EVENT_NEW;
      if ((rc = emit(sink, &lz.ev, deleted ? CH_DELETED : CH_NEW)))
        return rc;
    } else { /* it says new, or deleted for a deleted feature, as parsed */
      emit_as_is(sink, e, deleted ? CH_DELETED : CH_NEW);
    }
    *kind = deleted ? CH_DELETED : CH_NEW;
    set_rec(r, deleted ? 'D' : 'L', u, e->region, "");
    break;
  }
  sink->write(sink->ud, p, r);
done:
  free(e->json);
  e->json = NULL;
  e->len = 0;
  return 0;
}
