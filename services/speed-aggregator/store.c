/* store.c — the aggregator's Redis side (see store.h).
 *
 * The commit is one EVAL of sa_commit_lua. Its arguments are a list of ops produced by
 * sa_engine_take — "<n> <redis command of n words>", "0 @EV k (id updated time body)*k" (raw
 * events written, indexed and published as `event` only when newer than the stored version: the
 * `updated` of the body in qs:ev, or of the removal in qs:ev:ver), "0 @EVDEL k (id updated reason
 * counted)*k" (raw events removed when not older than the stored version; the removal's version
 * stays in qs:ev:ver as a tombstone; `event_removed` published when one was stored or counted), "0
 * @ALERT key score json event_id updated" (stored, indexed and published only when new or when the
 * stored one was retracted), "0 @RETRACT key event_id updated" (marks a stored alert retracted,
 * published when it changes) and "0 @FINAL open-set threshold" (marks the rows of windows whose end
 * <= threshold final) — followed by the lease fence: (lease key, owner) pairs that must all still
 * hold. A script runs atomically, so Redis holds either all of a batch's state changes with its
 * checkpoints or none of them: a crash at any point resumes from a checkpoint that matches the
 * state exactly.
 *
 * Raw events and event alerts are global, while every other key a commit writes belongs to the
 * regions of its partitions: the version rules are what let replicas that own the two regions of
 * a moved event commit in any order (docs/changes.md). An event alert op (event_id set) is skipped
 * when a newer version of the event was stored before this commit, or when an op of the same
 * alert with a newer version came earlier in it (decision order). Within one region versions only
 * grow, so neither ever skips there, and the outcome does not depend on where batches end.
 */
#include "store.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "qs/buf.h"
#include "qs/error.h"
#include "qs/timeutil.h"

