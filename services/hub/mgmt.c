/* mgmt.c — $management READ (see mgmt.h).
 *
 * Reads hub facts from the entity lookup and partition facts from the
 * store's info(). An empty partition reports -1, -1, "-1" and time 0, which
 * both SDKs accept.
 */
#include "mgmt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cbs.h"
#include "qs/error.h"

static void put_str(pn_data_t *d, const char *s) { pn_data_put_string(d, pn_bytes(strlen(s), s)); }

static void kv_str(pn_data_t *d, const char *k, const char *v) {
  put_str(d, k);
  put_str(d, v);
}

static bool prop_eq(pn_message_t *m, const char *key, const char *val) {
  size_t l;
  const char *s = hub_msg_prop_string(m, key, &l);
  return s && l == strlen(val) && strncasecmp(s, val, l) == 0;
}

static void not_found(pn_message_t *reply, pn_message_t *req, const char *what) {
  char desc[HUB_PATH_MAX + 64];
  snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.", what);
  hub_reply_status(reply, req, 404, desc);
}

int hub_mgmt_handle(const hub_broker_config *cfg, pn_message_t *req, pn_message_t *reply,
                    hub_mgmt_authorised_fn authorised, void *arg) {
  if (!prop_eq(req, "operation", "READ")) {
    hub_reply_status(reply, req, 400, "Unsupported operation");
    return 400;
  }
  size_t nl = 0;
  const char *name = hub_msg_prop_string(req, "name", &nl);
  char hub[HUB_NAME_MAX];
  if (!name || nl == 0 || nl >= sizeof hub) {
    hub_reply_status(reply, req, 400, "Missing entity name");
    return 400;
  }
  memcpy(hub, name, nl);
  hub[nl] = 0;
  const hub_entity *ent = cfg->entity_lookup(cfg->entity_ctx, hub);
  if (!ent) {
    not_found(reply, req, hub);
    return 404;
  }
  if (!authorised(arg, ent->name)) {
    hub_reply_status(reply, req, 401, "Unauthorized: no valid token for the entity");
    return 401;
  }
  bool is_hub = prop_eq(req, "type", "com.microsoft:eventhub");
  bool is_part = prop_eq(req, "type", "com.microsoft:partition");
  if (!is_hub && !is_part) {
    hub_reply_status(reply, req, 400, "Unsupported entity type");
    return 400;
  }
  int part = -1;
  hub_part_info info;
  char partstr[16];
  if (is_part) {
    size_t pl = 0;
    const char *ps = hub_msg_prop_string(req, "partition", &pl);
    if (!ps || pl == 0 || pl >= sizeof partstr) {
      not_found(reply, req, hub);
      return 404;
    }
    memcpy(partstr, ps, pl);
    partstr[pl] = 0;
    char *end;
    long v = strtol(partstr, &end, 10);
    if (*end || v < 0 || v >= ent->partition_count || partstr[0] < '0' || partstr[0] > '9') {
      char what[HUB_NAME_MAX + 48];
      snprintf(what, sizeof what, "%s/Partitions/%s", ent->name, partstr);
      not_found(reply, req, what);
      return 404;
    }
    part = (int)v;
    if (cfg->store.info(cfg->store.ctx, ent->name, part, &info) < 0) {
      hub_reply_status(reply, req, 500, "Partition information unavailable");
      return 500;
    }
  }
  hub_reply_status(reply, req, 200, "OK");
  pn_data_t *b = pn_message_body(reply);
  pn_data_clear(b);
  pn_data_put_map(b);
  pn_data_enter(b);
  kv_str(b, "name", ent->name);
  if (is_hub) {
    kv_str(b, "type", "com.microsoft:eventhub");
    put_str(b, "created_at");
    pn_data_put_timestamp(b, ent->created_at_ms);
    put_str(b, "partition_count");
    pn_data_put_int(b, ent->partition_count);
    put_str(b, "partition_ids");
    pn_data_put_array(b, false, PN_STRING);
    pn_data_enter(b);
    for (int i = 0; i < ent->partition_count; i++) {
      char id[16];
      snprintf(id, sizeof id, "%d", i);
      put_str(b, id);
    }
    pn_data_exit(b);
  } else {
    char off[32];
    kv_str(b, "type", "com.microsoft:partition");
    kv_str(b, "partition", partstr);
    put_str(b, "begin_sequence_number");
    pn_data_put_long(b, info.empty ? -1 : info.begin_seq);
    put_str(b, "last_enqueued_sequence_number");
    pn_data_put_long(b, info.empty ? -1 : info.last_seq);
    snprintf(off, sizeof off, "%lld", (long long)(info.empty ? -1 : info.last_offset));
    kv_str(b, "last_enqueued_offset", off);
    put_str(b, "last_enqueued_time_utc");
    pn_data_put_timestamp(b, info.empty ? 0 : info.last_enqueued_ms);
    put_str(b, "is_partition_empty");
    pn_data_put_bool(b, info.empty);
  }
  pn_data_exit(b);
  return 200;
}
