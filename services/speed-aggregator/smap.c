/* smap.c — string-keyed open-addressing hash map (see smap.h). Load factor kept <= 1/2. */
#include "smap.h"

#include <stdlib.h>
#include <string.h>

#include "qs/error.h"
#include "qs/hash.h"

uint64_t sa_smap_hash(const char *s) {
  uint64_t h = qs_fnv1a64_str(s); /* then a final mix for the low bits */
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

void sa_smap_init(sa_smap *m) { memset(m, 0, sizeof *m); }

void sa_smap_init_borrowed(sa_smap *m) {
  memset(m, 0, sizeof *m);
  m->borrow_keys = true;
}

void sa_smap_free(sa_smap *m) {
  bool borrow = m->borrow_keys;
  if (!borrow)
    for (size_t i = 0; i < m->cap; i++)
      free(m->slots[i].key);
  free(m->slots);
  memset(m, 0, sizeof *m);
  m->borrow_keys = borrow;
}

static size_t find(const sa_smap *m, const char *key, uint64_t h) {
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const sa_smap_slot *s = &m->slots[i];
    if (!s->key || (s->hash == h && strcmp(s->key, key) == 0))
      return i;
  }
}

void *sa_smap_get_h(const sa_smap *m, const char *key, uint64_t h) {
  if (m->cap == 0)
    return NULL;
  size_t i = find(m, key, h);
  return m->slots[i].key ? m->slots[i].value : NULL;
}

void *sa_smap_get(const sa_smap *m, const char *key) {
  return m->cap ? sa_smap_get_h(m, key, sa_smap_hash(key)) : NULL;
}

static void grow(sa_smap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 64;
  sa_smap_slot *old = m->slots;
  size_t ocap = m->cap;
  m->slots = qs_xcalloc(ncap, sizeof *m->slots);
  m->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    if (!old[i].key)
      continue;
    size_t j = find(m, old[i].key, old[i].hash);
    m->slots[j] = old[i];
  }
  free(old);
}

void *sa_smap_put(sa_smap *m, const char *key, void *value) {
  if ((m->len + 1) * 2 > m->cap)
    grow(m);
  uint64_t h = sa_smap_hash(key);
  size_t i = find(m, key, h);
  sa_smap_slot *s = &m->slots[i];
  if (s->key) {
    void *prev = s->value;
    s->value = value;
    return prev;
  }
  s->key = m->borrow_keys ? (char *)key : qs_xstrdup(key);
  s->hash = h;
  s->value = value;
  m->len++;
  return NULL;
}

sa_smap_slot *sa_smap_upsert(sa_smap *m, const char *key, bool *found) {
  return sa_smap_upsert_h(m, key, sa_smap_hash(key), found);
}

sa_smap_slot *sa_smap_upsert_h(sa_smap *m, const char *key, uint64_t h, bool *found) {
  if ((m->len + 1) * 2 > m->cap)
    grow(m);
  sa_smap_slot *s = &m->slots[find(m, key, h)];
  *found = s->key != NULL;
  if (!*found) {
    s->key = m->borrow_keys ? (char *)key : qs_xstrdup(key);
    s->hash = h;
    s->value = NULL;
    m->len++;
  }
  return s;
}

void *sa_smap_del(sa_smap *m, const char *key) {
  if (m->cap == 0)
    return NULL;
  size_t mask = m->cap - 1;
  size_t i = find(m, key, sa_smap_hash(key));
  if (!m->slots[i].key)
    return NULL;
  void *v = m->slots[i].value;
  if (!m->borrow_keys)
    free(m->slots[i].key);
  m->slots[i].key = NULL;
  m->len--;
  /* Backward-shift the following cluster so lookups never stop early at the hole. */
  for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    size_t home = m->slots[j].hash & mask;
    /* Move j into the hole i unless its home lies cyclically in (i, j]. */
    int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      m->slots[i] = m->slots[j];
      m->slots[j].key = NULL;
      i = j;
    }
  }
  return v;
}

/* ---- position index ----------------------------------------------------------------------- */

static uint32_t hash32(const char *s) { return (uint32_t)(sa_smap_hash(s) >> 32); }

static const char *pkey(const char *base, size_t stride, uint32_t pos1) {
  return base + (size_t)(pos1 - 1) * stride;
}

/* Slot holding key, or the empty slot where it would go. */
static size_t pfind(const sa_pidx *x, const char *base, size_t stride, const char *key,
                    uint32_t h) {
  size_t mask = x->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const sa_pidx_slot *s = &x->slots[i];
    if (!s->pos1 || (s->hash == h && strcmp(pkey(base, stride, s->pos1), key) == 0))
      return i;
  }
}

long sa_pidx_find(const sa_pidx *x, const char *base, size_t stride, const char *key) {
  if (x->len == 0)
    return -1;
  size_t i = pfind(x, base, stride, key, hash32(key));
  return x->slots[i].pos1 ? (long)x->slots[i].pos1 - 1 : -1;
}

static void pgrow(sa_pidx *x) {
  size_t ncap = x->cap ? x->cap * 2 : 16, mask = ncap - 1;
  sa_pidx_slot *n = qs_xcalloc(ncap, sizeof *n);
  for (size_t i = 0; i < x->cap; i++) {
    if (!x->slots[i].pos1)
      continue;
    size_t j = x->slots[i].hash & mask;
    while (n[j].pos1)
      j = (j + 1) & mask;
    n[j] = x->slots[i];
  }
  free(x->slots);
  x->slots = n;
  x->cap = ncap;
}

void sa_pidx_put(sa_pidx *x, const char *base, size_t stride, uint32_t pos) {
  if ((x->len + 1) * 2 > x->cap)
    pgrow(x);
  const char *key = base + (size_t)pos * stride;
  uint32_t h = hash32(key);
  size_t i = pfind(x, base, stride, key, h);
  if (!x->slots[i].pos1)
    x->len++;
  x->slots[i].pos1 = pos + 1;
  x->slots[i].hash = h;
}

void sa_pidx_del(sa_pidx *x, const char *base, size_t stride, const char *key) {
  if (x->len == 0)
    return;
  size_t mask = x->cap - 1;
  size_t i = pfind(x, base, stride, key, hash32(key));
  if (!x->slots[i].pos1)
    return;
  x->slots[i].pos1 = 0;
  x->len--;
  /* Backward shift, as in sa_smap_del. */
  for (size_t j = (i + 1) & mask; x->slots[j].pos1; j = (j + 1) & mask) {
    size_t home = x->slots[j].hash & mask;
    int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!in_range) {
      x->slots[i] = x->slots[j];
      x->slots[j].pos1 = 0;
      i = j;
    }
  }
}

void sa_pidx_clear(sa_pidx *x) {
  if (x->len)
    memset(x->slots, 0, x->cap * sizeof *x->slots);
  x->len = 0;
}

void sa_pidx_free(sa_pidx *x) {
  free(x->slots);
  memset(x, 0, sizeof *x);
}
