/* speed_bench — load and latency driver for the speed aggregator (bench/speed/run.py runs it).
 *
 *   speed_bench load N [SEED]            send N synthetic events (~20 % revisions) as fast as the
 *                                        hub takes them, keyed by region; prints the rate
 *   speed_bench changes KIND N BASE_MS   send the catalogue changes of KIND for events bench0 ..
 *                                        bench<N-1> (times from BASE_MS), as the ingestor sends
 *                                        them: `new` (first sightings), `revise` (a magnitude
 *                                        revision of each, same region) or `retract` (a third
 *                                        each deleted, superseded, and moved to another region:
 *                                        `moved` on the old region + the revision on the new)
 *   speed_bench latency RATE SECONDS REDIS_PORT
 *                                        send RATE events/s for SECONDS, each carrying its send
 *                                        time; a subscriber on qs:live:events timestamps the live
 *                                        message of each: prints p50/p90/p99/max of send -> live
 *
 * Connection string from EVENTHUBS_CONNECTION_STRING; hub earthquake-events.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "qs/eh.h"
#include "qs/error.h"
#include "qs/event.h"
#include "qs/timeutil.h"

#define HUB "earthquake-events"

static const struct {
  const char *region;
  double lat, lon;
} places[] = {{"alaska", 61.0, -150.0},        {"hawaii", 19.4, -155.3},
              {"us-west", 36.0, -120.0},       {"east-asia", 35.7, 139.7},
              {"europe", 38.0, 23.0},          {"south-america", -33.0, -71.0},
              {"southeast-asia", 13.6, 120.4}, {"us-central", 40.0, -100.0}};
#define NPLACES (sizeof places / sizeof places[0])

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct bench {
  uv_loop_t *loop;
  qs_eh_client *c;
  qs_eh_producer *p;
  long target, sent, acked, failed, k;
  int64_t t0_us, base_ms;
  double rate;
  int64_t seconds;
  uv_timer_t timer;
  bool latency, closing;
  int changes; /* 0: mixed load; 1 new, 2 revise, 3 retract */
  long ops;    /* changes: next event index */
  bool second; /* retract: the revision half of a move is next */
} bench;

/* One event: a new id, or (20 %) a revision of an earlier one. */
static size_t make_event(bench *b, char *buf, size_t cap, const char **region) {
  qs_event ev;
  qs_event_init(&ev);
  long id;
  int64_t updated = b->base_ms + 1000 + b->sent;
  if (b->k > 10 && next_rand() % 5 == 0) {
    id = (long)(next_rand() % (uint64_t)b->k);
    ev.change = QS_EVENT_REVISION;
  } else {
    id = b->k++;
  }
  size_t pl = (size_t)id % NPLACES;
  char sid[32];
  int n = snprintf(sid, sizeof sid, "bench%ld", id);
  qs_event_set_str(ev.event_id, sizeof ev.event_id, sid, (size_t)n);
  ev.has_magnitude = true;
  ev.magnitude = (double)(next_rand() % 700) / 100.0;
  ev.time = b->base_ms + (id * 7919) % (6 * 3600000);
  ev.updated = updated;
  ev.latitude = places[pl].lat;
  ev.longitude = places[pl].lon;
  ev.has_depth = true;
  ev.depth_km = (double)(next_rand() % 30000) / 100.0;
  qs_event_set_str(ev.region, sizeof ev.region, places[pl].region, strlen(places[pl].region));
  qs_event_set_str(ev.event_type, sizeof ev.event_type, "earthquake", 10);
  qs_event_set_str(ev.status, sizeof ev.status, "automatic", 9);
  qs_event_set_str(ev.source, sizeof ev.source, "bench", 5);
  char place[64];
  n = snprintf(place, sizeof place, "bench:%" PRId64, now_us());
  qs_event_set_str(ev.place, sizeof ev.place, place, (size_t)n);
  ev.ingested_at = updated;
  qs_event_ids_add(&ev, sid, strlen(sid));
  *region = places[pl].region;
  return qs_event_to_json(&ev, buf, cap);
}

/* The next message of a `changes` run (see the usage). Versions: new at BASE+1000+i, revisions at
 * BASE+2e7+i, retractions at BASE+4e7+i, so each kind is newer than the one before. */
