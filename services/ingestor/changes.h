/* changes.h — turns USGS features into the hub messages of docs/changes.md: new events,
 * revisions, deletions, supersedes (associations) and region moves, from per-id state.
 *
 * One classifier for the pollers (state loaded from Redis, written back once the hub has
 * acknowledged a feature's messages) and for replay (state kept in memory for the file).
 */
#ifndef INGEST_CHANGES_H
#define INGEST_CHANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ingest.h"

/* Longest formatted record: "<updated>|<state>|<region>|<preferred>". */
#define CH_REC_MAX (20 + 3 + QS_EVENT_SHORT_MAX + QS_EVENT_ID_MAX + 2)

/* What the ingestor remembers of one id (qs:ingest:seen:<id>). */
typedef struct ch_rec {
  int64_t updated; /* newest version sent (or decided on) */
  char state;      /* 0 unknown, 'L' live, 'D' deleted, 'S' superseded, 'A' alias only */
  char region[QS_EVENT_SHORT_MAX + 1]; /* where it was last counted ("" unknown) */
  char pref[QS_EVENT_ID_MAX + 1];      /* S, A: the preferred id it belongs to */
} ch_rec;

/* Parses a stored value; a bare "<updated>" (an older ingestor) reads as live, region unknown.
 * QS_ERR_PARSE for anything else (the id is then treated as unknown). */
int ch_rec_parse(ch_rec *r, const char *s, size_t n);
/* Formats r; returns the length (< CH_REC_MAX). */
size_t ch_rec_format(const ch_rec *r, char *buf, size_t cap);

/* id -> record, for the ids of one poll (or a whole replay). */
typedef struct ch_store ch_store;
ch_store *ch_store_new(void);
void ch_store_free(ch_store *s);
void ch_store_clear(ch_store *s);
size_t ch_store_count(const ch_store *s);
/* id's record, or NULL when it was never added (not loaded). */
ch_rec *ch_store_find(ch_store *s, const char *id);
/* id's record, added as unknown (state 0) when missing. */
ch_rec *ch_store_add(ch_store *s, const char *id);

typedef enum ch_kind {
  CH_NEW,
  CH_REVISION,
  CH_DELETED,
  CH_SUPERSEDED,
  CH_MOVED,
  CH_FOLDED,    /* a version under an id that was associated into another: sent as that one's */
  CH_DUPLICATE, /* nothing sent */
  CH_KINDS
} ch_kind;
extern const char *const ch_kind_names[CH_KINDS]; /* new, revision, deleted, ... */

typedef struct ch_sink {
  /* A message to send, in this order (order matters per key). json is malloc'd; the callee
   * takes it. kind: CH_NEW, CH_REVISION, CH_DELETED, CH_SUPERSEDED or CH_MOVED. */
  void (*send)(void *ud, char *json, size_t len, const char *key, ch_kind kind);
  /* A record to store once every message of this feature is acknowledged. */
  void (*write)(void *ud, const char *id, const ch_rec *r);
  void *ud;
} ch_sink;

/* Calls fn for every id whose record ch_classify may read for e: its id, its other ids, and the
 * preferred ids of the records of those already in s (call again after loading them, until no
 * id is missing: chains of associations). Returns the number of ids reported. */
size_t ch_needed_ids(ch_store *s, const feed_entry *e, void (*fn)(const char *id, void *ud),
                     void *ud);

/* Classifies e against s (ids not in s count as unknown), updates s, and reports the messages
 * and records through sink. e->json is consumed (NULL afterwards). Returns e's kind: CH_NEW,
 * CH_REVISION, CH_DELETED or CH_DUPLICATE; *folded is set when e arrived under an old id. 0 or
 * an error code (an event that cannot be re-encoded: nothing was sent). */
int ch_classify(ch_store *s, feed_entry *e, const ch_sink *sink, ch_kind *kind, bool *folded);

#endif
