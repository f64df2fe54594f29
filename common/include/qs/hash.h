/* hash.h — FNV-1a, 64-bit: the one string hash of the in-memory tables (the aggregator's state
 * caches, the ingestor's change records, the batch fold's index) and of the serving API's ETags.
 * Not for anything stored or shared between processes.
 */
#ifndef QS_HASH_H
#define QS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define QS_FNV1A64_BASIS UINT64_C(14695981039346656037)
#define QS_FNV1A64_PRIME UINT64_C(1099511628211)

static inline uint64_t qs_fnv1a64(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = QS_FNV1A64_BASIS;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * QS_FNV1A64_PRIME;
  return h;
}

/* The same of a NUL-terminated string (without a strlen pass). */
static inline uint64_t qs_fnv1a64_str(const char *s) {
  uint64_t h = QS_FNV1A64_BASIS;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * QS_FNV1A64_PRIME;
  return h;
}

#endif
