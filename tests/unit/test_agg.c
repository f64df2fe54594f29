/* test_agg.c — window assignment, exact add/retract/merge, JSON rows, cutoff merge, baseline.
 *
 * The property tests use a private splitmix64 generator with fixed seeds, so every run checks
 * the same thousands of cases and a failure is reproducible.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "qs/agg.h"
#include "qs/error.h"

#include <cjson/cJSON.h>
#include <inttypes.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static uint64_t rng_below(rng *r, uint64_t n) { return rng_next(r) % n; }

static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) / 9007199254740992.0; }

#define T0 INT64_C(1764000000000) /* 2025-11-24T16:00:00Z, an hour boundary */

/* A random contribution in [base, base + span): ~10% null magnitude, ~10% null depth. */
static qs_contrib random_contrib(rng *r, int64_t base, int64_t span) {
  qs_contrib c;
  int64_t t = base + (int64_t)rng_below(r, (uint64_t)span);
  double mag = rng_below(r, 10) == 0 ? NAN : -2.0 + 12.5 * rng_unit(r);
  double depth = rng_below(r, 10) == 0 ? NAN : -10.0 + 1010.0 * rng_unit(r);
  bool tsunami = rng_below(r, 20) == 0;
  assert_int_equal(qs_contrib_init(&c, t, mag, depth, tsunami, QS_AGG_SIGNIFICANT_DEFAULT), 0);
  return c;
}

static void shuffle(rng *r, qs_contrib *c, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)rng_below(r, i);
    qs_contrib t = c[i - 1];
    c[i - 1] = c[j];
    c[j] = t;
  }
}

static qs_contrib contrib(int64_t t, double mag, double depth, bool tsunami) {
  qs_contrib c;
  assert_int_equal(qs_contrib_init(&c, t, mag, depth, tsunami, QS_AGG_SIGNIFICANT_DEFAULT), 0);
  return c;
}

static char *row_json(const qs_agg_row *row) {
  char *s = NULL;
  size_t n = 0;
  assert_int_equal(qs_agg_row_to_json(row, &s, &n), 0);
  assert_int_equal(strlen(s), n);
  return s;
}

/* ---- windows ---- */

