/* config.c — load, validate and print table-driven settings.
 *
 * Invariant: after a successful qs_config_load every declared variable has a parsed value (or is
 * unset when it has no default and is not required); the accessors never parse again.
 */
#include "qs/config.h"

#include "qs/error.h"
#include "qs/log.h"
#include "qs/timeutil.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *type_name(qs_cfg_type t) {
  switch (t) {
  case QS_CFG_STR:
    return "string";
  case QS_CFG_INT:
    return "integer";
  case QS_CFG_DOUBLE:
    return "number";
  case QS_CFG_BOOL:
    return "bool";
  case QS_CFG_DURATION:
    return "duration";
  case QS_CFG_ENUM:
    return "enum";
  case QS_CFG_PORT:
    return "port";
  case QS_CFG_IP:
    return "ip";
  }
  return "?";
}

static int fail(char *err, size_t errlen, const qs_cfg_spec *s, const char *text,
                const char *what) {
  if (s->flags & QS_CFG_SECRET)
    text = "***";
  snprintf(err, errlen, "%s=\"%.200s\": %s", s->name, text, what);
  return QS_ERR_INVALID;
}

/* Format what is allowed, then fail with it: keeps every message's format checked by the compiler.
 */
#define FAIL(...)                                                                                  \
  do {                                                                                             \
    char what_[256];                                                                               \
    snprintf(what_, sizeof what_, __VA_ARGS__);                                                    \
    return fail(err, errlen, s, t, what_);                                                         \
  } while (0)

static bool parse_int(const char *t, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(t, &end, 10);
  if (errno || end == t || *end != '\0' || isspace((unsigned char)t[0]))
    return false;
  *out = v;
  return true;
}

static bool enum_allows(const char *allowed, const char *t) {
  size_t n = strlen(t);
  for (const char *p = allowed; p && *p;) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == n && strncmp(p, t, n) == 0)
      return true;
    p = bar ? bar + 1 : NULL;
  }
  return false;
}

int qs_config_parse_value(const qs_cfg_spec *s, const char *t, qs_cfg_value *v, char *err,
                          size_t errlen) {
  v->spec = s;
  v->text = t;
  v->i = 0;
  v->d = 0;
  switch (s->type) {
  case QS_CFG_STR: {
    size_t max = s->max > 0 ? (size_t)s->max : 4096;
    if (strlen(t) > max)
      FAIL("too long: allowed at most %zu characters", max);
    return 0;
  }
  case QS_CFG_INT:
  case QS_CFG_PORT: {
    double lo = s->type == QS_CFG_PORT ? 0 : s->min, hi = s->type == QS_CFG_PORT ? 65535 : s->max;
    if (!parse_int(t, &v->i))
      FAIL("not an integer: allowed an integer %.0f..%.0f", lo, hi);
    if ((double)v->i < lo || (double)v->i > hi)
      FAIL("out of range: allowed an integer %.0f..%.0f", lo, hi);
    v->d = (double)v->i;
    return 0;
  }
  case QS_CFG_DOUBLE: {
    char *end;
    errno = 0;
    v->d = strtod(t, &end);
    if (errno || end == t || *end != '\0' || isspace((unsigned char)t[0]) || !isfinite(v->d))
      FAIL("not a number: allowed a number %g..%g", s->min, s->max);
    if (v->d < s->min || v->d > s->max)
      FAIL("out of range: allowed a number %g..%g", s->min, s->max);
    return 0;
  }
  case QS_CFG_BOOL: {
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
                                                                                "off"};
    for (size_t k = 0; k < 4; k++) {
      if (strcasecmp(t, yes[k]) == 0)
        return v->i = 1, v->d = 1, 0; /* NOLINT: set both and succeed */
      if (strcasecmp(t, no[k]) == 0)
        return 0;
    }
    FAIL("not a bool: allowed true|false|1|0|yes|no|on|off");
  }
  case QS_CFG_DURATION: {
    if (qs_duration_parse_ms(t, &v->i) != 0)
      FAIL("not a duration: allowed an integer with unit ms|s|m|h|d (bare = seconds), "
           "%.0f..%.0f ms",
           s->min, s->max);
    if ((double)v->i < s->min || (double)v->i > s->max)
      FAIL("out of range: allowed %.0f..%.0f ms", s->min, s->max);
    v->d = (double)v->i;
    return 0;
  }
  case QS_CFG_ENUM:
    if (!enum_allows(s->allowed, t))
      FAIL("not allowed: allowed one of %s", s->allowed);
    return 0;
  case QS_CFG_IP: {
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, t, addr) != 1 && inet_pton(AF_INET6, t, addr) != 1)
      FAIL("not an IP address: allowed an IPv4 or IPv6 literal such as 127.0.0.1, 0.0.0.0 or ::1");
    return 0;
  }
  }
  FAIL("unknown type %d", (int)s->type);
}

static size_t count_specs(const qs_cfg_spec *const *tables) {
  size_t n = 0;
  for (size_t t = 0; tables[t]; t++)
    for (const qs_cfg_spec *s = tables[t]; s->name; s++)
      n++;
  return n;
}

