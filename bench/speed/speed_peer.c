/* speed_peer — the Node peer's work in C, for bench/speed/run.py: the same windowing as
 * node-consumer.mjs (latest revision per event_id, 5-minute windows per region with count,
 * magnitude and depth sums, min/max recomputed from the members when the min or max leaves), in
 * memory, on the same hub, through libqs's Event Hubs consumer and event decoder (which also
 * validates every event, as the aggregator does and the Node peer does not).
 *
 *   speed_peer EVENTS PARTITIONS   consume every partition from the earliest event until EVENTS
 *                                  events are in; prints {"events","wall_s","cpu_s",
 *                                  "events_per_s_wall","events_per_cpu_s",
 *                                  "sustained_events_per_cpu_s"} like the Node peer
 *
 * It separates what the runtime costs from what the aggregator's exactly-once state costs: the
 * aggregator does this and fetches and commits every event's state to Redis with its checkpoint.
 * CPU is counted as the Node peer's is: from the client's start (connects included), and
 * "sustained" from the tenth event in. Connection string from EVENTHUBS_CONNECTION_STRING.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "qs/agg.h"
#include "qs/eh.h"
#include "qs/error.h"
#include "qs/event.h"
#include "qs/timeutil.h"

#include "smap.h"

#define HUB "earthquake-events"
#define WINDOW_MS 300000
#define KEY_MAX (QS_EVENT_SHORT_MAX + 24)
#define ID_SIZE (QS_EVENT_ID_MAX + 1)

typedef struct win {
  char key[KEY_MAX];
  qs_agg agg;
  char (*ids)[ID_SIZE];
  qs_contrib *c;
  size_t n, cap;
  sa_pidx idx; /* id -> position */
} win;

typedef struct rec {
  char id[ID_SIZE];
  int64_t updated;
  win *w; /* NULL: not counted (deleted, superseded) */
  qs_contrib c;
} rec;

static sa_smap latest;  /* event_id -> rec */
static sa_smap windows; /* region|start -> win */
static long n_events, target, n10 = -1;
static double cpu0, cpu10, wall0;
static qs_eh_client *client;
static qs_eh_consumer *consumers[QS_EH_PARTITIONS_MAX];
static int partitions;

static double cpu_now(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void member_remove(win *w, const char *id) {
  long i = sa_pidx_find(&w->idx, w->ids[0], ID_SIZE, id);
  if (i < 0)
    return;
  sa_pidx_del(&w->idx, w->ids[0], ID_SIZE, id);
  w->n--;
  if ((size_t)i != w->n) { /* the last member moves into the hole */
    sa_pidx_del(&w->idx, w->ids[0], ID_SIZE, w->ids[w->n]);
    memcpy(w->ids[i], w->ids[w->n], ID_SIZE);
    w->c[i] = w->c[w->n];
    sa_pidx_put(&w->idx, w->ids[0], ID_SIZE, (uint32_t)i);
  }
}

static void member_add(win *w, const char *id, const qs_contrib *c) {
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 8;
    w->ids = qs_xrealloc(w->ids, w->cap * sizeof *w->ids);
    w->c = qs_xrealloc(w->c, w->cap * sizeof *w->c);
  }
  snprintf(w->ids[w->n], ID_SIZE, "%s", id);
  w->c[w->n] = *c;
  sa_pidx_put(&w->idx, w->ids[0], ID_SIZE, (uint32_t)w->n);
  w->n++;
}