static size_t make_change(bench *b, char *buf, size_t cap, const char **region) {
  qs_event ev;
  qs_event_init(&ev);
  long id = b->ops;
  size_t pl = (size_t)id % NPLACES;
  int kind = (int)(id % 3); /* retract: 0 deleted, 1 superseded, 2 moved */
  char sid[32];
  int n = snprintf(sid, sizeof sid, "bench%ld", id);
  qs_event_set_str(ev.event_id, sizeof ev.event_id, sid, (size_t)n);
  ev.has_magnitude = true;
  ev.magnitude = (double)(id % 700) / 100.0;
  ev.time = b->base_ms + (id * 7919) % (6 * 3600000);
  ev.updated = b->base_ms + 1000 + id;
  if (b->changes == 2) {
    ev.change = QS_EVENT_REVISION;
    ev.magnitude = (double)((id + 13) % 700) / 100.0;
    ev.updated = b->base_ms + 20000000 + id;
  } else if (b->changes == 3) {
    ev.magnitude = (double)((id + 13) % 700) / 100.0;
    ev.updated = b->base_ms + 40000000 + id;
    if (kind == 0) {
      ev.change = QS_EVENT_DELETED;
    } else if (kind == 1) {
      ev.change = QS_EVENT_SUPERSEDED;
      n = snprintf(ev.superseded_by, sizeof ev.superseded_by, "bench%ld", id + 1);
    } else if (!b->second) {
      ev.change = QS_EVENT_MOVED; /* on the old region, then the revision on the new one */
    } else {
      ev.change = QS_EVENT_REVISION;
      pl = (pl + 1) % NPLACES;
    }
  }
  if (b->changes == 3 && kind == 2 && !b->second)
    b->second = true;
  else {
    b->second = false;
    b->ops++;
  }
  ev.latitude = places[pl].lat;
  ev.longitude = places[pl].lon;
  ev.has_depth = true;
  ev.depth_km = (double)(id % 30000) / 100.0;
  qs_event_set_str(ev.region, sizeof ev.region, places[pl].region, strlen(places[pl].region));
  qs_event_set_str(ev.event_type, sizeof ev.event_type, "earthquake", 10);
  qs_event_set_str(ev.status, sizeof ev.status, "reviewed", 8);
  qs_event_set_str(ev.source, sizeof ev.source, "bench", 5);
  qs_event_set_str(ev.place, sizeof ev.place, "bench", 5);
  ev.ingested_at = ev.updated;
  qs_event_ids_add(&ev, sid, strlen(sid));
  *region = places[pl].region;
  return qs_event_to_json(&ev, buf, cap);
}

static void closed(void *ud) { (void)ud; }

static void finish(bench *b) {
  if (b->closing)
    return;
  b->closing = true;
  if (b->latency)
    uv_close((uv_handle_t *)&b->timer, NULL);
  qs_eh_client_close(b->c, 10000, closed, b);
}

static void on_sent(int status, const char *cond, const char *desc, void *ud) {
  (void)cond;
  (void)desc;
  bench *b = ud;
  b->acked++;
  if (status != 0)
    b->failed++;
  if (b->acked == b->target && !b->latency) {
    double s = (double)(now_us() - b->t0_us) / 1e6;
    printf("{\"sent\":%ld,\"failed\":%ld,\"seconds\":%.3f,\"events_per_s\":%.0f}\n", b->acked,
           b->failed, s, (double)b->acked / s);
    finish(b);
  }
}

static void send_some(bench *b, long upto) {
  char buf[QS_EVENT_JSON_MAX];
  while (b->sent < upto) {
    const char *region;
    long ops = b->ops;
    bool second = b->second;
    size_t n = b->changes ? make_change(b, buf, sizeof buf, &region)
                          : make_event(b, buf, sizeof buf, &region);
    qs_eh_event_out ev = {.body = buf, .len = n, .partition_key = region};
    int rc = qs_eh_send(b->p, &ev, on_sent, b);
    if (rc == QS_ERR_FULL) {
      b->ops = ops; /* a change is sent again, not skipped */
      b->second = second;
      return; /* drain callback resumes */
    }
    if (rc != 0) {
      fprintf(stderr, "send: %s\n", qs_strerror(rc));
      exit(1);
    }
    b->sent++;
  }
}

static void on_drain(qs_eh_producer *p, void *ud) {
  (void)p;
  bench *b = ud;
  if (!b->latency)
    send_some(b, b->target);
}

static void on_tick(uv_timer_t *t) {
  bench *b = t->data;
  double el = (double)(now_us() - b->t0_us) / 1e6;
  long due = (long)(el * b->rate);
  if (due > b->target)
    due = b->target;
  send_some(b, due);
  if (b->sent >= b->target) {
    uv_timer_stop(&b->timer);
    if (b->acked >= b->target)
      finish(b);
    else
      uv_timer_start(&b->timer, on_tick, 100, 0);
  }
}

/* ---- latency subscriber (own thread, blocking hiredis) ---- */
static int64_t *lat;
static size_t nlat, caplat;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int redis_port;
static volatile int sub_ready;

