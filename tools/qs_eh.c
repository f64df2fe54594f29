/* qs-eh — a command-line Event Hubs client on libqs's qs_eh (the same code the services use).
 *
 *   qs-eh props HUB [PARTITION]                 hub (or partition) properties as JSON
 *   qs-eh send HUB [--key K | --partition P] [--prop k=v]...   one event per stdin line
 *   qs-eh receive HUB PARTITION [--from earliest|latest|seq:N|seqi:N|offset:N|time:MS]
 *                 [--count N] [--idle-ms MS] [--owner-level L]  one JSON line per event
 *
 * Connection string from EVENTHUBS_CONNECTION_STRING. Exit 0 on success, 1 on failure (with a
 * reason on stderr), 2 on bad usage. `send` prints one line per event once the hub accepted it
 * (`ok <line number>`) or refused it (`error <line number> <reason>`), in completion order.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qs/buf.h"
#include "qs/eh.h"
#include "qs/error.h"

typedef struct app {
  uv_loop_t *loop;
  qs_eh_client *c;
  qs_eh_producer *p;
  qs_eh_consumer *k;
  int rc;
  long count, received, sent, done_events, failed;
  uint64_t idle_ms;
  uv_timer_t idle;
  bool eof;
  qs_buf in_buf;
  size_t in_off;
  bool reading;
  uv_fs_t read_req;
  uv_buf_t iov;
  const char *key;
  qs_eh_prop props[QS_EH_PROPS_MAX];
  size_t nprops;
} app;

static void usage(void) {
  fputs("usage: qs-eh props HUB [PARTITION]\n"
        "       qs-eh send HUB [--key K | --partition P] [--prop k=v]...  (events on stdin, one "
        "per line)\n"
        "       qs-eh receive HUB PARTITION [--from earliest|latest|seq:N|seqi:N|offset:N|time:MS]"
        " [--count N] [--idle-ms MS] [--owner-level L]\n"
        "any command: --token-ttl S (SAS token lifetime, renewed at 80 %), --stats (client "
        "counters as JSON on stderr at the end)\n"
        "environment: EVENTHUBS_CONNECTION_STRING\n",
        stderr);
}

static void closed(void *ud) { (void)ud; }

static bool print_stats;

static void finish(app *a, int rc) {
  if (a->rc < 0)
    a->rc = rc;
  if (print_stats) {
    qs_eh_client_stats st;
    qs_eh_client_stats_get(a->c, &st);
    fprintf(stderr,
            "{\"connects\":%" PRIu64 ",\"disconnects\":%" PRIu64 ",\"auth_failures\":%" PRIu64
            ",\"tokens_renewed\":%" PRIu64 "}\n",
            st.connects, st.disconnects, st.auth_failures, st.tokens_renewed);
    print_stats = false;
  }
  if (a->idle_ms)
    uv_close((uv_handle_t *)&a->idle, NULL);
  a->idle_ms = 0;
  qs_eh_client_close(a->c, 10000, closed, a);
}

static void on_hub(int status, const qs_eh_hub_props *hp, const char *reason, void *ud) {
  app *a = ud;
  if (status != 0) {
    fprintf(stderr, "qs-eh: %s (%s)\n", reason ? reason : "", qs_strerror(status));
    finish(a, 1);
    return;
  }
  printf("{\"name\":\"%s\",\"created_at_ms\":%" PRId64
         ",\"partition_count\":%d,\"partition_ids\":[",
         hp->name, hp->created_ms, hp->partition_count);
  for (int i = 0; i < hp->partition_count && i < QS_EH_PARTITIONS_MAX; i++)
    printf("%s\"%d\"", i ? "," : "", hp->partition_ids[i]);
  printf("]}\n");
  finish(a, 0);
}

static void on_part(int status, const qs_eh_partition_props *pp, const char *reason, void *ud) {
  app *a = ud;
  if (status != 0) {
    fprintf(stderr, "qs-eh: %s (%s)\n", reason ? reason : "", qs_strerror(status));
    finish(a, 1);
    return;
  }
  printf("{\"hub\":\"%s\",\"partition\":%d,\"begin_sequence\":%" PRId64
         ",\"last_sequence\":%" PRId64 ",\"last_offset\":\"%s\",\"last_enqueued_ms\":%" PRId64
         ",\"is_empty\":%s}\n",
         pp->hub, pp->partition, pp->begin_sequence, pp->last_sequence, pp->last_offset,
         pp->last_enqueued_ms, pp->is_empty ? "true" : "false");
  finish(a, 0);
}

/* ---- send ---- */
static void send_more(app *a);

