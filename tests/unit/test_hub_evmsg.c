/* test_hub_evmsg.c — AMQP section codec: batch detection, partition key,
 * annotation injection with the inner sections kept byte-identical. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <proton/codec.h>
#include <proton/message.h>

#include "evmsg.h"
#include "qs/error.h"

/* Encode a message with an optional MA partition key and a data body. */
static size_t encode_msg(uint8_t *out, size_t cap, const char *pkey, const char *body,
                         const char *msgid) {
  pn_message_t *m = pn_message();
  if (pkey) {
    pn_data_t *ma = pn_message_annotations(m);
    pn_data_put_map(ma);
    pn_data_enter(ma);
    pn_data_put_symbol(ma, pn_bytes(strlen("x-opt-partition-key"), "x-opt-partition-key"));
    pn_data_put_string(ma, pn_bytes(strlen(pkey), pkey));
    pn_data_exit(ma);
  }
  if (msgid)
    pn_message_set_id(m,
                      (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(msgid), msgid)});
  pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
  size_t len = cap;
  assert_int_equal(pn_message_encode(m, (char *)out, &len), 0);
  pn_message_free(m);
  return len;
}

/* A JS-shaped batch: header, MA(pk), properties, then data sections. */
static size_t encode_batch(uint8_t *out, size_t cap, const char *pkey, const uint8_t *const *evs,
                           const size_t *lens, size_t n) {
  pn_data_t *d = pn_data(0);
  pn_data_put_described(d);
  pn_data_enter(d);
  pn_data_put_ulong(d, 0x70);
  pn_data_put_list(d);
  pn_data_exit(d);
  if (pkey) {
    pn_data_put_described(d);
    pn_data_enter(d);
    pn_data_put_ulong(d, 0x72);
    pn_data_put_map(d);
    pn_data_enter(d);
    pn_data_put_symbol(d, pn_bytes(strlen("x-opt-partition-key"), "x-opt-partition-key"));
    pn_data_put_string(d, pn_bytes(strlen(pkey), pkey));
    pn_data_exit(d);
    pn_data_exit(d);
  }
  for (size_t i = 0; i < n; i++) {
    pn_data_put_described(d);
    pn_data_enter(d);
    pn_data_put_ulong(d, 0x75);
    pn_data_put_binary(d, pn_bytes(lens[i], (const char *)evs[i]));
    pn_data_exit(d);
  }
  ssize_t r = pn_data_encode(d, (char *)out, cap);
  assert_true(r > 0);
  pn_data_free(d);
  return (size_t)r;
}

static void test_batch_detected_by_content_and_split(void **st) {
  (void)st;
  uint8_t e1[256], e2[256], batch[1024];
  size_t l1 = encode_msg(e1, sizeof e1, "quake-ca", "{\"mag\":4.2}", "m-1");
  size_t l2 = encode_msg(e2, sizeof e2, "quake-ca", "\"plain\"", NULL);
  const uint8_t *evs[] = {e1, e2};
  size_t lens[] = {l1, l2};
  size_t bl = encode_batch(batch, sizeof batch, "quake-ca", evs, lens, 2);
  hub_evmsg_info info;
  assert_int_equal(hub_evmsg_inspect(batch, bl, &info), 0);
  assert_true(info.is_batch);
  assert_int_equal(info.n_events, 2);
  assert_int_equal(info.pkey_len, 8);
  assert_memory_equal(info.pkey, "quake-ca", 8);
  size_t pos = info.body_pos;
  const uint8_t *ev;
  size_t evl;
  assert_int_equal(hub_evmsg_batch_next(batch, bl, &pos, &ev, &evl), 1);
  assert_int_equal(evl, l1);
  assert_memory_equal(ev, e1, l1);
  assert_int_equal(hub_evmsg_batch_next(batch, bl, &pos, &ev, &evl), 1);
  assert_memory_equal(ev, e2, l2);
  assert_int_equal(hub_evmsg_batch_next(batch, bl, &pos, &ev, &evl), 0);
}

static void test_plain_data_body_is_one_event(void **st) {
  (void)st;
  uint8_t m[256];
  size_t l = encode_msg(m, sizeof m, NULL, "hello", NULL);
  hub_evmsg_info info;
  assert_int_equal(hub_evmsg_inspect(m, l, &info), 0);
  assert_false(info.is_batch);
  assert_int_equal(info.n_events, 1);
  assert_null(info.pkey);
}

static void test_truncated_message_is_a_parse_error(void **st) {
  (void)st;
  uint8_t m[256];
  size_t l = encode_msg(m, sizeof m, "k", "hello", "id");
  hub_evmsg_info info;
  assert_int_equal(hub_evmsg_inspect(m, l, &info), 0);
  /* A cut inside any section fails; a cut at a section boundary is a valid
   * shorter message, so only cuts inside the first and the body section. */
  size_t pos = 0, body_pos = info.body_pos;
  hub_evmsg_section first;
  assert_int_equal(hub_evmsg_next(m, l, &pos, &first), 1);
  for (size_t cut = 1; cut < first.len; cut++)
    assert_true(hub_evmsg_inspect(m, cut, &info) < 0);
  for (size_t cut = body_pos + 1; cut < l; cut++)
    assert_true(hub_evmsg_inspect(m, cut, &info) < 0);
  const uint8_t junk[] = {0x00, 0x53, 0x99, 0x40};
  assert_int_equal(hub_evmsg_inspect(junk, sizeof junk, &info), QS_ERR_PARSE);
}

static void test_oversized_partition_key_is_refused(void **st) {
  (void)st;
  char key[200];
  memset(key, 'k', sizeof key - 1);
  key[sizeof key - 1] = 0;
  uint8_t m[512];
  size_t l = encode_msg(m, sizeof m, key, "x", NULL);
  hub_evmsg_info info;
  assert_int_equal(hub_evmsg_inspect(m, l, &info), QS_ERR_TOOBIG);
}

