/* evfast.h — a no-allocation fast path in front of qs_event_from_json for the batch layer.
 *
 * qs_event_from_json builds a cJSON tree per body (about 25 allocations), which is most of the
 * batch worker's time. bw_event_decode first tries a single-pass scanner that accepts only the
 * plain shape producers write: one flat object whose members are all known event fields, at most
 * once each, strings of printable ASCII without escapes, numbers in strict JSON grammar, ids as
 * an array of such strings. Anything else — an escape, a non-ASCII byte, an unknown member, a
 * nested value, a type or range the codec would reject — falls back to qs_event_from_json, so
 * the outcome (event, error code and reason) is always the codec's: the fast path only ever
 * accepts input that the codec decodes to the identical qs_event and that passes
 * qs_event_validate. tests/unit/test_batch.c checks that equivalence on valid and mutated bodies.
 */
#ifndef BW_EVFAST_H
#define BW_EVFAST_H

#include <stddef.h>

#include "qs/event.h"

/* Same contract as qs_event_from_json. */
int bw_event_decode(qs_event *ev, const char *json, size_t len, char *why, size_t whylen);

/* The fast path alone: 1 = decoded and valid, 0 = not handled (ev unspecified). For tests. */
int bw_event_decode_fast(qs_event *ev, const char *json, size_t len);

#endif
