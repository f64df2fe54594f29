/* hub_config.c — loads and validates the hub config (emulator Config.json shape, extended).
 *
 * Validation walks the JSON once, carrying the JSON path of the node it is looking at, so
 * every error names where it is ("UserConfig.NamespaceConfig[0].Entities[1].PartitionCount:
 * must be 1..32"). Unknown keys are errors too: a misspelt "PartitionCont" must not silently
 * become a default. Numeric fields of entities and capture come from one table
 * {key, min, max, default}; numbers may be JSON numbers or decimal strings, as the emulator's
 * own file writes "PartitionCount": "2".
 *
 * Invariant: hub_config_parse either fills cfg completely and returns 0, or leaves it empty.
 */
#include "hub_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qs/error.h"

/* The emulator's well-known local key; SDK emulator connection strings use it. */
#define EMULATOR_SAS_KEY "SAS_KEY_VALUE"
#define DEFAULT_ARCHIVE_FORMAT                                                                     \
  "{Namespace}/{EventHub}/p={PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}"

typedef struct parse_ctx {
  char path[512];
  char *err;
  size_t errlen;
} parse_ctx;

static int fail(parse_ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parse_ctx *c, int code, const char *fmt, ...) {
  if (c->err && c->errlen) {
    int n = snprintf(c->err, c->errlen, "%s: ", c->path[0] ? c->path : "(root)");
    if (n >= 0 && (size_t)n < c->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return code;
}

/* Appends ".key" or "[i]" to the path; returns the old length to restore. */
static size_t path_key(parse_ctx *c, const char *key) {
  size_t old = strlen(c->path);
  snprintf(c->path + old, sizeof c->path - old, "%s%s", old ? "." : "", key);
  return old;
}
static size_t path_index(parse_ctx *c, int i) {
  size_t old = strlen(c->path);
  snprintf(c->path + old, sizeof c->path - old, "[%d]", i);
  return old;
}
static void path_restore(parse_ctx *c, size_t old) { c->path[old] = '\0'; }

/* Every key of obj must be in allowed (NULL-terminated). */
static int check_keys(parse_ctx *c, const cJSON *obj, const char *const *allowed) {
  const cJSON *it;
  cJSON_ArrayForEach(it, obj) {
    bool ok = false;
    for (const char *const *a = allowed; *a && !ok; a++)
      ok = strcmp(*a, it->string) == 0;
    if (!ok) {
      size_t old = path_key(c, it->string);
      int rc = fail(c, QS_ERR_INVALID, "unknown key");
      path_restore(c, old);
      return rc;
    }
  }
  return 0;
}

/* Azure entity naming: 1..256 of letters, digits, '.', '-', '_', starting and ending with a
 * letter or digit. */
static bool valid_entity_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > HUB_CONFIG_MAX_NAME)
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (!alnum && ((i == 0 || i == n - 1) || (ch != '.' && ch != '-' && ch != '_')))
      return false;
  }
  return true;
}

/* Azure namespace naming: 6..50 letters, digits and '-', starting with a letter and ending with
 * a letter or digit. */
static bool valid_namespace_name(const char *s) {
  size_t n = strlen(s);
  if (n < 6 || n > 50 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) ||
      s[n - 1] == '-')
    return false;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '-'))
      return false;
  }
  return true;
}

static int get_string(parse_ctx *c, const cJSON *obj, const char *key, bool required,
                      const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  *out = NULL;
  if (!v) {
    if (!required)
      return 0;
    size_t old = path_key(c, key);
    int rc = fail(c, QS_ERR_INVALID, "is required");
    path_restore(c, old);
    return rc;
  }
  if (!cJSON_IsString(v) || !v->valuestring) {
    size_t old = path_key(c, key);
    int rc = fail(c, QS_ERR_INVALID, "must be a string");
    path_restore(c, old);
    return rc;
  }
  *out = v->valuestring;
  return 0;
}

