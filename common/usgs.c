/* usgs.c — USGS GeoJSON summary feed -> qs_event.
 *
 * The whole document is parsed with cJSON (bounded by opts->max_bytes, so the
 * tree is bounded too), then each feature is mapped onto one reused qs_event
 * and checked with qs_event_validate, so the feed path and the hub path share
 * the same range rules. A bad feature never stops the feed: it is counted and
 * its reason kept (first QS_USGS_SKIPS_KEPT), because one odd event from a
 * network must not blind the pipeline to every other event in the poll.
 *
 * Field mapping: id -> event_id; properties.{mag, magType, place, time,
 * updated, type, status, tsunami, alert, net, sig, ids}; geometry.coordinates
 * [lon, lat, depth]. Optional members may be null or absent: strings become
 * "", mag/depth/alert null, tsunami false, sig 0, ids [id].
 */
#include "qs/usgs.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "qs/error.h"

void qs_usgs_opts_init(qs_usgs_opts *opts) {
  opts->max_bytes = QS_USGS_DEFAULT_MAX_BYTES;
  opts->source = "usgs";
  opts->ingested_at = 0;
}

/* ---- one feature ------------------------------------------------------ */

static int opt_text(const cJSON *props, const char *key, char *dst, size_t dstsize, char *why,
                    size_t whylen) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(props, key);
  if (!it || cJSON_IsNull(it)) {
    dst[0] = '\0';
    return 0;
  }
  if (!cJSON_IsString(it)) {
    qs_set_reason(why, whylen, "properties.%s: must be a string or null", key);
    return QS_ERR_INVALID;
  }
  if (qs_event_set_str(dst, dstsize, it->valuestring, strlen(it->valuestring)) != 0) {
    qs_set_reason(why, whylen, "properties.%s: longer than %zu bytes", key, dstsize - 1);
    return QS_ERR_INVALID;
  }
  return 0;
}

static int req_ms(const cJSON *props, const char *key, int64_t *out, char *why, size_t whylen) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(props, key);
  if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) ||
      it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 9007199254740992.0) {
    qs_set_reason(why, whylen, "properties.%s: missing or not an integer (epoch ms)", key);
    return QS_ERR_INVALID;
  }
  *out = (int64_t)it->valuedouble;
  return 0;
}

static int map_ids(const cJSON *props, qs_event *ev, char *why, size_t whylen) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(props, "ids");
  if (!it || cJSON_IsNull(it))
    return qs_event_ids_add(ev, ev->event_id, strlen(ev->event_id));
  if (!cJSON_IsString(it)) {
    qs_set_reason(why, whylen, "properties.ids: must be a string or null");
    return QS_ERR_INVALID;
  }
  /* ",ci123,us7000abc," -> ci123, us7000abc (empty pieces dropped) */
  const char *s = it->valuestring;
  while (*s) {
    const char *comma = strchr(s, ',');
    size_t n = comma ? (size_t)(comma - s) : strlen(s);
    if (n > 0) {
      int rc = qs_event_ids_add(ev, s, n);
      if (rc) {
        qs_set_reason(why, whylen, "properties.ids: entry \"%.*s\" %s", (int)(n > 40 ? 40 : n), s,
                      rc == QS_ERR_TOOBIG ? "exceeds the ids limits" : "is not a valid id");
        return QS_ERR_INVALID;
      }
    }
    s += n;
    if (*s == ',')
      s++;
  }
  return 0;
}

