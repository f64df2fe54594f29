/* api.c — REST over the Redis tables of docs/keyspace.md (see api.h).
 *
 * Invariants:
 * - a request either gets its answer synchronously (validation, cache, errors) or owns exactly one
 *   Redis command whose callback answers it (qs_redis calls it exactly once, NULL when Redis is
 *   down or closing: then 503);
 * - per-request memory lives in the h2o request pool; the response body is built in a qs_buf and
 *   copied into the pool by qs_httpd_respond, then freed;
 * - the rate-limit table and the response cache have fixed sizes: no input grows them.
 */
#include "api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>

#include "qs/agg.h"
#include "qs/error.h"
#include "qs/hash.h"
#include "qs/timeutil.h"

#include "live.h"
#include "params.h"
#include "views.h"

extern const char qs_openapi_json[];
extern const unsigned long qs_openapi_json_len;

#define RL_SLOTS 4096
#define RL_PROBE 8
#define CACHE_SLOTS 256
#define CACHE_KEY_MAX 512
#define CACHE_BODY_MAX (1024 * 1024)
#define EVENTS_LIMIT_MAX 1000
#define LIST_LIMIT_MAX 1000
#define SINCE_MAX_MS (366 * QS_MS_PER_DAY)

/* ---- Lua scripts ---------------------------------------------------------------------------- */

/* Range of a sorted-set index, values from its hash; optional id prefix filter; newest first when
 * rev. KEYS: idx, hash. ARGV: min, max, rev, limit, prefix, scan_max. */
static const char script_range[] =
    "local lim, scanmax, prefix = tonumber(ARGV[4]), tonumber(ARGV[6]), ARGV[5]\n"
    "local out, off = {}, 0\n"
    "while #out < lim and off < scanmax do\n"
    "  local ids\n"
    "  if ARGV[3] == '1' then\n"
    "    ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[1], 'LIMIT', off, 500)\n"
    "  else\n"
    "    ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', off, 500)\n"
    "  end\n"
    "  if #ids == 0 then break end\n"
    "  off = off + #ids\n"
    "  local want = {}\n"
    "  for i = 1, #ids do\n"
    "    if prefix == '' or string.sub(ids[i], 1, #prefix) == prefix then want[#want + 1] = "
    "ids[i] end\n"
    "  end\n"
    "  if #want > 0 then\n"
    "    local vals = redis.call('HMGET', KEYS[2], unpack(want))\n"
    "    for i = 1, #vals do\n"
    "      if vals[i] and #out < lim then out[#out + 1] = vals[i] end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* The merged view's input: the batch cutoff (floored to the hour), batch hourly rows that start
 * in [since, cutoff), speed windows that start at or after max(since, cutoff). KEYS: batch meta,
 * batch hourly idx, batch hourly, rt idx, rt. ARGV: since ("-inf" or ms), row limit.
 * Returns {cutoff, complete (0: over the limit), batch rows, speed rows}. */
static const char script_merged[] =
    "local cutoff = tonumber(redis.call('HGET', KEYS[1], 'cutoff_ms') or '0') or 0\n"
    "cutoff = cutoff - (cutoff % 3600000)\n"
    "local lim, since = tonumber(ARGV[2]), ARGV[1]\n"
    "local function fetch(idx, h, lo, hi)\n"
    "  local ids = redis.call('ZRANGEBYSCORE', idx, lo, hi, 'LIMIT', 0, lim + 1)\n"
    "  if #ids > lim then return false end\n"
    "  local out = {}\n"
    "  for i = 1, #ids, 500 do\n"
    "    local chunk = {}\n"
    "    for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end\n"
    "    local vals = redis.call('HMGET', h, unpack(chunk))\n"
    "    for j = 1, #vals do if vals[j] then out[#out + 1] = vals[j] end end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local cs = string.format('%.0f', cutoff)\n"
    "local b = {}\n"
    "if cutoff > 0 then b = fetch(KEYS[2], KEYS[3], since, '(' .. cs) end\n"
    "local rlo = since\n"
    "if since == '-inf' or tonumber(since) < cutoff then rlo = cs end\n"
    "local r = fetch(KEYS[4], KEYS[5], rlo, '+inf')\n"
    "if b == false or r == false then return {cs, 0, {}, {}} end\n"
    "return {cs, 1, b, r}\n";

/* Speed windows since ARGV[1] and every region's baseline. KEYS: rt idx, rt, baseline.
 * ARGV: since, limit. Returns {complete, rows, HGETALL baseline}. */
static const char script_anomalies[] =
    "local lim = tonumber(ARGV[2])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', 0, lim + 1)\n"
    "if #ids > lim then return {0, {}, {}} end\n"
    "local out = {}\n"
    "for i = 1, #ids, 500 do\n"
    "  local chunk = {}\n"
    "  for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end\n"
    "  local vals = redis.call('HMGET', KEYS[2], unpack(chunk))\n"
    "  for j = 1, #vals do if vals[j] then out[#out + 1] = vals[j] end end\n"
    "end\n"
    "return {1, out, redis.call('HGETALL', KEYS[3])}\n";

/* Latest events, newest first, filtered. KEYS: ev idx, ev. ARGV: since, limit, min_mag or '',
 * region or '', min_lon, min_lat, max_lon, max_lat (or '' x4), scan_max. */