const char sa_commit_lua[] =
    "local nops = tonumber(ARGV[1])\n"
    "local last = nops + 1\n"
    "local i = last + 1\n"
    "while i <= #ARGV do\n"
    "  if redis.call('GET', ARGV[i]) ~= ARGV[i + 1] then return {0, ARGV[i]} end\n"
    "  i = i + 2\n"
    "end\n"
    "local alerts = {}\n"
    "local pre, opmax = {}, {}\n"
    "local function stored(body, tomb)\n"
    "  local v = tomb and tonumber(tomb)\n"
    "  if body then\n"
    "    local s = tonumber(string.match(body, '\"updated\":(%d+)'))\n"
    "    if s and (not v or s > v) then v = s end\n"
    "  end\n"
    "  return v or false\n"
    "end\n"
    "local function newer(key, id, u)\n"
    "  if id == '' then return true end\n"
    "  u = tonumber(u)\n"
    "  if opmax[key] and opmax[key] > u then return false end\n"
    "  if pre[id] == nil then\n"
    "    pre[id] = stored(redis.call('HGET', 'qs:ev', id), redis.call('HGET', 'qs:ev:ver', id))\n"
    "  end\n"
    "  if pre[id] and pre[id] > u then return false end\n"
    "  opmax[key] = u\n"
    "  return true\n"
    "end\n"
    "i = 2\n"
    "while i <= last do\n"
    "  local c = tonumber(ARGV[i])\n"
    "  if c > 0 then\n"
    "    redis.call(unpack(ARGV, i + 1, i + c))\n"
    "    i = i + c + 1\n"
    "  elseif ARGV[i + 1] == '@EV' or ARGV[i + 1] == '@EVDEL' then\n"
    "    local del, n, b = ARGV[i + 1] == '@EVDEL', tonumber(ARGV[i + 2]), i + 3\n"
    "    local ids = {}\n"
    "    for k = 1, n do ids[k] = ARGV[b + 4 * (k - 1)] end\n"
    "    local bodies = redis.call('HMGET', 'qs:ev', unpack(ids))\n"
    "    local tombs = redis.call('HMGET', 'qs:ev:ver', unpack(ids))\n"
    "    local seen, hs, zs, vs = {}, {}, {}, {}\n"
    "    for k = 1, n do\n"
    "      local j = b + 4 * (k - 1)\n"
    "      local id, u = ARGV[j], tonumber(ARGV[j + 1])\n"
    "      local v = seen[id]\n"
    "      if not v then\n"
    "        v = stored(bodies[k], tombs[k])\n"
    "        if pre[id] == nil then pre[id] = v end\n"
    "      end\n"
    "      if not v or v < u or (del and v == u) then\n"
    "        seen[id] = u\n"
    "        if del then\n"
    "          vs[#vs + 1] = id\n"
    "          vs[#vs + 1] = ARGV[j + 1]\n"
    "          local gone = redis.call('HDEL', 'qs:ev', id)\n"
    "          redis.call('ZREM', 'qs:ev:idx', id)\n"
    "          if gone == 1 or ARGV[j + 3] == '1' then\n"
    "            redis.call('PUBLISH', 'qs:live:events', "
    "'{\"type\":\"event_removed\",\"data\":{\"event_id\":\"' .. id .. '\",\"reason\":\"' .. ARGV[j "
    "+ 2] .. '\"}}')\n"
    "          end\n"
    "        else\n"
    "          hs[#hs + 1] = id\n"
    "          hs[#hs + 1] = ARGV[j + 3]\n"
    "          zs[#zs + 1] = ARGV[j + 2]\n"
    "          zs[#zs + 1] = id\n"
    "          redis.call('PUBLISH', 'qs:live:events', '{\"type\":\"event\",\"data\":' .. ARGV[j + "
    "3] .. '}')\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if #hs > 0 then\n"
    "      redis.call('HSET', 'qs:ev', unpack(hs))\n"
    "      redis.call('ZADD', 'qs:ev:idx', unpack(zs))\n"
    "    end\n"
    "    if #vs > 0 then redis.call('HSET', 'qs:ev:ver', unpack(vs)) end\n"
    "    i = b + 4 * n\n"
    "  elseif ARGV[i + 1] == '@ALERT' then\n"
    "    local key, score, json = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]\n"
    "    local cur = redis.call('HGET', 'qs:alerts', key)\n"
    "    if newer(key, ARGV[i + 5], ARGV[i + 6]) and (not cur or string.find(cur, "
    "'\"retracted\":true', 1, true)) then\n"
    "      redis.call('HSET', 'qs:alerts', key, json)\n"
    "      redis.call('ZADD', 'qs:alerts:idx', score, key)\n"
    "      redis.call('PUBLISH', 'qs:live:alerts', '{\"type\":\"alert\",\"data\":' .. json .. "
    "'}')\n"
    "      alerts[#alerts + 1] = json\n"
    "    end\n"
    "    i = i + 7\n"
    "  elseif ARGV[i + 1] == '@RETRACT' then\n"
    "    local key = ARGV[i + 2]\n"
    "    local cur = redis.call('HGET', 'qs:alerts', key)\n"
    "    if newer(key, ARGV[i + 3], ARGV[i + 4]) and cur then\n"
    "      local n, hits = string.gsub(cur, '\"retracted\":false', '\"retracted\":true', 1)\n"
    "      if hits > 0 then\n"
    "        redis.call('HSET', 'qs:alerts', key, n)\n"
    "        redis.call('PUBLISH', 'qs:live:alerts', '{\"type\":\"alert\",\"data\":' .. n .. '}')\n"
    "      end\n"
    "    end\n"
    "    i = i + 5\n"
    "  elseif ARGV[i + 1] == '@FINAL' then\n"
    "    local open = ARGV[i + 2]\n"
    "    local ks = redis.call('ZRANGEBYSCORE', open, '-inf', ARGV[i + 3])\n"
    "    for _, wk in ipairs(ks) do\n"
    "      local row = redis.call('HGET', 'qs:rt:win', wk)\n"
    "      if row then\n"
    "        local nrow, hits = string.gsub(row, '\"final\":false', '\"final\":true', 1)\n"
    "        if hits > 0 then\n"
    "          redis.call('HSET', 'qs:rt:win', wk, nrow)\n"
    "          redis.call('PUBLISH', 'qs:live:aggregates', '{\"type\":\"window\",\"data\":' .. "
    "nrow .. '}')\n"
    "        end\n"
    "      end\n"
    "      redis.call('ZREM', open, wk)\n"
    "    end\n"
    "    i = i + 4\n"
    "  else\n"
    "    return redis.error_reply('bad op at ' .. i)\n"
    "  end\n"
    "end\n"
    "return {1, alerts}\n";