static void *subscriber(void *arg) {
  (void)arg;
  redisContext *rc = redisConnect("127.0.0.1", redis_port);
  if (!rc || rc->err) {
    fprintf(stderr, "redis connect failed\n");
    exit(1);
  }
  redisReply *r = redisCommand(rc, "SUBSCRIBE qs:live:events");
  freeReplyObject(r);
  sub_ready = 1;
  for (;;) {
    if (redisGetReply(rc, (void **)&r) != REDIS_OK)
      break;
    int64_t t = now_us();
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->str) {
      const char *p = strstr(r->element[2]->str, "\"place\":\"bench:");
      if (p) {
        int64_t s = strtoll(p + 15, NULL, 10);
        pthread_mutex_lock(&mu);
        if (nlat == caplat) {
          caplat = caplat ? caplat * 2 : 4096;
          lat = realloc(lat, caplat * sizeof *lat);
        }
        lat[nlat++] = t - s;
        pthread_mutex_unlock(&mu);
      }
    }
    freeReplyObject(r);
  }
  return NULL;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: speed_bench load N [SEED] | latency RATE SECONDS REDIS_PORT | changes "
                    "new|revise|retract N BASE_MS\n");
    return 2;
  }
  const char *conn = getenv("EVENTHUBS_CONNECTION_STRING");
  if (!conn) {
    fprintf(stderr, "EVENTHUBS_CONNECTION_STRING is not set\n");
    return 2;
  }
  static bench b;
  b.loop = uv_default_loop();
  b.base_ms = (qs_time_now_ms() - 86400000) / 3600000 * 3600000;
  if (strcmp(argv[1], "load") == 0) {
    b.target = atol(argv[2]);
    if (argc > 3)
      rng ^= (uint64_t)atoll(argv[3]) * 0x9E3779B97F4A7C15ULL;
  } else if (strcmp(argv[1], "changes") == 0 && argc == 5) {
    b.changes = strcmp(argv[2], "new") == 0       ? 1
                : strcmp(argv[2], "revise") == 0  ? 2
                : strcmp(argv[2], "retract") == 0 ? 3
                                                  : 0;
    long n = atol(argv[3]);
    b.base_ms = atoll(argv[4]);
    if (!b.changes || n <= 0 || b.base_ms <= 0) {
      fprintf(stderr, "bad arguments\n");
      return 2;
    }
    b.target = b.changes == 3 ? n + n / 3 : n; /* a move (i % 3 == 2) is two messages */
  } else if (strcmp(argv[1], "latency") == 0 && argc == 5) {
    b.latency = true;
    b.rate = atof(argv[2]);
    b.seconds = atol(argv[3]);
    b.target = (long)(b.rate * (double)b.seconds);
    redis_port = atoi(argv[4]);
    rng ^= (uint64_t)now_us();
    b.k = 0;
    pthread_t th;
    pthread_create(&th, NULL, subscriber, NULL);
    while (!sub_ready)
      uv_sleep(1);
  } else {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  char err[256];
  qs_eh_client_opts co = {.connection_string = conn, .client_name = "speed-bench"};
  if (qs_eh_client_open(&b.c, b.loop, &co, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  qs_eh_producer_opts po = {.hub = HUB, .partition = -1, .queue_max = 20000, .batch_max = 500};
  if (qs_eh_producer_open(b.c, &po, &b.p) != 0) {
    fprintf(stderr, "producer open failed\n");
    return 1;
  }
  qs_eh_producer_on_drain(b.p, on_drain, &b);
  b.t0_us = now_us();
  if (b.latency) {
    uv_timer_init(b.loop, &b.timer);
    b.timer.data = &b;
    uv_timer_start(&b.timer, on_tick, 1, 1);
  } else {
    send_some(&b, b.target);
  }
  uv_run(b.loop, UV_RUN_DEFAULT);
  if (b.latency) {
    /* The live messages of the last events arrive after the last ack: wait for them. */
    for (int i = 0; i < 300; i++) {
      pthread_mutex_lock(&mu);
      size_t n = nlat;
      pthread_mutex_unlock(&mu);
      if ((long)n >= b.target)
        break;
      uv_sleep(10);
    }
    pthread_mutex_lock(&mu);
    qsort(lat, nlat, sizeof *lat, cmp64);
    if (nlat == 0) {
      printf("{\"received\":0}\n");
      return 1;
    }
    printf("{\"rate\":%.0f,\"sent\":%ld,\"received\":%zu,\"p50_ms\":%.2f,\"p90_ms\":%.2f,"
           "\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
           b.rate, b.acked, nlat, (double)lat[nlat / 2] / 1000.0,
           (double)lat[nlat * 9 / 10] / 1000.0, (double)lat[nlat * 99 / 100] / 1000.0,
           (double)lat[nlat - 1] / 1000.0);
    pthread_mutex_unlock(&mu);
  }
  return b.failed ? 1 : 0;
}
