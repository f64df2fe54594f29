/* params.h — the serving API's query strings: parsing and validation of every parameter.
 *
 * A query string is decoded once into a bounded table (at most API_QUERY_MAX parameters and
 * API_QUERY_BUF bytes); each validator reads one parameter, applies its default when absent and
 * fails with a message that names the parameter, the value and what is allowed — the detail of
 * the 400 problem document. Nothing here allocates.
 */
#ifndef SERVING_PARAMS_H
#define SERVING_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define API_QUERY_MAX 16
#define API_QUERY_BUF 2048
#define API_ERR_MAX 256
#define API_REGION_MAX 63

typedef struct api_query {
  size_t n;
  struct {
    const char *name, *value;
  } p[API_QUERY_MAX];
  char buf[API_QUERY_BUF];
  char err[API_ERR_MAX]; /* why the last call failed */
  char bad_param[32];    /* which parameter it was about */
} api_query;

/* Decodes "a=1&b=x%20y" (percent escapes, '+' as space). QS_ERR_TOOBIG over the limits,
 * QS_ERR_PARSE for a bad escape, an empty name or a repeated parameter. */
int api_query_parse(api_query *q, const char *s, size_t len);
/* The value of name, or NULL when absent. */
const char *api_query_get(const api_query *q, const char *name);
/* QS_ERR_INVALID naming the first parameter not in allowed (NULL-terminated). */
int api_query_only(api_query *q, const char *const *allowed);

/* Integer in [min, max]; def when absent. */
int api_param_int(api_query *q, const char *name, int64_t def, int64_t min, int64_t max,
                  int64_t *out);
/* Finite number in [min, max]; def when absent. */
int api_param_double(api_query *q, const char *name, double def, double min, double max,
                     double *out);
/* Duration with a unit ("90s", "30m", "24h", "7d"), in [min_ms, max_ms]; def_ms when absent. */
int api_param_duration(api_query *q, const char *name, int64_t def_ms, int64_t min_ms,
                       int64_t max_ms, int64_t *out_ms);
/* A start time: a duration back from now_ms ("7d") or an ISO-8601 time; at most max_back_ms
 * before now_ms and not after it. def_back_ms < 0 with the parameter absent gives *out = INT64_MIN
 * (no lower bound). */
int api_param_since(api_query *q, const char *name, int64_t now_ms, int64_t def_back_ms,
                    int64_t max_back_ms, int64_t *out_ms);
/* A region name: 1..63 bytes of [A-Za-z0-9._:-]; out gets "" when absent. */
int api_param_region(api_query *q, const char *name, char out[API_REGION_MAX + 1]);
/* One of "a|b|c"; def when absent. */
int api_param_enum(api_query *q, const char *name, const char *allowed, const char *def,
                   const char **out);

typedef struct api_bbox {
  bool set;
  double min_lon, min_lat, max_lon, max_lat; /* min_lon > max_lon: crosses the antimeridian */
} api_bbox;
/* "minLon,minLat,maxLon,maxLat" (WGS84 degrees, GeoJSON order). */
int api_param_bbox(api_query *q, const char *name, api_bbox *out);

#endif
