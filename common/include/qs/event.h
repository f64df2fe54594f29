/* event.h — the earthquake event of quakestream and its JSON codec.
 *
 * One qs_event is one message on the earthquake-events hub: a USGS event (or
 * a revision, deletion or association of it) as proto/earthquake-event.schema.json
 * describes it. The struct is self-contained and fixed-size (no pointers), so
 * it can be copied with memcpy / assignment and kept in arrays; every string
 * is NUL-terminated inside its array, and the ids list lives in a small
 * per-event arena. Strings are never NULL: "" means unknown.
 *
 * Invariants of a valid event (qs_event_validate): event_id non-empty and
 * made of [A-Za-z0-9_.:-]; time and updated in (0, QS_EVENT_TIME_MAX];
 * latitude in [-90, 90], longitude in [-180, 180], depth_km (when present) in
 * [-10, 1000], magnitude (when present) in [-2, 10.5], all finite; strings
 * valid UTF-8 and within their limits; change == SUPERSEDED exactly when
 * superseded_by is set, and superseded_by != event_id.
 *
 * Decoding first tries a single-pass scanner that allocates nothing and accepts only the plain
 * shape producers write (one flat object of known members, each at most once; strings of
 * printable ASCII without escapes; numbers in strict JSON grammar); anything else (an escape,
 * non-ASCII, an unknown member, an error) goes to the cJSON decoder, so the outcome (event, error
 * code, reason) is always the cJSON decoder's.
 */
#ifndef QS_EVENT_H
#define QS_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QS_EVENT_ID_MAX 64      /* bytes of event_id, superseded_by, each ids entry */
#define QS_EVENT_PLACE_MAX 512  /* bytes of place */
#define QS_EVENT_SHORT_MAX 64   /* bytes of mag_type, event_type, status, net, region, source */
#define QS_EVENT_IDS_MAX 64     /* entries in ids */
#define QS_EVENT_IDS_BYTES 1024 /* arena of ids: sum of (entry length + 1) */
#define QS_EVENT_JSON_MAX 16384 /* largest encoded event, and largest accepted input */
#define QS_EVENT_SIG_MAX 100000 /* sig in [0, QS_EVENT_SIG_MAX] */
/* Epoch ms upper bound for time/updated/ingested_at (year 3000); also keeps
 * every value exactly representable as a JSON double (< 2^53). */
#define QS_EVENT_TIME_MAX INT64_C(32503680000000)

typedef enum qs_event_change {
  QS_EVENT_NEW = 0,    /* first sighting of event_id */
  QS_EVENT_REVISION,   /* same event_id, newer updated: replaces the old one */
  QS_EVENT_DELETED,    /* retracts event_id */
  QS_EVENT_SUPERSEDED, /* retracts event_id; superseded_by names the survivor */
  QS_EVENT_MOVED,      /* the event left `region` (a newer version is counted elsewhere):
                        * retracts it from this region's windows only (docs/changes.md) */
} qs_event_change;
#define QS_EVENT_CHANGE_LAST QS_EVENT_MOVED

typedef enum qs_alert_level {
  QS_ALERT_NONE = 0, /* JSON null: no PAGER alert */
  QS_ALERT_GREEN,
  QS_ALERT_YELLOW,
  QS_ALERT_ORANGE,
  QS_ALERT_RED,
} qs_alert_level;

typedef struct qs_event {
  char event_id[QS_EVENT_ID_MAX + 1];
  bool has_magnitude; /* false: magnitude is JSON null */
  double magnitude;
  char mag_type[QS_EVENT_SHORT_MAX + 1];
  char place[QS_EVENT_PLACE_MAX + 1];
  int64_t time;    /* origin, epoch ms */
  int64_t updated; /* epoch ms of this revision */
  double longitude;
  double latitude;
  bool has_depth; /* false: depth_km is JSON null */
  double depth_km;
  char event_type[QS_EVENT_SHORT_MAX + 1];
  char status[QS_EVENT_SHORT_MAX + 1];
  bool tsunami_flag;
  qs_alert_level alert_level;
  char net[QS_EVENT_SHORT_MAX + 1];
  int32_t sig;
  char region[QS_EVENT_SHORT_MAX + 1];
  char source[QS_EVENT_SHORT_MAX + 1];
  int64_t ingested_at; /* epoch ms; 0 = not yet ingested */
  qs_event_change change;
  char superseded_by[QS_EVENT_ID_MAX + 1];
  /* ids: ids_count NUL-terminated strings packed in ids_buf at ids_off[i]. */
  uint16_t ids_count;
  uint16_t ids_used;
  uint16_t ids_off[QS_EVENT_IDS_MAX];
  char ids_buf[QS_EVENT_IDS_BYTES];
} qs_event;