static void on_sent(int status, const char *cond, const char *desc, void *ud) {
  app *a = ((void **)ud)[0];
  long line = (long)(intptr_t)((void **)ud)[1];
  free(ud);
  a->done_events++;
  if (status == 0) {
    printf("ok %ld\n", line);
  } else {
    a->failed++;
    printf("error %ld %s %s %s\n", line, qs_strerror(status), cond ? cond : "", desc ? desc : "");
  }
  if (a->eof && a->done_events == a->sent)
    finish(a, a->failed ? 1 : 0);
}

static void on_drain(qs_eh_producer *p, void *ud) {
  (void)p;
  send_more(ud);
}

static void on_stdin(uv_fs_t *req);

/* Sends the complete stdin lines buffered so far until back-pressure (the drain callback calls
 * again), then reads more; stdin is read with uv_fs_read so the loop never blocks on it (a pipe
 * that stays open while acknowledgements are due, a regular file, or a terminal). */
static void send_more(app *a) {
  for (;;) {
    char *start = a->in_buf.p + a->in_off;
    size_t left = a->in_buf.len - a->in_off;
    char *nl = left ? memchr(start, '\n', left) : NULL;
    if (!nl && !(a->eof && left))
      break;
    size_t n = nl ? (size_t)(nl - start) : left;
    size_t body = n;
    while (body > 0 && start[body - 1] == '\r')
      body--;
    qs_eh_event_out ev = {.body = start,
                          .len = body,
                          .partition_key = a->key,
                          .props = a->props,
                          .nprops = a->nprops};
    void **ud = malloc(2 * sizeof(void *));
    ud[0] = a;
    ud[1] = (void *)(intptr_t)(a->sent + 1);
    int rc = qs_eh_send(a->p, &ev, on_sent, ud);
    if (rc == QS_ERR_FULL) {
      free(ud);
      return;
    }
    a->in_off += nl ? n + 1 : n;
    a->sent++;
    if (rc != 0) {
      free(ud);
      a->done_events++;
      a->failed++;
      printf("error %ld %s\n", a->sent, qs_strerror(rc));
    }
  }
  if (a->in_off > 0) { /* keep only the unfinished line */
    memmove(a->in_buf.p, a->in_buf.p + a->in_off, a->in_buf.len - a->in_off);
    a->in_buf.len -= a->in_off;
    a->in_off = 0;
  }
  if (!a->eof && !a->reading) {
    qs_buf_reserve(&a->in_buf, 65536);
    a->reading = true;
    a->iov = uv_buf_init(a->in_buf.p + a->in_buf.len, 65536);
    a->read_req.data = a;
    uv_fs_read(a->loop, &a->read_req, 0, &a->iov, 1, -1, on_stdin);
  }
  if (a->eof && a->done_events == a->sent)
    finish(a, a->failed ? 1 : 0);
}

static void on_stdin(uv_fs_t *req) {
  app *a = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  a->reading = false;
  if (n <= 0) {
    if (n < 0)
      fprintf(stderr, "qs-eh: reading stdin: %s\n", uv_strerror((int)n));
    a->eof = true;
  } else {
    a->in_buf.len += (size_t)n;
  }
  send_more(a);
}