static void test_time_on_boundary_belongs_to_window_starting_there(void **state) {
  (void)state;
  int64_t s, e;
  assert_int_equal(qs_agg_window_of(T0, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, T0);
  assert_int_equal(e, T0 + QS_AGG_WINDOW_5MIN_MS);
  /* The previous window's end is this start, but the time is not in the previous window. */
  assert_int_equal(qs_agg_window_of(T0 + QS_AGG_WINDOW_5MIN_MS, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, T0 + QS_AGG_WINDOW_5MIN_MS);
}

static void test_time_one_ms_before_end_stays_in_window(void **state) {
  (void)state;
  int64_t s, e;
  assert_int_equal(qs_agg_window_of(T0 + QS_AGG_WINDOW_5MIN_MS - 1, QS_AGG_WINDOW_5MIN_MS, &s, &e),
                   0);
  assert_int_equal(s, T0);
  assert_int_equal(e, T0 + QS_AGG_WINDOW_5MIN_MS);
}

static void test_negative_times_floor_toward_minus_infinity(void **state) {
  (void)state;
  int64_t s, e;
  assert_int_equal(qs_agg_window_of(-1, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, -QS_AGG_WINDOW_5MIN_MS);
  assert_int_equal(e, 0);
  assert_int_equal(qs_agg_window_of(-QS_AGG_WINDOW_5MIN_MS, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, -QS_AGG_WINDOW_5MIN_MS);
  assert_int_equal(qs_agg_window_of(-QS_AGG_WINDOW_5MIN_MS - 1, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, -2 * QS_AGG_WINDOW_5MIN_MS);
  assert_int_equal(qs_agg_window_of(0, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  assert_int_equal(s, 0);
  assert_int_equal(qs_agg_window_of(QS_AGG_TIME_MIN_MS, QS_AGG_DAY_MS, &s, &e), 0);
  assert_int_equal(s, QS_AGG_TIME_MIN_MS);
}

static void test_hourly_and_daily_bins_are_epoch_aligned_utc(void **state) {
  (void)state;
  int64_t s, e;
  /* 2025-11-24T16:59:59.999Z -> hour 16:00, day 2025-11-24T00:00Z. */
  assert_int_equal(qs_agg_window_of(T0 + QS_AGG_HOUR_MS - 1, QS_AGG_HOUR_MS, &s, &e), 0);
  assert_int_equal(s, T0);
  assert_int_equal(e, T0 + QS_AGG_HOUR_MS);
  assert_int_equal(qs_agg_window_of(T0 + QS_AGG_HOUR_MS - 1, QS_AGG_DAY_MS, &s, &e), 0);
  assert_int_equal(s, T0 - 16 * QS_AGG_HOUR_MS);
  assert_int_equal(e, s + QS_AGG_DAY_MS);
}

static void test_window_rejects_bad_length_or_time(void **state) {
  (void)state;
  int64_t s = 7, e = 7;
  assert_int_equal(qs_agg_window_of(T0, 0, &s, &e), QS_ERR_RANGE);
  assert_int_equal(qs_agg_window_of(T0, -5, &s, &e), QS_ERR_RANGE);
  assert_int_equal(qs_agg_window_of(T0, QS_AGG_WINDOW_MAX_MS + 1, &s, &e), QS_ERR_RANGE);
  assert_int_equal(qs_agg_window_of(INT64_MIN, QS_AGG_HOUR_MS, &s, &e), QS_ERR_RANGE);
  assert_int_equal(qs_agg_window_of(INT64_MAX, QS_AGG_HOUR_MS, &s, &e), QS_ERR_RANGE);
  assert_int_equal(s, 7);
  assert_int_equal(e, 7);
}

static void test_iso8601_format_matches_to_iso_string(void **state) {
  (void)state;
  char buf[32];
  assert_int_equal(qs_agg_format_iso8601(0, buf, sizeof buf), 0);
  assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
  assert_int_equal(qs_agg_format_iso8601(T0 + 1234, buf, sizeof buf), 0);
  assert_string_equal(buf, "2025-11-24T16:00:01.234Z");
  assert_int_equal(qs_agg_format_iso8601(-1, buf, sizeof buf), 0);
  assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
  assert_int_equal(qs_agg_format_iso8601(951782400000, buf, sizeof buf), 0);
  assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
  assert_int_equal(qs_agg_format_iso8601(QS_AGG_TIME_MIN_MS, buf, sizeof buf), 0);
  assert_string_equal(buf, "0000-01-01T00:00:00.000Z");
  assert_int_equal(qs_agg_format_iso8601(QS_AGG_TIME_MAX_MS, buf, sizeof buf), 0);
  assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
  assert_int_equal(qs_agg_format_iso8601(QS_AGG_TIME_MAX_MS + 1, buf, sizeof buf), QS_ERR_RANGE);
  assert_int_equal(qs_agg_format_iso8601(0, buf, 24), QS_ERR_RANGE);
}

/* ---- contributions ---- */

static void test_contribution_rounds_once_to_micro_units(void **state) {
  (void)state;
  qs_contrib c = contrib(T0, 4.1234567, 10.0000004, false);
  assert_true(c.has_mag);
  assert_int_equal(c.mag_micro, 4123457);
  assert_int_equal(c.depth_micro, 10000000);
  assert_false(c.significant);
}

static void test_significance_compares_rounded_magnitude_with_threshold(void **state) {
  (void)state;
  assert_true(contrib(T0, 5.0, NAN, false).significant);
  assert_true(contrib(T0, 4.9999996, NAN, false).significant); /* rounds to 5.000000 */
  assert_false(contrib(T0, 4.9999994, NAN, false).significant);
  qs_contrib c;
  assert_int_equal(qs_contrib_init(&c, T0, 4.5, NAN, false, 4.5), 0);
  assert_true(c.significant);
  assert_int_equal(qs_contrib_init(&c, T0, 4.4, NAN, false, 4.5), 0);
  assert_false(c.significant);
}

static void test_contribution_rejects_out_of_range_values(void **state) {
  (void)state;
  qs_contrib c;
  memset(&c, 0x5a, sizeof c);
  qs_contrib before = c;
  assert_int_equal(qs_contrib_init(&c, T0, 10.6, 1, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, -2.1, 1, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, INFINITY, 1, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, 1e300, 1, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, 3, 1000.5, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, 3, -10.5, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, 3, -INFINITY, false, 5), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, T0, 3, 1, false, NAN), QS_ERR_RANGE);
  assert_int_equal(qs_contrib_init(&c, QS_AGG_TIME_MAX_MS + 1, 3, 1, false, 5), QS_ERR_RANGE);
  assert_memory_equal(&c, &before, sizeof c);
  /* The bounds themselves are accepted. */
  assert_int_equal(qs_contrib_init(&c, T0, -2, -10, false, 5), 0);
  assert_int_equal(qs_contrib_init(&c, T0, 10.5, 1000, false, 5), 0);
}

static void test_null_magnitude_and_depth_count_only_in_event_count(void **state) {
  (void)state;
  qs_agg a;
  double v;
  qs_agg_init(&a);
  qs_contrib c = contrib(T0, NAN, NAN, true);
  assert_false(c.has_mag);
  assert_false(c.has_depth);
  assert_false(c.significant);
  assert_int_equal(qs_agg_add(&a, &c), 0);
  assert_int_equal(a.event_count, 1);
  assert_int_equal(a.mag_count, 0);
  assert_int_equal(a.depth_count, 0);
  assert_int_equal(a.tsunami_count, 1);
  assert_int_equal(qs_agg_avg_magnitude(&a, &v), QS_ERR_NOTFOUND);
  assert_int_equal(qs_agg_min_magnitude(&a, &v), QS_ERR_NOTFOUND);
  assert_int_equal(qs_agg_max_magnitude(&a, &v), QS_ERR_NOTFOUND);
  assert_int_equal(qs_agg_avg_depth_km(&a, &v), QS_ERR_NOTFOUND);

  qs_contrib d = contrib(T0, 6.0, NAN, false);
  assert_int_equal(qs_agg_add(&a, &d), 0);
  assert_int_equal(qs_agg_avg_magnitude(&a, &v), 0);
  assert_true(v == 6.0); /* the null magnitude does not dilute the average */
  assert_int_equal(qs_agg_avg_depth_km(&a, &v), QS_ERR_NOTFOUND);

  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "hawaii", T0, T0 + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_add(&row, &c), 0);
  char *s = row_json(&row);
  assert_non_null(strstr(s, "\"avg_magnitude\":null,\"min_magnitude\":null,"
                            "\"max_magnitude\":null,\"avg_depth_km\":null"));
  free(s);
}

/* ---- add / retract ---- */

static void test_add_then_retract_random_subset_equals_fresh_aggregate(void **state) {
  (void)state;
  enum { CASES = 3000, MAXN = 64 };
  rng r = {UINT64_C(20261125)};
  qs_contrib all[MAXN], kept[MAXN];
  int stale_seen = 0;
  for (int k = 0; k < CASES; k++) {
    size_t n = 1 + (size_t)rng_below(&r, MAXN), nk = 0;
    qs_agg a, fresh;
    qs_agg_init(&a);
    qs_agg_init(&fresh);
    for (size_t i = 0; i < n; i++) {
      all[i] = random_contrib(&r, T0, QS_AGG_WINDOW_5MIN_MS);
      /* Duplicated magnitudes make min/max ties likely. */
      if (i > 0 && rng_below(&r, 4) == 0)
        all[i].mag_micro =
            all[i - 1].has_mag && all[i].has_mag ? all[i - 1].mag_micro : all[i].mag_micro;
      all[i].significant = all[i].has_mag && all[i].mag_micro >= 5000000;
      assert_int_equal(qs_agg_add(&a, &all[i]), 0);
    }
    /* Retract a random subset in a random order. */
    shuffle(&r, all, n);
    size_t nr = (size_t)rng_below(&r, n + 1);
    for (size_t i = 0; i < nr; i++) {
      int rc = qs_agg_retract(&a, &all[i]);
      assert_true(rc == 0 || rc == QS_AGG_MINMAX_STALE);
    }
    for (size_t i = nr; i < n; i++) {
      kept[nk++] = all[i];
      assert_int_equal(qs_agg_add(&fresh, &all[i]), 0);
    }
    if (a.minmax_stale) {
      stale_seen++;
      assert_int_equal(qs_agg_recompute_minmax(&a, kept, nk), 0);
    }
    assert_true(qs_agg_equal(&a, &fresh));
  }
  assert_true(stale_seen > 100); /* the recompute path was really exercised */
}

static void test_retracting_min_and_max_requires_recompute(void **state) {
  (void)state;
  qs_agg a;
  double v;
  qs_agg_init(&a);
  qs_contrib c[4] = {contrib(T0, 2.0, 5, false), contrib(T0, 3.0, 5, false),
                     contrib(T0, 4.0, 5, false), contrib(T0, 7.5, 5, true)};
  for (int i = 0; i < 4; i++)
    assert_int_equal(qs_agg_add(&a, &c[i]), 0);
  assert_int_equal(a.mag_min_micro, 2000000);
  assert_int_equal(a.mag_max_micro, 7500000);

  /* An interior value keeps min/max valid. */
  assert_int_equal(qs_agg_retract(&a, &c[1]), 0);
  assert_int_equal(qs_agg_min_magnitude(&a, &v), 0);
  assert_true(v == 2.0);

  /* The max: flagged, getters refuse, JSON refuses, until recomputed. */
  assert_int_equal(qs_agg_retract(&a, &c[3]), QS_AGG_MINMAX_STALE);
  assert_true(a.minmax_stale);
  assert_int_equal(qs_agg_max_magnitude(&a, &v), QS_ERR_STATE);
  qs_agg_row row;
  char *s = NULL;
  assert_int_equal(qs_agg_row_init(&row, "alaska", T0, T0 + QS_AGG_HOUR_MS), 0);
  row.agg = a;
  assert_int_equal(qs_agg_row_to_json(&row, &s, NULL), QS_ERR_STATE);
  assert_null(s);
  qs_contrib rest[2] = {c[0], c[2]};
  assert_int_equal(qs_agg_recompute_minmax(&a, rest, 2), 0);
  assert_int_equal(qs_agg_max_magnitude(&a, &v), 0);
  assert_true(v == 4.0);
  assert_int_equal(qs_agg_min_magnitude(&a, &v), 0);
  assert_true(v == 2.0);

  /* The min. */
  assert_int_equal(qs_agg_retract(&a, &c[0]), QS_AGG_MINMAX_STALE);
  assert_int_equal(qs_agg_recompute_minmax(&a, &c[2], 1), 0);
  assert_int_equal(qs_agg_min_magnitude(&a, &v), 0);
  assert_true(v == 4.0);

  /* The last magnitude: nothing left to be extreme, no recompute needed. */
  assert_int_equal(qs_agg_retract(&a, &c[2]), 0);
  assert_false(a.minmax_stale);
  qs_agg empty;
  qs_agg_init(&empty);
  assert_true(qs_agg_equal(&a, &empty));
}

static void test_retracting_a_non_member_is_rejected_and_changes_nothing(void **state) {
  (void)state;
  qs_agg a, before;
  qs_agg_init(&a);
  qs_contrib in = contrib(T0, 3.0, 10, false);
  assert_int_equal(qs_agg_add(&a, &in), 0);
  before = a;
  qs_contrib above = contrib(T0, 3.5, 10, false);
  qs_contrib tsu = contrib(T0, 3.0, 10, true);
  qs_contrib sig = contrib(T0, 3.0, 10, false);
  sig.significant = true; /* hand-made, inconsistent with nothing but the aggregate */
  assert_int_equal(qs_agg_retract(&a, &above), QS_ERR_STATE);
  assert_int_equal(qs_agg_retract(&a, &tsu), QS_ERR_STATE);
  assert_int_equal(qs_agg_retract(&a, &sig), QS_ERR_STATE);
  assert_true(qs_agg_equal(&a, &before));
  qs_agg empty;
  qs_agg_init(&empty);
  assert_int_equal(qs_agg_retract(&empty, &in), QS_ERR_STATE);
  /* A hand-built contribution outside the bounds is refused by add and retract. */
  qs_contrib bad = in;
  bad.mag_micro = 11000000;
  assert_int_equal(qs_agg_add(&a, &bad), QS_ERR_INVALID);
  assert_int_equal(qs_agg_retract(&a, &bad), QS_ERR_INVALID);
  assert_true(qs_agg_equal(&a, &before));
}

static void test_recompute_minmax_rejects_a_wrong_member_list(void **state) {
  (void)state;
  qs_agg a;
  qs_agg_init(&a);
  qs_contrib c[3] = {contrib(T0, 1.0, 1, false), contrib(T0, 2.0, 1, false),
                     contrib(T0, 3.0, 1, false)};
  for (int i = 0; i < 3; i++)
    assert_int_equal(qs_agg_add(&a, &c[i]), 0);
  assert_int_equal(qs_agg_retract(&a, &c[2]), QS_AGG_MINMAX_STALE);
  qs_agg before = a;
  assert_int_equal(qs_agg_recompute_minmax(&a, c, 3), QS_ERR_INVALID); /* retracted one included */
  assert_int_equal(qs_agg_recompute_minmax(&a, c, 1), QS_ERR_INVALID); /* one missing */
  assert_true(qs_agg_equal(&a, &before));
  assert_true(a.minmax_stale);
  assert_int_equal(qs_agg_recompute_minmax(&a, c, 2), 0);
  assert_int_equal(a.mag_max_micro, 2000000);
}

static void test_add_refuses_past_max_count(void **state) {
  (void)state;
  qs_agg a, b;
  qs_agg_init(&a);
  a.event_count = QS_AGG_MAX_COUNT;
  qs_contrib c = contrib(T0, NAN, NAN, false);
  assert_int_equal(qs_agg_add(&a, &c), QS_ERR_RANGE);
  assert_int_equal(a.event_count, QS_AGG_MAX_COUNT);
  qs_agg_init(&b);
  assert_int_equal(qs_agg_add(&b, &c), 0);
  assert_int_equal(qs_agg_merge(&a, &b), QS_ERR_RANGE);
  assert_int_equal(a.event_count, QS_AGG_MAX_COUNT);
}

/* ---- order independence, merge ---- */

static void test_shuffled_contributions_give_byte_identical_json(void **state) {
  (void)state;
  enum { N = 500 };
  rng r = {42};
  qs_contrib c[N];
  for (int i = 0; i < N; i++)
    c[i] = random_contrib(&r, T0, QS_AGG_HOUR_MS);
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "us-west", T0, T0 + QS_AGG_HOUR_MS), 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(qs_agg_row_add(&row, &c[i]), 0);
  char *first = row_json(&row);
  for (int k = 0; k < 50; k++) {
    shuffle(&r, c, N);
    assert_int_equal(qs_agg_row_init(&row, "us-west", T0, T0 + QS_AGG_HOUR_MS), 0);
    for (int i = 0; i < N; i++)
      assert_int_equal(qs_agg_row_add(&row, &c[i]), 0);
    char *again = row_json(&row);
    assert_string_equal(first, again);
    free(again);
  }
  free(first);
}

/* A random aggregate of 0..7 events; the same events are also added to *whole. */
static void random_agg(rng *r, qs_agg *a, qs_agg *whole) {
  qs_agg_init(a);
  size_t n = (size_t)rng_below(r, 8);
  for (size_t i = 0; i < n; i++) {
    qs_contrib c = random_contrib(r, T0, QS_AGG_HOUR_MS);
    assert_int_equal(qs_agg_add(a, &c), 0);
    assert_int_equal(qs_agg_add(whole, &c), 0);
  }
}

static void test_merge_is_associative_and_commutative(void **state) {
  (void)state;
  rng r = {7};
  for (int k = 0; k < 2000; k++) {
    qs_agg a, b, c, ab_c, a_bc, bc, ba, whole;
    qs_agg_init(&whole);
    random_agg(&r, &a, &whole);
    random_agg(&r, &b, &whole);
    random_agg(&r, &c, &whole);
    ab_c = a;
    assert_int_equal(qs_agg_merge(&ab_c, &b), 0);
    assert_int_equal(qs_agg_merge(&ab_c, &c), 0);
    bc = b;
    assert_int_equal(qs_agg_merge(&bc, &c), 0);
    a_bc = a;
    assert_int_equal(qs_agg_merge(&a_bc, &bc), 0);
    assert_true(qs_agg_equal(&ab_c, &a_bc));
    assert_true(qs_agg_equal(&ab_c, &whole)); /* merging equals adding every event to one */
    ba = b;
    assert_int_equal(qs_agg_merge(&ba, &a), 0);
    qs_agg ab = a;
    assert_int_equal(qs_agg_merge(&ab, &b), 0);
    assert_true(qs_agg_equal(&ab, &ba));
  }
}

static void test_merge_of_a_stale_aggregate_is_stale(void **state) {
  (void)state;
  qs_agg a, b;
  qs_agg_init(&a);
  qs_agg_init(&b);
  qs_contrib c1 = contrib(T0, 2, 1, false), c2 = contrib(T0, 3, 1, false);
  assert_int_equal(qs_agg_add(&a, &c1), 0);
  assert_int_equal(qs_agg_add(&a, &c2), 0);
  assert_int_equal(qs_agg_retract(&a, &c2), QS_AGG_MINMAX_STALE);
  assert_int_equal(qs_agg_add(&b, &c2), 0);
  assert_int_equal(qs_agg_merge(&b, &a), 0);
  assert_true(b.minmax_stale);
  assert_int_equal(b.event_count, 2);
}

static void test_hour_rollup_of_twelve_5min_windows_equals_direct_hour(void **state) {
  (void)state;
  enum { N = 2000 };
  rng r = {1234};
  qs_agg_row fives[12], hour, direct;
  for (int w = 0; w < 12; w++)
    assert_int_equal(qs_agg_row_init(&fives[w], "japan", T0 + w * QS_AGG_WINDOW_5MIN_MS,
                                     T0 + (w + 1) * QS_AGG_WINDOW_5MIN_MS),
                     0);
  assert_int_equal(qs_agg_row_init(&direct, "japan", T0, T0 + QS_AGG_HOUR_MS), 0);
  for (int i = 0; i < N; i++) {
    qs_contrib c = random_contrib(&r, T0, QS_AGG_HOUR_MS);
    if (i % 100 == 0) /* make sure the boundaries themselves are hit */
      c.time_ms = T0 + (i / 100 % 12) * QS_AGG_WINDOW_5MIN_MS;
    int64_t s, e;
    assert_int_equal(qs_agg_window_of(c.time_ms, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
    int w = (int)((s - T0) / QS_AGG_WINDOW_5MIN_MS);
    assert_int_equal(qs_agg_row_add(&fives[w], &c), 0);
    assert_int_equal(qs_agg_row_add(&direct, &c), 0);
  }
  int64_t hs, he;
  assert_int_equal(qs_agg_window_of(fives[5].window_start_ms, QS_AGG_HOUR_MS, &hs, &he), 0);
  assert_int_equal(qs_agg_row_init(&hour, "japan", hs, he), 0);
  for (int w = 11; w >= 0; w--) /* any order */
    assert_int_equal(qs_agg_row_rollup(&hour, &fives[w]), 0);
  assert_true(qs_agg_equal(&hour.agg, &direct.agg));
  char *a = row_json(&hour), *b = row_json(&direct);
  assert_string_equal(a, b);
  free(a);
  free(b);

  /* A window outside the hour, or of another region, is refused. */
  qs_agg_row other;
  assert_int_equal(qs_agg_row_init(&other, "japan", he, he + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_rollup(&hour, &other), QS_ERR_INVALID);
  assert_int_equal(qs_agg_row_init(&other, "alaska", hs, hs + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_rollup(&hour, &other), QS_ERR_INVALID);
  assert_true(qs_agg_equal(&hour.agg, &direct.agg));
}

static void test_row_add_refuses_event_outside_window(void **state) {
  (void)state;
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "hawaii", T0, T0 + QS_AGG_WINDOW_5MIN_MS), 0);
  qs_contrib end = contrib(T0 + QS_AGG_WINDOW_5MIN_MS, 3, 3, false);
  qs_contrib before = contrib(T0 - 1, 3, 3, false);
  assert_int_equal(qs_agg_row_add(&row, &end), QS_ERR_RANGE);
  assert_int_equal(qs_agg_row_add(&row, &before), QS_ERR_RANGE);
  assert_int_equal(row.agg.event_count, 0);
  assert_int_equal(qs_agg_row_init(&row, "", T0, T0 + 1), QS_ERR_INVALID);
  assert_int_equal(qs_agg_row_init(&row, "us west", T0, T0 + 1), QS_ERR_INVALID);
  assert_int_equal(qs_agg_row_init(&row, NULL, T0, T0 + 1), QS_ERR_INVALID);
  char longname[QS_AGG_REGION_MAX + 2];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  assert_int_equal(qs_agg_row_init(&row, longname, T0, T0 + 1), QS_ERR_INVALID);
  longname[QS_AGG_REGION_MAX] = '\0';
  assert_int_equal(qs_agg_row_init(&row, longname, T0, T0 + 1), 0);
  assert_int_equal(qs_agg_row_init(&row, "x", T0, T0), QS_ERR_RANGE);
}

/* ---- JSON ---- */

static void test_json_has_fixed_field_order_and_integer_sums(void **state) {
  (void)state;
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "us-west", T0, T0 + QS_AGG_WINDOW_5MIN_MS), 0);
  qs_contrib a = contrib(T0, 4.5, 10.25, false), b = contrib(T0 + 1, 5.25, NAN, true);
  assert_int_equal(qs_agg_row_add(&row, &a), 0);
  assert_int_equal(qs_agg_row_add(&row, &b), 0);
  char *s = row_json(&row);
  assert_string_equal(
      s,
      "{\"window_start\":\"2025-11-24T16:00:00.000Z\",\"window_end\":\"2025-11-24T16:05:00.000Z\","
      "\"window_start_ms\":1764000000000,\"window_end_ms\":1764000300000,\"region\":\"us-west\","
      "\"event_count\":2,\"avg_magnitude\":4.875,\"min_magnitude\":4.5,\"max_magnitude\":5.25,"
      "\"avg_depth_km\":10.25,\"significant_count\":1,\"tsunami_count\":1,\"tsunami_alerts\":1,"
      "\"mag_sum_micro\":9750000,\"mag_count\":2,\"depth_sum_micro\":10250000,"
      "\"depth_count\":1}");
  free(s);
}

static void test_json_round_trip_preserves_rows(void **state) {
  (void)state;
  rng r = {99};
  for (int k = 0; k < 1000; k++) {
    qs_agg_row row, back;
    /* Windows from about 1930 to 2120, so pre-epoch (negative) times are covered. */
    int64_t start = T0 + ((int64_t)rng_below(&r, 2000) - 1000) * QS_AGG_WINDOW_5MIN_MS * 10000;
    assert_int_equal(qs_agg_row_init(&row, "us-central", start, start + QS_AGG_WINDOW_5MIN_MS), 0);
    size_t n = (size_t)rng_below(&r, 20);
    for (size_t i = 0; i < n; i++) {
      qs_contrib c = random_contrib(&r, start, QS_AGG_WINDOW_5MIN_MS);
      assert_int_equal(qs_agg_row_add(&row, &c), 0);
    }
    char *s = row_json(&row);
    assert_int_equal(qs_agg_row_from_json(&back, s, strlen(s)), 0);
    assert_int_equal(back.window_start_ms, row.window_start_ms);
    assert_int_equal(back.window_end_ms, row.window_end_ms);
    assert_string_equal(back.region, row.region);
    assert_true(qs_agg_equal(&back.agg, &row.agg));
    char *again = row_json(&back);
    assert_string_equal(s, again);
    free(s);
    free(again);
  }
}

static void test_json_decode_rejects_invalid_rows(void **state) {
  (void)state;
  static const char *const good =
      "{\"window_start\":\"2025-11-24T16:00:00.000Z\",\"window_end\":\"2025-11-24T16:05:00.000Z\","
      "\"window_start_ms\":1764000000000,\"window_end_ms\":1764000300000,\"region\":\"us-west\","
      "\"event_count\":2,\"avg_magnitude\":4.875,\"min_magnitude\":4.5,\"max_magnitude\":5.25,"
      "\"avg_depth_km\":10.25,\"significant_count\":1,\"tsunami_count\":1,\"tsunami_alerts\":1,"
      "\"mag_sum_micro\":9750000,\"mag_count\":2,\"depth_sum_micro\":10250000,"
      "\"depth_count\":1}";
  /* Each case replaces one exact substring of the good row. */
  static const struct {
    const char *from, *to;
  } cases[] = {
      {"\"event_count\":2", "\"event_count\":1"},     /* mag_count > event_count */
      {"\"event_count\":2", "\"event_count\":-1"},    /* negative */
      {"\"event_count\":2", "\"event_count\":2.5"},   /* not integral */
      {"\"event_count\":2", "\"event_count\":\"2\""}, /* wrong type */
      {"\"event_count\":2,", ""},                     /* missing */
      {"\"significant_count\":1", "\"significant_count\":3"},
      {"\"tsunami_alerts\":1", "\"tsunami_alerts\":0"},            /* alias disagrees */
      {"\"min_magnitude\":4.5", "\"min_magnitude\":5.5"},          /* min > max */
      {"\"min_magnitude\":4.5", "\"min_magnitude\":null"},         /* null with mag_count > 0 */
      {"\"max_magnitude\":5.25", "\"max_magnitude\":11"},          /* out of bounds */
      {"\"mag_sum_micro\":9750000", "\"mag_sum_micro\":99750000"}, /* sum above count*max */
      {"\"mag_sum_micro\":9750000", "\"mag_sum_micro\":8000000"},  /* sum below count*min */
      {"\"depth_sum_micro\":10250000", "\"depth_sum_micro\":1000000001"},
      {"\"avg_depth_km\":10.25", "\"avg_depth_km\":null"},
      {"\"window_end_ms\":1764000300000", "\"window_end_ms\":1764000000000"}, /* empty window */
      {"\"window_start\":\"2025-11-24T16:00:00.000Z\"", "\"window_start\":\"2025-11-24\""},
      {"\"region\":\"us-west\"", "\"region\":\"us west\""},
      {"\"region\":\"us-west\"", "\"region\":7"},
  };
  qs_agg_row row;
  assert_int_equal(qs_agg_row_from_json(&row, good, strlen(good)), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *at = strstr(good, cases[i].from);
    assert_non_null(at);
    char buf[1024];
    size_t pre = (size_t)(at - good);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)pre, good, cases[i].to, at + strlen(cases[i].from));
    memset(&row, 0x33, sizeof row);
    qs_agg_row before = row;
    int rc = qs_agg_row_from_json(&row, buf, strlen(buf));
    if (rc != QS_ERR_INVALID)
      print_error("case %zu: %s -> %d\n", i, buf, rc);
    assert_int_equal(rc, QS_ERR_INVALID);
    assert_memory_equal(&row, &before, sizeof row);
  }
  assert_int_equal(qs_agg_row_from_json(&row, "{\"event_count\":", 15), QS_ERR_PARSE);
  assert_int_equal(qs_agg_row_from_json(&row, "[]", 2), QS_ERR_INVALID);
  char *big = calloc(QS_AGG_JSON_MAX + 2, 1);
  assert_non_null(big);
  memset(big, ' ', QS_AGG_JSON_MAX + 1);
  assert_int_equal(qs_agg_row_from_json(&row, big, QS_AGG_JSON_MAX + 1), QS_ERR_TOOBIG);
  free(big);
}

/* ---- cutoff merge ---- */

static void test_cutoff_merge_counts_each_event_once(void **state) {
  (void)state;
  const int64_t cutoff = T0 + 6 * QS_AGG_HOUR_MS;
  /* One event in the last ms of the hour before the cutoff, one exactly on the cutoff. */
  qs_contrib before = contrib(cutoff - 1, 4.0, 10, false);
  qs_contrib on = contrib(cutoff, 6.0, 20, true);

  /* Batch saw both events (its hour after the cutoff is incomplete but present). */
  qs_agg_row batch[2];
  assert_int_equal(qs_agg_row_init(&batch[0], "alaska", cutoff - QS_AGG_HOUR_MS, cutoff), 0);
  assert_int_equal(qs_agg_row_add(&batch[0], &before), 0);
  assert_int_equal(qs_agg_row_init(&batch[1], "alaska", cutoff, cutoff + QS_AGG_HOUR_MS), 0);
  assert_int_equal(qs_agg_row_add(&batch[1], &on), 0);
  /* Speed saw both too, in 5-minute windows on either side. */
  qs_agg_row speed[3];
  assert_int_equal(qs_agg_row_init(&speed[0], "alaska", cutoff - QS_AGG_WINDOW_5MIN_MS, cutoff), 0);
  assert_int_equal(qs_agg_row_add(&speed[0], &before), 0);
  assert_int_equal(qs_agg_row_init(&speed[1], "alaska", cutoff, cutoff + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_add(&speed[1], &on), 0);
  assert_int_equal(qs_agg_row_init(&speed[2], "hawaii", cutoff, cutoff + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_add(&speed[2], &on), 0);

  qs_agg_cutoff_merge m;
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, cutoff, "alaska", batch, 2, speed, 3), 0);
  assert_int_equal(m.agg.event_count, 2);
  assert_int_equal(m.batch_used, 1);
  assert_int_equal(m.batch_skipped, 1);
  assert_int_equal(m.speed_used, 1);
  assert_int_equal(m.speed_skipped, 1);
  assert_int_equal(m.source, QS_AGG_SOURCE_BATCH_REALTIME);
  assert_string_equal(qs_agg_source_name(m.source), "batch+realtime");
  qs_agg expect;
  qs_agg_init(&expect);
  assert_int_equal(qs_agg_add(&expect, &before), 0);
  assert_int_equal(qs_agg_add(&expect, &on), 0);
  assert_true(qs_agg_equal(&m.agg, &expect));
  double avg;
  assert_int_equal(qs_agg_avg_magnitude(&m.agg, &avg), 0);
  assert_true(avg == 5.0); /* weighted by counts */

  /* Region filter and source labels. */
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, cutoff, "hawaii", batch, 2, speed, 3), 0);
  assert_int_equal(m.source, QS_AGG_SOURCE_REALTIME_ONLY);
  assert_int_equal(m.agg.event_count, 1);
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, cutoff, "alaska", batch, 2, NULL, 0), 0);
  assert_int_equal(m.source, QS_AGG_SOURCE_BATCH_ONLY);
  assert_string_equal(qs_agg_source_name(m.source), "batch-only");
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, cutoff, "peru", batch, 2, speed, 3), 0);
  assert_int_equal(m.source, QS_AGG_SOURCE_NONE);
}