int qs_config_load(qs_config *cfg, const qs_cfg_spec *const *tables, qs_cfg_getenv_fn get,
                   void *get_arg, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  size_t n = count_specs(tables), bytes = 0;
  /* First pass: the text of every value, so one arena holds them all. */
  for (size_t t = 0; tables[t]; t++) {
    for (const qs_cfg_spec *s = tables[t]; s->name; s++) {
      const char *e = get(s->name, get_arg);
      bytes += strlen(e ? e : (s->def ? s->def : "")) + 1;
    }
  }
  qs_cfg_value *values = qs_xcalloc(n, sizeof *values);
  char *arena = qs_xmalloc(bytes), *ap = arena;
  size_t i = 0;
  for (size_t t = 0; tables[t]; t++) {
    for (const qs_cfg_spec *s = tables[t]; s->name; s++, i++) {
      for (size_t k = 0; k < i; k++) {
        if (strcmp(values[k].spec->name, s->name) == 0)
          QS_FATAL("config variable %s declared twice", s->name);
      }
      const char *e = get(s->name, get_arg);
      const char *text = e ? e : (s->def ? s->def : "");
      size_t len = strlen(text);
      memcpy(ap, text, len + 1);
      values[i].spec = s;
      values[i].text = ap;
      values[i].from_env = e != NULL;
      ap += len + 1;
      if (values[i].text[0] == '\0') {
        if (s->flags & QS_CFG_REQUIRED) {
          snprintf(err, errlen, "%s is required but not set: %s", s->name, s->help);
          goto bad;
        }
        continue; /* unset and optional: accessors return "" / 0 */
      }
      if (qs_config_parse_value(s, values[i].text, &values[i], err, errlen) != 0)
        goto bad;
      values[i].from_env = e != NULL;
    }
  }
  cfg->values = values;
  cfg->n = n;
  cfg->arena = arena;
  return 0;
bad:
  free(values);
  free(arena);
  return QS_ERR_INVALID;
}

void qs_config_free(qs_config *cfg) {
  free(cfg->values);
  free(cfg->arena);
  memset(cfg, 0, sizeof *cfg);
}

static const qs_cfg_value *find(const qs_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n; i++)
    if (strcmp(cfg->values[i].spec->name, name) == 0)
      return &cfg->values[i];
  QS_FATAL("config variable %s is not declared in any table", name);
}

const char *qs_config_str(const qs_config *cfg, const char *name) { return find(cfg, name)->text; }
int64_t qs_config_int(const qs_config *cfg, const char *name) { return find(cfg, name)->i; }
double qs_config_double(const qs_config *cfg, const char *name) { return find(cfg, name)->d; }
bool qs_config_bool(const qs_config *cfg, const char *name) { return find(cfg, name)->i != 0; }
int64_t qs_config_ms(const qs_config *cfg, const char *name) { return find(cfg, name)->i; }
bool qs_config_is_set(const qs_config *cfg, const char *name) {
  return find(cfg, name)->text[0] != '\0';
}

void qs_config_print_help(const qs_cfg_spec *const *tables, FILE *out) {
  for (size_t t = 0; tables[t]; t++) {
    for (const qs_cfg_spec *s = tables[t]; s->name; s++) {
      char type[160];
      if (s->type == QS_CFG_ENUM)
        snprintf(type, sizeof type, "%s", s->allowed);
      else if (s->type == QS_CFG_INT || s->type == QS_CFG_DOUBLE)
        snprintf(type, sizeof type, "%s[%g..%g]", type_name(s->type), s->min, s->max);
      else
        snprintf(type, sizeof type, "%s", type_name(s->type));
      const char *def = (s->def && *s->def) ? s->def : "(unset)";
      if ((s->flags & QS_CFG_SECRET) && s->def && *s->def)
        def = "***";
      fprintf(out, "  %s  %s  default: %s  %s%s\n", s->name, type, def, s->help,
              (s->flags & QS_CFG_REQUIRED) ? " (required)" : "");
    }
  }
}

int qs_config_to_json(const qs_config *cfg, char *buf, size_t cap) {
  size_t o = 0;
  if (cap < 3)
    return QS_ERR_TOOBIG;
  buf[o++] = '{';
  for (size_t i = 0; i < cfg->n; i++) {
    const qs_cfg_value *v = &cfg->values[i];
    const char *text = (v->spec->flags & QS_CFG_SECRET) && v->text[0] ? "***" : v->text;
    size_t need = strlen(v->spec->name) + 2 * strlen(text) * 3 + 8;
    if (o + need + 2 > cap)
      return QS_ERR_TOOBIG;
    o += (size_t)snprintf(buf + o, cap - o, "%s\"%s\":\"", i ? "," : "", v->spec->name);
    o += qs_json_escape(buf + o, cap - o - 2, text, strlen(text), NULL);
    buf[o++] = '"';
  }
  buf[o++] = '}';
  buf[o] = '\0';
  return (int)o;
}
