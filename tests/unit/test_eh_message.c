/* test_eh_message.c — the consumer's direct message decoder against proton's pn_message_decode:
 * on messages proton encodes (every section, annotation types as hubs send them and others),
 * either the fast decoder declines or both give the same event, field for field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/codec.h>
#include <proton/message.h>

#include "qs/eh.h"

static size_t encode(pn_message_t *m, char *buf, size_t cap) {
  size_t n = cap;
  assert_int_equal(pn_message_encode(m, buf, &n), 0);
  return n;
}

/* Copies of what the decoder returns (its body and props point into buffers it reuses). */
typedef struct got {
  qs_eh_event_in ev;
  char body[4096];
  char keys[QS_EH_PROPS_MAX][128], vals[QS_EH_PROPS_MAX][512];
} got;

static bool decode(const char *msg, size_t len, bool fast, got *g) {
  memset(g, 0, sizeof *g);
  bool ok = qs_eh_message_decode(msg, len, 3, fast, &g->ev);
  if (!ok)
    return false;
  if (g->ev.body) {
    assert_true(g->ev.len <= sizeof g->body);
    memcpy(g->body, g->ev.body, g->ev.len);
  }
  for (size_t i = 0; i < g->ev.nprops; i++) {
    snprintf(g->keys[i], sizeof g->keys[i], "%s", g->ev.props[i].key);
    snprintf(g->vals[i], sizeof g->vals[i], "%s", g->ev.props[i].value);
  }
  return true;
}

static void assert_same(const got *a, const got *b) {
  assert_int_equal(a->ev.partition, b->ev.partition);
  assert_int_equal(a->ev.sequence, b->ev.sequence);
  assert_string_equal(a->ev.offset, b->ev.offset);
  assert_int_equal(a->ev.enqueued_ms, b->ev.enqueued_ms);
  assert_string_equal(a->ev.partition_key, b->ev.partition_key);
  assert_int_equal(a->ev.len, b->ev.len);
  assert_int_equal(a->ev.body == NULL, b->ev.body == NULL);
  assert_memory_equal(a->body, b->body, a->ev.len);
  assert_int_equal(a->ev.nprops, b->ev.nprops);
  for (size_t i = 0; i < a->ev.nprops; i++) {
    assert_string_equal(a->keys[i], b->keys[i]);
    assert_string_equal(a->vals[i], b->vals[i]);
  }
}

/* Both decoders on msg: proton must accept it; the fast one accepts (expect_fast) and agrees. */
static void check(const char *msg, size_t len, bool expect_fast) {
  static got f, p;
  assert_true(decode(msg, len, false, &p));
  bool fast = decode(msg, len, true, &f);
  assert_int_equal(fast, expect_fast);
  if (fast)
    assert_same(&f, &p);
}

static void put_sym(pn_data_t *d, const char *s) { pn_data_put_symbol(d, pn_bytes(strlen(s), s)); }
static void put_str(pn_data_t *d, const char *s) { pn_data_put_string(d, pn_bytes(strlen(s), s)); }

/* The hub's shape: data body, long sequence, string offset, timestamp, partition key, string
 * application properties (and others the consumer skips), header, properties, delivery
 * annotations. */
static void test_hub_shaped_messages_decode_alike(void **state) {
  (void)state;
  static char buf[65536];
  pn_message_t *m = pn_message();
  pn_message_set_durable(m, true);
  pn_message_set_subject(m, "s");
  pn_data_t *ma = pn_message_annotations(m);
  pn_data_put_map(ma);
  pn_data_enter(ma);
  put_sym(ma, "x-opt-sequence-number");
  pn_data_put_long(ma, 123456789012LL);
  put_sym(ma, "x-opt-offset");
  put_str(ma, "98765");
  put_sym(ma, "x-opt-enqueued-time");
  pn_data_put_timestamp(ma, 1764028800123LL);
  put_sym(ma, "x-opt-partition-key");
  put_str(ma, "us-west");
  put_sym(ma, "x-other");
  pn_data_put_list(ma);
  pn_data_enter(ma);
  pn_data_put_int(ma, 1);
  pn_data_exit(ma);
  pn_data_exit(ma);
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  put_str(ap, "content-type");
  put_str(ap, "application/json");
  put_str(ap, "n");
  pn_data_put_int(ap, 5);
  put_sym(ap, "symkey");
  put_str(ap, "ignored");
  put_str(ap, "k2");
  put_str(ap, "v2");
  pn_data_exit(ap);
  pn_data_t *in = pn_message_instructions(m);
  pn_data_put_map(in);
  pn_data_enter(in);
  put_sym(in, "last_enqueued_sequence_number");
  pn_data_put_long(in, 7);
  pn_data_exit(in);
  const char body[] = "{\"event_id\":\"x\"}";
  pn_message_set_inferred(m, true);
  pn_data_put_binary(pn_message_body(m), pn_bytes(sizeof body - 1, body));
  check(buf, encode(m, buf, sizeof buf), true);

  /* A large body and a long string annotation take the 32-bit length forms. */
  static char big[3000];
  memset(big, 'b', sizeof big);
  pn_data_clear(pn_message_body(m));
  pn_data_put_binary(pn_message_body(m), pn_bytes(sizeof big, big));
  check(buf, encode(m, buf, sizeof buf), true);
  pn_message_free(m);
}

