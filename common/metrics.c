/* metrics.c — the metrics registry and its Prometheus text rendering.
 *
 * Invariants: families and series are only ever added (never freed before qs_metrics_free), so
 * pointers handed out stay valid; a family never holds more than QS_METRICS_MAX_SERIES series;
 * histogram bucket counts are stored per bucket and made cumulative only when rendering.
 */
#include "qs/metrics.h"

#include "qs/error.h"
#include "qs/timeutil.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct qs_metric {
  qs_metric *next;
  qs_metric_family *family;
  char *label_values[QS_METRICS_MAX_LABELS];
  double value; /* counter, gauge; histogram sum */
  uint64_t count;
  uint64_t *buckets; /* histogram: per-bucket (non-cumulative) counts, nbounds + 1 (+Inf) */
};

struct qs_metric_family {
  qs_metric_family *next;
  char *name, *help;
  qs_metric_type type;
  char *labels[QS_METRICS_MAX_LABELS];
  size_t nlabels;
  double bounds[QS_METRICS_MAX_BUCKETS];
  size_t nbounds;
  qs_metric *series, *series_last;
  size_t nseries;
  qs_metrics *registry;
};

static bool valid_name(const char *s, bool allow_colon) {
  if (!s || !*s || !(isalpha((unsigned char)*s) || *s == '_' || (allow_colon && *s == ':')))
    return false;
  for (s++; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_' || (allow_colon && *s == ':')))
      return false;
  return true;
}

static qs_metric *new_series(qs_metric_family *f, const char *const *values) {
  qs_metric *s = qs_xcalloc(1, sizeof *s);
  s->family = f;
  for (size_t i = 0; i < f->nlabels; i++)
    s->label_values[i] = qs_xstrdup(values[i] ? values[i] : "");
  if (f->type == QS_METRIC_HISTOGRAM)
    s->buckets = qs_xcalloc(f->nbounds + 1, sizeof *s->buckets);
  return s;
}

static qs_metric_family *add_family(qs_metrics *m, const char *name, const char *help,
                                    qs_metric_type type, const char *const *labels,
                                    const double *bounds, size_t nbounds) {
  if (!valid_name(name, true))
    QS_FATAL("invalid metric name '%s'", name ? name : "(null)");
  for (qs_metric_family *f = m->families; f; f = f->next)
    if (strcmp(f->name, name) == 0)
      QS_FATAL("metric %s registered twice", name);
  qs_metric_family *f = qs_xcalloc(1, sizeof *f);
  f->name = qs_xstrdup(name);
  f->help = qs_xstrdup(help ? help : "");
  f->type = type;
  f->registry = m;
  for (size_t i = 0; labels && labels[i]; i++) {
    if (i >= QS_METRICS_MAX_LABELS || !valid_name(labels[i], false) || strcmp(labels[i], "le") == 0)
      QS_FATAL("metric %s: bad or too many labels", name);
    f->labels[f->nlabels++] = qs_xstrdup(labels[i]);
  }
  if (nbounds > QS_METRICS_MAX_BUCKETS)
    QS_FATAL("metric %s: too many buckets", name);
  for (size_t i = 0; i < nbounds; i++) {
    if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
      QS_FATAL("metric %s: bucket bounds must be finite and increasing", name);
    f->bounds[i] = bounds[i];
  }
  f->nbounds = nbounds;
  if (m->last)
    m->last->next = f;
  else
    m->families = f;
  m->last = f;
  return f;
}

void qs_metrics_init(qs_metrics *m, const char *service, const char *version) {
  memset(m, 0, sizeof *m);
  snprintf(m->service, sizeof m->service, "%s", service);
  snprintf(m->version, sizeof m->version, "%s", version);
  m->start_time_s = (double)qs_time_now_ms() / 1000.0;
  m->dropped = qs_metric_series(qs_metrics_counter(
      m, "quakestream_metrics_dropped_series_total",
      "Metric updates sent to the sink because a family hit its series cap", NULL));
  m->sink = qs_xcalloc(1, sizeof *m->sink);
  m->sink->family = qs_xcalloc(1, sizeof *m->sink->family); /* never rendered: a shape only */
  m->sink->buckets = qs_xcalloc(QS_METRICS_MAX_BUCKETS + 1, sizeof *m->sink->buckets);
}

void qs_metrics_free(qs_metrics *m) {
  qs_metric_family *f = m->families;
  while (f) {
    qs_metric_family *nf = f->next;
    qs_metric *s = f->series;
    while (s) {
      qs_metric *ns = s->next;
      for (size_t i = 0; i < f->nlabels; i++)
        free(s->label_values[i]);
      free(s->buckets);
      free(s);
      s = ns;
    }
    for (size_t i = 0; i < f->nlabels; i++)
      free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f);
    f = nf;
  }
  if (m->sink) {
    free(m->sink->family);
    free(m->sink->buckets);
    free(m->sink);
  }
  memset(m, 0, sizeof *m);
}