static const char script_events[] =
    "local lim, scanmax = tonumber(ARGV[2]), tonumber(ARGV[9])\n"
    "local minmag = tonumber(ARGV[3])\n"
    "local region = ARGV[4]\n"
    "local x0, y0, x1, y1 = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), "
    "tonumber(ARGV[8])\n"
    "local filter = minmag ~= nil or region ~= '' or x0 ~= nil\n"
    "local out, off = {}, 0\n"
    "while #out < lim and off < scanmax do\n"
    "  local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'LIMIT', off, 200)\n"
    "  if #ids == 0 then break end\n"
    "  off = off + #ids\n"
    "  local vals = redis.call('HMGET', KEYS[2], unpack(ids))\n"
    "  for i = 1, #vals do\n"
    "    local v = vals[i]\n"
    "    if v and #out < lim then\n"
    "      local keep = true\n"
    "      if filter then\n"
    "        local ok, e = pcall(cjson.decode, v)\n"
    "        keep = ok and type(e) == 'table'\n"
    "        if keep and minmag ~= nil then keep = type(e.magnitude) == 'number' and e.magnitude "
    ">= minmag end\n"
    "        if keep and region ~= '' then keep = e.region == region end\n"
    "        if keep and x0 ~= nil then\n"
    "          local lon, lat = e.longitude, e.latitude\n"
    "          keep = type(lon) == 'number' and type(lat) == 'number' and lat >= y0 and lat <= "
    "y1\n"
    "          if keep then\n"
    "            if x0 <= x1 then keep = lon >= x0 and lon <= x1 else keep = lon >= x0 or lon <= "
    "x1 end\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "      if keep then out[#out + 1] = v end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Statistics over the events since ARGV[1]. KEYS: ev idx, ev. ARGV: since, scan_max,
 * significant threshold. Returns {count, significant, tsunami, max event JSON or nil,
 * truncated}. */
static const char script_stats[] =
    "local n, sig, tsu, maxm, maxev, off, trunc = 0, 0, 0, nil, false, 0, 0\n"
    "local thr = tonumber(ARGV[3])\n"
    "while true do\n"
    "  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', off, 500)\n"
    "  if #ids == 0 then break end\n"
    "  off = off + #ids\n"
    "  local vals = redis.call('HMGET', KEYS[2], unpack(ids))\n"
    "  for i = 1, #vals do\n"
    "    if vals[i] then\n"
    "      local ok, e = pcall(cjson.decode, vals[i])\n"
    "      if ok and type(e) == 'table' then\n"
    "        n = n + 1\n"
    "        local m = e.magnitude\n"
    "        if type(m) == 'number' then\n"
    "          if m >= thr then sig = sig + 1 end\n"
    "          if maxm == nil or m > maxm then maxm = m; maxev = vals[i] end\n"
    "        end\n"
    "        if e.tsunami_flag == true then tsu = tsu + 1 end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if off >= tonumber(ARGV[2]) then trunc = 1; break end\n"
    "end\n"
    "return {n, sig, tsu, maxev, trunc}\n";

/* KEYS: runs list, batch meta. ARGV: limit. */
static const char script_runs[] = "return {redis.call('HGETALL', KEYS[2]), "
                                  "redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)}\n";

/* The WebSocket snapshot: speed windows of the last hour (oldest first), the rolling window,
 * latest events and alerts (newest first). KEYS: rt idx, rt, rolling, ev idx, ev, alerts idx,
 * alerts. ARGV: windows since, n events, n alerts, max windows. */
const char api_script_snapshot[] =
    "local function vals(idx, h, ids)\n"
    "  local out = {}\n"
    "  for i = 1, #ids, 500 do\n"
    "    local chunk = {}\n"
    "    for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end\n"
    "    local v = redis.call('HMGET', h, unpack(chunk))\n"
    "    for j = 1, #v do if v[j] then out[#out + 1] = v[j] end end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local w = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'LIMIT', 0, "
    "tonumber(ARGV[4]))\n"
    "local e = redis.call('ZREVRANGEBYSCORE', KEYS[4], '+inf', '-inf', 'LIMIT', 0, "
    "tonumber(ARGV[2]))\n"
    "local a = redis.call('ZREVRANGEBYSCORE', KEYS[6], '+inf', '-inf', 'LIMIT', 0, "
    "tonumber(ARGV[3]))\n"
    "return {vals(KEYS[1], KEYS[2], w), redis.call('GET', KEYS[3]), vals(KEYS[4], KEYS[5], e), "
    "vals(KEYS[6], KEYS[7], a)}\n";

/* ---- the server ----------------------------------------------------------------------------- */

typedef struct rl_slot {
  uint8_t addr[16];
  bool used;
  double tokens;
  uint64_t last_ms;
} rl_slot;

typedef struct cache_slot {
  char key[CACHE_KEY_MAX];
  uint64_t expires_ms;
  uint64_t refresh_started_ms; /* one request recomputes an expired answer; 0 = none */
  char etag[24];
  qs_buf body;
  const char *content_type;
} cache_slot;

typedef enum route_id {
  R_SUMMARY,
  R_TIMESERIES,
  R_ANOMALIES,
  R_EVENTS,
  R_STATS,
  R_ALERTS,
  R_WIN_RT,
  R_WIN_HOURLY,
  R_WIN_DAILY,
  R_RUNS,
  R_OPENAPI,
  R_LIVE,
  R_COUNT
} route_id;

typedef struct route {
  const char *path; /* under /api/v1 */
  const char *name; /* metric label */
  const char *params[10];
} route;

static const route routes[R_COUNT] = {
    [R_SUMMARY] = {"/summary/regions", "summary_regions", {"since", NULL}},
    [R_TIMESERIES] = {"/timeseries", "timeseries", {"since", "bin", "region", NULL}},
    [R_ANOMALIES] = {"/anomalies", "anomalies", {"since", "k", "region", NULL}},
    [R_EVENTS] = {"/events",
                  "events",
                  {"limit", "since", "min_mag", "region", "bbox", "format", NULL}},
    [R_STATS] = {"/stats", "stats", {"window", NULL}},
    [R_ALERTS] = {"/alerts", "alerts", {"since", "limit", "type", NULL}},
    [R_WIN_RT] = {"/windows/realtime", "windows_realtime", {"since", "region", "limit", NULL}},
    [R_WIN_HOURLY] = {"/windows/batch/hourly",
                      "windows_batch_hourly",
                      {"since", "region", "limit", NULL}},
    [R_WIN_DAILY] = {"/windows/batch/daily",
                     "windows_batch_daily",
                     {"since", "region", "limit", NULL}},
    [R_RUNS] = {"/batch/runs", "batch_runs", {"limit", NULL}},
    [R_OPENAPI] = {"/openapi.json", "openapi", {NULL}},
    [R_LIVE] = {"/live", "live", {"access_token", NULL}},
};

struct api {
  uv_loop_t *loop;
  api_options opt;
  qs_httpd http;
  qs_redis *redis;
  live *lv;
  qs_log *log;
  qs_metrics *metrics;
  char **keys;
  size_t nkeys;
  char **origins;
  size_t norigins;
  bool any_origin;
  rl_slot *rl;
  cache_slot *cache;
  qs_metric_family *f_requests, *f_duration;
  qs_metric *m_cache_hits, *m_cache_misses, *m_bad_rows, *m_limited, *m_redis_errors;
  qs_metric *m_duration[R_COUNT + 1];
  void (*close_cb)(void *);
  void *close_arg;
};

typedef struct api_req {
  api *a;
  h2o_req_t *req;
  route_id rid;
  uint64_t t0;
  int64_t now, since, bin_ms, window_ms;
  double k;
  bool geojson;
  char region[API_REGION_MAX + 1];
  char cache_key[CACHE_KEY_MAX];
} api_req;

static const char *http_reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 429:
    return "Too Many Requests";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Error";
  }
}

static void count(api *a, route_id rid, int status, uint64_t t0) {
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  const char *labels[] = {rid < R_COUNT ? routes[rid].name : "other", code};
  qs_metric_inc(qs_metric_get(a->f_requests, labels));
  qs_metric_observe(a->m_duration[rid < R_COUNT ? rid : R_COUNT], (double)(uv_hrtime() - t0) / 1e9);
}