static int map_feature(const cJSON *feat, const qs_usgs_opts *opts, qs_event *ev, char *why,
                       size_t whylen) {
  int rc;
  qs_event_init(ev);
  if (!cJSON_IsObject(feat)) {
    qs_set_reason(why, whylen, "feature: not an object");
    return QS_ERR_INVALID;
  }
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(feat, "id");
  if (!cJSON_IsString(id)) {
    qs_set_reason(why, whylen, "id: missing or not a string");
    return QS_ERR_INVALID;
  }
  if (!qs_event_id_is_valid(id->valuestring, strlen(id->valuestring))) {
    qs_set_reason(why, whylen, "id: must be 1..%d characters of [A-Za-z0-9_.:-]", QS_EVENT_ID_MAX);
    return QS_ERR_INVALID;
  }
  strcpy(ev->event_id, id->valuestring); /* length checked just above */

  const cJSON *props = cJSON_GetObjectItemCaseSensitive(feat, "properties");
  if (!cJSON_IsObject(props)) {
    qs_set_reason(why, whylen, "properties: missing or not an object");
    return QS_ERR_INVALID;
  }
  const cJSON *geom = cJSON_GetObjectItemCaseSensitive(feat, "geometry");
  const cJSON *coords =
      cJSON_IsObject(geom) ? cJSON_GetObjectItemCaseSensitive(geom, "coordinates") : NULL;
  int ncoords = cJSON_IsArray(coords) ? cJSON_GetArraySize(coords) : -1;
  if (ncoords < 2 || ncoords > 3) {
    qs_set_reason(why, whylen, "geometry.coordinates: missing or not [lon, lat, depth]");
    return QS_ERR_INVALID;
  }
  const cJSON *lon = cJSON_GetArrayItem(coords, 0), *lat = cJSON_GetArrayItem(coords, 1);
  const cJSON *depth = ncoords == 3 ? cJSON_GetArrayItem(coords, 2) : NULL;
  if (!cJSON_IsNumber(lon) || !cJSON_IsNumber(lat)) {
    qs_set_reason(why, whylen, "geometry.coordinates: longitude and latitude must be numbers");
    return QS_ERR_INVALID;
  }
  ev->longitude = lon->valuedouble;
  ev->latitude = lat->valuedouble;
  if (depth && !cJSON_IsNull(depth)) {
    if (!cJSON_IsNumber(depth)) {
      qs_set_reason(why, whylen, "geometry.coordinates: depth must be a number or null");
      return QS_ERR_INVALID;
    }
    ev->has_depth = true;
    ev->depth_km = depth->valuedouble;
  }

  const cJSON *mag = cJSON_GetObjectItemCaseSensitive(props, "mag");
  if (mag && !cJSON_IsNull(mag)) {
    if (!cJSON_IsNumber(mag)) {
      qs_set_reason(why, whylen, "properties.mag: must be a number or null");
      return QS_ERR_INVALID;
    }
    ev->has_magnitude = true;
    ev->magnitude = mag->valuedouble;
  }
  if ((rc = req_ms(props, "time", &ev->time, why, whylen)) ||
      (rc = req_ms(props, "updated", &ev->updated, why, whylen)))
    return rc;
  if ((rc = opt_text(props, "magType", ev->mag_type, sizeof ev->mag_type, why, whylen)) ||
      (rc = opt_text(props, "place", ev->place, sizeof ev->place, why, whylen)) ||
      (rc = opt_text(props, "type", ev->event_type, sizeof ev->event_type, why, whylen)) ||
      (rc = opt_text(props, "status", ev->status, sizeof ev->status, why, whylen)) ||
      (rc = opt_text(props, "net", ev->net, sizeof ev->net, why, whylen)))
    return rc;
  /* Older feeds write "AUTOMATIC"/"REVIEWED": one spelling downstream. */
  for (char *p = ev->status; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  if (strcmp(ev->status, "deleted") == 0)
    ev->change = QS_EVENT_DELETED;

  const cJSON *tsu = cJSON_GetObjectItemCaseSensitive(props, "tsunami");
  if (cJSON_IsNumber(tsu) && (tsu->valuedouble == 0.0 || tsu->valuedouble == 1.0)) {
    ev->tsunami_flag = tsu->valuedouble == 1.0;
  } else if (cJSON_IsBool(tsu)) {
    ev->tsunami_flag = cJSON_IsTrue(tsu);
  } else if (tsu && !cJSON_IsNull(tsu)) {
    qs_set_reason(why, whylen, "properties.tsunami: must be 0, 1 or null");
    return QS_ERR_INVALID;
  }
  const cJSON *alert = cJSON_GetObjectItemCaseSensitive(props, "alert");
  if (alert && !cJSON_IsNull(alert) &&
      (!cJSON_IsString(alert) || qs_alert_level_parse(alert->valuestring, &ev->alert_level))) {
    qs_set_reason(why, whylen, "properties.alert: must be null, green, yellow, orange or red");
    return QS_ERR_INVALID;
  }
  const cJSON *sig = cJSON_GetObjectItemCaseSensitive(props, "sig");
  if (sig && !cJSON_IsNull(sig)) {
    if (!cJSON_IsNumber(sig) || sig->valuedouble != floor(sig->valuedouble) ||
        sig->valuedouble < 0 || sig->valuedouble > QS_EVENT_SIG_MAX) {
      qs_set_reason(why, whylen, "properties.sig: must be an integer in [0, %d]", QS_EVENT_SIG_MAX);
      return QS_ERR_INVALID;
    }
    ev->sig = (int32_t)sig->valuedouble;
  }
  if ((rc = map_ids(props, ev, why, whylen)))
    return rc;

  const char *source = opts->source ? opts->source : "usgs";
  if (qs_event_set_str(ev->source, sizeof ev->source, source, strlen(source)) != 0) {
    qs_set_reason(why, whylen, "source: option longer than %d bytes", QS_EVENT_SHORT_MAX);
    return QS_ERR_INVALID;
  }
  ev->ingested_at = opts->ingested_at;
  return qs_event_validate(ev, why, whylen);
}

/* ---- documents -------------------------------------------------------- */

static cJSON *parse_doc(const char *doc, size_t len, char *why, size_t whylen) {
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(doc, len, &end, 0);
  if (!root) {
    size_t at = (end && end >= doc && end <= doc + len) ? (size_t)(end - doc) : 0;
    qs_set_reason(why, whylen, "not valid JSON (near byte %zu)", at);
    return NULL;
  }
  for (const char *p = end; p && p < doc + len; p++) {
    if (!isspace((unsigned char)*p) && *p != '\0') {
      qs_set_reason(why, whylen, "trailing data after the JSON value (byte %zu)",
                    (size_t)(p - doc));
      cJSON_Delete(root);
      return NULL;
    }
  }
  return root;
}

static void record_skip(qs_usgs_stats *st, size_t index, const cJSON *feat, const char *reason) {
  st->skipped++;
  if (st->skips_kept >= QS_USGS_SKIPS_KEPT)
    return;
  qs_usgs_skip *sk = &st->first_skips[st->skips_kept++];
  sk->index = index;
  const cJSON *id = cJSON_IsObject(feat) ? cJSON_GetObjectItemCaseSensitive(feat, "id") : NULL;
  if (id && cJSON_IsString(id) && qs_event_id_is_valid(id->valuestring, strlen(id->valuestring)))
    snprintf(sk->reason, sizeof sk->reason, "feature %zu (%s): %s", index, id->valuestring, reason);
  else
    snprintf(sk->reason, sizeof sk->reason, "feature %zu: %s", index, reason);
}

int qs_usgs_parse_feed(const char *doc, size_t len, const qs_usgs_opts *opts, qs_usgs_event_cb cb,
                       void *data, qs_usgs_stats *stats, char *why, size_t whylen) {
  qs_usgs_opts defaults;
  if (!opts) {
    qs_usgs_opts_init(&defaults);
    opts = &defaults;
  }
  memset(stats, 0, sizeof *stats);
  if (why && whylen)
    why[0] = '\0';
  if (len > opts->max_bytes) {
    qs_set_reason(why, whylen, "feed: %zu bytes, over the %zu byte limit", len, opts->max_bytes);
    return QS_ERR_TOOBIG;
  }
  cJSON *root = parse_doc(doc, len, why, whylen);
  if (!root)
    return QS_ERR_PARSE;
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
  const cJSON *features = cJSON_GetObjectItemCaseSensitive(root, "features");
  if (!cJSON_IsObject(root) || !cJSON_IsString(type) ||
      strcmp(type->valuestring, "FeatureCollection") != 0 || !cJSON_IsArray(features)) {
    qs_set_reason(why, whylen, "not a GeoJSON FeatureCollection with a features array");
    cJSON_Delete(root);
    return QS_ERR_PARSE;
  }
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
  const cJSON *gen =
      cJSON_IsObject(meta) ? cJSON_GetObjectItemCaseSensitive(meta, "generated") : NULL;
  if (gen && cJSON_IsNumber(gen) && gen->valuedouble > 0 && gen->valuedouble < 9007199254740992.0)
    stats->generated = (int64_t)gen->valuedouble;

  qs_event ev;
  char reason[QS_USGS_REASON_MAX];
  int rc = 0;
  const cJSON *feat;
  cJSON_ArrayForEach(feat, features) {
    size_t index = stats->features++;
    if (rc)
      continue; /* the callback stopped us: keep counting features only */
    reason[0] = '\0';
    if (map_feature(feat, opts, &ev, reason, sizeof reason) != 0) {
      record_skip(stats, index, feat, reason);
      continue;
    }
    stats->parsed++;
    if (cb) {
      int crc = cb(&ev, data);
      if (crc < 0)
        rc = crc;
    }
  }
  cJSON_Delete(root);
  return rc;
}

int qs_usgs_parse_feature(const char *json, size_t len, const qs_usgs_opts *opts, qs_event *ev,
                          char *why, size_t whylen) {
  qs_usgs_opts defaults;
  if (!opts) {
    qs_usgs_opts_init(&defaults);
    opts = &defaults;
  }
  if (why && whylen)
    why[0] = '\0';
  if (len > opts->max_bytes) {
    qs_set_reason(why, whylen, "feature: %zu bytes, over the %zu byte limit", len, opts->max_bytes);
    return QS_ERR_TOOBIG;
  }
  cJSON *root = parse_doc(json, len, why, whylen);
  if (!root)
    return QS_ERR_PARSE;
  int rc = map_feature(root, opts, ev, why, whylen);
  cJSON_Delete(root);
  return rc;
}