/* The event records of ARGV's ids as one string, one line per id (empty: never seen; a value
 * with a newline, which no record has, becomes "!", which does not decode: treated as unseen,
 * as any undecodable record). One reply instead of an array of thousands of elements, each of
 * which hiredis allocates and frees. */
static const char fetch_evstate_lua[] =
    "local out = {}\n"
    "for j = 1, #ARGV, 1000 do\n"
    "  local v = redis.call('HMGET', 'qs:rt:evstate', unpack(ARGV, j, math.min(j + 999, #ARGV)))\n"
    "  for i = 1, #v do\n"
    "    local x = v[i] or ''\n"
    "    if string.find(x, '\\n', 1, true) then x = '!' end\n"
    "    out[#out + 1] = x\n"
    "  end\n"
    "end\n"
    "return table.concat(out, '\\n')\n";

static const char fetch_windows_lua[] =
    "local out = {}\n"
    "for i, k in ipairs(ARGV) do\n"
    "  out[i] = {redis.call('HGET', 'qs:rt:win', k) or '', redis.call('HGETALL', 'qs:rt:mem:' .. "
    "k)}\n"
    "end\n"
    "return out\n";

static const char rolling_lua[] =
    "local e = tonumber(ARGV[1])\n"
    "if ARGV[2] == 'event' then\n"
    "  local top = redis.call('ZREVRANGE', 'qs:ev:idx', 0, 0, 'WITHSCORES')\n"
    "  if top[2] then e = tonumber(top[2]) else return {'', {}} end\n"
    "end\n"
    "local ids = redis.call('ZRANGEBYSCORE', 'qs:rt:evstate:idx', '(' .. string.format('%d', e - "
    "3600000),"
    " string.format('%d', e), 'LIMIT', 0, tonumber(ARGV[3]))\n"
    "local recs = {}\n"
    "for j = 1, #ids, 1000 do\n"
    "  local part = redis.call('HMGET', 'qs:rt:evstate', unpack(ids, j, math.min(j + 999, #ids)))\n"
    "  for _, r in ipairs(part) do recs[#recs + 1] = r end\n"
    "end\n"
    "return {string.format('%d', e), recs}\n";

static const char trim_lua[] =
    "local now, lim = tonumber(ARGV[1]), tonumber(ARGV[4])\n"
    "local wcut = string.format('(%d', now - tonumber(ARGV[2]))\n"
    "local ecut = string.format('(%d', now - tonumber(ARGV[3]))\n"
    "local ks = redis.call('ZRANGEBYSCORE', 'qs:rt:win:idx', '-inf', wcut, 'LIMIT', 0, lim)\n"
    "for _, k in ipairs(ks) do\n"
    "  redis.call('HDEL', 'qs:rt:win', k)\n"
    "  redis.call('DEL', 'qs:rt:mem:' .. k)\n"
    "  redis.call('ZREM', 'qs:rt:win:idx', k)\n"
    "end\n"
    "local es = redis.call('ZRANGEBYSCORE', 'qs:ev:idx', '-inf', ecut, 'LIMIT', 0, lim)\n"
    "for _, k in ipairs(es) do\n"
    "  redis.call('HDEL', 'qs:ev', k)\n"
    "  redis.call('HDEL', 'qs:ev:ver', k)\n"
    "  redis.call('ZREM', 'qs:ev:idx', k)\n"
    "end\n"
    "local ss = redis.call('ZRANGEBYSCORE', 'qs:rt:evstate:idx', '-inf', ecut, 'LIMIT', 0, lim)\n"
    "for _, k in ipairs(ss) do\n"
    "  redis.call('HDEL', 'qs:rt:evstate', k)\n"
    "  redis.call('ZREM', 'qs:rt:evstate:idx', k)\n"
    "  local id = string.match(k, '^[^|]*|(.*)$')\n"
    "  if id then redis.call('HDEL', 'qs:ev:ver', id) end\n"
    "end\n"
    "local as = redis.call('ZRANGEBYSCORE', 'qs:alerts:idx', '-inf', ecut, 'LIMIT', 0, lim)\n"
    "for _, k in ipairs(as) do\n"
    "  redis.call('HDEL', 'qs:alerts', k)\n"
    "  redis.call('ZREM', 'qs:alerts:idx', k)\n"
    "end\n"
    "return {#ks, #es, #ss, #as}\n";

