/* cbs.h — $cbs put-token handling (claims-based security).
 *
 * Message level only: takes a decoded request, verifies its SAS token
 * through the configured auth callback, and fills a reply message
 * (correlation-id = request message-id with its AMQP type, status-code
 * int32, status-description). The caller routes the reply and records the
 * grant on the connection.
 */
#ifndef HUB_CBS_H
#define HUB_CBS_H

#include <proton/message.h>

#include "broker.h"

typedef struct hub_cbs_grant {
  char path[HUB_PATH_MAX]; /* canonical audience path ("" = namespace) */
  int64_t expires_s;
  unsigned rights;
} hub_cbs_grant;

/* Start a reply: correlation-id from req, status-code and description. */
void hub_reply_status(pn_message_t *reply, pn_message_t *req, int32_t code, const char *desc);
/* String application property of m, or NULL (pointer into m). */
const char *hub_msg_prop_string(pn_message_t *m, const char *key, size_t *len);

/* Handle one put-token. Returns the status code written into reply: 202
 * (grant filled), 400, 401 or 404. */
int hub_cbs_put_token(const hub_broker_config *cfg, pn_message_t *req, int64_t now_ms,
                      pn_message_t *reply, hub_cbs_grant *grant);

#endif
