/* evfast.h — what the fold needs of an event body, decoded without allocation or copies.
 *
 * qs_event_from_json builds a cJSON tree per body (about 25 allocations) and copies every field
 * into a 4 KiB qs_event; the fold needs a dozen of them. bw_event_decode first tries a single-pass
 * scanner that accepts only the plain shape producers write: one flat object whose members are
 * all known event fields, at most once each, strings of printable ASCII without escapes, numbers
 * in strict JSON grammar, ids as an array of such strings. It checks every field as
 * qs_event_validate would (ranges, lengths, enum names, id characters), but keeps only what the
 * fold uses, as a view: strings point into the body. Anything else — an escape, a non-ASCII byte,
 * an unknown member, a nested value, a type or range the codec would reject — falls back to
 * qs_event_from_json, so the outcome (accepted or not, error code and reason) is always the
 * codec's: the fast path only ever accepts input that the codec accepts and decodes to the same
 * view. tests/unit/test_batch.c checks that equivalence on valid and mutated bodies.
 */
#ifndef BW_EVFAST_H
#define BW_EVFAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qs/event.h"

typedef struct bw_str {
  const char *p; /* not NUL-terminated */
  size_t len;
} bw_str;

/* The fold's fields of a valid event. Strings point into the body (fast path) or into the
 * caller's scratch qs_event (fallback): valid until either is reused. */
typedef struct bw_event_view {
  bw_str event_id;
  bw_str region;
  int64_t time;
  int64_t updated;
  int64_t ingested_at;
  double magnitude; /* 0 unless has_magnitude */
  double depth_km;  /* 0 unless has_depth */
  bool has_magnitude;
  bool has_depth;
  bool tsunami_flag;
  bool status_deleted; /* status is "deleted" */
  qs_event_change change;
  /* The distinct entries of ids other than event_id, in their order of first appearance. */
  size_t n_other_ids;
  bw_str other_ids[QS_EVENT_IDS_MAX];
} bw_event_view;

/* Same outcome as qs_event_from_json (0, or its error code and reason); on success *v holds the
 * event's view. scratch is where the fallback decodes (v may point into it). */
int bw_event_decode(bw_event_view *v, qs_event *scratch, const char *json, size_t len, char *why,
                    size_t whylen);

/* The fast path alone: 1 = decoded and valid, 0 = not handled (v unspecified). For tests. */
int bw_event_decode_fast(bw_event_view *v, const char *json, size_t len);

/* The view of a decoded, valid qs_event (pointers into ev). */
void bw_event_view_of(bw_event_view *v, const qs_event *ev);

#endif