void sa_store_init(sa_store *s, qs_redis *r, sa_engine *e, const char *owner) {
  memset(s, 0, sizeof *s);
  s->redis = r;
  s->engine = e;
  snprintf(s->owner, sizeof s->owner, "%s", owner);
  snprintf(s->lease_prefix, sizeof s->lease_prefix, "qs:lease:%s:%s:", e->hub, e->group);
  sa_argv_init_resp(&s->cmd);
}

void sa_store_free(sa_store *s) { sa_argv_free(&s->cmd); }

static int send_argv(sa_store *s, sa_argv *a, qs_redis_cb cb, void *ud) {
  if (a->n > INT32_MAX)
    return QS_ERR_TOOBIG;
  size_t len;
  const char *cmd = sa_argv_resp(a, &len);
  return qs_redis_command_formatted(s->redis, cb, ud, cmd, len);
}

static int reply_err(redisReply *r, int status) {
  if (status != 0)
    return status;
  if (!r || r->type == REDIS_REPLY_ERROR)
    return QS_ERR_IO;
  return 0;
}

/* ---- fetch -------------------------------------------------------------------------------- */

typedef struct fetch_ctx {
  sa_store *s;
  int outstanding;
  int status;
  sa_store_done_cb cb;
  void *ud;
  sa_argv ids; /* the event ids asked for (first n_ev), then the window keys */
  size_t n_ev;
  uint64_t *ev_hash; /* hashes of the first n_ev_hash ids (taken over from the needs) */
  size_t n_ev_hash;
} fetch_ctx;

static void fetch_part_done(fetch_ctx *f, int status) {
  if (status != 0 && f->status == 0)
    f->status = status;
  if (--f->outstanding > 0)
    return;
  f->cb(f->ud, f->status);
  sa_argv_free(&f->ids);
  free(f->ev_hash);
  free(f);
}

static void on_evstate(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  fetch_ctx *f = ud;
  int rc = reply_err(reply, status);
  if (rc == 0 && reply->type != REDIS_REPLY_STRING)
    rc = QS_ERR_PARSE;
  if (rc == 0) {
    /* n_ev lines: check the count first, so a bad reply loads nothing. */
    size_t lines = 1;
    for (const char *q = reply->str; (q = memchr(q, '\n', (size_t)(reply->str + reply->len - q)));
         q++)
      lines++;
    if (lines != f->n_ev)
      rc = QS_ERR_PARSE;
  }
  if (rc == 0) {
    const char *q = reply->str, *end = reply->str + reply->len;
    for (size_t i = 0; i < f->n_ev; i++) {
      const char *nl = memchr(q, '\n', (size_t)(end - q));
      size_t l = (size_t)((nl ? nl : end) - q);
      size_t kl;
      const char *id = sa_argv_at(&f->ids, i, &kl);
      if (i < f->n_ev_hash)
        sa_engine_load_evstate_h(f->s->engine, id, kl, f->ev_hash[i], l ? q : NULL, l);
      else
        sa_engine_load_evstate(f->s->engine, id, l ? q : NULL, l);
      q += l + 1;
    }
  }
  fetch_part_done(f, rc);
}