static void apply(const qs_event *ev) {
  bool found;
  sa_smap_slot *s = sa_smap_upsert(&latest, ev->event_id, &found);
  rec *r = s->value;
  if (!found) {
    r = qs_xcalloc(1, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", ev->event_id);
    r->updated = INT64_MIN;
    s->key = r->id;
    s->value = r;
  }
  if (ev->updated <= r->updated)
    return;
  if (r->w) {
    int rc = qs_agg_retract(&r->w->agg, &r->c);
    member_remove(r->w, r->id);
    if (rc == QS_AGG_MINMAX_STALE)
      qs_agg_recompute_minmax(&r->w->agg, r->w->c, r->w->n);
    r->w = NULL;
  }
  r->updated = ev->updated;
  if (qs_event_is_retraction(ev))
    return;
  qs_contrib c;
  if (qs_contrib_init(&c, ev->time, ev->has_magnitude ? ev->magnitude : NAN,
                      ev->has_depth ? ev->depth_km : NAN, ev->tsunami_flag, 5.0) != 0)
    return;
  char key[KEY_MAX];
  int64_t start, end;
  if (qs_agg_window_of(ev->time, WINDOW_MS, &start, &end) != 0)
    return;
  snprintf(key, sizeof key, "%s|%" PRId64, ev->region, start);
  sa_smap_slot *ws = sa_smap_upsert(&windows, key, &found);
  win *w = ws->value;
  if (!found) {
    w = qs_xcalloc(1, sizeof *w);
    qs_agg_init(&w->agg);
    snprintf(w->key, sizeof w->key, "%s", key);
    ws->key = w->key;
    ws->value = w;
  }
  qs_agg_add(&w->agg, &c);
  member_add(w, ev->event_id, &c);
  r->w = w;
  r->c = c;
}

static void on_closed(void *ud) { (void)ud; }

static void on_event(qs_eh_consumer *cons, const qs_eh_event_in *in, void *ud) {
  (void)cons, (void)ud;
  static qs_event ev;
  if (n_events >= target)
    return;
  if (qs_event_from_json(&ev, in->body, in->len, NULL, 0) == 0)
    apply(&ev);
  n_events++;
  if (n10 < 0 && n_events >= target / 10) {
    n10 = n_events;
    cpu10 = cpu_now();
  }
  if (n_events < target)
    return;
  double wall = (double)qs_time_now_ms() / 1000.0 - wall0, cpu = cpu_now() - cpu0;
  printf(
      "{\"events\":%ld,\"windows\":%zu,\"wall_s\":%.3f,\"cpu_s\":%.3f,\"events_per_s_wall\":%.0f,"
      "\"events_per_cpu_s\":%.0f,\"sustained_events_per_cpu_s\":%.0f}\n",
      n_events, windows.len, wall, cpu, (double)n_events / wall, (double)n_events / cpu,
      (double)(n_events - n10) / (cpu_now() - cpu10));
  fflush(stdout);
  for (int p = 0; p < partitions; p++)
    qs_eh_consumer_close(consumers[p]);
  qs_eh_client_close(client, 1000, on_closed, NULL);
}

static void on_error(qs_eh_consumer *cons, int code, const char *condition, const char *desc,
                     void *ud) {
  (void)cons, (void)ud;
  fprintf(stderr, "consumer failed: %s %s %s\n", qs_strerror(code), condition ? condition : "",
          desc ? desc : "");
  exit(1);
}

int main(int argc, char **argv) {
  const char *conn = getenv("EVENTHUBS_CONNECTION_STRING");
  if (argc != 3 || !conn || (target = atol(argv[1])) <= 0 || (partitions = atoi(argv[2])) <= 0 ||
      partitions > QS_EH_PARTITIONS_MAX) {
    fprintf(stderr, "usage: EVENTHUBS_CONNECTION_STRING=... speed_peer EVENTS PARTITIONS\n");
    return 2;
  }
  sa_smap_init_borrowed(&latest);
  sa_smap_init_borrowed(&windows);
  uv_loop_t *loop = uv_default_loop();
  cpu0 = cpu_now();
  wall0 = (double)qs_time_now_ms() / 1000.0;
  char err[256];
  qs_eh_client_opts co = {.connection_string = conn, .client_name = "speed-peer"};
  if (qs_eh_client_open(&client, loop, &co, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  for (int p = 0; p < partitions; p++) {
    qs_eh_consumer_opts o = {.hub = HUB,
                             .partition = p,
                             .start = {.kind = QS_EH_POS_EARLIEST},
                             .prefetch = 1000,
                             .owner_level = -1,
                             .on_event = on_event,
                             .on_error = on_error};
    if (qs_eh_consumer_open(client, &o, &consumers[p]) != 0) {
      fprintf(stderr, "consumer open failed\n");
      return 1;
    }
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return n_events >= target ? 0 : 1;
}