qs_metric_family *qs_metrics_counter(qs_metrics *m, const char *name, const char *help,
                                     const char *const *labels) {
  size_t n = strlen(name);
  if (n < 6 || strcmp(name + n - 6, "_total") != 0)
    QS_FATAL("counter %s must end in _total", name);
  return add_family(m, name, help, QS_METRIC_COUNTER, labels, NULL, 0);
}

qs_metric_family *qs_metrics_gauge(qs_metrics *m, const char *name, const char *help,
                                   const char *const *labels) {
  return add_family(m, name, help, QS_METRIC_GAUGE, labels, NULL, 0);
}

qs_metric_family *qs_metrics_histogram(qs_metrics *m, const char *name, const char *help,
                                       const char *const *labels, const double *bounds,
                                       size_t nbounds) {
  return add_family(m, name, help, QS_METRIC_HISTOGRAM, labels, bounds, nbounds);
}

qs_metric *qs_metric_get(qs_metric_family *f, const char *const *values) {
  for (qs_metric *s = f->series; s; s = s->next) {
    bool same = true;
    for (size_t i = 0; i < f->nlabels && same; i++)
      same = strcmp(s->label_values[i], values[i] ? values[i] : "") == 0;
    if (same)
      return s;
  }
  if (f->nseries >= QS_METRICS_MAX_SERIES) {
    qs_metric_inc(f->registry->dropped);
    return f->registry->sink;
  }
  qs_metric *s = new_series(f, values);
  if (f->series_last)
    f->series_last->next = s;
  else
    f->series = s;
  f->series_last = s;
  f->nseries++;
  return s;
}

qs_metric *qs_metric_series(qs_metric_family *f) {
  if (f->nlabels != 0)
    QS_FATAL("metric %s has labels: use qs_metric_get", f->name);
  return qs_metric_get(f, NULL);
}

void qs_metric_inc(qs_metric *s) { s->value += 1; }
void qs_metric_add(qs_metric *s, double v) {
  if (v > 0)
    s->value += v;
}
void qs_metric_set(qs_metric *s, double v) { s->value = v; }

void qs_metric_observe(qs_metric *s, double v) {
  const qs_metric_family *f = s->family;
  size_t i = 0;
  while (i < f->nbounds && v > f->bounds[i])
    i++;
  if (s->buckets)
    s->buckets[i]++;
  s->value += v;
  s->count++;
}

double qs_metric_value(const qs_metric *s) {
  return s->family && s->family->type == QS_METRIC_HISTOGRAM ? (double)s->count : s->value;
}

void qs_metrics_exp_buckets(double *out, double start, double factor, size_t n) {
  for (size_t i = 0; i < n; i++, start *= factor)
    out[i] = start;
}

/* Prometheus numbers: integers without exponent, others shortest round-trip; +Inf/-Inf/NaN. */
static void put_number(qs_buf *b, double v) {
  if (isnan(v))
    qs_buf_puts(b, "NaN");
  else if (isinf(v))
    qs_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
  else if (v == floor(v) && fabs(v) < 1e15)
    qs_buf_printf(b, "%.0f", v);
  else {
    char tmp[40];
    qs_buf_append(b, tmp, qs_double_shortest(tmp, sizeof tmp, v));
  }
}

