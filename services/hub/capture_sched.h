/* capture_sched.h — Event Hubs Capture for one partition: durable records of the partition log
 * written as Capture Avro files, one per window, at the window's time or size limit (first wins).
 *
 * Files go to
 * {capture_dir}/{Namespace}/{EventHub}/p={Partition}/{YYYY}/{MM}/{DD}/{hh}/{mm}/{ss}.avro (window
 * start, UTC), written to a temporary name and renamed, off the loop thread. A checkpoint (next
 * sequence to capture) beside the partition log is replaced atomically after each file, so a
 * restart resumes without a gap; a crash between the rename and the checkpoint rewrites the same
 * window under the same name with the same bytes, never a duplicate under another name.
 */
#ifndef QS_HUB_CAPTURE_SCHED_H
#define QS_HUB_CAPTURE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "qs/log.h"
#include "qs/metrics.h"

#include "partition_log.h"

typedef struct hub_capture hub_capture;
typedef void (*hub_capture_stopped_cb)(void *arg);

typedef struct hub_capture_options {
  const char *capture_dir;
  const char *data_dir; /* the checkpoint lives in <data_dir>/<hub>/<partition>/ */
  const char *namespace_name, *hub;
  int partition;
  uint32_t interval_s;
  uint64_t size_limit_bytes;
  bool skip_empty; /* false: an empty file for every interval without events, as Azure does */
  hub_plog *log;
  qs_log *qlog;
  qs_metric *files, *events, *errors; /* each may be NULL */
  int64_t (*now_ms)(void);            /* NULL: wall clock; tests drive time */
} hub_capture_options;

int hub_capture_start(hub_capture **out, uv_loop_t *loop, const hub_capture_options *o, char *err,
                      size_t errlen);
/* New durable records may be there. */
void hub_capture_poke(hub_capture *c);
/* Waits for a file being written, leaves the checkpoint consistent, frees c, then cb(arg). The
 * window still open is not written: its records stay in the log and are captured after restart. */
void hub_capture_stop(hub_capture *c, hub_capture_stopped_cb cb, void *arg);
/* Next sequence number to capture (for tests and metrics). */
int64_t hub_capture_next_seq(const hub_capture *c);

#endif
