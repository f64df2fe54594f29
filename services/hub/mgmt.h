/* mgmt.h — $management READ of com.microsoft:eventhub / :partition.
 *
 * Message level only: fills the reply (status-code int32 200/400/401/404,
 * status-description, amqp-value map body with string keys). The request
 * body may be absent; odd application properties (Python's described
 * security_token) are ignored.
 */
#ifndef HUB_MGMT_H
#define HUB_MGMT_H

#include <stdbool.h>

#include <proton/message.h>

#include "broker.h"

/* Is the connection authorised for this hub's management node? */
typedef bool (*hub_mgmt_authorised_fn)(void *arg, const char *hub);

/* Returns the status code written into reply. */
int hub_mgmt_handle(const hub_broker_config *cfg, pn_message_t *req, pn_message_t *reply,
                    hub_mgmt_authorised_fn authorised, void *arg);

#endif
