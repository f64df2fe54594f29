/* config.h — typed settings from the environment, from one table per binary.
 *
 * A table of qs_cfg_spec rows {name, type, default, min, max, allowed, help, flags} is the single
 * source for validation, `--help` and the README's configuration tables. A binary's configuration
 * is a list of tables (the common table of every service plus its own), loaded once at start:
 * every value is parsed and range-checked, and the first invalid one fails the load with a message
 * naming the variable, the value and what is allowed, e.g.
 *   ADMIN_PORT="70000": out of range: allowed an integer 0..65535
 *
 * `--help` format (stable; tools/check-config-surface.py parses it): one line per variable,
 *   two spaces, NAME, two spaces, type, two spaces, "default: " value, two spaces, help
 * Secrets (QS_CFG_SECRET) are never printed or logged: their value shows as "***".
 */
#ifndef QS_CONFIG_H
#define QS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum qs_cfg_type {
  QS_CFG_STR,      /* any string (max length = max, 0 = 4096) */
  QS_CFG_INT,      /* integer in [min, max] */
  QS_CFG_DOUBLE,   /* finite number in [min, max] */
  QS_CFG_BOOL,     /* true/false, 1/0, yes/no, on/off */
  QS_CFG_DURATION, /* integer + unit ms|s|m|h|d (bare integer = seconds), stored as ms, in [min,
                      max] ms */
  QS_CFG_ENUM,     /* one of `allowed`, "a|b|c" (case-sensitive) */
  QS_CFG_PORT,     /* TCP port 0..65535 */
  QS_CFG_IP,       /* an IPv4 or IPv6 address literal (what a listener binds; no host names) */
} qs_cfg_type;

enum {
  QS_CFG_SECRET = 1 << 0,   /* never printed or logged */
  QS_CFG_REQUIRED = 1 << 1, /* must be set (non-empty) */
};

typedef struct qs_cfg_spec {
  const char *name; /* NULL ends a table */
  qs_cfg_type type;
  const char *def;     /* default as text; NULL or "" = unset */
  double min, max;     /* numeric bounds; for STR, max = max length (0 = 4096) */
  const char *allowed; /* ENUM: "a|b|c" */
  const char *help;
  unsigned flags;
} qs_cfg_spec;

typedef struct qs_cfg_value {
  const qs_cfg_spec *spec;
  const char *text; /* the raw value (environment or default), "" when unset */
  bool from_env;
  int64_t i; /* INT, PORT, DURATION (ms), BOOL (0/1) */
  double d;  /* DOUBLE (and INT/PORT/DURATION as double) */
} qs_cfg_value;

typedef struct qs_config {
  qs_cfg_value *values;
  size_t n;
  char *arena; /* copies of the values' text */
} qs_config;

/* Where values come from: getenv in production, a table in tests. */
typedef const char *(*qs_cfg_getenv_fn)(const char *name, void *arg);

/* Load and validate every variable of the NULL-terminated list of tables. On failure returns
 * -QS_ERR_INVALID with the message in err, and leaves cfg empty (safe to qs_config_free). */
int qs_config_load(qs_config *cfg, const qs_cfg_spec *const *tables, qs_cfg_getenv_fn get,
                   void *get_arg, char *err, size_t errlen);
void qs_config_free(qs_config *cfg);

/* Typed accessors. Asking for a name that no table declares is a programming error (QS_FATAL). */
const char *qs_config_str(const qs_config *cfg, const char *name); /* "" when unset */
int64_t qs_config_int(const qs_config *cfg, const char *name);
double qs_config_double(const qs_config *cfg, const char *name);
bool qs_config_bool(const qs_config *cfg, const char *name);
int64_t qs_config_ms(const qs_config *cfg, const char *name); /* DURATION */
bool qs_config_is_set(const qs_config *cfg, const char *name);

/* Parse one value of a spec's type (used by load; exposed for tests and for CLI flags). */
int qs_config_parse_value(const qs_cfg_spec *spec, const char *text, qs_cfg_value *out, char *err,
                          size_t errlen);

/* Print every variable of the tables in the `--help` format above. */
void qs_config_print_help(const qs_cfg_spec *const *tables, FILE *out);

/* The loaded values as a JSON object text (secrets as "***") into buf; returns its length or
 * -QS_ERR_TOOBIG. For the start log line. */
int qs_config_to_json(const qs_config *cfg, char *buf, size_t cap);

#endif