static void test_cutoff_inside_an_hour_is_floored_and_straddling_rows_refused(void **state) {
  (void)state;
  const int64_t hour = T0 + 3 * QS_AGG_HOUR_MS;
  qs_contrib early = contrib(hour + 60000, 3.0, 5, false); /* 00:01 into the hour */
  qs_agg_row batch, speed;
  assert_int_equal(qs_agg_row_init(&batch, "us-east", hour - QS_AGG_HOUR_MS, hour), 0);
  assert_int_equal(qs_agg_row_init(&speed, "us-east", hour, hour + QS_AGG_WINDOW_5MIN_MS), 0);
  assert_int_equal(qs_agg_row_add(&speed, &early), 0);
  qs_agg_cutoff_merge m;
  /* A cutoff of hh:30 is treated as hh:00, so the early event is not lost. */
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, hour + 30 * 60000, NULL, &batch, 1, &speed, 1), 0);
  assert_int_equal(m.effective_cutoff_ms, hour);
  assert_int_equal(m.agg.event_count, 1);
  assert_int_equal(m.speed_used, 1);
  /* A daily batch row across the cutoff cannot be split: refused, result untouched. */
  qs_agg_row day;
  assert_int_equal(qs_agg_row_init(&day, "us-east", hour - QS_AGG_HOUR_MS,
                                   hour - QS_AGG_HOUR_MS + QS_AGG_DAY_MS),
                   0);
  qs_agg_cutoff_merge before = m;
  assert_int_equal(qs_agg_cutoff_merge_rows(&m, hour, NULL, &day, 1, &speed, 1), QS_ERR_INVALID);
  assert_memory_equal(&m, &before, sizeof m);
}