/* Label values escape backslash, double quote and newline; HELP text escapes backslash, newline. */
static void put_escaped(qs_buf *b, const char *s, bool quote) {
  for (; *s; s++) {
    if (*s == '\\')
      qs_buf_puts(b, "\\\\");
    else if (*s == '\n')
      qs_buf_puts(b, "\\n");
    else if (quote && *s == '"')
      qs_buf_puts(b, "\\\"");
    else
      qs_buf_append(b, s, 1);
  }
}

static void put_labels(qs_buf *b, const qs_metric_family *f, const qs_metric *s, const char *le) {
  if (f->nlabels == 0 && !le)
    return;
  qs_buf_puts(b, "{");
  for (size_t i = 0; i < f->nlabels; i++) {
    qs_buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
    put_escaped(b, s->label_values[i], true);
    qs_buf_puts(b, "\"");
  }
  if (le)
    qs_buf_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
  qs_buf_puts(b, "}");
}

static void render_family(qs_buf *b, const qs_metric_family *f) {
  static const char *const type_names[] = {"counter", "gauge", "histogram"};
  qs_buf_printf(b, "# HELP %s ", f->name);
  put_escaped(b, f->help, false);
  qs_buf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
  for (const qs_metric *s = f->series; s; s = s->next) {
    if (f->type != QS_METRIC_HISTOGRAM) {
      qs_buf_puts(b, f->name);
      put_labels(b, f, s, NULL);
      qs_buf_puts(b, " ");
      put_number(b, s->value);
      qs_buf_puts(b, "\n");
      continue;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
      char le[40];
      cum += s->buckets[i];
      if (i < f->nbounds) {
        le[qs_double_shortest(le, sizeof le, f->bounds[i])] = '\0';
      } else {
        snprintf(le, sizeof le, "+Inf");
      }
      qs_buf_printf(b, "%s_bucket", f->name);
      put_labels(b, f, s, le);
      qs_buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    qs_buf_printf(b, "%s_sum", f->name);
    put_labels(b, f, s, NULL);
    qs_buf_puts(b, " ");
    put_number(b, s->value);
    qs_buf_printf(b, "\n%s_count", f->name);
    put_labels(b, f, s, NULL);
    qs_buf_printf(b, " %llu\n", (unsigned long long)s->count);
  }
}

/* Process metrics straight from /proc/self; a value that cannot be read is left out. */
static void render_process(qs_buf *b, const qs_metrics *m) {
  qs_buf_puts(b, "# HELP process_start_time_seconds Start time of the process since the epoch.\n"
                 "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ");
  put_number(b, floor(m->start_time_s));
  qs_buf_puts(b, "\n");
  FILE *fp = fopen("/proc/self/stat", "r");
  if (fp) {
    char line[1024];
    if (fgets(line, sizeof line, fp)) {
      const char *p = strrchr(line, ')'); /* the comm field may contain spaces */
      unsigned long utime = 0, stime = 0;
      long rss = 0;
      if (p && sscanf(p + 2,
                      "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                      "%*d %*u %*u %ld",
                      &utime, &stime, &rss) == 3) {
        double tick = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
        qs_buf_puts(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent "
                       "in seconds.\n# TYPE process_cpu_seconds_total counter\n"
                       "process_cpu_seconds_total ");
        put_number(b, (double)(utime + stime) / tick);
        qs_buf_puts(b, "\n# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                       "# TYPE process_resident_memory_bytes gauge\n"
                       "process_resident_memory_bytes ");
        put_number(b, (double)rss * page);
        qs_buf_puts(b, "\n");
      }
    }
    fclose(fp);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    long n = -1; /* the DIR itself holds one fd */
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.')
        n++;
    closedir(d);
    qs_buf_printf(b,
                  "# HELP process_open_fds Number of open file descriptors.\n"
                  "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
                  n);
  }
}

void qs_metrics_render(qs_metrics *m, qs_buf *out) {
  qs_buf_puts(out, "# HELP quakestream_build_info Build of this quakestream service.\n"
                   "# TYPE quakestream_build_info gauge\nquakestream_build_info{service=\"");
  put_escaped(out, m->service, true);
  qs_buf_puts(out, "\",version=\"");
  put_escaped(out, m->version, true);
  qs_buf_puts(out, "\"} 1\n");
  render_process(out, m);
  for (const qs_metric_family *f = m->families; f; f = f->next)
    render_family(out, f);
}
