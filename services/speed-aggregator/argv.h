/* argv.h — a growable list of binary-safe strings in one arena, turned into (argc, argv,
 * argvlen) for hiredis. The aggregator builds each Redis commit as one such list (the arguments
 * of one EVALSHA call), so a batch of thousands of events costs a few allocations, not thousands.
 */
#ifndef SA_ARGV_H
#define SA_ARGV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sa_argv {
  bool resp_mode; /* strings framed as RESP bulk strings in the arena (sa_argv_init_resp) */
  char *arena;
  size_t used, cap;
  size_t *off; /* start of each string in arena */
  size_t *len;
  size_t n, ncap;
  /* Filled by sa_argv_finish: pointers into arena, valid until the next add or reset. */
  const char **argv;
  size_t argv_cap;
  /* Filled by sa_argv_resp: the list as one Redis protocol command. */
  char *resp;
  size_t resp_cap;
} sa_argv;

void sa_argv_init(sa_argv *a);
/* A list kept in the Redis protocol's form as it grows, so that sa_argv_resp copies nothing: each
 * string is followed by "\r\n", not by a NUL (read strings with their lengths). */
void sa_argv_init_resp(sa_argv *a);
void sa_argv_free(sa_argv *a);
void sa_argv_reset(sa_argv *a);
void sa_argv_add(sa_argv *a, const char *s, size_t len);
void sa_argv_adds(sa_argv *a, const char *s);
/* One string made of three parts (no temporary buffer). */
void sa_argv_add3(sa_argv *a, const char *s1, size_t l1, const char *s2, size_t l2, const char *s3,
                  size_t l3);
void sa_argv_addi(sa_argv *a, int64_t v);
void sa_argv_addf(sa_argv *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Index of the next string; with sa_argv_set_i lets a count be written after its items. */
size_t sa_argv_count(const sa_argv *a);
/* Appends a count to be set later with sa_argv_set_i ("0" until then; in RESP mode ten zeros,
 * rewritten in place zero-padded, which Lua's tonumber reads alike). */
void sa_argv_add_count(sa_argv *a);
/* Replaces string i by the decimal v (used for op argument counts; in RESP mode string i must come
 * from sa_argv_add_count). */
void sa_argv_set_i(sa_argv *a, size_t i, int64_t v);
/* Builds a->argv; returns argc. argvlen is a->len. */
size_t sa_argv_finish(sa_argv *a);
/* The list as one command in the Redis protocol (RESP): in RESP mode in place (no copy), else
 * built in one pass (hiredis formats each argument with sdscatfmt, which showed in profiles);
 * valid until the next change of the list. */
const char *sa_argv_resp(sa_argv *a, size_t *len);
/* String i (not NUL-terminated in general; use its length). */
const char *sa_argv_at(const sa_argv *a, size_t i, size_t *len);

#endif