/* ---- speed vs batch ---- */

enum { SIM_IDS = 300, SIM_OPS = 3000, SIM_WINDOWS = 36, SIM_HOURS = 3 };

/* The speed layer's view: one aggregate per 5-minute window, updated in arrival order. */
typedef struct sim {
  qs_contrib current[SIM_IDS]; /* latest revision of each id */
  bool live[SIM_IDS];
  qs_agg_row windows[SIM_WINDOWS];
} sim;

static int sim_window(const qs_contrib *c) {
  int64_t s, e;
  assert_int_equal(qs_agg_window_of(c->time_ms, QS_AGG_WINDOW_5MIN_MS, &s, &e), 0);
  return (int)((s - T0) / QS_AGG_WINDOW_5MIN_MS);
}

static void sim_retract(sim *m, int id) {
  int w = sim_window(&m->current[id]);
  m->live[id] = false;
  int rc = qs_agg_retract(&m->windows[w].agg, &m->current[id]);
  if (rc == QS_AGG_MINMAX_STALE) {
    qs_contrib members[SIM_IDS];
    size_t n = 0;
    for (int i = 0; i < SIM_IDS; i++)
      if (m->live[i] && sim_window(&m->current[i]) == w)
        members[n++] = m->current[i];
    assert_int_equal(qs_agg_recompute_minmax(&m->windows[w].agg, members, n), 0);
  } else {
    assert_int_equal(rc, 0);
  }
}