static void problem(api *a, h2o_req_t *req, route_id rid, uint64_t t0, int status,
                    const char *detail) {
  if (status == 503)
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                 H2O_STRLIT("no-store"));
  qs_httpd_problem(req, status, http_reason(status), detail);
  count(a, rid, status, t0);
}

/* Problem documents that name a parameter carry it in "invalid_param" too. */
static void bad_param(api *a, h2o_req_t *req, route_id rid, uint64_t t0, const api_query *q) {
  qs_buf b = QS_BUF_INIT;
  qs_buf_puts(&b,
              "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,\"detail\":\"");
  qs_buf_json_str(&b, q->err, strlen(q->err));
  qs_buf_puts(&b, "\",\"invalid_param\":\"");
  qs_buf_json_str(&b, q->bad_param, strlen(q->bad_param));
  qs_buf_puts(&b, "\"}");
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                 H2O_STRLIT("no-store"));
  qs_httpd_respond(req, 400, "Bad Request", "application/problem+json", b.p, b.len);
  qs_buf_free(&b);
  count(a, rid, 400, t0);
}

static bool etag_matches(h2o_req_t *req, const char *etag) {
  ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
  if (i < 0)
    return false;
  h2o_iovec_t v = req->headers.entries[i].value;
  size_t el = strlen(etag);
  if (v.len == 1 && v.base[0] == '*')
    return true;
  for (size_t k = 0; k + el <= v.len; k++) /* a list of tags, possibly W/-prefixed */
    if (memcmp(v.base + k, etag, el) == 0)
      return true;
  return false;
}

/* A 200 with ETag and Cache-Control, or 304 when the client already has it. */
static void send_ok(api *a, h2o_req_t *req, route_id rid, uint64_t t0, const char *ctype,
                    const char *body, size_t len, const char *etag_in) {
  char etag[24];
  if (etag_in)
    snprintf(etag, sizeof etag, "%s", etag_in);
  else
    snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)qs_fnv1a64(body, len));
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, etag, strlen(etag));
  char cc[64];
  int n = snprintf(cc, sizeof cc, "public, max-age=%lld",
                   (long long)(rid == R_OPENAPI ? 3600 : a->opt.cache_max_age_ms / 1000));
  h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                 h2o_strdup(&req->pool, cc, (size_t)n).base, (size_t)n);
  if (rid == R_EVENTS)
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Accept"));
  if (etag_matches(req, etag)) {
    req->res.status = 304;
    req->res.reason = "Not Modified";
    h2o_send_inline(req, "", 0);
    count(a, rid, 304, t0);
    return;
  }
  qs_httpd_respond(req, 200, "OK", ctype, body, len);
  count(a, rid, 200, t0);
}

/* ---- cache ---------------------------------------------------------------------------------- */

static cache_slot *cache_slot_for(api *a, const char *key) {
  return &a->cache[qs_fnv1a64(key, strlen(key)) % CACHE_SLOTS];
}

/* Fresh: served. Expired while another request recomputes it (for at most REFRESH_MAX_MS):
 * the stale answer is served (stale-while-revalidate), so a burst of clients at expiry costs one
 * Redis query, not one per client. Expired with nobody recomputing: this request does. */
#define REFRESH_MAX_MS 5000
static bool cache_serve(api *a, api_req *r) {
  if (a->opt.cache_max_age_ms <= 0 || !r->cache_key[0])
    return false;
  cache_slot *s = cache_slot_for(a, r->cache_key);
  uint64_t now = (uint64_t)r->now;
  if (strcmp(s->key, r->cache_key) != 0) {
    qs_metric_inc(a->m_cache_misses);
    return false;
  }
  if (now >= s->expires_ms) {
    bool refreshing = s->refresh_started_ms && now - s->refresh_started_ms < REFRESH_MAX_MS;
    if (!refreshing) {
      s->refresh_started_ms = now;
      qs_metric_inc(a->m_cache_misses);
      return false;
    }
  }
  qs_metric_inc(a->m_cache_hits);
  send_ok(a, r->req, r->rid, r->t0, s->content_type, s->body.p, s->body.len, s->etag);
  return true;
}

static void respond_and_cache(api *a, api_req *r, const char *ctype, const qs_buf *body) {
  char etag[24];
  snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)qs_fnv1a64(body->p, body->len));
  if (a->opt.cache_max_age_ms > 0 && r->cache_key[0] && body->len <= CACHE_BODY_MAX) {
    cache_slot *s = cache_slot_for(a, r->cache_key);
    snprintf(s->key, sizeof s->key, "%s", r->cache_key);
    /* An answer that was expensive to compute is reused for ten times its cost, so recomputing
     * a polled heavy view never takes more than about a tenth of the loop. */
    uint64_t cost_ms = (uv_hrtime() - r->t0) / 1000000;
    uint64_t ttl = (uint64_t)a->opt.cache_max_age_ms;
    if (ttl < 10 * cost_ms)
      ttl = 10 * cost_ms;
    s->expires_ms = (uint64_t)qs_time_now_ms() + ttl;
    s->refresh_started_ms = 0;
    memcpy(s->etag, etag, sizeof etag);
    s->content_type = ctype;
    qs_buf_reset(&s->body);
    qs_buf_append(&s->body, body->p, body->len);
  }
  send_ok(a, r->req, r->rid, r->t0, ctype, body->p, body->len, etag);
}

/* ---- rate limit ----------------------------------------------------------------------------- */