/* Integer from a JSON number or a decimal string, within [min, max]. */
static int get_int(parse_ctx *c, const cJSON *v, int64_t min, int64_t max, int64_t *out) {
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d != (double)(int64_t)d)
      return fail(c, QS_ERR_INVALID, "must be a whole number");
    *out = (int64_t)d;
  } else if (cJSON_IsString(v) && v->valuestring && v->valuestring[0]) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v->valuestring, &end, 10);
    if (errno || *end || v->valuestring[0] == ' ')
      return fail(c, QS_ERR_INVALID, "must be a whole number");
    *out = x;
  } else {
    return fail(c, QS_ERR_INVALID, "must be a number or a numeric string");
  }
  if (*out < min || *out > max)
    return fail(c, QS_ERR_RANGE, "must be %" PRId64 "..%" PRId64, min, max);
  return 0;
}

static int get_bool(parse_ctx *c, const cJSON *obj, const char *key, bool *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (!v)
    return 0;
  if (cJSON_IsBool(v)) {
    *out = cJSON_IsTrue(v);
    return 0;
  }
  if (cJSON_IsString(v) && v->valuestring &&
      (strcasecmp(v->valuestring, "true") == 0 || strcasecmp(v->valuestring, "false") == 0)) {
    *out = strcasecmp(v->valuestring, "true") == 0;
    return 0;
  }
  size_t old = path_key(c, key);
  int rc = fail(c, QS_ERR_INVALID, "must be true or false");
  path_restore(c, old);
  return rc;
}

/* The numeric fields, one table: where they live, their limits and defaults. */
typedef enum { F_ENTITY, F_CAPTURE } field_owner;
typedef struct num_field {
  field_owner owner;
  const char *key;
  int64_t min, max, def;
  const char *help;
} num_field;

enum { NF_PARTITIONS, NF_RET_DAYS, NF_RET_HOURS, NF_CAP_INTERVAL, NF_CAP_SIZE, NF_COUNT };
static const num_field NUM_FIELDS[NF_COUNT] = {
    [NF_PARTITIONS] = {F_ENTITY, "PartitionCount", 1, HUB_CONFIG_MAX_PARTITIONS, 1,
                       "partitions of the hub"},
    [NF_RET_DAYS] = {F_ENTITY, "MessageRetentionInDays", 1, 90, 1, "retention in days"},
    [NF_RET_HOURS] = {F_ENTITY, "MessageRetentionInHours", 1, 2160, 24, "retention in hours"},
    [NF_CAP_INTERVAL] = {F_CAPTURE, "IntervalInSeconds", 1, 900, 300,
                         "capture window in seconds (Azure: 60..900)"},
    [NF_CAP_SIZE] = {F_CAPTURE, "SizeLimitInBytes", 1024, 524288000, 314572800,
                     "capture size window (Azure: 10485760..524288000)"},
};

static int get_num_field(parse_ctx *c, const cJSON *obj, int f, int64_t *out, bool *present) {
  const num_field *nf = &NUM_FIELDS[f];
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, nf->key);
  *out = nf->def;
  if (present)
    *present = v != NULL;
  if (!v)
    return 0;
  size_t old = path_key(c, nf->key);
  int rc = get_int(c, v, nf->min, nf->max, out);
  path_restore(c, old);
  return rc;
}