static void test_speed_windows_rolled_up_equal_batch_hours_exactly(void **state) {
  (void)state;
  rng r = {UINT64_C(0x5eed)};
  sim *m = calloc(1, sizeof *m);
  assert_non_null(m);
  for (int w = 0; w < SIM_WINDOWS; w++)
    assert_int_equal(qs_agg_row_init(&m->windows[w], "us-west", T0 + w * QS_AGG_WINDOW_5MIN_MS,
                                     T0 + (w + 1) * QS_AGG_WINDOW_5MIN_MS),
                     0);
  bool ever[SIM_IDS] = {false};
  int revisions = 0, deletions = 0;
  for (int op = 0; op < SIM_OPS; op++) {
    int id = (int)rng_below(&r, SIM_IDS);
    if (ever[id] && m->live[id] && rng_below(&r, 6) == 0) {
      sim_retract(m, id); /* deletion or superseded id */
      deletions++;
      continue;
    }
    /* A new event or a revision that may move it to another window (relocated origin time),
     * sometimes onto a boundary exactly. */
    qs_contrib c = random_contrib(&r, T0, SIM_HOURS * QS_AGG_HOUR_MS);
    if (rng_below(&r, 8) == 0)
      c.time_ms = T0 + (int64_t)rng_below(&r, SIM_WINDOWS) * QS_AGG_WINDOW_5MIN_MS;
    if (m->live[id]) {
      sim_retract(m, id);
      revisions++;
    }
    m->current[id] = c;
    m->live[id] = true;
    ever[id] = true;
    assert_int_equal(qs_agg_row_add(&m->windows[sim_window(&c)], &c), 0);
  }
  assert_true(revisions > 500 && deletions > 200);

  /* The batch layer: final states only, latest revision wins, in another order, per hour. */
  qs_agg_row batch[SIM_HOURS], rolled[SIM_HOURS];
  for (int h = 0; h < SIM_HOURS; h++) {
    assert_int_equal(qs_agg_row_init(&batch[h], "us-west", T0 + h * QS_AGG_HOUR_MS,
                                     T0 + (h + 1) * QS_AGG_HOUR_MS),
                     0);
    rolled[h] = batch[h];
  }
  for (int id = SIM_IDS - 1; id >= 0; id--) {
    if (!m->live[id])
      continue;
    int64_t s, e;
    assert_int_equal(qs_agg_window_of(m->current[id].time_ms, QS_AGG_HOUR_MS, &s, &e), 0);
    assert_int_equal(qs_agg_row_add(&batch[(s - T0) / QS_AGG_HOUR_MS], &m->current[id]), 0);
  }
  for (int w = 0; w < SIM_WINDOWS; w++)
    assert_int_equal(qs_agg_row_rollup(&rolled[w / 12], &m->windows[w]), 0);
  for (int h = 0; h < SIM_HOURS; h++) {
    assert_true(qs_agg_equal(&rolled[h].agg, &batch[h].agg));
    char *a = row_json(&rolled[h]), *b = row_json(&batch[h]);
    assert_string_equal(a, b);
    free(a);
    free(b);
  }

  /* Serving: batch before the cutoff + speed from it = everything, counted once. */
  qs_agg all;
  qs_agg_init(&all);
  for (int h = 0; h < SIM_HOURS; h++)
    assert_int_equal(qs_agg_merge(&all, &batch[h].agg), 0);
  for (int cut_h = 0; cut_h <= SIM_HOURS; cut_h++) {
    qs_agg_cutoff_merge cm;
    assert_int_equal(qs_agg_cutoff_merge_rows(&cm, T0 + cut_h * QS_AGG_HOUR_MS, "us-west", batch,
                                              SIM_HOURS, m->windows, SIM_WINDOWS),
                     0);
    assert_true(qs_agg_equal(&cm.agg, &all));
    assert_int_equal(cm.batch_used, (size_t)cut_h);
    assert_int_equal(cm.speed_used, (size_t)(SIM_WINDOWS - 12 * cut_h));
  }
  free(m);
}