static void test_annotate_adds_typed_annotations_and_keeps_sections(void **st) {
  (void)st;
  uint8_t m[256];
  size_t l = encode_msg(m, sizeof m, "quake-ca", "{\"mag\":4.2}", "m-1");
  hub_evmsg_annot a = {5, 1234, 1732500000123LL, "quake-ca",     8,
                       9, 2000, 1732500000999LL, 1732500001000LL};
  size_t ol;
  int err;
  uint8_t *out = hub_evmsg_annotate(m, l, &a, &ol, &err);
  assert_non_null(out);
  pn_message_t *msg = pn_message();
  assert_int_equal(pn_message_decode(msg, (const char *)out, ol), 0);
  assert_int_equal(pn_message_get_id(msg).u.as_bytes.size, 3);
  assert_memory_equal(pn_message_get_id(msg).u.as_bytes.start, "m-1", 3);
  pn_data_t *ma = pn_message_annotations(msg);
  pn_data_rewind(ma);
  assert_true(pn_data_next(ma));
  size_t n = pn_data_get_map(ma);
  assert_int_equal(n, 8); /* pk replaced, not duplicated */
  pn_data_enter(ma);
  int seen = 0;
  for (size_t i = 0; i < n; i += 2) {
    pn_data_next(ma);
    pn_bytes_t k = pn_data_get_symbol(ma);
    pn_data_next(ma);
    if (k.size == 21 && !memcmp(k.start, "x-opt-sequence-number", 21)) {
      assert_int_equal(pn_data_type(ma), PN_LONG);
      assert_int_equal(pn_data_get_long(ma), 5);
      seen++;
    } else if (k.size == 12 && !memcmp(k.start, "x-opt-offset", 12)) {
      assert_int_equal(pn_data_type(ma), PN_STRING);
      assert_memory_equal(pn_data_get_string(ma).start, "1234", 4);
      seen++;
    } else if (k.size == 19 && !memcmp(k.start, "x-opt-enqueued-time", 19)) {
      assert_int_equal(pn_data_type(ma), PN_TIMESTAMP);
      assert_int_equal(pn_data_get_timestamp(ma), 1732500000123LL);
      seen++;
    } else if (k.size == 19 && !memcmp(k.start, "x-opt-partition-key", 19)) {
      assert_int_equal(pn_data_type(ma), PN_STRING);
      seen++;
    }
  }
  assert_int_equal(seen, 4);
  pn_data_t *da = pn_message_instructions(msg);
  pn_data_rewind(da);
  assert_true(pn_data_next(da));
  assert_int_equal(pn_data_get_map(da), 8);
  /* The properties and body sections are byte-identical at the tail. */
  size_t pos = 0, tail_in = 0, tail_out = 0;
  hub_evmsg_section s;
  while (hub_evmsg_next(m, l, &pos, &s) == 1)
    if (s.code == HUB_SEC_PROPERTIES)
      tail_in = (size_t)(s.start - m);
  pos = 0;
  while (hub_evmsg_next(out, ol, &pos, &s) == 1)
    if (s.code == HUB_SEC_PROPERTIES)
      tail_out = (size_t)(s.start - out);
  assert_true(tail_in > 0 && tail_out > 0);
  assert_int_equal(l - tail_in, ol - tail_out);
  assert_memory_equal(m + tail_in, out + tail_out, l - tail_in);
  pn_message_free(msg);
  free(out);
}

/* Mutated and random inputs never crash and never read out of bounds (run
 * under ASan in the sanitizer build). Deterministic xorshift PRNG. */
static void test_mutated_inputs_fail_cleanly(void **st) {
  (void)st;
  uint8_t e1[256], batch[1024];
  size_t l1 = encode_msg(e1, sizeof e1, "k", "{\"mag\":4.2}", "m-1");
  const uint8_t *evs[] = {e1, e1};
  size_t lens[] = {l1, l1};
  size_t bl = encode_batch(batch, sizeof batch, "k", evs, lens, 2);
  uint64_t x = 88172645463325252ULL;
  for (int round = 0; round < 20000; round++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    uint8_t *m = malloc(bl);
    memcpy(m, batch, bl);
    size_t len = bl - (x >> 40) % 8;
    for (int k = 0; k < 1 + (int)(x % 4); k++)
      m[(x >> (8 * k)) % len] = (uint8_t)(x >> (16 + k));
    hub_evmsg_info info;
    if (hub_evmsg_inspect(m, len, &info) == 0 && info.is_batch) {
      size_t pos = info.body_pos;
      const uint8_t *ev;
      size_t evl;
      while (hub_evmsg_batch_next(m, len, &pos, &ev, &evl) == 1) {
        hub_evmsg_annot a = {1, 2, 3, NULL, 0, 4, 5, 6, 7};
        size_t ol;
        int err;
        free(hub_evmsg_annotate(ev, evl, &a, &ol, &err));
      }
    }
    hub_evmsg_annot a = {1, 2, 3, "k", 1, 4, 5, 6, 7};
    size_t ol;
    int err;
    free(hub_evmsg_annotate(m, len, &a, &ol, &err));
    free(m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch_detected_by_content_and_split),
      cmocka_unit_test(test_plain_data_body_is_one_event),
      cmocka_unit_test(test_truncated_message_is_a_parse_error),
      cmocka_unit_test(test_oversized_partition_key_is_refused),
      cmocka_unit_test(test_annotate_adds_typed_annotations_and_keeps_sections),
      cmocka_unit_test(test_mutated_inputs_fail_cleanly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