static int parse_capture(parse_ctx *c, const cJSON *v, hub_config_capture *cap) {
  static const char *const keys[] = {"Enabled",
                                     "IntervalInSeconds",
                                     "SizeLimitInBytes",
                                     "SkipEmptyArchives",
                                     "ArchiveNameFormat",
                                     "Encoding",
                                     NULL};
  int64_t x;
  int rc;
  if (!cJSON_IsObject(v))
    return fail(c, QS_ERR_INVALID, "must be an object");
  if ((rc = check_keys(c, v, keys)) != 0 || (rc = get_bool(c, v, "Enabled", &cap->enabled)) ||
      (rc = get_bool(c, v, "SkipEmptyArchives", &cap->skip_empty_archives)))
    return rc;
  if ((rc = get_num_field(c, v, NF_CAP_INTERVAL, &x, NULL)) != 0)
    return rc;
  cap->interval_s = (uint32_t)x;
  if ((rc = get_num_field(c, v, NF_CAP_SIZE, &x, NULL)) != 0)
    return rc;
  cap->size_limit_bytes = (uint64_t)x;
  const char *s;
  if ((rc = get_string(c, v, "Encoding", false, &s)) != 0)
    return rc;
  if (s && strcmp(s, "Avro") != 0) {
    size_t old = path_key(c, "Encoding");
    rc = fail(c, QS_ERR_UNSUPPORTED, "only \"Avro\" is supported");
    path_restore(c, old);
    return rc;
  }
  if ((rc = get_string(c, v, "ArchiveNameFormat", false, &s)) != 0)
    return rc;
  if (s) {
    static const char *const need[] = {"{Namespace}", "{EventHub}", "{PartitionId}",
                                       "{Year}",      "{Month}",    "{Day}",
                                       "{Hour}",      "{Minute}",   "{Second}"};
    size_t old = path_key(c, "ArchiveNameFormat");
    if (strlen(s) > 512)
      rc = fail(c, QS_ERR_RANGE, "must be at most 512 characters");
    for (size_t i = 0; rc == 0 && i < sizeof need / sizeof need[0]; i++)
      if (!strstr(s, need[i]))
        rc = fail(c, QS_ERR_INVALID, "must contain %s", need[i]);
    if (rc == 0 && (strstr(s, "..") || s[0] == '/'))
      rc = fail(c, QS_ERR_INVALID, "must be a relative path without \"..\"");
    path_restore(c, old);
    if (rc != 0)
      return rc;
  }
  cap->archive_name_format = qs_xstrdup(s ? s : DEFAULT_ARCHIVE_FORMAT);
  return 0;
}

static int parse_groups(parse_ctx *c, const cJSON *v, hub_config_hub *h) {
  h->groups = qs_xcalloc(HUB_CONFIG_MAX_GROUPS, sizeof *h->groups);
  h->groups[h->n_groups++] = qs_xstrdup("$Default");
  if (!v)
    return 0;
  size_t old = path_key(c, "ConsumerGroups");
  int rc = 0;
  if (!cJSON_IsArray(v))
    rc = fail(c, QS_ERR_INVALID, "must be an array");
  int i = 0;
  const cJSON *g;
  static const char *const keys[] = {"Name", NULL};
  cJSON_ArrayForEach(g, v) {
    if (rc != 0)
      break;
    size_t o2 = path_index(c, i++);
    const char *name = NULL;
    if (!cJSON_IsObject(g))
      rc = fail(c, QS_ERR_INVALID, "must be an object");
    else if ((rc = check_keys(c, g, keys)) == 0 &&
             (rc = get_string(c, g, "Name", true, &name)) == 0 && name) {
      size_t o3 = path_key(c, "Name");
      if (strcasecmp(name, "$Default") == 0) {
        /* listed explicitly: it exists anyway */
      } else if (!valid_entity_name(name)) {
        rc = fail(c, QS_ERR_INVALID,
                  "must be 1..256 letters, digits, '.', '-' or '_', starting and ending with a "
                  "letter or digit");
      } else if (hub_config_find_group(h, name)) {
        rc = fail(c, QS_ERR_INVALID, "duplicate consumer group \"%s\"", name);
      } else if (h->n_groups >= HUB_CONFIG_MAX_GROUPS) {
        path_restore(c, o3);
        rc = fail(c, QS_ERR_RANGE, "at most %d consumer groups (with $Default)",
                  HUB_CONFIG_MAX_GROUPS);
      } else {
        h->groups[h->n_groups++] = qs_xstrdup(name);
      }
      if (rc == 0)
        path_restore(c, o3);
    }
    if (rc == 0)
      path_restore(c, o2);
  }
  if (rc == 0)
    path_restore(c, old);
  return rc;
}

