/* regions.c — loading and applying the ordered region rules.
 *
 * Loading validates the whole file before touching the caller's rule set, so
 * a bad REGIONS_FILE leaves the previous rules in force. Classification is a
 * linear scan of a flat box array in rule order (a few hundred comparisons):
 * it runs once per event, and a flat scan has no structure to get wrong.
 *
 * Invariants after a successful load: 1..QS_REGIONS_MAX_RULES rules with
 * distinct names, each with 1..QS_REGIONS_MAX_BOXES boxes; every box has
 * -90 <= min_lat <= max_lat <= 90 and both longitudes in [-180, 180]; the
 * last rule has a box covering the whole globe.
 */
#include "qs/regions.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qs/error.h"

void qs_regions_init(qs_regions *r) {
  r->rules = NULL;
  r->nrules = 0;
  r->boxes = NULL;
  r->nboxes = 0;
}

void qs_regions_close(qs_regions *r) {
  free(r->rules);
  free(r->boxes);
  qs_regions_init(r);
}

size_t qs_regions_count(const qs_regions *r) { return r->nrules; }

const char *qs_regions_name(const qs_regions *r, size_t i) {
  return i < r->nrules ? r->rules[i].name : NULL;
}

/* ---- loading ---------------------------------------------------------- */

static bool name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > QS_REGION_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
      return false;
  }
  return true;
}

/* Reads one box member as a number within [lo, hi]. ctx names the box. */
static int box_coord(const cJSON *box, const char *key, double lo, double hi, double *out,
                     const char *ctx, char *why, size_t whylen) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(box, key);
  if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
    qs_set_reason(why, whylen, "%s: %s missing or not a number", ctx, key);
    return QS_ERR_INVALID;
  }
  if (it->valuedouble < lo || it->valuedouble > hi) {
    qs_set_reason(why, whylen, "%s: %s %g out of range [%g, %g]", ctx, key, it->valuedouble, lo,
                  hi);
    return QS_ERR_INVALID;
  }
  *out = it->valuedouble;
  return 0;
}

static bool covers_globe(const qs_region_box *b) {
  return b->min_lat == -90.0 && b->max_lat == 90.0 && b->min_lon == -180.0 && b->max_lon == 180.0;
}

static int load_tree(qs_regions *out, const cJSON *root, char *why, size_t whylen) {
  const cJSON *rules =
      cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "regions") : NULL;
  if (!cJSON_IsArray(rules)) {
    qs_set_reason(why, whylen, "regions: the document must be an object with a \"regions\" array");
    return QS_ERR_INVALID;
  }
  int nrules = cJSON_GetArraySize(rules);
  if (nrules < 1 || nrules > QS_REGIONS_MAX_RULES) {
    qs_set_reason(why, whylen, "regions: %d rules, must be 1..%d", nrules, QS_REGIONS_MAX_RULES);
    return QS_ERR_INVALID;
  }
  size_t nboxes = 0;
  const cJSON *rule;
  cJSON_ArrayForEach(rule, rules) {
    const cJSON *boxes = cJSON_GetObjectItemCaseSensitive(rule, "boxes");
    if (cJSON_IsArray(boxes))
      nboxes += (size_t)cJSON_GetArraySize(boxes);
  }
  out->rules = qs_xcalloc((size_t)nrules, sizeof *out->rules);
  out->boxes = qs_xcalloc(nboxes ? nboxes : 1, sizeof *out->boxes);

  char ctx[128];
  size_t ri = 0;
  cJSON_ArrayForEach(rule, rules) {
    const cJSON *name =
        cJSON_IsObject(rule) ? cJSON_GetObjectItemCaseSensitive(rule, "name") : NULL;
    if (!name || !cJSON_IsString(name)) {
      qs_set_reason(why, whylen, "regions[%zu]: name missing or not a string", ri);
      return QS_ERR_INVALID;
    }
    if (!name_ok(name->valuestring)) {
      qs_set_reason(why, whylen, "regions[%zu]: name must be 1..%d characters of [a-z0-9_-]", ri,
                    QS_REGION_NAME_MAX);
      return QS_ERR_INVALID;
    }
    for (size_t k = 0; k < ri; k++) {
      if (strcmp(out->rules[k].name, name->valuestring) == 0) {
        qs_set_reason(why, whylen, "regions[%zu]: duplicate name \"%s\" (also regions[%zu])", ri,
                      name->valuestring, k);
        return QS_ERR_INVALID;
      }
    }
    strcpy(out->rules[ri].name, name->valuestring); /* length checked by name_ok */
    const cJSON *boxes = cJSON_GetObjectItemCaseSensitive(rule, "boxes");
    int nb = cJSON_IsArray(boxes) ? cJSON_GetArraySize(boxes) : -1;
    if (nb < 1 || nb > QS_REGIONS_MAX_BOXES) {
      qs_set_reason(why, whylen, "regions[%zu] \"%s\": boxes must be an array of 1..%d boxes", ri,
                    out->rules[ri].name, QS_REGIONS_MAX_BOXES);
      return QS_ERR_INVALID;
    }
    size_t bi = 0;
    const cJSON *box;
    cJSON_ArrayForEach(box, boxes) {
      snprintf(ctx, sizeof ctx, "regions[%zu] \"%s\": boxes[%zu]", ri, out->rules[ri].name, bi);
      if (!cJSON_IsObject(box)) {
        qs_set_reason(why, whylen, "%s: not an object", ctx);
        return QS_ERR_INVALID;
      }
      qs_region_box *b = &out->boxes[out->nboxes];
      int rc;
      if ((rc = box_coord(box, "min_lat", -90, 90, &b->min_lat, ctx, why, whylen)) ||
          (rc = box_coord(box, "max_lat", -90, 90, &b->max_lat, ctx, why, whylen)) ||
          (rc = box_coord(box, "min_lon", -180, 180, &b->min_lon, ctx, why, whylen)) ||
          (rc = box_coord(box, "max_lon", -180, 180, &b->max_lon, ctx, why, whylen)))
        return rc;
      if (b->min_lat > b->max_lat) {
        qs_set_reason(why, whylen, "%s: min_lat %g above max_lat %g", ctx, b->min_lat, b->max_lat);
        return QS_ERR_INVALID;
      }
      b->rule = (uint32_t)ri;
      out->nboxes++;
      bi++;
    }
    ri++;
  }
  out->nrules = ri;
  bool catch_all = false;
  for (size_t i = 0; i < out->nboxes; i++)
    if (out->boxes[i].rule == ri - 1 && covers_globe(&out->boxes[i]))
      catch_all = true;
  if (!catch_all) {
    qs_set_reason(why, whylen,
                  "regions[%zu] \"%s\": the last rule must be a catch-all with a box "
                  "{-90, 90, -180, 180}, so every point gets a region",
                  ri - 1, out->rules[ri - 1].name);
    return QS_ERR_INVALID;
  }
  return 0;
}

