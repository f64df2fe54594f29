/* regions.h — ordered region rules: lat/lon -> region name.
 *
 * A rule set is a list of named rules, each one or more lat/lon boxes; the
 * first rule with a box containing the point wins. Boxes include their edges.
 * A box with min_lon > max_lon crosses the antimeridian (it covers
 * lon >= min_lon or lon <= max_lon), and longitudes -180 and 180 are the same
 * meridian. Loading checks that the last rule covers the whole globe, so every
 * valid point (lat in [-90, 90], lon in [-180, 180]) gets a region.
 *
 * The default rules (proto/regions.json, see docs/regions.md) are compiled
 * into the library; REGIONS_FILE-style overrides use qs_regions_load_file.
 */
#ifndef QS_REGIONS_H
#define QS_REGIONS_H

#include <stddef.h>
#include <stdint.h>

#define QS_REGION_NAME_MAX 32             /* bytes; names are [a-z0-9_-] */
#define QS_REGIONS_MAX_RULES 64           /* rules in one file */
#define QS_REGIONS_MAX_BOXES 64           /* boxes in one rule */
#define QS_REGIONS_FILE_MAX (1024 * 1024) /* bytes of a rules file */

/* proto/regions.json, embedded by tools/embed.py at build time. */
extern const char qs_regions_default_json[];
extern const unsigned long qs_regions_default_json_len;

typedef struct qs_region_box {
  double min_lat, max_lat, min_lon, max_lon;
  uint32_t rule; /* index of the rule the box belongs to */
} qs_region_box;

typedef struct qs_region_rule {
  char name[QS_REGION_NAME_MAX + 1];
} qs_region_rule;

/* Caller-owned. Boxes are kept flat in rule order, so classify is one scan. */
typedef struct qs_regions {
  qs_region_rule *rules;
  size_t nrules;
  qs_region_box *boxes;
  size_t nboxes;
} qs_regions;

/* Empty rule set (classify returns NULL). */
void qs_regions_init(qs_regions *r);

/* Frees the rules; r is empty (as after init) afterwards. */
void qs_regions_close(qs_regions *r);

/* Load rules, replacing r's current ones only on success. On failure r is
 * unchanged and why says what and where (e.g. `regions[3] "x": boxes[0]:
 * min_lat 95 out of range [-90, 90]`). Returns 0, QS_ERR_PARSE (not JSON),
 * QS_ERR_INVALID (bad content), QS_ERR_TOOBIG or QS_ERR_IO (file). */
int qs_regions_load_json(qs_regions *r, const char *json, size_t len, char *why, size_t whylen);
int qs_regions_load_file(qs_regions *r, const char *path, char *why, size_t whylen);
int qs_regions_load_default(qs_regions *r, char *why, size_t whylen);

/* Name of the first rule containing (lat, lon); NULL for NaN or out-of-range
 * coordinates or an empty rule set. The string lives as long as r's rules. */
const char *qs_regions_classify(const qs_regions *r, double lat, double lon);

size_t qs_regions_count(const qs_regions *r);
const char *qs_regions_name(const qs_regions *r, size_t i); /* NULL if i >= count */

#endif