static int parse_entity(parse_ctx *c, const cJSON *e, hub_config *cfg, hub_config_hub *h) {
  static const char *const keys[] = {"Name",
                                     "PartitionCount",
                                     "ConsumerGroups",
                                     "MessageRetentionInDays",
                                     "MessageRetentionInHours",
                                     "Capture",
                                     NULL};
  if (!cJSON_IsObject(e))
    return fail(c, QS_ERR_INVALID, "must be an object");
  int rc = check_keys(c, e, keys);
  const char *name = NULL;
  if (rc != 0 || (rc = get_string(c, e, "Name", true, &name)) != 0)
    return rc;
  if (!name)
    return QS_ERR_INVALID;
  size_t old = path_key(c, "Name");
  if (!valid_entity_name(name))
    rc = fail(c, QS_ERR_INVALID,
              "must be 1..256 letters, digits, '.', '-' or '_', starting and ending with a "
              "letter or digit");
  else if (hub_config_find_hub(cfg, name))
    rc = fail(c, QS_ERR_INVALID, "duplicate event hub \"%s\"", name);
  path_restore(c, old);
  if (rc != 0)
    return rc;
  h->name = qs_xstrdup(name);
  if (!cJSON_GetObjectItemCaseSensitive(e, "PartitionCount")) {
    old = path_key(c, "PartitionCount");
    rc = fail(c, QS_ERR_INVALID, "is required");
    path_restore(c, old);
    return rc;
  }
  int64_t x;
  if ((rc = get_num_field(c, e, NF_PARTITIONS, &x, NULL)) != 0)
    return rc;
  h->partition_count = (int)x;
  bool days_set, hours_set;
  int64_t days, hours;
  if ((rc = get_num_field(c, e, NF_RET_DAYS, &days, &days_set)) != 0 ||
      (rc = get_num_field(c, e, NF_RET_HOURS, &hours, &hours_set)) != 0)
    return rc;
  if (days_set && hours_set) {
    old = path_key(c, "MessageRetentionInHours");
    rc =
        fail(c, QS_ERR_INVALID, "give MessageRetentionInDays or MessageRetentionInHours, not both");
    path_restore(c, old);
    return rc;
  }
  h->retention_ms = (days_set ? days * 24 : hours) * 3600 * 1000;
  if ((rc = parse_groups(c, cJSON_GetObjectItemCaseSensitive(e, "ConsumerGroups"), h)) != 0)
    return rc;
  const cJSON *cap = cJSON_GetObjectItemCaseSensitive(e, "Capture");
  if (cap) {
    old = path_key(c, "Capture");
    rc = parse_capture(c, cap, &h->capture);
    path_restore(c, old);
    return rc;
  }
  h->capture.interval_s = (uint32_t)NUM_FIELDS[NF_CAP_INTERVAL].def;
  h->capture.size_limit_bytes = (uint64_t)NUM_FIELDS[NF_CAP_SIZE].def;
  h->capture.archive_name_format = qs_xstrdup(DEFAULT_ARCHIVE_FORMAT);
  return 0;
}

