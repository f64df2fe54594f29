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
  FILE *in;
  char *pending;
  size_t pending_len;
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
        "environment: EVENTHUBS_CONNECTION_STRING\n",
        stderr);
}

static void closed(void *ud) { (void)ud; }

static void finish(app *a, int rc) {
  if (a->rc < 0)
    a->rc = rc;
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

/* Sends stdin lines until EOF or back-pressure; a line refused with QS_ERR_FULL waits in
 * a->pending for the drain callback. */
static void send_more(app *a) {
  for (;;) {
    if (!a->pending) {
      size_t cap = 0;
      ssize_t n = getline(&a->pending, &cap, a->in);
      if (n < 0) {
        free(a->pending);
        a->pending = NULL;
        a->eof = true;
        break;
      }
      while (n > 0 && (a->pending[n - 1] == '\n' || a->pending[n - 1] == '\r'))
        a->pending[--n] = 0;
      a->pending_len = (size_t)n;
    }
    qs_eh_event_out ev = {.body = a->pending,
                          .len = a->pending_len,
                          .partition_key = a->key,
                          .props = a->props,
                          .nprops = a->nprops};
    void **ud = malloc(2 * sizeof(void *));
    ud[0] = a;
    ud[1] = (void *)(intptr_t)(a->sent + 1);
    int rc = qs_eh_send(a->p, &ev, on_sent, ud);
    if (rc == QS_ERR_FULL) {
      free(ud);
      return; /* on_drain calls again */
    }
    free(a->pending);
    a->pending = NULL;
    a->sent++;
    if (rc != 0) {
      free(ud);
      a->done_events++;
      a->failed++;
      printf("error %ld %s\n", a->sent, qs_strerror(rc));
    }
  }
  if (a->eof && a->done_events == a->sent)
    finish(a, a->failed ? 1 : 0);
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
  signal(SIGPIPE, SIG_IGN); /* a dropped connection is an error to report, not a signal */
  const char *cs = getenv("EVENTHUBS_CONNECTION_STRING");
  if (!cs || !*cs) {
    fputs("qs-eh: EVENTHUBS_CONNECTION_STRING is not set\n", stderr);
    return 2;
  }
  app a = {.rc = -1, .in = stdin};
  uv_loop_t loop;
  uv_loop_init(&loop);
  a.loop = &loop;
  char err[256];
  qs_eh_client_opts co = {.connection_string = cs, .client_name = "qs-eh"};
  if (qs_eh_client_open(&a.c, &loop, &co, err, sizeof err) != 0) {
    fprintf(stderr, "qs-eh: %s\n", err);
    return 2;
  }
  const char *cmd = argv[1], *hub = argv[2];
  int rc = 0;
  if (strcmp(cmd, "props") == 0) {
    rc = argc > 3 ? qs_eh_get_partition_props(a.c, hub, atoi(argv[3]), 30000, on_part, &a)
                  : qs_eh_get_hub_props(a.c, hub, 30000, on_hub, &a);
  } else if (strcmp(cmd, "send") == 0) {
    qs_eh_producer_opts po = {.hub = hub, .partition = -1};
    for (int i = 3; i < argc; i++) {
      if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
        a.key = argv[++i];
      else if (strcmp(argv[i], "--partition") == 0 && i + 1 < argc)
        po.partition = atoi(argv[++i]);
      else if (strcmp(argv[i], "--prop") == 0 && i + 1 < argc && a.nprops < QS_EH_PROPS_MAX) {
        char *kv = argv[++i], *eq = strchr(kv, '=');
        if (!eq) {
          usage();
          return 2;
        }
        *eq = 0;
        a.props[a.nprops].key = kv;
        a.props[a.nprops++].value = eq + 1;
      } else {
        usage();
        return 2;
      }
    }
    rc = qs_eh_producer_open(a.c, &po, &a.p);
    if (rc == 0) {
      qs_eh_producer_on_drain(a.p, on_drain, &a);
      send_more(&a);
    }
  } else if (strcmp(cmd, "receive") == 0 && argc >= 4) {
    qs_eh_consumer_opts ko = {.hub = hub,
                              .partition = atoi(argv[3]),
                              .owner_level = -1,
                              .on_event = on_event,
                              .on_error = on_cons_error,
                              .ud = &a};
    a.idle_ms = 0;
    for (int i = 4; i < argc; i++) {
      if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) {
        if (parse_pos(argv[++i], &ko.start) != 0) {
          usage();
          return 2;
        }
      } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
        a.count = atol(argv[++i]);
      } else if (strcmp(argv[i], "--idle-ms") == 0 && i + 1 < argc) {
        a.idle_ms = strtoull(argv[++i], NULL, 10);
      } else if (strcmp(argv[i], "--owner-level") == 0 && i + 1 < argc) {
        ko.owner_level = atoll(argv[++i]);
      } else {
        usage();
        return 2;
      }
    }
    if (a.idle_ms) {
      uv_timer_init(&loop, &a.idle);
      a.idle.data = &a;
      uv_timer_start(&a.idle, on_idle, a.idle_ms, a.idle_ms);
    }
    rc = qs_eh_consumer_open(a.c, &ko, &a.k);
  } else {
    usage();
    return 2;
  }
  if (rc != 0) {
    fprintf(stderr, "qs-eh: %s\n", qs_strerror(rc));
    return 2;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  fflush(stdout);
  return a.rc < 0 ? 1 : a.rc;
}
