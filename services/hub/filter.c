/* filter.c — selector-filter parsing (see filter.h). */
#include "filter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qs/error.h"

static const struct {
  const char *name;
  hub_pos_kind kind;
} names[] = {
    {"amqp.annotation.x-opt-offset", HUB_POS_OFFSET},
    {"amqp.annotation.x-opt-sequence-number", HUB_POS_SEQ},
    {"amqp.annotation.x-opt-enqueued-time", HUB_POS_TIME},
};

static int fail(char *err, size_t errlen, const char *what) {
  if (err && errlen)
    snprintf(err, errlen, "invalid selector filter: %s", what);
  return QS_ERR_PARSE;
}

int hub_filter_parse_expr(const char *s, size_t len, hub_position *out, char *err, size_t errlen) {
  if (len > HUB_FILTER_MAX_EXPR)
    return fail(err, errlen, "expression too long");
  size_t i = 0;
  while (i < len && s[i] == ' ')
    i++;
  int which = -1;
  for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
    size_t nl = strlen(names[k].name);
    if (len - i >= nl && strncasecmp(s + i, names[k].name, nl) == 0) {
      which = (int)k;
      i += nl;
      break;
    }
  }
  if (which < 0)
    return fail(err, errlen, "unknown property");
  while (i < len && s[i] == ' ')
    i++;
  if (i >= len || s[i] != '>')
    return fail(err, errlen, "expected > or >=");
  i++;
  bool incl = false;
  if (i < len && s[i] == '=') {
    incl = true;
    i++;
  }
  while (i < len && s[i] == ' ')
    i++;
  if (i >= len || s[i] != '\'')
    return fail(err, errlen, "expected a quoted value");
  size_t vstart = ++i;
  while (i < len && s[i] != '\'')
    i++;
  if (i >= len)
    return fail(err, errlen, "unterminated value");
  size_t vlen = i - vstart;
  i++;
  while (i < len && s[i] == ' ')
    i++;
  if (i != len)
    return fail(err, errlen, "trailing characters");
  char v[32];
  if (vlen == 0 || vlen >= sizeof v)
    return fail(err, errlen, "bad value");
  memcpy(v, s + vstart, vlen);
  v[vlen] = 0;
  out->kind = names[which].kind;
  out->inclusive = incl;
  out->value = 0;
  if (out->kind == HUB_POS_OFFSET && strcasecmp(v, "@latest") == 0) {
    out->kind = HUB_POS_LATEST;
    return 0;
  }
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (errno || *end || n < -1)
    return fail(err, errlen, "value is not an integer");
  if (out->kind == HUB_POS_OFFSET && n == -1) {
    out->kind = HUB_POS_EARLIEST;
    return 0;
  }
  if (n < 0)
    return fail(err, errlen, "negative value");
  out->value = n;
  return 0;
}

static bool is_selector_symbol(pn_data_t *f) {
  if (pn_data_type(f) != PN_SYMBOL)
    return false;
  pn_bytes_t b = pn_data_get_symbol(f);
  return b.size == strlen(HUB_FILTER_SELECTOR) && memcmp(b.start, HUB_FILTER_SELECTOR, b.size) == 0;
}

int hub_filter_from_data(pn_data_t *f, hub_position *out, char *err, size_t errlen) {
  out->kind = HUB_POS_EARLIEST;
  out->inclusive = false;
  out->value = 0;
  if (!f || pn_data_size(f) == 0)
    return 0;
  pn_data_rewind(f);
  if (!pn_data_next(f))
    return 0;
  if (pn_data_type(f) != PN_MAP)
    return fail(err, errlen, "filter is not a map");
  size_t n = pn_data_get_map(f);
  int rc = 0;
  pn_data_enter(f);
  for (size_t i = 0; i < n; i += 2) {
    if (!pn_data_next(f))
      break;
    bool is_sel = is_selector_symbol(f);
    if (!pn_data_next(f))
      break;
    if (!is_sel)
      continue;
    pn_bytes_t expr = {0, NULL};
    if (pn_data_type(f) == PN_DESCRIBED) {
      pn_data_enter(f);
      pn_data_next(f);
      bool ok_desc =
          (pn_data_type(f) == PN_ULONG && pn_data_get_ulong(f) == HUB_FILTER_SELECTOR_CODE) ||
          is_selector_symbol(f);
      pn_data_next(f);
      if (ok_desc && pn_data_type(f) == PN_STRING)
        expr = pn_data_get_string(f);
      pn_data_exit(f);
      if (!ok_desc) {
        rc = fail(err, errlen, "unknown filter descriptor");
        break;
      }
    } else if (pn_data_type(f) == PN_STRING) {
      expr = pn_data_get_string(f);
    }
    if (!expr.start) {
      rc = fail(err, errlen, "filter value is not a string");
      break;
    }
    rc = hub_filter_parse_expr(expr.start, expr.size, out, err, errlen);
    break;
  }
  pn_data_exit(f);
  return rc;
}