static int parse_namespace(parse_ctx *c, const cJSON *ns, hub_config *cfg) {
  static const char *const keys[] = {"Type", "Name", "Entities", NULL};
  if (!cJSON_IsObject(ns))
    return fail(c, QS_ERR_INVALID, "must be an object");
  int rc = check_keys(c, ns, keys);
  const char *type = NULL, *name = NULL;
  if (rc != 0 || (rc = get_string(c, ns, "Type", true, &type)) != 0 ||
      (rc = get_string(c, ns, "Name", true, &name)) != 0)
    return rc;
  if (!type || !name) /* required: get_string failed already; keeps analyzers informed */
    return QS_ERR_INVALID;
  size_t old;
  if (strcmp(type, "EventHub") != 0) {
    old = path_key(c, "Type");
    rc = fail(c, QS_ERR_UNSUPPORTED, "must be \"EventHub\"");
    path_restore(c, old);
    return rc;
  }
  if (!valid_namespace_name(name)) {
    old = path_key(c, "Name");
    rc = fail(c, QS_ERR_INVALID,
              "must be 6..50 letters, digits or '-', starting with a letter and not ending "
              "with '-'");
    path_restore(c, old);
    return rc;
  }
  cfg->namespace_name = qs_xstrdup(name);
  const cJSON *ents = cJSON_GetObjectItemCaseSensitive(ns, "Entities");
  old = path_key(c, "Entities");
  int n = cJSON_IsArray(ents) ? cJSON_GetArraySize(ents) : -1;
  if (!ents)
    rc = fail(c, QS_ERR_INVALID, "is required");
  else if (n < 0)
    rc = fail(c, QS_ERR_INVALID, "must be an array");
  else if (n < 1 || n > HUB_CONFIG_MAX_HUBS)
    rc = fail(c, QS_ERR_RANGE, "must list 1..%d event hubs", HUB_CONFIG_MAX_HUBS);
  if (rc == 0) {
    cfg->hubs = qs_xcalloc((size_t)n, sizeof *cfg->hubs);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, ents) {
      size_t o2 = path_index(c, i++);
      rc = parse_entity(c, e, cfg, &cfg->hubs[cfg->n_hubs]);
      cfg->n_hubs++; /* counted even on error so close frees it */
      if (rc == 0)
        path_restore(c, o2);
      else
        break;
    }
  }
  if (rc == 0)
    path_restore(c, old);
  return rc;
}

static int parse_policies(parse_ctx *c, const cJSON *v, hub_config *cfg) {
  static const char *const keys[] = {"Name", "Key", "Rights", NULL};
  int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
  if (n < 0)
    return fail(c, QS_ERR_INVALID, "must be an array");
  if (n < 1 || n > HUB_CONFIG_MAX_POLICIES)
    return fail(c, QS_ERR_RANGE, "must list 1..%d policies", HUB_CONFIG_MAX_POLICIES);
  cfg->policies = qs_xcalloc((size_t)n, sizeof *cfg->policies);
  int i = 0, rc = 0;
  const cJSON *p;
  cJSON_ArrayForEach(p, v) {
    size_t o2 = path_index(c, i++);
    const char *name = NULL, *key = NULL;
    if (!cJSON_IsObject(p))
      return fail(c, QS_ERR_INVALID, "must be an object");
    if ((rc = check_keys(c, p, keys)) != 0 || (rc = get_string(c, p, "Name", true, &name)) ||
        (rc = get_string(c, p, "Key", true, &key)))
      return rc;
    if (!name || !key)
      return QS_ERR_INVALID;
    size_t o3 = path_key(c, "Name");
    if (!valid_entity_name(name))
      return fail(c, QS_ERR_INVALID, "must be 1..256 letters, digits, '.', '-' or '_'");
    if (hub_config_find_policy(cfg, name))
      return fail(c, QS_ERR_INVALID, "duplicate policy \"%s\"", name);
    path_restore(c, o3);
    size_t klen = strlen(key);
    bool printable = klen > 0 && klen <= 256;
    for (size_t k = 0; k < klen && printable; k++)
      printable = key[k] > ' ' && key[k] < 0x7f;
    if (!printable) {
      path_key(c, "Key");
      return fail(c, QS_ERR_INVALID, "must be 1..256 printable ASCII characters, no spaces");
    }
    hub_config_policy *pol = &cfg->policies[cfg->n_policies++];
    pol->name = qs_xstrdup(name);
    pol->key = qs_xstrdup(key);
    const cJSON *rights = cJSON_GetObjectItemCaseSensitive(p, "Rights");
    path_key(c, "Rights");
    if (!cJSON_IsArray(rights) || cJSON_GetArraySize(rights) == 0)
      return fail(c, QS_ERR_INVALID,
                  "must be a non-empty array of \"Send\", \"Listen\", \"Manage\"");
    const cJSON *r;
    int j = 0;
    cJSON_ArrayForEach(r, rights) {
      size_t o4 = path_index(c, j++);
      const char *s = cJSON_IsString(r) ? r->valuestring : NULL;
      if (s && strcmp(s, "Send") == 0)
        pol->rights |= HUB_RIGHT_SEND;
      else if (s && strcmp(s, "Listen") == 0)
        pol->rights |= HUB_RIGHT_LISTEN;
      else if (s && strcmp(s, "Manage") == 0)
        pol->rights |= HUB_RIGHT_MANAGE;
      else
        return fail(c, QS_ERR_INVALID, "must be \"Send\", \"Listen\" or \"Manage\"");
      path_restore(c, o4);
    }
    if ((pol->rights & HUB_RIGHT_MANAGE) &&
        (pol->rights & (HUB_RIGHT_SEND | HUB_RIGHT_LISTEN)) != (HUB_RIGHT_SEND | HUB_RIGHT_LISTEN))
      return fail(c, QS_ERR_INVALID, "\"Manage\" requires \"Send\" and \"Listen\" (as in Azure)");
    path_restore(c, o2);
  }
  return 0;
}

