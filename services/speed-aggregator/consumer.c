/* consumer.c — Event Hubs partition consumers feeding the aggregator (see consumer.h). */
#include "consumer.h"

#include <stdio.h>
#include <string.h>

#include "qs/error.h"
#include "qs/timeutil.h"

void sa_consumer_init(sa_consumer *c, qs_eh_client *client, const char *hub, const char *group,
                      qs_eh_position start, uint32_t prefetch) {
  memset(c, 0, sizeof *c);
  c->client = client;
  snprintf(c->hub, sizeof c->hub, "%s", hub);
  snprintf(c->group, sizeof c->group, "%s", group);
  c->start = start;
  c->prefetch = prefetch;
}

static void on_event(qs_eh_consumer *cons, const qs_eh_event_in *ev, void *ud) {
  (void)cons;
  sa_consumer *c = ud;
  sa_agg_on_event(c->agg, ev->partition, ev->sequence, ev->offset, ev->enqueued_ms, ev->body,
                  ev->len);
}

static void on_error(qs_eh_consumer *cons, int code, const char *condition, const char *desc,
                     void *ud) {
  sa_consumer *c = ud;
  int p = -1;
  for (int i = 0; i < SA_PARTITIONS_MAX; i++)
    if (c->cons[i] == cons)
      p = i;
  char reason[512];
  snprintf(reason, sizeof reason, "%s: %s %s", qs_strerror(code), condition ? condition : "",
           desc ? desc : "");
  sa_agg_on_source_error(c->agg, p, reason);
}

static int src_open(void *src, int partition, int64_t after) {
  sa_consumer *c = src;
  if (partition < 0 || partition >= SA_PARTITIONS_MAX)
    return QS_ERR_RANGE;
  if (c->cons[partition]) {
    qs_eh_consumer_close(c->cons[partition]);
    c->cons[partition] = NULL;
  }
  qs_eh_consumer_opts o;
  memset(&o, 0, sizeof o);
  o.hub = c->hub;
  o.consumer_group = c->group;
  o.partition = partition;
  if (after >= 0) {
    o.start.kind = QS_EH_POS_SEQUENCE;
    o.start.value = after;
    o.start.inclusive = false;
  } else {
    o.start = c->start;
  }
  o.prefetch = c->prefetch;
  /* Epoch: later owners get higher levels (wall clock ms; leases expire in seconds). */
  o.owner_level = qs_time_now_ms();
  o.on_event = on_event;
  o.on_error = on_error;
  o.ud = c;
  int rc = qs_eh_consumer_open(c->client, &o, &c->cons[partition]);
  if (rc != 0) {
    c->cons[partition] = NULL;
    return rc;
  }
  if (c->paused)
    qs_eh_consumer_pause(c->cons[partition]);
  return 0;
}

static void src_close(void *src, int partition) {
  sa_consumer *c = src;
  if (partition < 0 || partition >= SA_PARTITIONS_MAX || !c->cons[partition])
    return;
  qs_eh_consumer_close(c->cons[partition]);
  c->cons[partition] = NULL;
}

static void src_pause(void *src) {
  sa_consumer *c = src;
  c->paused = true;
  for (int i = 0; i < SA_PARTITIONS_MAX; i++)
    if (c->cons[i])
      qs_eh_consumer_pause(c->cons[i]);
}

static void src_resume(void *src) {
  sa_consumer *c = src;
  c->paused = false;
  for (int i = 0; i < SA_PARTITIONS_MAX; i++)
    if (c->cons[i])
      qs_eh_consumer_resume(c->cons[i]);
}

const sa_source_ops sa_consumer_ops = {src_open, src_close, src_pause, src_resume};

void sa_consumer_close_all(sa_consumer *c) {
  for (int i = 0; i < SA_PARTITIONS_MAX; i++)
    src_close(c, i);
}
