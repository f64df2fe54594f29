/* job.h — one batch run, start to finish, without the loop: list the source, read every Capture
 * file, fold the bodies, compute rows, cutoff and baseline, write the gold files.
 *
 * Runs on a uv_queue_work thread (blocking I/O is fine there); the loop reads the progress
 * counters (atomics) for the progress bar and metrics. A file that cannot be read completely
 * (corrupt, truncated, wrong schema, download failure) is listed in the result and contributes
 * nothing (the fold is rolled back to the file's start). Only a failure to list the source or to
 * write the gold files fails the run.
 *
 * Cutoff: each file belongs to a partition (the path up to its `p=<id>` component, else its
 * directory); a partition's capture covers time up to the latest of its files' path times
 * (`.../YYYY/MM/DD/hh/mm/ss.avro`) and records' EnqueuedTimeUtc. The cutoff is the start of the
 * hour holding the smallest of those per-partition coverage ends: the end of the last hour that
 * every partition covered completely. 0 when nothing says how far the capture goes.
 */
#ifndef BW_JOB_H
#define BW_JOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "qs/agg.h"

#include "fold.h"

#define BW_JOB_MAX_LISTED 100 /* file errors and invalid bodies listed in a run record */

typedef struct bw_job_opts {
  const char *source; /* directory or blob URL (blob.h) */
  const char *blob_key;
  const char *blob_sas;
  long blob_page_size;
  size_t max_file_bytes; /* largest Capture file read (blob downloads are held in memory) */
  size_t max_files;      /* most files one run reads */
  const char *gold_dir;  /* "" = no gold files */
  const char *event_hub; /* only files under ".../<event_hub>/p=<id>/..." (and files without a
                            p= component); "" = every hub */
  const char *gold_url;  /* blob container URL the gold files are also uploaded to; "" = none */
  double significant_threshold;
  int64_t retention_ms;       /* baseline hours only within the cutoff minus this */
  const char *const *regions; /* known region names (NULL-terminated), baseline for each */
  _Atomic int *cancel;        /* set (by the loop) to stop between files; may be NULL */
} bw_job_opts;

typedef struct bw_job_progress {
  _Atomic uint64_t files_total;
  _Atomic uint64_t files_done;
  _Atomic uint64_t records;
  _Atomic uint64_t bytes;
} bw_job_progress;

typedef struct bw_job_listed {
  char path[512];
  int64_t sequence; /* -1 for a file */
  char reason[256];
} bw_job_listed;

typedef struct bw_job_baseline {
  char region[QS_AGG_REGION_MAX + 1];
  qs_agg_baseline b;
} bw_job_baseline;

typedef struct bw_job_result {
  int rc; /* 0, or why the run failed as a whole (err) */
  char err[512];
  uint64_t files, files_ok, files_failed, files_empty;
  uint64_t records;         /* records of the files read completely */
  uint64_t bytes;           /* their bytes */
  uint64_t records_skipped; /* records read from files that failed part-way */
  uint64_t no_body;         /* records with a null Body (counted as invalid bodies) */
  uint64_t bad_enqueued_time;
  bw_fold_stats stats;
  bw_fold_result rows;
  size_t fold_bytes; /* memory of the fold at its peak */
  int64_t cutoff_ms;
  int64_t coverage_start_ms; /* earliest time any partition's capture says it covers; 0 none */
  size_t partitions;
  bw_job_baseline *baselines;
  size_t n_baselines;
  bw_job_listed file_errors[BW_JOB_MAX_LISTED];
  size_t n_file_errors;
  bw_job_listed invalid[BW_JOB_MAX_LISTED];
  size_t n_invalid;
  double seconds_read;     /* wall time reading and folding */
  double cpu_seconds_read; /* CPU time of the worker thread for the same (a per-core figure on a
                              busy machine) */
  double seconds_total;
} bw_job_result;

/* Runs the job; res is filled either way (res->rc says if it failed). Free with
 * bw_job_result_free. */
void bw_job_run(const bw_job_opts *o, bw_job_progress *prog, bw_job_result *res);
void bw_job_result_free(bw_job_result *res);

/* True when a Capture file name belongs to event_hub (see bw_job_opts.event_hub). */
int bw_job_hub_matches(const char *name, const char *event_hub);

/* Partition key and path time of a Capture file name ("ns/hub/p=3/2026/11/25/06/40/00.avro" ->
 * "ns/hub/p=3", epoch ms). *time_ms = -1 when the name has no Capture time. Exposed for tests. */
void bw_job_path_info(const char *name, char *partition, size_t cap, int64_t *time_ms);

#endif