static int parse_root(parse_ctx *c, const cJSON *root, hub_config *cfg) {
  static const char *const root_keys[] = {"UserConfig", "SharedAccessPolicies", NULL};
  static const char *const user_keys[] = {"NamespaceConfig", "LoggingConfig", NULL};
  if (!cJSON_IsObject(root))
    return fail(c, QS_ERR_INVALID, "must be an object");
  int rc = check_keys(c, root, root_keys);
  if (rc != 0)
    return rc;
  const cJSON *uc = cJSON_GetObjectItemCaseSensitive(root, "UserConfig");
  size_t old = path_key(c, "UserConfig");
  if (!uc)
    return fail(c, QS_ERR_INVALID, "is required");
  if (!cJSON_IsObject(uc))
    return fail(c, QS_ERR_INVALID, "must be an object");
  if ((rc = check_keys(c, uc, user_keys)) != 0)
    return rc;
  const cJSON *nsc = cJSON_GetObjectItemCaseSensitive(uc, "NamespaceConfig");
  size_t o2 = path_key(c, "NamespaceConfig");
  if (!nsc)
    return fail(c, QS_ERR_INVALID, "is required");
  if (!cJSON_IsArray(nsc) || cJSON_GetArraySize(nsc) != 1)
    return fail(c, QS_ERR_RANGE, "must be an array of exactly one namespace");
  size_t o3 = path_index(c, 0);
  if ((rc = parse_namespace(c, cJSON_GetArrayItem(nsc, 0), cfg)) != 0)
    return rc;
  path_restore(c, o3);
  path_restore(c, o2);
  const cJSON *lc = cJSON_GetObjectItemCaseSensitive(uc, "LoggingConfig");
  cfg->logging_type = qs_xstrdup("Console");
  if (lc) {
    static const char *const log_keys[] = {"Type", NULL};
    const char *type = NULL;
    o2 = path_key(c, "LoggingConfig");
    if (!cJSON_IsObject(lc))
      return fail(c, QS_ERR_INVALID, "must be an object");
    if ((rc = check_keys(c, lc, log_keys)) != 0 || (rc = get_string(c, lc, "Type", false, &type)))
      return rc;
    if (type) {
      path_key(c, "Type");
      if (strcmp(type, "File") != 0 && strcmp(type, "Console") != 0)
        return fail(c, QS_ERR_INVALID, "must be \"File\" or \"Console\"");
      free(cfg->logging_type);
      cfg->logging_type = qs_xstrdup(type);
    }
    path_restore(c, o2);
  }
  path_restore(c, old);
  const cJSON *pol = cJSON_GetObjectItemCaseSensitive(root, "SharedAccessPolicies");
  if (pol) {
    old = path_key(c, "SharedAccessPolicies");
    if ((rc = parse_policies(c, pol, cfg)) != 0)
      return rc;
    path_restore(c, old);
  } else {
    cfg->policies = qs_xcalloc(1, sizeof *cfg->policies);
    cfg->policies[0] =
        (hub_config_policy){qs_xstrdup("RootManageSharedAccessKey"), qs_xstrdup(EMULATOR_SAS_KEY),
                            HUB_RIGHT_SEND | HUB_RIGHT_LISTEN | HUB_RIGHT_MANAGE};
    cfg->n_policies = 1;
  }
  return 0;
}