static void test_json_decode_survives_corrupted_input(void **state) {
  (void)state;
  rng r = {31337};
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "alaska", T0, T0 + QS_AGG_HOUR_MS), 0);
  for (int i = 0; i < 10; i++) {
    qs_contrib c = random_contrib(&r, T0, QS_AGG_HOUR_MS);
    assert_int_equal(qs_agg_row_add(&row, &c), 0);
  }
  char *good = row_json(&row);
  size_t n = strlen(good);
  int accepted = 0;
  for (int k = 0; k < 20000; k++) {
    char buf[1024];
    memcpy(buf, good, n + 1);
    int flips = 1 + (int)rng_below(&r, 3);
    for (int f = 0; f < flips; f++)
      buf[rng_below(&r, n)] = "0123456789.-e,:{}\"n x"[rng_below(&r, 21)];
    size_t len = (size_t)rng_below(&r, 8) == 0 ? (size_t)rng_below(&r, n + 1) : n;
    qs_agg_row back;
    int rc = qs_agg_row_from_json(&back, buf, len);
    if (rc == 0) {
      /* Whatever is accepted is a consistent row that encodes again. */
      accepted++;
      char *again = NULL;
      assert_int_equal(qs_agg_row_to_json(&back, &again, NULL), 0);
      free(again);
    } else {
      assert_true(rc == QS_ERR_PARSE || rc == QS_ERR_INVALID);
    }
  }
  assert_true(accepted > 0);
  free(good);
}

