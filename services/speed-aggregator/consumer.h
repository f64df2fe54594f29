/* consumer.h — the aggregator's event source on Event Hubs: one qs_eh consumer per leased
 * partition of the hub's consumer group, started after the partition's checkpoint and with an
 * owner level (epoch) that grows with each takeover, so a replica that lost a lease but still
 * reads is cut off by the hub (amqp:link:stolen) as well as by the commit fence.
 */
#ifndef SA_CONSUMER_H
#define SA_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "qs/eh.h"

#include "aggregator.h"

typedef struct sa_consumer {
  qs_eh_client *client;
  char hub[QS_EH_HUB_MAX + 1];
  char group[QS_EH_HUB_MAX + 1];
  qs_eh_position start; /* when a partition has no checkpoint */
  uint32_t prefetch;
  qs_eh_consumer *cons[SA_PARTITIONS_MAX];
  bool paused;
  sa_agg *agg;
} sa_consumer;

extern const sa_source_ops sa_consumer_ops;

void sa_consumer_init(sa_consumer *c, qs_eh_client *client, const char *hub, const char *group,
                      qs_eh_position start, uint32_t prefetch);
/* Closes every open partition consumer. */
void sa_consumer_close_all(sa_consumer *c);

#endif
