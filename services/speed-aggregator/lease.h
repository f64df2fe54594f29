/* lease.h — partition leases in Redis, so several aggregator replicas split the partitions of a
 * hub's consumer group and take over a dead replica's partitions.
 *
 * Keys (docs/keyspace.md): qs:lease:<hub>:<group>:<partition> = owner id with PX = LEASE_TTL;
 * qs:lease:<hub>:<group>:replicas = zset of live replicas (score: heartbeat expiry). Every
 * ttl/3 one Lua script, atomically: heartbeats this replica, counts live replicas, renews the
 * leases it holds, releases those beyond its fair share ceil(partitions / replicas) and acquires
 * free ones up to it. A replica that dies stops renewing: its leases expire within LEASE_TTL and
 * the others pick them up; a replica that joins makes the others release their extras.
 * Leases are also the commit fence (store.c): a replica that lost one cannot commit for it.
 */
#ifndef SA_LEASE_H
#define SA_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "qs/redis.h"

#include "engine.h"

typedef struct sa_lease sa_lease;
/* Changes of ownership; called from the loop after each round. */
typedef void (*sa_lease_change_cb)(sa_lease *l, int partition, bool acquired, void *ud);

struct sa_lease {
  qs_redis *redis;
  uv_timer_t timer;
  char owner[128];
  char prefix[600];  /* qs:lease:<hub>:<group>: */
  char members[640]; /* ...replicas */
  int partitions;
  int64_t ttl_ms;
  bool owned[SA_PARTITIONS_MAX];
  bool inflight, closing, started;
  sa_lease_change_cb cb;
  void *ud;
  void (*close_cb)(sa_lease *l);
  uint64_t rounds, failures;
};

void sa_lease_init(sa_lease *l, uv_loop_t *loop, qs_redis *r, const char *hub, const char *group,
                   const char *owner, int64_t ttl_ms, sa_lease_change_cb cb, void *ud);
/* Starts the rounds for `partitions` partitions (the first round at once). */
void sa_lease_start(sa_lease *l, int partitions);
/* Runs a round now (e.g. after a partition was lost). */
void sa_lease_kick(sa_lease *l);
int sa_lease_owned_count(const sa_lease *l);
/* Releases every lease held (compare-and-delete) and stops; cb when done (the timer closed). */
void sa_lease_close(sa_lease *l, void (*cb)(sa_lease *l));
/* Forgets a partition locally (it was stolen); the next round may acquire it again. */
void sa_lease_drop(sa_lease *l, int partition);

#endif