/* ---- receive ---- */
static void on_idle(uv_timer_t *t) {
  app *a = t->data;
  finish(a, a->count > 0 && a->received < a->count ? 1 : 0);
}

static void json_str(qs_buf *b, const char *s, size_t n) {
  qs_buf_puts(b, "\"");
  qs_buf_json_str(b, s, n);
  qs_buf_puts(b, "\"");
}

static void on_event(qs_eh_consumer *k, const qs_eh_event_in *ev, void *ud) {
  (void)k;
  app *a = ud;
  if (a->rc >= 0)
    return;
  qs_buf b = {0};
  qs_buf_printf(&b,
                "{\"partition\":%d,\"sequence\":%" PRId64
                ",\"offset\":\"%s\",\"enqueued_ms\":%" PRId64 ",\"partition_key\":",
                ev->partition, ev->sequence, ev->offset, ev->enqueued_ms);
  json_str(&b, ev->partition_key, strlen(ev->partition_key));
  qs_buf_puts(&b, ",\"properties\":{");
  for (size_t i = 0; i < ev->nprops; i++) {
    if (i)
      qs_buf_puts(&b, ",");
    json_str(&b, ev->props[i].key, strlen(ev->props[i].key));
    qs_buf_puts(&b, ":");
    json_str(&b, ev->props[i].value, strlen(ev->props[i].value));
  }
  qs_buf_puts(&b, "},\"body\":");
  json_str(&b, ev->body, ev->len);
  qs_buf_puts(&b, "}\n");
  fwrite(b.p, 1, b.len, stdout);
  qs_buf_free(&b);
  a->received++;
  if (a->idle_ms)
    uv_timer_again(&a->idle);
  if (a->count > 0 && a->received >= a->count) {
    fflush(stdout);
    finish(a, 0);
  }
}

static void on_cons_error(qs_eh_consumer *k, int code, const char *cond, const char *desc,
                          void *ud) {
  (void)k;
  fprintf(stderr, "qs-eh: receive failed: %s %s (%s)\n", cond ? cond : "", desc ? desc : "",
          qs_strerror(code));
  finish(ud, 1);
}