static void on_windows(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  fetch_ctx *f = ud;
  int rc = reply_err(reply, status);
  if (rc == 0 && reply->type != REDIS_REPLY_ARRAY)
    rc = QS_ERR_PARSE;
  for (size_t i = 0; rc == 0 && i < reply->elements; i++) {
    redisReply *w = reply->element[i];
    if (w->type != REDIS_REPLY_ARRAY || w->elements != 2 ||
        w->element[0]->type != REDIS_REPLY_STRING || w->element[1]->type != REDIS_REPLY_ARRAY) {
      rc = QS_ERR_PARSE;
      break;
    }
    redisReply *row = w->element[0], *mem = w->element[1];
    size_t n = mem->elements / 2;
    const char **ids = qs_xcalloc(n + 1, sizeof *ids);
    const char **vals = qs_xcalloc(n + 1, sizeof *vals);
    size_t *lens = qs_xcalloc(n + 1, sizeof *lens);
    for (size_t j = 0; j < n; j++) {
      ids[j] = mem->element[2 * j]->str;
      vals[j] = mem->element[2 * j + 1]->str;
      lens[j] = mem->element[2 * j + 1]->len;
    }
    /* The window keys were sent in the order of f->ids after the event ids. */
    const char *key = sa_argv_at(&f->ids, f->ids.n - reply->elements + i, NULL);
    sa_engine_load_window(f->s->engine, key, row->len ? row->str : NULL, row->len, ids, vals, lens,
                          n);
    free(ids);
    free(vals);
    free(lens);
  }
  fetch_part_done(f, rc);
}

int sa_store_fetch(sa_store *s, sa_needs *n, sa_store_done_cb cb, void *ud) {
  if (n->ev_ids.n == 0 && n->win_keys.n == 0)
    return QS_ERR_INVALID;
  /* Windows are fetched in a second round only: event records decide which windows matter. */
  fetch_ctx *f = qs_xcalloc(1, sizeof *f);
  f->s = s;
  f->cb = cb;
  f->ud = ud;
  /* The ids and their hashes are taken over (the needs are rebuilt for the next fetch). */
  f->ids = n->ev_ids;
  sa_argv_init(&n->ev_ids);
  f->ev_hash = n->ev_hash;
  f->n_ev_hash = n->n_ev_hash < f->ids.n ? n->n_ev_hash : f->ids.n;
  n->ev_hash = NULL;
  n->n_ev_hash = n->cap_ev_hash = 0;
  sa_argv a;
  sa_argv_init_resp(&a); /* the command is built in its wire form: one copy of each id */
  int rc = 0;
  f->outstanding = 1; /* held until both are sent */
  if (f->ids.n) {
    sa_argv_adds(&a, "EVAL");
    sa_argv_adds(&a, fetch_evstate_lua);
    sa_argv_adds(&a, "0");
    for (size_t i = 0; i < f->ids.n; i++) {
      size_t l;
      const char *id = sa_argv_at(&f->ids, i, &l);
      sa_argv_add(&a, id, l);
    }
    f->n_ev = f->ids.n;
    f->outstanding++;
    rc = send_argv(s, &a, on_evstate, f);
    if (rc != 0)
      f->outstanding--;
  }
  if (rc == 0 && n->win_keys.n) {
    /* on_windows reads the keys as the tail of f->ids, so they go after every event id. */
    sa_argv_reset(&a);
    sa_argv_adds(&a, "EVAL");
    sa_argv_adds(&a, fetch_windows_lua);
    sa_argv_adds(&a, "0");
    for (size_t i = 0; i < n->win_keys.n; i++) {
      size_t l;
      const char *k = sa_argv_at(&n->win_keys, i, &l);
      sa_argv_add(&a, k, l);
      sa_argv_add(&f->ids, k, l);
    }
    f->outstanding++;
    rc = send_argv(s, &a, on_windows, f);
    if (rc != 0)
      f->outstanding--;
  }
  sa_argv_free(&a);
  if (rc != 0 && f->outstanding == 1) {
    sa_argv_free(&f->ids);
    free(f->ev_hash);
    free(f);
    return rc;
  }
  if (rc != 0)
    f->status = rc;
  fetch_part_done(f, 0);
  return 0;
}

/* ---- commit ------------------------------------------------------------------------------- */

typedef struct commit_ctx {
  sa_store_commit_cb cb;
  void *ud;
  size_t items;
} commit_ctx;