static bool rate_limited(api *a, h2o_req_t *req, uint64_t now_ms, double *retry_s) {
  if (a->opt.rate_limit_rps <= 0)
    return false;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  uint8_t addr[16] = {0};
  if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) == 0)
    return false;
  if (ss.ss_family == AF_INET)
    memcpy(addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
  else if (ss.ss_family == AF_INET6)
    memcpy(addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
  size_t h = (size_t)(qs_fnv1a64((const char *)addr, sizeof addr) % RL_SLOTS);
  rl_slot *s = NULL, *oldest = NULL;
  for (size_t i = 0; i < RL_PROBE && !s; i++) {
    rl_slot *c = &a->rl[(h + i) % RL_SLOTS];
    if (c->used && memcmp(c->addr, addr, sizeof addr) == 0)
      s = c;
    else if (!oldest || !c->used || (oldest->used && c->last_ms < oldest->last_ms))
      oldest = c;
  }
  if (!s) { /* a new client (or one evicted): starts with a full bucket */
    s = oldest;
    memcpy(s->addr, addr, sizeof addr);
    s->used = true;
    s->tokens = a->opt.rate_limit_burst;
    s->last_ms = now_ms;
  }
  s->tokens += (double)(now_ms - s->last_ms) / 1000.0 * a->opt.rate_limit_rps;
  if (s->tokens > a->opt.rate_limit_burst)
    s->tokens = a->opt.rate_limit_burst;
  s->last_ms = now_ms;
  if (s->tokens >= 1.0) {
    s->tokens -= 1.0;
    return false;
  }
  *retry_s = ceil((1.0 - s->tokens) / a->opt.rate_limit_rps);
  return true;
}

/* ---- auth and CORS -------------------------------------------------------------------------- */

static char **split_list(const char *s, size_t *n) {
  *n = 0;
  size_t cap = 1;
  for (const char *p = s; *p; p++)
    cap += *p == ',';
  char **v = qs_xcalloc(cap, sizeof *v);
  const char *p = s;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    while (l && (*p == ' ')) {
      p++;
      l--;
    }
    while (l && p[l - 1] == ' ')
      l--;
    if (l) {
      v[*n] = qs_xmalloc(l + 1);
      memcpy(v[*n], p, l);
      v[*n][l] = '\0';
      (*n)++;
    }
    p = e ? e + 1 : p + strlen(p);
  }
  return v;
}

/* Constant time in the key's content: every configured key is compared in full. */
static bool api_key_valid(const api *a, const char *key, size_t len) {
  unsigned ok = 0;
  for (size_t i = 0; i < a->nkeys; i++) {
    size_t kl = strlen(a->keys[i]);
    unsigned diff = kl != len;
    for (size_t j = 0; j < kl; j++)
      diff |= (unsigned)(uint8_t)a->keys[i][j] ^ (unsigned)(uint8_t)(j < len ? key[j] : 0);
    ok |= diff == 0;
  }
  return ok != 0;
}

static bool bearer_ok(api *a, h2o_req_t *req, const api_query *q) {
  if (a->nkeys == 0)
    return true;
  ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
  if (i >= 0) {
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0)
      return api_key_valid(a, v.base + 7, v.len - 7);
    return false;
  }
  const char *tok = q ? api_query_get(q, "access_token") : NULL; /* browsers' WebSocket */
  return tok && api_key_valid(a, tok, strlen(tok));
}

static void add_cors(api *a, h2o_req_t *req) {
  if (!a->any_origin && a->norigins == 0)
    return;
  ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1);
  if (i < 0)
    return;
  h2o_iovec_t o = req->headers.entries[i].value;
  bool ok = a->any_origin;
  for (size_t k = 0; !ok && k < a->norigins; k++)
    ok = h2o_memis(o.base, o.len, a->origins[k], strlen(a->origins[k]));
  if (!ok)
    return;
  if (a->any_origin) {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   H2O_STRLIT("*"));
  } else {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   o.base, o.len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
  }
  h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-expose-headers"),
                        0, NULL, H2O_STRLIT("ETag, Retry-After"));
}

/* ---- reply helpers -------------------------------------------------------------------------- */

/* Appends a stored JSON value if it parses (a corrupt value is counted and skipped, so a response
 * is always valid JSON). Returns true when appended. */
static bool append_json_value(api *a, qs_buf *b, const char *s, size_t len, bool comma) {
  cJSON *v = cJSON_ParseWithLength(s, len);
  bool ok = v != NULL && (cJSON_IsObject(v) || cJSON_IsArray(v));
  cJSON_Delete(v);
  if (!ok) {
    qs_metric_inc(a->m_bad_rows);
    return false;
  }
  if (comma)
    qs_buf_puts(b, ",");
  qs_buf_append(b, s, len);
  return true;
}

static bool reply_ok(api_req *r, redisReply *rep, int status) {
  api *a = r->a;
  if (!rep) {
    const char *why = NULL;
    qs_redis_ready(a->redis, &why);
    char detail[320];
    snprintf(detail, sizeof detail, "redis unavailable: %s (%s)", why, qs_strerror(status));
    problem(a, r->req, r->rid, r->t0, 503, detail);
    return false;
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    qs_metric_inc(a->m_redis_errors);
    qs_log_error(a->log, "redis error", QS_LSTR("route", routes[r->rid].name),
                 QS_LSTR("error", rep->str));
    problem(a, r->req, r->rid, r->t0, 500, "the data store answered with an error");
    return false;
  }
  return true;
}

static bool is_array(const redisReply *x) { return x && x->type == REDIS_REPLY_ARRAY; }

static void fill_rows(api *a, view_rows *rows, const redisReply *arr) {
  for (size_t i = 0; is_array(arr) && i < arr->elements; i++)
    if (arr->element[i]->type == REDIS_REPLY_STRING)
      view_rows_add_json(rows, arr->element[i]->str, arr->element[i]->len);
  if (rows->rejected)
    qs_metric_add(a->m_bad_rows, (double)rows->rejected);
}

static int64_t reply_int(const redisReply *x) {
  if (!x)
    return 0;
  if (x->type == REDIS_REPLY_INTEGER)
    return x->integer;
  if (x->type == REDIS_REPLY_STRING)
    return strtoll(x->str, NULL, 10);
  return 0;
}

/* ---- route replies -------------------------------------------------------------------------- */

static void too_many_rows(api_req *r) {
  char d[200];
  snprintf(d, sizeof d, "more than %lld rows in range: narrow `since` (MAX_ROWS)",
           (long long)r->a->opt.max_rows);
  api_query q;
  memset(&q, 0, sizeof q);
  snprintf(q.err, sizeof q.err, "%s", d);
  snprintf(q.bad_param, sizeof q.bad_param, "since");
  bad_param(r->a, r->req, r->rid, r->t0, &q);
}

static void on_merged(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  if (!is_array(rep) || rep->elements != 4) {
    problem(a, r->req, r->rid, r->t0, 500, "unexpected reply from the data store");
    return;
  }
  if (reply_int(rep->element[1]) == 0) {
    too_many_rows(r);
    return;
  }
  int64_t cutoff = reply_int(rep->element[0]);
  view_rows batch = {0}, speed = {0};
  fill_rows(a, &batch, rep->element[2]);
  fill_rows(a, &speed, rep->element[3]);
  qs_buf body = QS_BUF_INIT;
  int rc;
  if (r->rid == R_SUMMARY)
    rc = view_summary_json(&body, cutoff, r->since, &batch, &speed);
  else
    rc =
        view_timeseries_json(&body, cutoff, r->since, r->now, r->bin_ms, r->region, &batch, &speed);
  view_rows_free(&batch);
  view_rows_free(&speed);
  if (rc != 0) {
    qs_log_error(a->log, "merge failed", QS_LSTR("route", routes[r->rid].name),
                 QS_LSTR("error", qs_strerror(rc)));
    problem(a, r->req, r->rid, r->t0, 500, "stored rows are inconsistent with the batch cutoff");
  } else {
    respond_and_cache(a, r, "application/json", &body);
  }
  qs_buf_free(&body);
}

