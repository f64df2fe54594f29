/* filter.h — Event Hubs start-position filters (apache.org:selector-filter).
 *
 * Parses the receiver source's filter map (the key is the symbol
 * apache.org:selector-filter:string; the described value's descriptor is the
 * ulong 0x0000468C00000004 or that symbol) and its expression:
 *   amqp.annotation.x-opt-offset          >|>= '<n>' | '-1' | '@latest'
 *   amqp.annotation.x-opt-sequence-number >|>= '<n>'
 *   amqp.annotation.x-opt-enqueued-time   >|>= '<epoch ms>'
 * Names compare case-insensitively; the expression is at most 512 bytes.
 */
#ifndef HUB_FILTER_H
#define HUB_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proton/codec.h>

#define HUB_FILTER_SELECTOR "apache.org:selector-filter:string"
#define HUB_FILTER_SELECTOR_CODE UINT64_C(0x0000468C00000004)
#define HUB_FILTER_MAX_EXPR 512

typedef enum hub_pos_kind {
  HUB_POS_EARLIEST,
  HUB_POS_LATEST,
  HUB_POS_OFFSET,
  HUB_POS_SEQ,
  HUB_POS_TIME
} hub_pos_kind;

typedef struct hub_position {
  hub_pos_kind kind;
  bool inclusive;
  int64_t value;
} hub_position;

/* Parse one expression. 0 or QS_ERR_PARSE with a reason in err. */
int hub_filter_parse_expr(const char *s, size_t len, hub_position *out, char *err, size_t errlen);

/* Parse a terminus filter (may be empty: earliest). */
int hub_filter_from_data(pn_data_t *filter, hub_position *out, char *err, size_t errlen);

#endif