/* Other integer types for the numbers, an integer offset, string and binary amqp-value bodies,
 * no body at all, an empty message: decoded alike; shapes outside the fast decoder (a ushort
 * sequence, a symbol offset, a list body) are declined and left to proton. */
static void test_other_shapes_decode_alike_or_are_declined(void **state) {
  (void)state;
  static char buf[65536];
  struct {
    int seq_kind;    /* 0 int, 1 ulong, 2 uint, 3 short, 4 ushort (declined), 5 small long */
    int offset_kind; /* 0 long, 1 symbol (declined) */
    int body_kind;   /* 0 amqp-value string, 1 amqp-value binary, 2 none, 3 list (declined) */
    bool fast;
  } cases[] = {{0, 0, 0, true}, {1, 0, 1, true},  {2, 0, 2, true},  {3, 0, 0, true},
               {5, 0, 1, true}, {4, 0, 0, false}, {0, 1, 0, false}, {0, 0, 3, false}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pn_message_t *m = pn_message();
    pn_data_t *ma = pn_message_annotations(m);
    pn_data_put_map(ma);
    pn_data_enter(ma);
    put_sym(ma, "x-opt-sequence-number");
    switch (cases[i].seq_kind) {
    case 0:
      pn_data_put_int(ma, -5);
      break;
    case 1:
      pn_data_put_ulong(ma, 77);
      break;
    case 2:
      pn_data_put_uint(ma, 4000000000u);
      break;
    case 3:
      pn_data_put_short(ma, -300);
      break;
    case 4:
      pn_data_put_ushort(ma, 9);
      break;
    default:
      pn_data_put_long(ma, 3); /* proton writes small values as smalllong */
      break;
    }
    put_sym(ma, "x-opt-offset");
    if (cases[i].offset_kind == 0)
      pn_data_put_long(ma, 4242);
    else
      put_sym(ma, "4242");
    put_str(ma, "x-opt-enqueued-time"); /* a string key works like a symbol */
    pn_data_put_long(ma, 1700000000000LL);
    pn_data_exit(ma);
    pn_data_t *b = pn_message_body(m);
    pn_message_set_inferred(m, false);
    if (cases[i].body_kind == 0) {
      put_str(b, "{\"a\":1}");
    } else if (cases[i].body_kind == 1) {
      pn_data_put_binary(b, pn_bytes(3, "abc"));
    } else if (cases[i].body_kind == 3) {
      pn_data_put_list(b);
      pn_data_enter(b);
      pn_data_put_int(b, 1);
      pn_data_exit(b);
    }
    check(buf, encode(m, buf, sizeof buf), cases[i].fast);
    pn_message_free(m);
  }
}

/* Random corruptions of an encoded message: whenever both decoders accept, they agree. */
static void test_mutated_messages_never_disagree(void **state) {
  (void)state;
  static char base[4096], buf[4096];
  pn_message_t *m = pn_message();
  pn_data_t *ma = pn_message_annotations(m);
  pn_data_put_map(ma);
  pn_data_enter(ma);
  put_sym(ma, "x-opt-sequence-number");
  pn_data_put_long(ma, 1000);
  put_sym(ma, "x-opt-offset");
  put_str(ma, "55");
  put_sym(ma, "x-opt-partition-key");
  put_str(ma, "alaska");
  pn_data_exit(ma);
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  put_str(ap, "k");
  put_str(ap, "v");
  pn_data_exit(ap);
  pn_message_set_inferred(m, true);
  pn_data_put_binary(pn_message_body(m), pn_bytes(10, "0123456789"));
  size_t n = encode(m, base, sizeof base);
  pn_message_free(m);
  uint64_t r = 88172645463325252ull;
  int both = 0;
  static got f, p;
  for (int round = 0; round < 20000; round++) {
    memcpy(buf, base, n);
    for (int k = 0; k < 1 + (int)(r % 3); k++) {
      r ^= r << 13;
      r ^= r >> 7;
      r ^= r << 17;
      buf[r % n] = (char)(r >> 32);
    }
    bool fast = decode(buf, n, true, &f);
    bool prot = decode(buf, n, false, &p);
    if (fast && prot) {
      both++;
      assert_same(&f, &p);
    }
  }
  assert_true(both > 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hub_shaped_messages_decode_alike),
      cmocka_unit_test(test_other_shapes_decode_alike_or_are_declined),
      cmocka_unit_test(test_mutated_messages_never_disagree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
