/* redis.h — thin async Redis client on a libuv loop (hiredis 0.14).
 *
 * Contract:
 * - qs_redis_command returns 0 and then calls cb exactly once: with the reply
 *   (status 0; a Redis error is a reply of type REDIS_REPLY_ERROR), or with
 *   reply NULL and a negative status when the connection is down or drops.
 *   When it returns < 0 (QS_ERR_FULL over max_pending, QS_ERR_CLOSED while
 *   closing, QS_ERR_INVALID) cb is never called.
 * - Reconnects automatically with jittered exponential backoff
 *   (backoff_min_ms doubling up to backoff_max_ms; delay in [b/2, b]).
 * - A periodic PING drives qs_redis_ready(); the reason says why not ready.
 * - qs_redis_close is asynchronous: close_cb runs once all handles are
 *   closed; r must stay valid until then. Pending callbacks get NULL first.
 * - TLS (rediss://) is QS_ERR_UNSUPPORTED: Debian 12's hiredis 0.14 has none.
 * - Subscriber mode (qs_redis_subscribe): the connection carries only SUBSCRIBE. On every
 *   (re)connect it subscribes again to the same channels and reports it (on_subscribed), so the
 *   owner can resynchronise what it missed while disconnected; ready means "subscribed".
 *   qs_redis_command then fails with QS_ERR_STATE (RESP2 allows no ordinary command on a
 *   subscribed connection, and hiredis 0.14 would route its reply to the wrong callback).
 */
#ifndef QS_REDIS_H
#define QS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct qs_redis_url {
  char host[256];
  int port;           /* default 6379 */
  char user[128];     /* empty: AUTH <password> */
  char password[512]; /* empty: no AUTH */
  int db;             /* 0..65535, default 0 */
} qs_redis_url;

/* redis://[[user]:password@]host[:port][/db]. err gets a reason. */
int qs_redis_url_parse(qs_redis_url *u, const char *url, char *err, size_t errlen);

typedef struct qs_redis qs_redis;
typedef void (*qs_redis_cb)(qs_redis *r, redisReply *reply, int status, void *ud);
typedef void (*qs_redis_close_cb)(qs_redis *r);

typedef struct qs_redis_opts {
  unsigned max_pending;        /* default 1024 */
  uint64_t ping_interval_ms;   /* default 1000 */
  uint64_t backoff_min_ms;     /* default 100 */
  uint64_t backoff_max_ms;     /* default 5000 */
  uint64_t connect_timeout_ms; /* default 5000; checked on each PING tick */
} qs_redis_opts;

struct qs_redis_req;

#define QS_REDIS_MAX_CHANNELS 16

/* A message published on one of the subscribed channels (payload is binary-safe, NUL-terminated
 * by hiredis; valid only during the call). */
typedef void (*qs_redis_msg_cb)(qs_redis *r, const char *channel, const char *payload, size_t len,
                                void *ud);
/* The subscription to every channel is (again) in place. */
typedef void (*qs_redis_subscribed_cb)(qs_redis *r, void *ud);

struct qs_redis {
  uv_loop_t *loop;
  qs_redis_url url;
  qs_redis_opts opts;
  redisAsyncContext *ac;
  uv_timer_t reconnect_timer, ping_timer, fail_timer;
  struct qs_redis_req *failed; /* requests to fail on the next loop turn */
  unsigned pending;            /* requests whose callback is still owed */
  int ready, connected, closing, handles_open, ping_inflight;
  int keep_reason; /* a setup failure (AUTH/SELECT) explains the disconnect */
  uint64_t backoff_ms, rng, connect_started_ms;
  unsigned long reconnects;
  char reason[256];
  qs_redis_close_cb close_cb;
  /* subscriber mode */
  char *channels[QS_REDIS_MAX_CHANNELS];
  size_t nchannels, subscribed;
  qs_redis_msg_cb on_message;
  qs_redis_subscribed_cb on_subscribed;
  void *sub_ud;
  unsigned long messages;
  void *data; /* for the caller */
};

/* Starts connecting at once. opts may be NULL (defaults). */
int qs_redis_init(qs_redis *r, uv_loop_t *loop, const char *url, const qs_redis_opts *opts,
                  char *err, size_t errlen);
int qs_redis_command(qs_redis *r, qs_redis_cb cb, void *ud, const char *fmt, ...);
/* The same with an argument vector (argvlen NULL: strlen of each), for commands whose argument
 * count is only known at run time (MGET of a feed's ids, EVALSHA with many keys). */
int qs_redis_command_argv(qs_redis *r, qs_redis_cb cb, void *ud, int argc, const char **argv,
                          const size_t *argvlen);
/* The same with a command already in the protocol's form (RESP: "*<argc>\r\n" then
 * "$<len>\r\n<bytes>\r\n" per argument; copied), for callers that build large commands
 * themselves without hiredis's per-argument formatting. */
int qs_redis_command_formatted(qs_redis *r, qs_redis_cb cb, void *ud, const char *cmd, size_t len);
/* 1 if ready; *reason (may be NULL) points to r's reason text. */
int qs_redis_ready(const qs_redis *r, const char **reason);
void qs_redis_close(qs_redis *r, qs_redis_close_cb cb);

/* Turns r into a subscriber of channels[0..n) (1..QS_REDIS_MAX_CHANNELS names, copied): call once,
 * right after qs_redis_init. Messages go to on_message; on_subscribed (may be NULL) runs each time
 * the subscription to all channels is confirmed, the first time and after every reconnect.
 * QS_ERR_INVALID for bad arguments, QS_ERR_STATE if called twice or after a command. */
int qs_redis_subscribe(qs_redis *r, const char *const *channels, size_t n,
                       qs_redis_msg_cb on_message, qs_redis_subscribed_cb on_subscribed, void *ud);

#endif
