/* lease.c — partition leases in Redis (see lease.h). */
#include "lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/error.h"

static const char round_lua[] =
    "local owner, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local prefix, members = ARGV[5], ARGV[6]\n"
    "redis.call('ZADD', members, now + ttl, owner)\n"
    "redis.call('PEXPIRE', members, ttl * 4)\n"
    "redis.call('ZREMRANGEBYSCORE', members, '-inf', now)\n"
    "local replicas = redis.call('ZCARD', members)\n"
    "local want = math.ceil(n / math.max(replicas, 1))\n"
    "local mine, free = {}, {}\n"
    "for p = 0, n - 1 do\n"
    "  local o = redis.call('GET', prefix .. p)\n"
    "  if o == owner then\n"
    "    redis.call('PEXPIRE', prefix .. p, ttl)\n"
    "    mine[#mine + 1] = p\n"
    "  elseif not o then\n"
    "    free[#free + 1] = p\n"
    "  end\n"
    "end\n"
    "while #mine > want do\n"
    "  redis.call('DEL', prefix .. table.remove(mine))\n"
    "end\n"
    "local i = 1\n"
    "while #mine < want and i <= #free do\n"
    "  redis.call('SET', prefix .. free[i], owner, 'PX', ttl)\n"
    "  mine[#mine + 1] = free[i]\n"
    "  i = i + 1\n"
    "end\n"
    "return mine\n";

static const char release_lua[] = "local n = 0\n"
                                  "redis.call('ZREM', ARGV[2], ARGV[1])\n"
                                  "for i = 3, #ARGV do\n"
                                  "  if redis.call('GET', ARGV[i]) == ARGV[1] then\n"
                                  "    redis.call('DEL', ARGV[i])\n"
                                  "    n = n + 1\n"
                                  "  end\n"
                                  "end\n"
                                  "return n\n";

void sa_lease_init(sa_lease *l, uv_loop_t *loop, qs_redis *r, const char *hub, const char *group,
                   const char *owner, int64_t ttl_ms, sa_lease_change_cb cb, void *ud) {
  memset(l, 0, sizeof *l);
  l->redis = r;
  snprintf(l->owner, sizeof l->owner, "%s", owner);
  snprintf(l->prefix, sizeof l->prefix, "qs:lease:%s:%s:", hub, group);
  snprintf(l->members, sizeof l->members, "qs:lease:%s:%s:replicas", hub, group);
  l->ttl_ms = ttl_ms;
  l->cb = cb;
  l->ud = ud;
  uv_timer_init(loop, &l->timer);
  l->timer.data = l;
}

static void on_round(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  sa_lease *l = ud;
  l->inflight = false;
  if (l->closing)
    return;
  l->rounds++;
  if (status != 0 || !reply || reply->type != REDIS_REPLY_ARRAY) {
    /* Redis unreachable: keep the leases we think we hold; the commit fence protects us. */
    l->failures++;
    return;
  }
  bool now[SA_PARTITIONS_MAX] = {false};
  for (size_t i = 0; i < reply->elements; i++) {
    long long p = reply->element[i]->integer;
    if (p >= 0 && p < l->partitions)
      now[p] = true;
  }
  for (int p = 0; p < l->partitions; p++) {
    if (now[p] == l->owned[p])
      continue;
    l->owned[p] = now[p];
    l->cb(l, p, now[p], l->ud);
    if (l->closing)
      return;
  }
}

static void run_round(sa_lease *l) {
  if (l->inflight || l->closing || !l->started)
    return;
  char ttl[32], n[32];
  snprintf(ttl, sizeof ttl, "%" PRId64, l->ttl_ms);
  snprintf(n, sizeof n, "%d", l->partitions);
  /* Heartbeats use Redis' clock (TIME): the replicas' own clocks are not comparable. */
  const char *argv[] = {"EVAL", round_lua, "0", l->owner, ttl, n, "0", l->prefix, l->members};
  l->inflight = true;
  if (qs_redis_command_argv(l->redis, on_round, l, 9, argv, NULL) != 0)
    l->inflight = false;
}

static void on_timer(uv_timer_t *t) { run_round(t->data); }

void sa_lease_start(sa_lease *l, int partitions) {
  l->partitions = partitions > SA_PARTITIONS_MAX ? SA_PARTITIONS_MAX : partitions;
  l->started = true;
  uint64_t every = (uint64_t)(l->ttl_ms / 3 > 0 ? l->ttl_ms / 3 : 1);
  uv_timer_start(&l->timer, on_timer, 0, every);
}

void sa_lease_kick(sa_lease *l) { run_round(l); }

int sa_lease_owned_count(const sa_lease *l) {
  int n = 0;
  for (int p = 0; p < l->partitions; p++)
    n += l->owned[p];
  return n;
}

void sa_lease_drop(sa_lease *l, int partition) {
  if (partition >= 0 && partition < SA_PARTITIONS_MAX)
    l->owned[partition] = false;
}

static void on_timer_closed(uv_handle_t *h) {
  sa_lease *l = h->data;
  if (l->close_cb)
    l->close_cb(l);
}

static void on_released(qs_redis *r, redisReply *reply, int status, void *ud) {
  (void)r;
  (void)reply;
  (void)status;
  sa_lease *l = ud;
  uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}

void sa_lease_close(sa_lease *l, void (*cb)(sa_lease *l)) {
  l->closing = true;
  l->close_cb = cb;
  uv_timer_stop(&l->timer);
  /* Release what we hold and leave the replica set, so others take over at once. */
  const char **argv = qs_xcalloc((size_t)l->partitions + 5, sizeof *argv);
  char(*keys)[640] = qs_xcalloc((size_t)l->partitions + 1, sizeof *keys);
  int n = 0;
  argv[n++] = "EVAL";
  argv[n++] = release_lua;
  argv[n++] = "0";
  argv[n++] = l->owner;
  argv[n++] = l->members;
  for (int p = 0; p < l->partitions; p++) {
    if (!l->owned[p])
      continue;
    snprintf(keys[p], sizeof keys[p], "%s%d", l->prefix, p);
    argv[n++] = keys[p];
    l->owned[p] = false;
  }
  int rc = qs_redis_command_argv(l->redis, on_released, l, n, argv, NULL);
  free(argv);
  free(keys);
  if (rc != 0)
    uv_close((uv_handle_t *)&l->timer, on_timer_closed);
}
