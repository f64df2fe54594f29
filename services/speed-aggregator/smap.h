/* smap.h — a string-keyed hash map (open addressing, linear probing, tombstone-free deletion by
 * backward shift). Keys are copied; values are opaque pointers the caller owns. Used for the
 * aggregator's state caches, so lookups stay O(1) at hundreds of thousands of events per second.
 */
#ifndef SA_SMAP_H
#define SA_SMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sa_smap_slot {
  char *key; /* NULL: empty */
  uint64_t hash;
  void *value;
} sa_smap_slot;

typedef struct sa_smap {
  sa_smap_slot *slots;
  size_t cap; /* power of two, 0 before the first insert */
  size_t len;
  bool borrow_keys; /* keys are not copied: each key lives (unchanged) inside its value */
} sa_smap;

void sa_smap_init(sa_smap *m);
/* A map whose keys are owned by the caller (e.g. the id inside the value): saves a copy per
 * insert. The key must stay valid and unchanged while it is in the map. */
void sa_smap_init_borrowed(sa_smap *m);
/* Frees the map's slots and key copies (not the values). */
void sa_smap_free(sa_smap *m);
void *sa_smap_get(const sa_smap *m, const char *key);
/* The map's hash of key: computed once, it can be handed to the _h variants (a key looked up
 * several times, e.g. an event record's key carried by its queue item). */
uint64_t sa_smap_hash(const char *key);
void *sa_smap_get_h(const sa_smap *m, const char *key, uint64_t hash);
/* Inserts or replaces; returns the previous value or NULL. */
void *sa_smap_put(sa_smap *m, const char *key, void *value);
/* The slot of key, inserted (NULL value) when absent, with one hash and one probe sequence;
 * *found tells which. A new slot's key is `key` itself: in a borrowed map the caller must then
 * point slot->key at the stable copy the value holds (equal bytes) before the next call. */
sa_smap_slot *sa_smap_upsert(sa_smap *m, const char *key, bool *found);
sa_smap_slot *sa_smap_upsert_h(sa_smap *m, const char *key, uint64_t hash, bool *found);
/* Removes; returns the value or NULL. */
void *sa_smap_del(sa_smap *m, const char *key);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... */

/* A position index over an array of fixed-size strings the caller owns (key i is at
 * base + i * stride; base may move between calls, e.g. after realloc): string -> position,
 * without a copy of any key. 8 bytes per slot (position + 1, 32 bits of the hash), load factor
 * <= 1/2. It indexes a window's members, where the key copies of an sa_smap cost a malloc and a
 * free per event. */
typedef struct sa_pidx_slot {
  uint32_t pos1; /* position + 1; 0: empty */
  uint32_t hash;
} sa_pidx_slot;

typedef struct sa_pidx {
  sa_pidx_slot *slots;
  size_t cap, len;
} sa_pidx;

/* Position of key, or -1. */
long sa_pidx_find(const sa_pidx *x, const char *base, size_t stride, const char *key);
/* Indexes the string at position pos (replacing the entry of an equal key). */
void sa_pidx_put(sa_pidx *x, const char *base, size_t stride, uint32_t pos);
/* Removes key's entry (nothing if absent). */
void sa_pidx_del(sa_pidx *x, const char *base, size_t stride, const char *key);
/* Empties the index (keeps its memory); sa_pidx_free releases it. */
void sa_pidx_clear(sa_pidx *x);
void sa_pidx_free(sa_pidx *x);

#endif