static void on_commit(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  commit_ctx *c = ud;
  int rc = reply_err(reply, status);
  char reason[300] = "";
  if (rc != 0) {
    snprintf(reason, sizeof reason, "%s",
             reply && reply->type == REDIS_REPLY_ERROR ? reply->str : qs_strerror(rc));
    c->cb(c->ud, rc, reason, NULL, NULL, 0, c->items);
  } else if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
             reply->element[0]->type != REDIS_REPLY_INTEGER) {
    c->cb(c->ud, QS_ERR_PARSE, "unexpected commit reply", NULL, NULL, 0, c->items);
  } else if (reply->element[0]->integer == 0) {
    snprintf(reason, sizeof reason, "lease lost: %s",
             reply->element[1]->type == REDIS_REPLY_STRING ? reply->element[1]->str : "?");
    c->cb(c->ud, QS_ERR_STOLEN, reason, NULL, NULL, 0, c->items);
  } else {
    redisReply *al = reply->element[1];
    size_t n = al->type == REDIS_REPLY_ARRAY ? al->elements : 0;
    const char **js = qs_xcalloc(n + 1, sizeof *js);
    size_t *ls = qs_xcalloc(n + 1, sizeof *ls);
    for (size_t i = 0; i < n; i++) {
      js[i] = al->element[i]->str ? al->element[i]->str : "";
      ls[i] = al->element[i]->str ? al->element[i]->len : 0;
    }
    c->cb(c->ud, 0, "", js, ls, n, c->items);
    free(js);
    free(ls);
  }
  free(c);
}

int sa_store_commit(sa_store *s, int64_t now_ms, sa_store_commit_cb cb, void *ud,
                    size_t *items_out) {
  sa_argv *a = &s->cmd;
  sa_argv_reset(a);
  sa_argv_adds(a, "EVAL");
  sa_argv_adds(a, sa_commit_lua);
  sa_argv_adds(a, "0");
  size_t count_idx = sa_argv_count(a);
  sa_argv_add_count(a);
  int parts[SA_PARTITIONS_MAX];
  size_t nparts = 0;
  size_t items = sa_engine_take(s->engine, a, parts, &nparts, now_ms);
  sa_argv_set_i(a, count_idx, (int64_t)(sa_argv_count(a) - count_idx - 1));
  for (size_t i = 0; i < nparts; i++) {
    sa_argv_addf(a, "%s%d", s->lease_prefix, parts[i]);
    sa_argv_adds(a, s->owner);
  }
  commit_ctx *c = qs_xcalloc(1, sizeof *c);
  c->cb = cb;
  c->ud = ud;
  c->items = items;
  if (items_out)
    *items_out = items;
  int rc = send_argv(s, a, on_commit, c);
  if (rc != 0)
    free(c);
  return rc;
}

/* ---- checkpoints, baselines --------------------------------------------------------------- */

typedef struct simple_ctx {
  sa_store *s;
  int partition;
  sa_store_done_cb cb;
  void *ud;
  bool wall;
  int64_t now;
} simple_ctx;

static const char *hash_field(redisReply *r, const char *name, size_t *len) {
  for (size_t i = 0; i + 1 < r->elements; i += 2)
    if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, name) == 0) {
      if (len)
        *len = r->element[i + 1]->len;
      return r->element[i + 1]->str;
    }
  return NULL;
}

static int64_t field_i64(redisReply *r, const char *name, int64_t def) {
  const char *v = hash_field(r, name, NULL);
  if (!v)
    return def;
  char *end;
  long long x = strtoll(v, &end, 10);
  return (*end || end == v) ? def : (int64_t)x;
}

