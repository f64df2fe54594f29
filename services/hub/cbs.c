/* cbs.c — $cbs put-token (see cbs.h).
 *
 * Accepts JS (type servicebus.windows.net:sastoken) and Python (type jwt,
 * plus an expiration property that is ignored: the token's own se= expiry,
 * reported by the auth callback, is what is enforced).
 */
#include "cbs.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "qs/error.h"

#define HUB_TOKEN_MAX 4096

void hub_reply_status(pn_message_t *reply, pn_message_t *req, int32_t code, const char *desc) {
  pn_message_clear(reply);
  if (req)
    pn_message_set_correlation_id(reply, pn_message_get_id(req));
  pn_data_t *p = pn_message_properties(reply);
  pn_data_clear(p);
  pn_data_put_map(p);
  pn_data_enter(p);
  pn_data_put_string(p, pn_bytes(strlen("status-code"), "status-code"));
  pn_data_put_int(p, code);
  pn_data_put_string(p, pn_bytes(strlen("status-description"), "status-description"));
  pn_data_put_string(p, pn_bytes(strlen(desc), desc));
  pn_data_exit(p);
}

const char *hub_msg_prop_string(pn_message_t *m, const char *key, size_t *len) {
  pn_data_t *p = pn_message_properties(m);
  size_t kl = strlen(key);
  pn_data_rewind(p);
  if (!pn_data_next(p) || pn_data_type(p) != PN_MAP)
    return NULL;
  size_t n = pn_data_get_map(p);
  const char *res = NULL;
  pn_data_enter(p);
  for (size_t i = 0; i < n; i += 2) {
    if (!pn_data_next(p))
      break;
    pn_bytes_t k = {0, NULL};
    if (pn_data_type(p) == PN_STRING)
      k = pn_data_get_string(p);
    else if (pn_data_type(p) == PN_SYMBOL)
      k = pn_data_get_symbol(p);
    if (!pn_data_next(p))
      break;
    if (k.start && k.size == kl && memcmp(k.start, key, kl) == 0) {
      pn_bytes_t v = {0, NULL};
      if (pn_data_type(p) == PN_STRING)
        v = pn_data_get_string(p);
      else if (pn_data_type(p) == PN_SYMBOL)
        v = pn_data_get_symbol(p);
      if (v.start) {
        res = v.start;
        if (len)
          *len = v.size;
      }
      break;
    }
  }
  pn_data_exit(p);
  return res;
}

static bool prop_is(pn_message_t *m, const char *key, const char *val) {
  size_t l;
  const char *s = hub_msg_prop_string(m, key, &l);
  return s && l == strlen(val) && strncasecmp(s, val, l) == 0;
}

int hub_cbs_put_token(const hub_broker_config *cfg, pn_message_t *req, int64_t now_ms,
                      pn_message_t *reply, hub_cbs_grant *grant) {
  char desc[HUB_PATH_MAX + 128];
  if (!prop_is(req, "operation", "put-token")) {
    hub_reply_status(reply, req, 400, "Unsupported operation");
    return 400;
  }
  if (!prop_is(req, "type", "servicebus.windows.net:sastoken") && !prop_is(req, "type", "jwt")) {
    hub_reply_status(reply, req, 400, "Unsupported token type");
    return 400;
  }
  size_t alen = 0;
  const char *aud = hub_msg_prop_string(req, "name", &alen);
  hub_addr addr;
  if (!aud || alen >= HUB_PATH_MAX || hub_addr_parse(aud, alen, &addr) < 0 ||
      addr.kind == HUB_ADDR_CBS) {
    hub_reply_status(reply, req, 400, "Invalid audience");
    return 400;
  }
  if (addr.hub[0] && !cfg->entity_lookup(cfg->entity_ctx, addr.hub)) {
    snprintf(desc, sizeof desc, "The messaging entity '%s' could not be found.", addr.path);
    hub_reply_status(reply, req, 404, desc);
    return 404;
  }
  pn_data_t *body = pn_message_body(req);
  pn_data_rewind(body);
  pn_bytes_t tok = {0, NULL};
  if (pn_data_next(body) && pn_data_type(body) == PN_STRING)
    tok = pn_data_get_string(body);
  if (!tok.start || tok.size == 0 || tok.size >= HUB_TOKEN_MAX) {
    hub_reply_status(reply, req, 400, "Missing or oversized token");
    return 400;
  }
  char token[HUB_TOKEN_MAX], audience[HUB_PATH_MAX];
  memcpy(token, tok.start, tok.size);
  token[tok.size] = 0;
  memcpy(audience, aud, alen);
  audience[alen] = 0;
  hub_auth_result res = {0};
  int rc = cfg->auth_verify(cfg->auth_ctx, token, audience, now_ms / 1000, 0, &res);
  if (rc == 0 && res.expires_s <= now_ms / 1000) {
    rc = QS_ERR_EXPIRED;
    snprintf(res.reason, sizeof res.reason, "token expired");
  }
  if (rc < 0) {
    snprintf(desc, sizeof desc, "Unauthorized: %s", res.reason[0] ? res.reason : qs_strerror(rc));
    hub_reply_status(reply, req, 401, desc);
    return 401;
  }
  snprintf(grant->path, sizeof grant->path, "%s", addr.path);
  grant->expires_s = res.expires_s;
  grant->rights = res.rights;
  hub_reply_status(reply, req, 202, "Accepted");
  return 202;
}