static void on_anomalies(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  if (!is_array(rep) || rep->elements != 3) {
    problem(a, r->req, r->rid, r->t0, 500, "unexpected reply from the data store");
    return;
  }
  if (reply_int(rep->element[0]) == 0) {
    too_many_rows(r);
    return;
  }
  view_rows speed = {0};
  fill_rows(a, &speed, rep->element[1]);
  if (r->region[0]) { /* keep only the asked region */
    size_t k = 0;
    for (size_t i = 0; i < speed.n; i++)
      if (strcmp(speed.v[i].region, r->region) == 0)
        speed.v[k++] = speed.v[i];
    speed.n = k;
  }
  const redisReply *h = rep->element[2];
  size_t nbl = 0;
  view_baseline *bl = qs_xcalloc(is_array(h) ? h->elements / 2 + 1 : 1, sizeof *bl);
  for (size_t i = 0; is_array(h) && i + 1 < h->elements; i += 2) {
    const redisReply *k = h->element[i], *v = h->element[i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
      continue;
    if (r->region[0] && strcmp(k->str, r->region) != 0)
      continue;
    if (view_baseline_parse(&bl[nbl], k->str, v->str, v->len) == 0)
      nbl++;
    else
      qs_metric_inc(a->m_bad_rows);
  }
  qs_buf body = QS_BUF_INIT;
  view_anomalies_json(&body, r->since, r->k, &speed, bl, nbl);
  respond_and_cache(a, r, "application/json", &body);
  qs_buf_free(&body);
  free(bl);
  view_rows_free(&speed);
}

static void put_number_or_null(qs_buf *b, const cJSON *v) {
  if (cJSON_IsNumber(v)) {
    char tmp[40];
    qs_buf_append(b, tmp, qs_double_shortest(tmp, sizeof tmp, v->valuedouble));
  } else {
    qs_buf_puts(b, "null");
  }
}

static void on_events(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  qs_buf body = QS_BUF_INIT;
  size_t n = 0;
  if (r->geojson)
    qs_buf_puts(&body, "{\"type\":\"FeatureCollection\",\"features\":[");
  else
    qs_buf_puts(&body, "{\"events\":[");
  for (size_t i = 0; is_array(rep) && i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING)
      continue;
    if (!r->geojson) {
      n += append_json_value(a, &body, e->str, e->len, n > 0);
      continue;
    }
    cJSON *o = cJSON_ParseWithLength(e->str, e->len);
    const cJSON *lon = cJSON_GetObjectItemCaseSensitive(o, "longitude");
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(o, "latitude");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "event_id");
    if (!cJSON_IsObject(o) || !cJSON_IsNumber(lon) || !cJSON_IsNumber(lat) || !cJSON_IsString(id)) {
      qs_metric_inc(a->m_bad_rows);
      cJSON_Delete(o);
      continue;
    }
    qs_buf_puts(&body,
                n++ ? ",{\"type\":\"Feature\",\"id\":\"" : "{\"type\":\"Feature\",\"id\":\"");
    qs_buf_json_str(&body, id->valuestring, strlen(id->valuestring));
    qs_buf_puts(&body, "\",\"geometry\":{\"type\":\"Point\",\"coordinates\":[");
    put_number_or_null(&body, lon);
    qs_buf_puts(&body, ",");
    put_number_or_null(&body, lat);
    const cJSON *depth = cJSON_GetObjectItemCaseSensitive(o, "depth_km");
    if (cJSON_IsNumber(depth)) {
      qs_buf_puts(&body, ",");
      put_number_or_null(&body, depth);
    }
    qs_buf_puts(&body, "]},\"properties\":");
    qs_buf_append(&body, e->str, e->len);
    qs_buf_puts(&body, "}");
    cJSON_Delete(o);
  }
  qs_buf_printf(&body, "],\"count\":%zu}", n);
  respond_and_cache(a, r, r->geojson ? "application/geo+json" : "application/json", &body);
  qs_buf_free(&body);
}

static void on_stats(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  if (!is_array(rep) || rep->elements < 5) {
    problem(a, r->req, r->rid, r->t0, 500, "unexpected reply from the data store");
    return;
  }
  qs_buf body = QS_BUF_INIT;
  qs_buf_printf(&body, "{\"window_ms\":%lld,\"since\":", (long long)r->window_ms);
  view_time(&body, r->since);
  qs_buf_printf(&body, ",\"event_count\":%lld,\"significant_count\":%lld,\"tsunami_count\":%lld",
                (long long)reply_int(rep->element[0]), (long long)reply_int(rep->element[1]),
                (long long)reply_int(rep->element[2]));
  const redisReply *mx = rep->element[3];
  cJSON *ev = mx->type == REDIS_REPLY_STRING ? cJSON_ParseWithLength(mx->str, mx->len) : NULL;
  const cJSON *mag = cJSON_GetObjectItemCaseSensitive(ev, "magnitude");
  qs_buf_puts(&body, ",\"max_magnitude\":");
  put_number_or_null(&body, mag);
  qs_buf_puts(&body, ",\"max_event\":");
  if (cJSON_IsObject(ev))
    qs_buf_append(&body, mx->str, mx->len);
  else
    qs_buf_puts(&body, "null");
  cJSON_Delete(ev);
  qs_buf_printf(&body, ",\"truncated\":%s}", reply_int(rep->element[4]) ? "true" : "false");
  respond_and_cache(a, r, "application/json", &body);
  qs_buf_free(&body);
}

static void on_list(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  const char *field = r->rid == R_ALERTS ? "alerts" : "windows";
  qs_buf body = QS_BUF_INIT;
  qs_buf_printf(&body, "{\"%s\":[", field);
  size_t n = 0;
  for (size_t i = 0; is_array(rep) && i < rep->elements; i++)
    if (rep->element[i]->type == REDIS_REPLY_STRING)
      n += append_json_value(a, &body, rep->element[i]->str, rep->element[i]->len, n > 0);
  qs_buf_printf(&body, "],\"count\":%zu}", n);
  respond_and_cache(a, r, "application/json", &body);
  qs_buf_free(&body);
}