static int parse_pos(const char *s, qs_eh_position *pos) {
  char *end;
  memset(pos, 0, sizeof *pos);
  if (strcmp(s, "earliest") == 0)
    pos->kind = QS_EH_POS_EARLIEST;
  else if (strcmp(s, "latest") == 0)
    pos->kind = QS_EH_POS_LATEST;
  else if (strncmp(s, "seq:", 4) == 0 || strncmp(s, "seqi:", 5) == 0) {
    pos->kind = QS_EH_POS_SEQUENCE;
    pos->inclusive = s[3] == 'i';
    errno = 0;
    pos->value = strtoll(s + (pos->inclusive ? 5 : 4), &end, 10);
    return *end || errno ? -1 : 0;
  } else if (strncmp(s, "offset:", 7) == 0) {
    pos->kind = QS_EH_POS_OFFSET;
    pos->value = strtoll(s + 7, &end, 10);
    return *end ? -1 : 0;
  } else if (strncmp(s, "time:", 5) == 0) {
    pos->kind = QS_EH_POS_TIME;
    pos->value = strtoll(s + 5, &end, 10);
    return *end ? -1 : 0;
  } else
    return -1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "--help") == 0) {
    usage();
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
  }
  signal(SIGPIPE, SIG_IGN);         /* a dropped connection is an error to report, not a signal */
  setvbuf(stdout, NULL, _IOLBF, 0); /* results as they happen, for whoever reads them */
  const char *cs = getenv("EVENTHUBS_CONNECTION_STRING");
  if (!cs || !*cs) {
    fputs("qs-eh: EVENTHUBS_CONNECTION_STRING is not set\n", stderr);
    return 2;
  }
  app a = {.rc = -1};
  qs_eh_client_opts co = {.connection_string = cs, .client_name = "qs-eh"};
  const char *cmd = argv[1], *hub = argv[2];
  qs_eh_producer_opts po = {.hub = hub, .partition = -1};
  qs_eh_consumer_opts ko = {
      .hub = hub, .owner_level = -1, .on_event = on_event, .on_error = on_cons_error, .ud = &a};
  int part = -1;
  bool ok = true;
  /* every argument is checked before anything connects */
  for (int i = 3; ok && i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(o, "--token-ttl") == 0 && v)
      co.token_ttl_s = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (strcmp(o, "--stats") == 0)
      print_stats = true;
    else if (strcmp(cmd, "props") == 0 && i == 3 && o[0] != '-')
      part = atoi(o);
    else if (strcmp(cmd, "send") == 0 && strcmp(o, "--key") == 0 && v)
      a.key = argv[++i];
    else if (strcmp(cmd, "send") == 0 && strcmp(o, "--partition") == 0 && v)
      po.partition = atoi(argv[++i]);
    else if (strcmp(cmd, "send") == 0 && strcmp(o, "--prop") == 0 && v &&
             a.nprops < QS_EH_PROPS_MAX && strchr(v, '=')) {
      char *kv = argv[++i], *eq = strchr(kv, '=');
      *eq = 0;
      a.props[a.nprops].key = kv;
      a.props[a.nprops++].value = eq + 1;
    } else if (strcmp(cmd, "receive") == 0 && i == 3 && o[0] != '-')
      ko.partition = atoi(o), part = ko.partition;
    else if (strcmp(cmd, "receive") == 0 && strcmp(o, "--from") == 0 && v)
      ok = parse_pos(argv[++i], &ko.start) == 0;
    else if (strcmp(cmd, "receive") == 0 && strcmp(o, "--count") == 0 && v)
      a.count = atol(argv[++i]);
    else if (strcmp(cmd, "receive") == 0 && strcmp(o, "--idle-ms") == 0 && v)
      a.idle_ms = strtoull(argv[++i], NULL, 10);
    else if (strcmp(cmd, "receive") == 0 && strcmp(o, "--owner-level") == 0 && v)
      ko.owner_level = atoll(argv[++i]);
    else
      ok = false;
  }
  if (!ok ||
      (strcmp(cmd, "props") != 0 && strcmp(cmd, "send") != 0 && strcmp(cmd, "receive") != 0) ||
      (strcmp(cmd, "receive") == 0 && part < 0)) {
    usage();
    return 2;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  a.loop = &loop;
  char err[256];
  if (qs_eh_client_open(&a.c, &loop, &co, err, sizeof err) != 0) {
    fprintf(stderr, "qs-eh: %s\n", err);
    uv_loop_close(&loop);
    return 2;
  }
  int rc;
  if (strcmp(cmd, "props") == 0) {
    rc = part >= 0 ? qs_eh_get_partition_props(a.c, hub, part, 30000, on_part, &a)
                   : qs_eh_get_hub_props(a.c, hub, 30000, on_hub, &a);
  } else if (strcmp(cmd, "send") == 0) {
    rc = qs_eh_producer_open(a.c, &po, &a.p);
    if (rc == 0) {
      qs_eh_producer_on_drain(a.p, on_drain, &a);
      send_more(&a);
    }
  } else {
    if (a.idle_ms) {
      uv_timer_init(&loop, &a.idle);
      a.idle.data = &a;
      uv_timer_start(&a.idle, on_idle, a.idle_ms, a.idle_ms);
    }
    rc = qs_eh_consumer_open(a.c, &ko, &a.k);
  }
  if (rc != 0) { /* an invalid option value: say so and close what was opened */
    fprintf(stderr, "qs-eh: %s\n", qs_strerror(rc));
    finish(&a, 2);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  qs_buf_free(&a.in_buf);
  fflush(stdout);
  return a.rc < 0 ? 1 : a.rc;
}
