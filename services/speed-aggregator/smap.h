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
/* Inserts or replaces; returns the previous value or NULL. */
void *sa_smap_put(sa_smap *m, const char *key, void *value);
/* Removes; returns the value or NULL. */
void *sa_smap_del(sa_smap *m, const char *key);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... */

#endif