static void on_ckpt(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  simple_ctx *c = ud;
  int rc = reply_err(reply, status);
  if (rc == 0 && reply->type != REDIS_REPLY_ARRAY)
    rc = QS_ERR_PARSE;
  if (rc == 0) {
    int64_t seq = field_i64(reply, "sequence", -1);
    const char *off = hash_field(reply, "offset", NULL);
    int64_t mt = field_i64(reply, "max_event_time", QS_AGG_TIME_MIN_MS);
    int64_t wm = field_i64(reply, "watermark", QS_AGG_TIME_MIN_MS);
    sa_engine_set_partition(c->s->engine, c->partition, seq, off ? off : "",
                            mt == QS_AGG_TIME_MIN_MS ? INT64_MIN : mt,
                            wm == QS_AGG_TIME_MIN_MS ? INT64_MIN : wm, c->now);
  }
  c->cb(c->ud, rc);
  free(c);
}

int sa_store_load_checkpoint(sa_store *s, int partition, sa_store_done_cb cb, void *ud) {
  char key[600];
  sa_key_ckpt(s->engine, partition, key, sizeof key);
  simple_ctx *c = qs_xcalloc(1, sizeof *c);
  c->s = s;
  c->partition = partition;
  c->cb = cb;
  c->ud = ud;
  c->now = qs_time_now_ms(); /* the engine's wall clock (idle detection) is epoch ms */
  int rc = qs_redis_command(s->redis, on_ckpt, c, "HGETALL %s", key);
  if (rc != 0)
    free(c);
  return rc;
}

static void on_baselines(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  simple_ctx *c = ud;
  int rc = reply_err(reply, status);
  if (rc == 0 && reply->type != REDIS_REPLY_ARRAY)
    rc = QS_ERR_PARSE;
  if (rc == 0) {
    sa_engine_clear_baselines(c->s->engine);
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
      cJSON *j = cJSON_ParseWithLength(reply->element[i + 1]->str, reply->element[i + 1]->len);
      const cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "hours");
      const cJSON *cs = cJSON_GetObjectItemCaseSensitive(j, "count_sum");
      const cJSON *sq = cJSON_GetObjectItemCaseSensitive(j, "count_sq_sum");
      if (cJSON_IsNumber(h) && cJSON_IsNumber(cs) && cJSON_IsNumber(sq) && h->valuedouble >= 0 &&
          cs->valuedouble >= 0 && sq->valuedouble >= 0) {
        qs_agg_baseline b = {(int64_t)h->valuedouble, (int64_t)cs->valuedouble,
                             (int64_t)sq->valuedouble};
        sa_engine_set_baseline(c->s->engine, reply->element[i]->str, &b);
      }
      cJSON_Delete(j);
    }
  }
  c->cb(c->ud, rc);
  free(c);
}

int sa_store_load_baselines(sa_store *s, sa_store_done_cb cb, void *ud) {
  simple_ctx *c = qs_xcalloc(1, sizeof *c);
  c->s = s;
  c->cb = cb;
  c->ud = ud;
  int rc = qs_redis_command(s->redis, on_baselines, c, "HGETALL qs:batch:baseline");
  if (rc != 0)
    free(c);
  return rc;
}

/* ---- rolling window ----------------------------------------------------------------------- */

static void on_rolling_written(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  (void)reply;
  (void)status;
  (void)ud;
}