/* Resets every field: empty strings, no magnitude/depth, change NEW. Cheap
 * (does not clear the arrays). */
void qs_event_init(qs_event *ev);

/* Decodes one JSON object of len bytes (need not be NUL-terminated) into ev
 * and validates it. On failure returns QS_ERR_PARSE (not JSON / not an object),
 * QS_ERR_TOOBIG (len > QS_EVENT_JSON_MAX) or QS_ERR_INVALID, and writes a
 * reason naming the field into why (if whylen > 0); ev is then unspecified.
 * Unknown members are ignored; duplicate known members are rejected. */
int qs_event_from_json(qs_event *ev, const char *json, size_t len, char *why, size_t whylen);

/* qs_event_from_json's two halves, for tests. fast: 1 = decoded and valid, 0 = not handled (ev
 * unspecified); it accepts only input that tree decodes to the identical event. tree: the
 * reference decoder on one cJSON tree (same contract as qs_event_from_json). */
int qs_event_from_json_fast(qs_event *ev, const char *json, size_t len);
int qs_event_from_json_tree(qs_event *ev, const char *json, size_t len, char *why, size_t whylen);

/* Checks the invariants listed at the top of this file. 0 or QS_ERR_INVALID
 * with a reason naming the field. */
int qs_event_validate(const qs_event *ev, char *why, size_t whylen);

/* Encodes ev as one JSON object with a fixed member order, doubles in their
 * shortest round-trip form. Like snprintf: returns the length the encoding
 * needs (excluding the NUL) and writes at most cap bytes including a NUL; the
 * output is complete iff the return value < cap. Never exceeds
 * QS_EVENT_JSON_MAX - 1 for a valid event. Non-finite doubles encode as null. */
size_t qs_event_to_json(const qs_event *ev, char *buf, size_t cap);

/* True when every field of a and b is equal (strings by content). */
bool qs_event_equal(const qs_event *a, const qs_event *b);

/* Copies len bytes of src into the fixed array dst of dstsize bytes, NUL
 * terminated. QS_ERR_TOOBIG (dst set to "") if it does not fit. Use as
 * qs_event_set_str(ev->region, sizeof ev->region, name, strlen(name)). */
int qs_event_set_str(char *dst, size_t dstsize, const char *src, size_t len);

/* ids list. add: QS_ERR_INVALID for an empty or ill-formed id, QS_ERR_TOOBIG
 * when the entry or arena limits are exceeded; adding an id already present
 * is a no-op returning 0. */
int qs_event_ids_add(qs_event *ev, const char *id, size_t len);
size_t qs_event_ids_count(const qs_event *ev);
const char *qs_event_ids_at(const qs_event *ev, size_t i); /* NULL if i >= count */
bool qs_event_ids_contains(const qs_event *ev, const char *id);
void qs_event_ids_clear(qs_event *ev);

/* True when s[0..len) is a well-formed id: 1..QS_EVENT_ID_MAX of [A-Za-z0-9_.:-]. */
bool qs_event_id_is_valid(const char *s, size_t len);

/* Names used in JSON: "new", "revision", "deleted", "superseded";
 * "green".."red" (NULL for QS_ALERT_NONE). parse returns QS_ERR_INVALID for an
 * unknown name. */
const char *qs_event_change_name(qs_event_change c);
int qs_event_change_parse(const char *s, qs_event_change *out);
const char *qs_alert_level_name(qs_alert_level a);
int qs_alert_level_parse(const char *s, qs_alert_level *out);

/* True when the event takes its event_id out of every count (deleted or
 * superseded). */
bool qs_event_is_retraction(const qs_event *ev);
/* The same rule on a change kind alone: deleted or superseded. */
bool qs_event_change_is_retraction(qs_event_change c);

#endif