/* ---- baseline ---- */

static void test_baseline_uses_sample_stddev_and_sqrt_window_scaling(void **state) {
  (void)state;
  qs_agg_baseline b;
  double mean, sd, thr;
  qs_agg_baseline_init(&b);
  /* Hours 2, 4, 4, 4, 5, 5, 7, 9 -> mean 5, population sd 2, sample sd sqrt(32/7). */
  const int64_t counts[] = {2, 4, 4, 4, 5, 5, 7, 9};
  for (size_t i = 0; i < 8; i++)
    assert_int_equal(qs_agg_baseline_add_hour(&b, counts[i]), 0);
  assert_int_equal(qs_agg_baseline_hourly(&b, &mean, &sd), 0);
  assert_true(mean == 5.0);
  assert_true(fabs(sd - sqrt(32.0 / 7.0)) < 1e-12);
  /* Scaled to 5 minutes: mean/12 + 2 * sd * sqrt(1/12). */
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_WINDOW_5MIN_MS, 2.0, &thr), 0);
  assert_true(fabs(thr - (5.0 / 12 + 2 * sqrt(32.0 / 7.0) * sqrt(1.0 / 12))) < 1e-12);
  /* One hour: the hourly mean + 2 sd, unscaled. */
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_HOUR_MS, 2.0, &thr), 0);
  assert_true(fabs(thr - (5.0 + 2 * sqrt(32.0 / 7.0))) < 1e-12);
}

static void test_baseline_counts_empty_hours_as_zero(void **state) {
  (void)state;
  qs_agg_baseline b, c;
  double m1, s1, m2, s2;
  qs_agg_baseline_init(&b);
  qs_agg_baseline_init(&c);
  assert_int_equal(qs_agg_baseline_add_hour(&b, 6), 0);
  assert_int_equal(qs_agg_baseline_add_empty_hours(&b, 2), 0);
  assert_int_equal(qs_agg_baseline_add_hour(&c, 0), 0);
  assert_int_equal(qs_agg_baseline_add_hour(&c, 6), 0);
  assert_int_equal(qs_agg_baseline_add_hour(&c, 0), 0);
  assert_int_equal(qs_agg_baseline_hourly(&b, &m1, &s1), 0);
  assert_int_equal(qs_agg_baseline_hourly(&c, &m2, &s2), 0);
  assert_true(m1 == 2.0 && m1 == m2 && s1 == s2);
  assert_true(fabs(s1 - sqrt(12.0)) < 1e-12);
}

static void test_baseline_needs_two_hours_and_valid_input(void **state) {
  (void)state;
  qs_agg_baseline b;
  double m, s, t;
  qs_agg_baseline_init(&b);
  assert_int_equal(qs_agg_baseline_hourly(&b, &m, &s), QS_ERR_NOTFOUND);
  assert_int_equal(qs_agg_baseline_add_hour(&b, 3), 0);
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_HOUR_MS, 2, &t), QS_ERR_NOTFOUND);
  assert_int_equal(qs_agg_baseline_add_hour(&b, -1), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_add_hour(&b, QS_AGG_BASELINE_MAX_HOURLY + 1), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_add_empty_hours(&b, QS_AGG_BASELINE_MAX_HOURS), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_add_empty_hours(&b, 1), 0);
  assert_int_equal(qs_agg_baseline_threshold(&b, 0, 2, &t), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_HOUR_MS, -1, &t), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_HOUR_MS, NAN, &t), QS_ERR_RANGE);
  assert_int_equal(qs_agg_baseline_threshold(&b, QS_AGG_HOUR_MS, 2, &t), 0);
  /* Largest inputs stay exact. */
  qs_agg_baseline big;
  qs_agg_baseline_init(&big);
  assert_int_equal(qs_agg_baseline_add_hour(&big, QS_AGG_BASELINE_MAX_HOURLY), 0);
  assert_int_equal(qs_agg_baseline_add_empty_hours(&big, QS_AGG_BASELINE_MAX_HOURS - 1), 0);
  assert_int_equal(qs_agg_baseline_hourly(&big, &m, &s), 0);
  assert_true(m == 1.0);
}

/* The reference for qs_agg_row_to_json's direct writer: the cJSON object it used to print. */
static bool ref_add_int(cJSON *o, const char *name, int64_t v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRId64, v);
  return cJSON_AddRawToObject(o, name, buf) != NULL;
}

static bool ref_add_opt(cJSON *o, const char *name, int rc, double v) {
  return (rc == 0 ? cJSON_AddNumberToObject(o, name, v) : cJSON_AddNullToObject(o, name)) != NULL;
}