static void on_rolling(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  simple_ctx *c = ud;
  int rc = reply_err(reply, status);
  if (rc == 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
                  reply->element[0]->type != REDIS_REPLY_STRING))
    rc = QS_ERR_PARSE;
  if (rc == 0 && reply->element[0]->len > 0) {
    int64_t end = strtoll(reply->element[0]->str, NULL, 10);
    qs_agg agg;
    qs_agg_init(&agg);
    redisReply *recs = reply->element[1];
    for (size_t i = 0; i < recs->elements; i++) {
      redisReply *v = recs->element[i];
      if (v->type != REDIS_REPLY_STRING)
        continue;
      /* "<updated>|<change>|<region>|<contribution>": the contribution is after the 3rd bar;
       * only live records (N, R) count. */
      const char *p = v->str;
      int bars = 0;
      while (*p && bars < 3)
        if (*p++ == '|')
          bars++;
      qs_contrib ct;
      const char *bar = strchr(v->str, '|');
      if (bars == 3 && (bar[1] == 'N' || bar[1] == 'R') &&
          sa_contrib_decode(&ct, p, strlen(p)) == 0)
        qs_agg_add(&agg, &ct);
    }
    qs_buf b = QS_BUF_INIT;
    char num[40];
    double d;
    qs_buf_printf(&b,
                  "{\"window_start\":%" PRId64 ",\"window_end\":%" PRId64
                  ",\"event_count\":%" PRId64 ",\"avg_magnitude\":",
                  end - QS_AGG_HOUR_MS, end, agg.event_count);
    if (qs_agg_avg_magnitude(&agg, &d) == 0) {
      qs_double_shortest(num, sizeof num, d);
      qs_buf_puts(&b, num);
    } else {
      qs_buf_puts(&b, "null");
    }
    qs_buf_puts(&b, ",\"max_magnitude\":");
    if (qs_agg_max_magnitude(&agg, &d) == 0) {
      qs_double_shortest(num, sizeof num, d);
      qs_buf_puts(&b, num);
    } else {
      qs_buf_puts(&b, "null");
    }
    bool changed = b.len >= sizeof c->s->last_rolling ||
                   strncmp(c->s->last_rolling, b.p, b.len) != 0 ||
                   c->s->last_rolling[b.len] != '\0';
    if (changed) {
      snprintf(c->s->last_rolling, sizeof c->s->last_rolling, "%.*s", (int)b.len, b.p);
      qs_buf_printf(&b, ",\"updated_at\":%" PRId64 "}", c->now);
      qs_buf m = QS_BUF_INIT;
      qs_buf_puts(&m, "{\"type\":\"rolling\",\"data\":");
      qs_buf_append(&m, b.p, b.len);
      qs_buf_puts(&m, "}");
      const char *argv[] = {"SET", "qs:rt:rolling", b.p};
      size_t lens[] = {3, 13, b.len};
      qs_redis_command_argv(c->s->redis, on_rolling_written, NULL, 3, argv, lens);
      const char *pargv[] = {"PUBLISH", "qs:live:aggregates", m.p};
      size_t plens[] = {7, 18, m.len};
      qs_redis_command_argv(c->s->redis, on_rolling_written, NULL, 3, pargv, plens);
      qs_buf_free(&m);
    }
    qs_buf_free(&b);
  }
  c->cb(c->ud, rc);
  free(c);
}

int sa_store_refresh_rolling(sa_store *s, bool wall_clock, int64_t now_ms, size_t max_events,
                             sa_store_done_cb cb, void *ud) {
  simple_ctx *c = qs_xcalloc(1, sizeof *c);
  c->s = s;
  c->cb = cb;
  c->ud = ud;
  c->now = now_ms;
  char now[32], lim[32];
  snprintf(now, sizeof now, "%" PRId64, now_ms);
  snprintf(lim, sizeof lim, "%zu", max_events);
  const char *argv[] = {"EVAL", rolling_lua, "0", now, wall_clock ? "wall" : "event", lim};
  int rc = qs_redis_command_argv(s->redis, on_rolling, c, 6, argv, NULL);
  if (rc != 0)
    free(c);
  return rc;
}

/* ---- retention ---------------------------------------------------------------------------- */

static void on_trim(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  simple_ctx *c = ud;
  c->cb(c->ud, reply_err(reply, status));
  free(c);
}

int sa_store_trim(sa_store *s, int64_t now_ms, int64_t win_ttl_ms, int64_t ev_ttl_ms, int limit,
                  sa_store_done_cb cb, void *ud) {
  simple_ctx *c = qs_xcalloc(1, sizeof *c);
  c->s = s;
  c->cb = cb;
  c->ud = ud;
  char a[32], b[32], d[32], l[32];
  snprintf(a, sizeof a, "%" PRId64, now_ms);
  snprintf(b, sizeof b, "%" PRId64, win_ttl_ms);
  snprintf(d, sizeof d, "%" PRId64, ev_ttl_ms);
  snprintf(l, sizeof l, "%d", limit);
  const char *argv[] = {"EVAL", trim_lua, "0", a, b, d, l};
  int rc = qs_redis_command_argv(s->redis, on_trim, c, 7, argv, NULL);
  if (rc != 0)
    free(c);
  return rc;
}