static void on_runs(qs_redis *rd, redisReply *rep, int status, void *ud) {
  (void)rd;
  api_req *r = ud;
  api *a = r->a;
  if (!reply_ok(r, rep, status))
    return;
  if (!is_array(rep) || rep->elements != 2) {
    problem(a, r->req, r->rid, r->t0, 500, "unexpected reply from the data store");
    return;
  }
  qs_buf body = QS_BUF_INIT;
  qs_buf_puts(&body, "{\"batch\":{");
  const redisReply *h = rep->element[0];
  for (size_t i = 0; is_array(h) && i + 1 < h->elements; i += 2) {
    const redisReply *k = h->element[i], *v = h->element[i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
      continue;
    qs_buf_puts(&body, i ? ",\"" : "\"");
    qs_buf_json_str(&body, k->str, k->len);
    qs_buf_puts(&body, "\":");
    char *end;
    long long x = strtoll(v->str, &end, 10);
    if (v->len > 0 && *end == '\0' && strcmp(k->str, "run_id") != 0) {
      qs_buf_printf(&body, "%lld", x);
    } else {
      qs_buf_puts(&body, "\"");
      qs_buf_json_str(&body, v->str, v->len);
      qs_buf_puts(&body, "\"");
    }
  }
  qs_buf_puts(&body, "},\"runs\":[");
  const redisReply *l = rep->element[1];
  size_t n = 0;
  for (size_t i = 0; is_array(l) && i < l->elements; i++)
    if (l->element[i]->type == REDIS_REPLY_STRING)
      n += append_json_value(a, &body, l->element[i]->str, l->element[i]->len, n > 0);
  qs_buf_printf(&body, "],\"count\":%zu}", n);
  respond_and_cache(a, r, "application/json", &body);
  qs_buf_free(&body);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static void fmt_ms(char *buf, size_t cap, int64_t ms) {
  if (ms == INT64_MIN)
    snprintf(buf, cap, "-inf");
  else
    snprintf(buf, cap, "%lld", (long long)ms);
}

static void fmt_dbl(char *buf, size_t cap, double v) { snprintf(buf, cap, "%.17g", v); }

static void issue(api_req *r, int rc) {
  if (rc == 0)
    return;
  char d[160];
  snprintf(d, sizeof d, "data store request refused: %s", qs_strerror(rc));
  problem(r->a, r->req, r->rid, r->t0, 503, d);
}

static int64_t floor_to(int64_t ms, int64_t len) {
  return ms == INT64_MIN ? INT64_MIN : qs_window_start(ms, len);
}

/* Validates the route's parameters and starts its Redis call (or answers). */
static void dispatch(api *a, api_req *r, api_query *q) {
  char since[32], lim[32], scan[32];
  int64_t limit = 0;
  int rc = 0;
  snprintf(scan, sizeof scan, "%lld", (long long)a->opt.scan_max);
  switch (r->rid) {
  case R_SUMMARY:
  case R_TIMESERIES: {
    if (r->rid == R_SUMMARY) {
      rc = api_param_since(q, "since", r->now, -1, SINCE_MAX_MS * 2, &r->since);
    } else {
      rc = api_param_since(q, "since", r->now, 7 * QS_MS_PER_DAY, SINCE_MAX_MS, &r->since);
      if (!rc)
        rc = api_param_duration(q, "bin", QS_MS_PER_HOUR, QS_MS_PER_HOUR, 31 * QS_MS_PER_DAY,
                                &r->bin_ms);
      if (!rc && r->bin_ms % QS_MS_PER_HOUR != 0) {
        snprintf(q->bad_param, sizeof q->bad_param, "bin");
        snprintf(q->err, sizeof q->err,
                 "bin=\"%.40s\": must be a whole number of hours (batch rows are hourly)",
                 api_query_get(q, "bin"));
        rc = QS_ERR_INVALID;
      }
      if (!rc)
        rc = api_param_region(q, "region", r->region);
    }
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    r->since = floor_to(r->since, r->rid == R_TIMESERIES ? r->bin_ms : QS_MS_PER_HOUR);
    fmt_ms(since, sizeof since, r->since);
    snprintf(lim, sizeof lim, "%lld", (long long)a->opt.max_rows);
    rc = qs_redis_command(a->redis, on_merged, r, "EVAL %s 5 %s %s %s %s %s %s %s", script_merged,
                          "qs:batch:meta", "qs:batch:hourly:idx", "qs:batch:hourly",
                          "qs:rt:win:idx", "qs:rt:win", since, lim);
    return issue(r, rc);
  }
  case R_ANOMALIES:
    rc = api_param_since(q, "since", r->now, QS_MS_PER_DAY, 31 * QS_MS_PER_DAY, &r->since);
    if (!rc)
      rc = api_param_double(q, "k", a->opt.anomaly_k, 0, 10, &r->k);
    if (!rc)
      rc = api_param_region(q, "region", r->region);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    r->since = floor_to(r->since, QS_AGG_WINDOW_5MIN_MS);
    fmt_ms(since, sizeof since, r->since);
    snprintf(lim, sizeof lim, "%lld", (long long)a->opt.max_rows);
    rc = qs_redis_command(a->redis, on_anomalies, r, "EVAL %s 3 %s %s %s %s %s", script_anomalies,
                          "qs:rt:win:idx", "qs:rt:win", "qs:batch:baseline", since, lim);
    return issue(r, rc);
  case R_EVENTS: {
    double min_mag = NAN;
    api_bbox bb;
    const char *format = NULL;
    rc = api_param_int(q, "limit", 20, 1, EVENTS_LIMIT_MAX, &limit);
    if (!rc)
      rc = api_param_since(q, "since", r->now, -1, 90 * QS_MS_PER_DAY + QS_MS_PER_DAY, &r->since);
    if (!rc && api_query_get(q, "min_mag"))
      rc = api_param_double(q, "min_mag", 0, QS_AGG_MAG_MIN, QS_AGG_MAG_MAX, &min_mag);
    if (!rc)
      rc = api_param_region(q, "region", r->region);
    if (!rc)
      rc = api_param_bbox(q, "bbox", &bb);
    if (!rc)
      rc = api_param_enum(q, "format", "json|geojson", NULL, &format);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    if (format)
      r->geojson = strncmp(format, "geojson", 7) == 0;
    else {
      ssize_t i = h2o_find_header(&r->req->headers, H2O_TOKEN_ACCEPT, -1);
      r->geojson = i >= 0 && h2o_strstr(r->req->headers.entries[i].value.base,
                                        r->req->headers.entries[i].value.len,
                                        H2O_STRLIT("application/geo+json")) != SIZE_MAX;
    }
    size_t kl = strlen(r->cache_key);
    if (kl + 2 < sizeof r->cache_key)
      snprintf(r->cache_key + kl, sizeof r->cache_key - kl, "#%c", r->geojson ? 'g' : 'j');
    if (cache_serve(a, r))
      return;
    char mm[40] = "", x0[40] = "", y0[40] = "", x1[40] = "", y1[40] = "";
    if (!isnan(min_mag))
      fmt_dbl(mm, sizeof mm, min_mag);
    if (bb.set) {
      fmt_dbl(x0, sizeof x0, bb.min_lon);
      fmt_dbl(y0, sizeof y0, bb.min_lat);
      fmt_dbl(x1, sizeof x1, bb.max_lon);
      fmt_dbl(y1, sizeof y1, bb.max_lat);
    }
    fmt_ms(since, sizeof since, r->since);
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    rc = qs_redis_command(a->redis, on_events, r, "EVAL %s 2 %s %s %s %s %s %s %s %s %s %s %s",
                          script_events, "qs:ev:idx", "qs:ev", since, lim, mm, r->region, x0, y0,
                          x1, y1, scan);
    return issue(r, rc);
  }
  case R_STATS:
    rc = api_param_duration(q, "window", QS_MS_PER_DAY, QS_MS_PER_MIN, 90 * QS_MS_PER_DAY,
                            &r->window_ms);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    r->since = r->now - r->window_ms;
    fmt_ms(since, sizeof since, r->since);
    rc = qs_redis_command(a->redis, on_stats, r, "EVAL %s 2 %s %s %s %s %s", script_stats,
                          "qs:ev:idx", "qs:ev", since, scan, "5");
    return issue(r, rc);
  case R_ALERTS: {
    const char *type = NULL;
    rc = api_param_since(q, "since", r->now, QS_MS_PER_DAY, SINCE_MAX_MS, &r->since);
    if (!rc)
      rc = api_param_int(q, "limit", 100, 1, LIST_LIMIT_MAX, &limit);
    if (!rc)
      rc = api_param_enum(q, "type", "MAGNITUDE_SPIKE|TSUNAMI|VOLUME|ANOMALY", NULL, &type);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    char prefix[40] = "";
    if (type)
      snprintf(prefix, sizeof prefix, "%.*s|", (int)strcspn(type, "|"), type);
    fmt_ms(since, sizeof since, r->since);
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    rc = qs_redis_command(a->redis, on_list, r, "EVAL %s 2 %s %s %s %s %s %s %s %s", script_range,
                          "qs:alerts:idx", "qs:alerts", since, "+inf", "1", lim, prefix, scan);
    return issue(r, rc);
  }
  case R_WIN_RT:
  case R_WIN_HOURLY:
  case R_WIN_DAILY: {
    int64_t def = r->rid == R_WIN_RT ? QS_MS_PER_DAY : 7 * QS_MS_PER_DAY;
    int64_t max = r->rid == R_WIN_RT ? 31 * QS_MS_PER_DAY : SINCE_MAX_MS;
    rc = api_param_since(q, "since", r->now, def, max, &r->since);
    if (!rc)
      rc = api_param_region(q, "region", r->region);
    if (!rc)
      rc = api_param_int(q, "limit", 500, 1, 10000, &limit);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    char prefix[API_REGION_MAX + 2] = "";
    if (r->region[0])
      snprintf(prefix, sizeof prefix, "%s|", r->region);
    const char *idx = r->rid == R_WIN_RT       ? "qs:rt:win:idx"
                      : r->rid == R_WIN_HOURLY ? "qs:batch:hourly:idx"
                                               : "qs:batch:daily:idx";
    const char *hash = r->rid == R_WIN_RT       ? "qs:rt:win"
                       : r->rid == R_WIN_HOURLY ? "qs:batch:hourly"
                                                : "qs:batch:daily";
    int64_t len = r->rid == R_WIN_RT       ? QS_AGG_WINDOW_5MIN_MS
                  : r->rid == R_WIN_HOURLY ? QS_MS_PER_HOUR
                                           : QS_MS_PER_DAY;
    fmt_ms(since, sizeof since, floor_to(r->since, len));
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    rc = qs_redis_command(a->redis, on_list, r, "EVAL %s 2 %s %s %s %s %s %s %s %s", script_range,
                          idx, hash, since, "+inf", "1", lim, prefix, scan);
    return issue(r, rc);
  }
  case R_RUNS:
    rc = api_param_int(q, "limit", 20, 1, 1000, &limit);
    if (rc)
      return bad_param(a, r->req, r->rid, r->t0, q);
    snprintf(lim, sizeof lim, "%lld", (long long)limit);
    rc = qs_redis_command(a->redis, on_runs, r, "EVAL %s 2 %s %s %s", script_runs, "qs:batch:runs",
                          "qs:batch:meta", lim);
    return issue(r, rc);
  case R_OPENAPI:
    send_ok(a, r->req, r->rid, r->t0, "application/json", qs_openapi_json,
            (size_t)qs_openapi_json_len, NULL);
    return;
  case R_LIVE:
  case R_COUNT:
    break;
  }
  problem(a, r->req, r->rid, r->t0, 404, "no such path");
}

static int on_api(void *data, h2o_req_t *req) {
  api *a = data;
  uint64_t t0 = uv_hrtime();
  h2o_iovec_t path = qs_httpd_path(req);
  static const char prefix[] = "/api/v1";
  route_id rid = R_COUNT;
  if (path.len >= sizeof prefix - 1 && memcmp(path.base, prefix, sizeof prefix - 1) == 0) {
    h2o_iovec_t sub = h2o_iovec_init(path.base + sizeof prefix - 1, path.len - sizeof prefix + 1);
    for (int i = 0; i < R_COUNT; i++)
      if (h2o_memis(sub.base, sub.len, routes[i].path, strlen(routes[i].path)))
        rid = (route_id)i;
  }
  add_cors(a, req);
  if (qs_httpd_method_is(req, "OPTIONS")) {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                   H2O_STRLIT("GET, HEAD, OPTIONS"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"),
                          0, NULL, H2O_STRLIT("GET, HEAD, OPTIONS"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"),
                          0, NULL, H2O_STRLIT("Authorization, If-None-Match, Accept"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-max-age"), 0,
                          NULL, H2O_STRLIT("600"));
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, "", 0);
    count(a, rid, 204, t0);
    return 0;
  }
  if (!qs_httpd_method_is(req, "GET") && !qs_httpd_method_is(req, "HEAD")) {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL,
                   H2O_STRLIT("GET, HEAD, OPTIONS"));
    problem(a, req, rid, t0, 405, "use GET, HEAD or OPTIONS");
    return 0;
  }
  uint64_t now_ms = (uint64_t)qs_time_now_ms();
  double retry = 1;
  if (rate_limited(a, req, now_ms, &retry)) {
    qs_metric_inc(a->m_limited);
    char ra[24];
    int n = snprintf(ra, sizeof ra, "%.0f", retry < 1 ? 1 : retry);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                   h2o_strdup(&req->pool, ra, (size_t)n).base, (size_t)n);
    problem(a, req, rid, t0, 429, "rate limit exceeded for this client (RATE_LIMIT_RPS)");
    return 0;
  }
  if (rid == R_COUNT) {
    problem(a, req, rid, t0, 404, "no such path (the API is documented at /api/v1/openapi.json)");
    return 0;
  }
  api_query *q = h2o_mem_alloc_pool(&req->pool, sizeof *q);
  const char *qs = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "";
  size_t qlen = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
  int rc = api_query_parse(q, qs, qlen);
  if (rc == 0)
    rc = api_query_only(q, routes[rid].params);
  if (rid != R_OPENAPI && !bearer_ok(a, req, rc == 0 ? q : NULL)) {
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                   H2O_STRLIT("Bearer realm=\"quakestream\""));
    problem(a, req, rid, t0, 401, "a valid API key is required: Authorization: Bearer <key>");
    return 0;
  }
  if (rc != 0) {
    bad_param(a, req, rid, t0, q);
    return 0;
  }
  if (rid == R_LIVE) {
    int up = live_upgrade(a->lv, req);
    if (up < 0)
      problem(a, req, rid, t0, 400,
              "a WebSocket upgrade (GET with Upgrade: websocket) is required");
    else
      count(a, rid, up == 0 ? 101 : 503, t0);
    return 0;
  }
  api_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
  memset(r, 0, sizeof *r);
  r->a = a;
  r->req = req;
  r->rid = rid;
  r->t0 = t0;
  r->now = (int64_t)now_ms;
  if (rid != R_OPENAPI) {
    const char *why = NULL;
    /* connected, not ready: ready waits for a PING answer, and a command sent now is answered */
    if (!a->redis->connected && !qs_redis_ready(a->redis, &why)) {
      char d[320];
      snprintf(d, sizeof d, "redis unavailable: %s", why);
      problem(a, req, rid, t0, 503, d);
      return 0;
    }
    if (path.len + 1 + qlen < sizeof r->cache_key) {
      memcpy(r->cache_key, path.base, path.len);
      r->cache_key[path.len] = '?';
      memcpy(r->cache_key + path.len + 1, qs, qlen);
      r->cache_key[path.len + 1 + qlen] = '\0';
    }
    if (rid != R_EVENTS && cache_serve(a, r)) /* /events adds the format to its key first */
      return 0;
  }
  dispatch(a, r, q);
  return 0;
}