int qs_regions_load_json(qs_regions *r, const char *json, size_t len, char *why, size_t whylen) {
  if (why && whylen)
    why[0] = '\0';
  if (len > QS_REGIONS_FILE_MAX) {
    qs_set_reason(why, whylen, "regions: %zu bytes, over the %d byte limit", len,
                  QS_REGIONS_FILE_MAX);
    return QS_ERR_TOOBIG;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
  if (!root) {
    size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
    qs_set_reason(why, whylen, "regions: not valid JSON (near byte %zu)", at);
    return QS_ERR_PARSE;
  }
  for (const char *p = end; p < json + len; p++) {
    if (!isspace((unsigned char)*p) && *p != '\0') {
      qs_set_reason(why, whylen, "regions: trailing data after the JSON value (byte %zu)",
                    (size_t)(p - json));
      cJSON_Delete(root);
      return QS_ERR_PARSE;
    }
  }
  qs_regions fresh;
  qs_regions_init(&fresh);
  int rc = load_tree(&fresh, root, why, whylen);
  cJSON_Delete(root);
  if (rc) {
    qs_regions_close(&fresh);
    return rc;
  }
  qs_regions_close(r);
  *r = fresh;
  return 0;
}

int qs_regions_load_file(qs_regions *r, const char *path, char *why, size_t whylen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    qs_set_reason(why, whylen, "regions file %s: %s", path, strerror(errno));
    return QS_ERR_IO;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    qs_set_reason(why, whylen, "regions file %s: not a regular file", path);
    fclose(f);
    return QS_ERR_IO;
  }
  if (st.st_size > QS_REGIONS_FILE_MAX) {
    qs_set_reason(why, whylen, "regions file %s: %lld bytes, over the %d byte limit", path,
                  (long long)st.st_size, QS_REGIONS_FILE_MAX);
    fclose(f);
    return QS_ERR_TOOBIG;
  }
  size_t n = (size_t)st.st_size;
  char *buf = qs_xmalloc(n ? n : 1);
  size_t got = fread(buf, 1, n, f);
  int ioerr = ferror(f);
  fclose(f);
  if (got != n || ioerr) {
    qs_set_reason(why, whylen, "regions file %s: read failed", path);
    free(buf);
    return QS_ERR_IO;
  }
  char inner[256];
  int rc = qs_regions_load_json(r, buf, n, inner, sizeof inner);
  free(buf);
  if (rc)
    qs_set_reason(why, whylen, "regions file %s: %s", path, inner);
  return rc;
}

int qs_regions_load_default(qs_regions *r, char *why, size_t whylen) {
  return qs_regions_load_json(r, qs_regions_default_json, (size_t)qs_regions_default_json_len, why,
                              whylen);
}

/* ---- classification --------------------------------------------------- */

static inline bool lon_in(const qs_region_box *b, double lon) {
  if (b->min_lon <= b->max_lon)
    return lon >= b->min_lon && lon <= b->max_lon;
  return lon >= b->min_lon || lon <= b->max_lon; /* crosses the antimeridian */
}

const char *qs_regions_classify(const qs_regions *r, double lat, double lon) {
  /* NaN fails every comparison, so it is rejected here too. */
  if (!(lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0))
    return NULL;
  bool on_antimeridian = lon == 180.0 || lon == -180.0;
  for (size_t i = 0; i < r->nboxes; i++) {
    const qs_region_box *b = &r->boxes[i];
    if (lat < b->min_lat || lat > b->max_lat)
      continue;
    if (lon_in(b, lon) || (on_antimeridian && lon_in(b, -lon)))
      return r->rules[b->rule].name;
  }
  return NULL;
}