static char *ref_row_json(const qs_agg_row *row) {
  const qs_agg *a = &row->agg;
  char ws[32], we[32];
  double avg = 0, mn = 0, mx = 0, dep = 0;
  assert_int_equal(qs_agg_format_iso8601(row->window_start_ms, ws, sizeof ws), 0);
  assert_int_equal(qs_agg_format_iso8601(row->window_end_ms, we, sizeof we), 0);
  int ra = qs_agg_avg_magnitude(a, &avg), rn = qs_agg_min_magnitude(a, &mn);
  int rx = qs_agg_max_magnitude(a, &mx), rd = qs_agg_avg_depth_km(a, &dep);
  cJSON *o = cJSON_CreateObject();
  bool ok = cJSON_AddStringToObject(o, "window_start", ws) &&
            cJSON_AddStringToObject(o, "window_end", we) &&
            ref_add_int(o, "window_start_ms", row->window_start_ms) &&
            ref_add_int(o, "window_end_ms", row->window_end_ms) &&
            cJSON_AddStringToObject(o, "region", row->region) &&
            ref_add_int(o, "event_count", a->event_count) &&
            ref_add_opt(o, "avg_magnitude", ra, avg) && ref_add_opt(o, "min_magnitude", rn, mn) &&
            ref_add_opt(o, "max_magnitude", rx, mx) && ref_add_opt(o, "avg_depth_km", rd, dep) &&
            ref_add_int(o, "significant_count", a->significant_count) &&
            ref_add_int(o, "tsunami_count", a->tsunami_count) &&
            ref_add_int(o, "tsunami_alerts", a->tsunami_count) &&
            ref_add_int(o, "mag_sum_micro", a->mag_sum_micro) &&
            ref_add_int(o, "mag_count", a->mag_count) &&
            ref_add_int(o, "depth_sum_micro", a->depth_sum_micro) &&
            ref_add_int(o, "depth_count", a->depth_count);
  assert_true(ok);
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* The row text is byte for byte what the cJSON object printed, on thousands of aggregates: sums
 * and counts from small to 2^53, averages that need 15 or 17 digits, nulls, negative depths. */
static void test_row_json_is_byte_identical_to_the_cjson_rendering(void **state) {
  (void)state;
  rng r = {42};
  char buf[QS_AGG_JSON_MAX];
  for (int i = 0; i < 20000; i++) {
    qs_agg_row row;
    int64_t start = (int64_t)(rng_next(&r) % 100000) * 300000;
    assert_int_equal(qs_agg_row_init(&row, i % 3 ? "us-west" : "A.b_c:9-z", start, start + 300000),
                     0);
    qs_agg *a = &row.agg;
    int64_t scale = i % 4 == 0 ? 1 : i % 4 == 1 ? 1000 : i % 4 == 2 ? 1000000 : INT64_C(1) << 40;
    a->event_count = 1 + (int64_t)(rng_next(&r) % 100000);
    a->mag_count = i % 7 == 0 ? 0 : 1 + (int64_t)(rng_next(&r) % (uint64_t)a->event_count);
    a->mag_sum_micro = a->mag_count ? (int64_t)(rng_next(&r) % (uint64_t)(8000 * scale)) -
                                          (int64_t)(rng_next(&r) % (uint64_t)(1000 * scale))
                                    : 0;
    if (a->mag_sum_micro > QS_AGG_JSON_INT_MAX)
      a->mag_sum_micro = QS_AGG_JSON_INT_MAX;
    a->mag_min_micro = a->mag_count ? -2000000 + (int64_t)(rng_next(&r) % 5000000) : 0;
    a->mag_max_micro = a->mag_count ? a->mag_min_micro + (int64_t)(rng_next(&r) % 7000000) : 0;
    a->depth_count = i % 5 == 0 ? 0 : 1 + (int64_t)(rng_next(&r) % (uint64_t)a->event_count);
    a->depth_sum_micro =
        a->depth_count ? (int64_t)(rng_next(&r) % (uint64_t)(700000 * scale)) - 10 * scale : 0;
    if (a->depth_sum_micro > QS_AGG_JSON_INT_MAX)
      a->depth_sum_micro = QS_AGG_JSON_INT_MAX;
    a->significant_count = (int64_t)(rng_next(&r) % (uint64_t)(a->mag_count + 1));
    a->tsunami_count = (int64_t)(rng_next(&r) % 3);
    char *ref = ref_row_json(&row);
    size_t n = 0;
    assert_int_equal(qs_agg_row_to_json_buf(&row, buf, sizeof buf, &n), 0);
    assert_int_equal(n, strlen(ref));
    assert_string_equal(buf, ref);
    char *heap = NULL;
    assert_int_equal(qs_agg_row_to_json(&row, &heap, NULL), 0);
    assert_string_equal(heap, ref);
    free(heap);
    cJSON_free(ref);
  }
  /* Single members at the edges of the direct decimal form (|v| < 1e-4 takes printf's). */
  static const int64_t micro[] = {0,        1,       50,      99,       100,     101,     -1,
                                  -99,      -100,    -101,    123456,   1000000, 1500000, -2000000,
                                  10500000, 4999999, 5000001, -1234567, 999999};
  for (size_t i = 0; i < sizeof micro / sizeof micro[0]; i++) {
    qs_agg_row row;
    assert_int_equal(qs_agg_row_init(&row, "x", 0, 300000), 0);
    row.agg.event_count = row.agg.mag_count = row.agg.depth_count = 1;
    row.agg.mag_sum_micro = row.agg.mag_min_micro = row.agg.mag_max_micro = micro[i];
    row.agg.depth_sum_micro = micro[i] * 3;
    char *ref = ref_row_json(&row);
    assert_int_equal(qs_agg_row_to_json_buf(&row, buf, sizeof buf, NULL), 0);
    assert_string_equal(buf, ref);
    cJSON_free(ref);
  }
  qs_agg_row row;
  assert_int_equal(qs_agg_row_init(&row, "x", 0, 300000), 0);
  assert_int_equal(qs_agg_row_to_json_buf(&row, buf, 20, NULL), QS_ERR_TOOBIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_time_on_boundary_belongs_to_window_starting_there),
      cmocka_unit_test(test_time_one_ms_before_end_stays_in_window),
      cmocka_unit_test(test_negative_times_floor_toward_minus_infinity),
      cmocka_unit_test(test_hourly_and_daily_bins_are_epoch_aligned_utc),
      cmocka_unit_test(test_window_rejects_bad_length_or_time),
      cmocka_unit_test(test_iso8601_format_matches_to_iso_string),
      cmocka_unit_test(test_contribution_rounds_once_to_micro_units),
      cmocka_unit_test(test_significance_compares_rounded_magnitude_with_threshold),
      cmocka_unit_test(test_contribution_rejects_out_of_range_values),
      cmocka_unit_test(test_null_magnitude_and_depth_count_only_in_event_count),
      cmocka_unit_test(test_add_then_retract_random_subset_equals_fresh_aggregate),
      cmocka_unit_test(test_retracting_min_and_max_requires_recompute),
      cmocka_unit_test(test_retracting_a_non_member_is_rejected_and_changes_nothing),
      cmocka_unit_test(test_recompute_minmax_rejects_a_wrong_member_list),
      cmocka_unit_test(test_add_refuses_past_max_count),
      cmocka_unit_test(test_shuffled_contributions_give_byte_identical_json),
      cmocka_unit_test(test_merge_is_associative_and_commutative),
      cmocka_unit_test(test_merge_of_a_stale_aggregate_is_stale),
      cmocka_unit_test(test_hour_rollup_of_twelve_5min_windows_equals_direct_hour),
      cmocka_unit_test(test_row_add_refuses_event_outside_window),
      cmocka_unit_test(test_json_has_fixed_field_order_and_integer_sums),
      cmocka_unit_test(test_json_round_trip_preserves_rows),
      cmocka_unit_test(test_json_decode_rejects_invalid_rows),
      cmocka_unit_test(test_cutoff_merge_counts_each_event_once),
      cmocka_unit_test(test_cutoff_inside_an_hour_is_floored_and_straddling_rows_refused),
      cmocka_unit_test(test_speed_windows_rolled_up_equal_batch_hours_exactly),
      cmocka_unit_test(test_json_decode_survives_corrupted_input),
      cmocka_unit_test(test_baseline_uses_sample_stddev_and_sqrt_window_scaling),
      cmocka_unit_test(test_baseline_counts_empty_hours_as_zero),
      cmocka_unit_test(test_baseline_needs_two_hours_and_valid_input),
      cmocka_unit_test(test_row_json_is_byte_identical_to_the_cjson_rendering),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
