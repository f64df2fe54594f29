/* hub_config.h — the hub's namespace, hubs, consumer groups and access policies.
 *
 * The file has the shape of the Azure Event Hubs emulator's Config.json
 * ({"UserConfig":{"NamespaceConfig":[{"Type":"EventHub","Name":..,"Entities":[..]}],
 * "LoggingConfig":{..}}}), extended per entity with MessageRetentionInDays (or ..InHours) and
 * Capture, and at the top level with SharedAccessPolicies. The emulator's own files load
 * unchanged.
 *
 * Invariants of a loaded hub_config: exactly one namespace; 1..HUB_CONFIG_MAX_HUBS hubs with
 * unique names (case-insensitive); each hub has 1..32 partitions and 1..20 consumer groups, the
 * first being "$Default"; at least one policy (RootManageSharedAccessKey with the emulator's
 * well-known key SAS_KEY_VALUE when the file names none). Lookups ignore case.
 */
#ifndef QS_HUB_CONFIG_H
#define QS_HUB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUB_CONFIG_MAX_FILE (1024 * 1024)
#define HUB_CONFIG_MAX_NAME 256
#define HUB_CONFIG_MAX_HUBS 100
#define HUB_CONFIG_MAX_PARTITIONS 32
#define HUB_CONFIG_MAX_GROUPS 20
#define HUB_CONFIG_MAX_POLICIES 12

enum { HUB_RIGHT_SEND = 1, HUB_RIGHT_LISTEN = 2, HUB_RIGHT_MANAGE = 4 };

typedef struct hub_config_capture {
  bool enabled;
  uint32_t interval_s;       /* IntervalInSeconds, 1..900, default 300 */
  uint64_t size_limit_bytes; /* SizeLimitInBytes, 1 KiB..500 MiB, default 300 MiB */
  bool skip_empty_archives;  /* SkipEmptyArchives, default false */
  char *archive_name_format; /* ArchiveNameFormat, must name every {placeholder} */
} hub_config_capture;

typedef struct hub_config_hub {
  char *name;
  int partition_count;
  int64_t retention_ms; /* MessageRetentionInDays 1..90 or MessageRetentionInHours 1..2160 */
  char **groups;        /* groups[0] is "$Default" */
  size_t n_groups;
  hub_config_capture capture;
} hub_config_hub;

typedef struct hub_config_policy {
  char *name;
  char *key;
  unsigned rights; /* HUB_RIGHT_* */
} hub_config_policy;

typedef struct hub_config {
  char *namespace_name;
  char *logging_type; /* "File" or "Console" */
  hub_config_hub *hubs;
  size_t n_hubs;
  hub_config_policy *policies;
  size_t n_policies;
} hub_config;

void hub_config_init(hub_config *cfg);
void hub_config_close(hub_config *cfg);

/* Parses and validates. On error returns QS_ERR_PARSE / QS_ERR_INVALID / QS_ERR_RANGE and
 * writes a message naming the JSON path into err, e.g.
 * "UserConfig.NamespaceConfig[0].Entities[1].PartitionCount: must be 1..32". cfg is left
 * empty on error. */
int hub_config_parse(hub_config *cfg, const char *json, size_t len, char *err, size_t errlen);

/* Reads path (at most HUB_CONFIG_MAX_FILE bytes) and parses it. QS_ERR_IO if unreadable. */
int hub_config_load(hub_config *cfg, const char *path, char *err, size_t errlen);

/* Case-insensitive lookups; NULL when absent. */
const hub_config_hub *hub_config_find_hub(const hub_config *cfg, const char *name);
const char *hub_config_find_group(const hub_config_hub *hub, const char *name);
const hub_config_policy *hub_config_find_policy(const hub_config *cfg, const char *name);

#endif