/* ---- life cycle ----------------------------------------------------------------------------- */

api *api_new(uv_loop_t *loop, const api_options *o, qs_redis *redis, live *lv, qs_log *log,
             qs_metrics *metrics) {
  api *a = qs_xcalloc(1, sizeof *a);
  a->loop = loop;
  a->opt = *o;
  a->redis = redis;
  a->lv = lv;
  a->log = log;
  a->metrics = metrics;
  a->keys = split_list(o->api_keys, &a->nkeys);
  a->origins = split_list(o->cors_origins, &a->norigins);
  for (size_t i = 0; i < a->norigins; i++)
    a->any_origin = a->any_origin || strcmp(a->origins[i], "*") == 0;
  a->rl = qs_xcalloc(RL_SLOTS, sizeof *a->rl);
  a->cache = qs_xcalloc(CACHE_SLOTS, sizeof *a->cache);
  static const char *const rl_labels[] = {"route", "code", NULL};
  static const char *const d_labels[] = {"route", NULL};
  a->f_requests = qs_metrics_counter(metrics, "quakestream_api_requests_total",
                                     "API requests by route and status", rl_labels);
  double bounds[14];
  qs_metrics_exp_buckets(bounds, 0.0001, 2.5, 14);
  a->f_duration = qs_metrics_histogram(metrics, "quakestream_api_request_duration_seconds",
                                       "API request latency by route (validation to response)",
                                       d_labels, bounds, 14);
  for (int i = 0; i <= R_COUNT; i++) {
    const char *v[] = {i < R_COUNT ? routes[i].name : "other"};
    a->m_duration[i] = qs_metric_get(a->f_duration, v);
  }
  a->m_cache_hits =
      qs_metric_series(qs_metrics_counter(metrics, "quakestream_api_cache_hits_total",
                                          "responses served from the response cache", NULL));
  a->m_cache_misses =
      qs_metric_series(qs_metrics_counter(metrics, "quakestream_api_cache_misses_total",
                                          "cacheable requests that had to read Redis", NULL));
  a->m_bad_rows = qs_metric_series(
      qs_metrics_counter(metrics, "quakestream_api_bad_rows_total",
                         "stored rows or values that did not parse and were skipped", NULL));
  a->m_limited = qs_metric_series(qs_metrics_counter(metrics, "quakestream_api_rate_limited_total",
                                                     "requests refused by the rate limit", NULL));
  a->m_redis_errors = qs_metric_series(qs_metrics_counter(
      metrics, "quakestream_api_redis_errors_total", "error replies from Redis", NULL));

  qs_httpd_options ho;
  qs_httpd_options_init(&ho);
  ho.host = o->host;
  ho.port = o->port;
  ho.keepalive = true;
  ho.req_timeout_ms = 30000;
  ho.max_connections = o->max_connections;
  ho.max_request_body = 16384; /* GET only: nothing large is ever needed */
  ho.listen_backlog = 4096;
  qs_httpd_init(&a->http, loop, &ho);
  a->http.data = a;
  qs_httpd_route(&a->http, "/api", on_api, a); /* all of /api: unknown versions get a 404 problem */
  if (o->vendor_dir && o->vendor_dir[0])
    qs_httpd_route_files(&a->http, "/vendor", o->vendor_dir);
  if (o->static_dir && o->static_dir[0])
    qs_httpd_route_files(&a->http, "/", o->static_dir);
  return a;
}

int api_start(api *a, char *err, size_t errlen) { return qs_httpd_start(&a->http, err, errlen); }

int api_port(const api *a) { return qs_httpd_port(&a->http); }

qs_httpd *api_httpd(api *a) { return &a->http; }

static void http_closed(qs_httpd *h) {
  api *a = h->data;
  if (a->close_cb)
    a->close_cb(a->close_arg);
}

void api_close(api *a, void (*cb)(void *), void *arg) {
  a->close_cb = cb;
  a->close_arg = arg;
  qs_httpd_close(&a->http, http_closed);
}

void api_free(api *a) {
  if (!a)
    return;
  qs_httpd_dispose(&a->http);
  for (size_t i = 0; i < a->nkeys; i++)
    free(a->keys[i]);
  free(a->keys);
  for (size_t i = 0; i < a->norigins; i++)
    free(a->origins[i]);
  free(a->origins);
  for (size_t i = 0; i < CACHE_SLOTS; i++)
    qs_buf_free(&a->cache[i].body);
  free(a->cache);
  free(a->rl);
  free(a);
}