void hub_config_init(hub_config *cfg) { memset(cfg, 0, sizeof *cfg); }

void hub_config_close(hub_config *cfg) {
  if (!cfg)
    return;
  for (size_t i = 0; i < cfg->n_hubs; i++) {
    hub_config_hub *h = &cfg->hubs[i];
    free(h->name);
    for (size_t j = 0; j < h->n_groups; j++)
      free(h->groups[j]);
    free(h->groups);
    free(h->capture.archive_name_format);
  }
  free(cfg->hubs);
  for (size_t i = 0; i < cfg->n_policies; i++) {
    free(cfg->policies[i].name);
    free(cfg->policies[i].key);
  }
  free(cfg->policies);
  free(cfg->namespace_name);
  free(cfg->logging_type);
  memset(cfg, 0, sizeof *cfg);
}

int hub_config_parse(hub_config *cfg, const char *json, size_t len, char *err, size_t errlen) {
  parse_ctx c = {.err = err, .errlen = errlen};
  if (err && errlen)
    err[0] = '\0';
  if (!cfg || !json)
    return QS_ERR_INVALID;
  hub_config_init(cfg);
  if (len > HUB_CONFIG_MAX_FILE)
    return fail(&c, QS_ERR_TOOBIG, "config larger than %d bytes", HUB_CONFIG_MAX_FILE);
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
    return fail(&c, QS_ERR_PARSE, "not valid JSON (near byte %ld)", off);
  }
  int rc = parse_root(&c, root, cfg);
  cJSON_Delete(root);
  if (rc != 0)
    hub_config_close(cfg);
  return rc;
}

int hub_config_load(hub_config *cfg, const char *path, char *err, size_t errlen) {
  if (err && errlen)
    err[0] = '\0';
  if (!cfg || !path)
    return QS_ERR_INVALID;
  hub_config_init(cfg);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (err)
      snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return QS_ERR_IO;
  }
  char *buf = qs_xmalloc(HUB_CONFIG_MAX_FILE + 1);
  size_t n = fread(buf, 1, HUB_CONFIG_MAX_FILE + 1, f);
  bool bad = ferror(f) != 0;
  fclose(f);
  int rc;
  if (bad) {
    if (err)
      snprintf(err, errlen, "%s: read error", path);
    rc = QS_ERR_IO;
  } else if (n > HUB_CONFIG_MAX_FILE) {
    if (err)
      snprintf(err, errlen, "%s: larger than %d bytes", path, HUB_CONFIG_MAX_FILE);
    rc = QS_ERR_TOOBIG;
  } else {
    rc = hub_config_parse(cfg, buf, n, err, errlen);
  }
  free(buf);
  return rc;
}

const hub_config_hub *hub_config_find_hub(const hub_config *cfg, const char *name) {
  for (size_t i = 0; cfg && name && i < cfg->n_hubs; i++)
    if (cfg->hubs[i].name && strcasecmp(cfg->hubs[i].name, name) == 0)
      return &cfg->hubs[i];
  return NULL;
}

const char *hub_config_find_group(const hub_config_hub *hub, const char *name) {
  for (size_t i = 0; hub && name && i < hub->n_groups; i++)
    if (strcasecmp(hub->groups[i], name) == 0)
      return hub->groups[i];
  return NULL;
}

const hub_config_policy *hub_config_find_policy(const hub_config *cfg, const char *name) {
  for (size_t i = 0; cfg && name && i < cfg->n_policies; i++)
    if (cfg->policies[i].name && strcasecmp(cfg->policies[i].name, name) == 0)
      return &cfg->policies[i];
  return NULL;
}
