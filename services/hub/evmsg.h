/* evmsg.h — AMQP message section codec for the hub (byte level, no pn_data).
 *
 * Works on the encoded bytes of an AMQP 1.0 message: walks its sections,
 * finds the partition key, detects Event Hubs batches by content, and
 * re-encodes a stored event with the delivery/message annotations the hub
 * adds, keeping every other section byte-identical.
 * Invariants: every length is checked against the buffer; nesting of
 * described values is bounded (HUB_EVMSG_MAX_DEPTH); nothing is allocated
 * except the annotate() output.
 */
#ifndef HUB_EVMSG_H
#define HUB_EVMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUB_EVMSG_MAX_DEPTH 16
#define HUB_EVMSG_MAX_PKEY 128

/* Section descriptor codes. */
enum {
  HUB_SEC_HEADER = 0x70,
  HUB_SEC_DELIVERY_ANN = 0x71,
  HUB_SEC_MESSAGE_ANN = 0x72,
  HUB_SEC_PROPERTIES = 0x73,
  HUB_SEC_APP_PROPS = 0x74,
  HUB_SEC_DATA = 0x75,
  HUB_SEC_SEQUENCE = 0x76,
  HUB_SEC_VALUE = 0x77,
  HUB_SEC_FOOTER = 0x78
};

typedef struct hub_evmsg_section {
  uint8_t code;         /* 0x70..0x78 */
  const uint8_t *start; /* the whole section, from its 0x00 */
  size_t len;
  const uint8_t *value; /* the section's value (after the descriptor) */
  size_t value_len;
} hub_evmsg_section;

/* Length of the one encoded value at p. 0 or QS_ERR_PARSE. */
int hub_evmsg_skip(const uint8_t *p, size_t n, size_t *len);

/* Next section at *pos: 1 with *sec filled, 0 at the end, QS_ERR_PARSE. */
int hub_evmsg_next(const uint8_t *msg, size_t len, size_t *pos, hub_evmsg_section *sec);

typedef struct hub_evmsg_info {
  bool is_batch;    /* body is only data sections, each an encoded message */
  size_t body_pos;  /* position of the first body section */
  const char *pkey; /* x-opt-partition-key of the message annotations */
  size_t pkey_len;
  size_t n_events; /* data sections when is_batch, else 1 */
} hub_evmsg_info;

/* Validate a whole message and describe it. QS_ERR_PARSE if not a message,
 * QS_ERR_TOOBIG if the partition key is longer than HUB_EVMSG_MAX_PKEY. */
int hub_evmsg_inspect(const uint8_t *msg, size_t len, hub_evmsg_info *out);

/* Iterate a batch's events from *pos (start at info.body_pos): 1 and the
 * event bytes, 0 at the end, or QS_ERR_PARSE. */
int hub_evmsg_batch_next(const uint8_t *msg, size_t len, size_t *pos, const uint8_t **ev,
                         size_t *ev_len);

typedef struct hub_evmsg_annot {
  int64_t seq, offset, enqueued_ms;
  const char *pkey; /* NULL: none */
  size_t pkey_len;
  int64_t last_seq, last_offset, last_enqueued_ms, now_ms;
} hub_evmsg_annot;

/* The stored event with x-opt-* message annotations merged in (replacing
 * same-named keys) and a fresh delivery-annotations section carrying the
 * last-enqueued runtime info. Returns a malloc'd buffer (caller frees) or
 * NULL with *err set. */
uint8_t *hub_evmsg_annotate(const uint8_t *msg, size_t len, const hub_evmsg_annot *a,
                            size_t *out_len, int *err);

#endif
