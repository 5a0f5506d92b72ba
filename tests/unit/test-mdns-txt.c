/*
 * TXT rdata building and strict parsing: round trips, and every rejection
 * the parser and the builder make.
 */
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/mdns-txt.h"

static int parse_bytes(const char *data, size_t len, struct mdns_txt *t)
{
	return mdns_txt_parse((const uint8_t *)data, len, t);
}

static void test_round_trip(void)
{
	struct mdns_txt t, back;
	uint8_t buf[MDNS_TXT_MAX];
	size_t len = 0;
	const struct mdns_txt_pair *p;
	static const uint8_t bin[3] = {0x00, '=', 0xff};

	mdns_txt_init(&t);
	CHECK_OK(mdns_txt_add(&t, "v", "1", 1));
	CHECK_OK(mdns_txt_add_text(&t, "h=abcdef"));
	CHECK_OK(mdns_txt_add(&t, "bin", bin, sizeof(bin)));
	CHECK_OK(mdns_txt_add(&t, "flag", NULL, 0));
	CHECK_OK(mdns_txt_add_text(&t, "empty="));
	CHECK_OK(mdns_txt_add_text(&t, "x y"));
	CHECK_OK(mdns_txt_build(&t, buf, sizeof(buf), &len));
	static const char want[] = "\x03v=1\x08h=abcdef\x07"
				   "bin=\x00=\xff\x04"
				   "flag\x06"
				   "empty=\x03x y";
	CHECK_EQ(len, sizeof(want) - 1);
	CHECK_MEM_EQ(buf, want, sizeof(want) - 1);
	CHECK_OK(mdns_txt_parse(buf, len, &back));
	CHECK_EQ(back.n, 6);
	CHECK_MEM_EQ(&back, &t, sizeof(t));
	p = mdns_txt_get(&back, "H");
	CHECK(p != NULL && p->has_value && p->value_len == 6 && memcmp(p->value, "abcdef", 6) == 0);
	p = mdns_txt_get(&back, "bin");
	CHECK(p != NULL && p->value_len == 3 && memcmp(p->value, bin, 3) == 0);
	p = mdns_txt_get(&back, "flag");
	CHECK(p != NULL && !p->has_value && p->value_len == 0);
	p = mdns_txt_get(&back, "empty");
	CHECK(p != NULL && p->has_value && p->value_len == 0);
	CHECK(mdns_txt_get(&back, "nope") == NULL);
}

static void test_empty(void)
{
	struct mdns_txt t;
	uint8_t buf[4];
	size_t len = 0;

	mdns_txt_init(&t);
	CHECK_OK(mdns_txt_build(&t, buf, sizeof(buf), &len));
	CHECK_EQ(len, 1);
	CHECK_EQ(buf[0], 0);
	t.n = 5;
	CHECK_OK(mdns_txt_parse(buf, 1, &t));
	CHECK_EQ(t.n, 0);
	t.n = 5;
	CHECK_OK(mdns_txt_parse(NULL, 0, &t));
	CHECK_EQ(t.n, 0);
}

static void test_limits_round_trip(void)
{
	struct mdns_txt t, back;
	uint8_t buf[MDNS_TXT_MAX];
	uint8_t value[MDNS_TXT_STRING_MAX];
	size_t len = 0;
	char key[16];

	/* 16 strings, four of them the longest (255 bytes): 1198 bytes. */
	memset(value, 'v', sizeof(value));
	mdns_txt_init(&t);
	for (unsigned i = 0; i < MDNS_TXT_STRINGS_MAX; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		CHECK_OK(mdns_txt_add(&t, key, value, i < 4 ? 255 - strlen(key) - 1 : 10));
	}
	CHECK_OK(mdns_txt_build(&t, buf, sizeof(buf), &len));
	CHECK_EQ(len, 4 * 256 + 6 * (1 + 2 + 1 + 10) + 6 * (1 + 3 + 1 + 10));
	CHECK_OK(mdns_txt_parse(buf, len, &back));
	CHECK_MEM_EQ(&back, &t, sizeof(t));
	/* A nine-byte key is the longest. */
	mdns_txt_init(&t);
	CHECK_OK(mdns_txt_add_text(&t, "123456789=x"));
	CHECK_EQ(mdns_txt_add_text(&t, "1234567890=x"), PKS_ERR_INVALID);
}

static void test_add_rejects(void)
{
	struct mdns_txt t, before;
	uint8_t value[MDNS_TXT_STRING_MAX + 1];

	memset(value, 'a', sizeof(value));
	mdns_txt_init(&t);
	CHECK_OK(mdns_txt_add(&t, "a", "1", 1));
	memcpy(&before, &t, sizeof(t));
	CHECK_EQ(mdns_txt_add(&t, "", "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, NULL, "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "k=v", "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "caf\xc3\xa9", "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "tab\t", "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "del\x7f", "1", 1), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "b", NULL, 3), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_add(&t, "A", "2", 1), PKS_ERR_EXISTS);
	CHECK_EQ(mdns_txt_add_text(&t, "a=3"), PKS_ERR_EXISTS);
	CHECK_EQ(mdns_txt_add_text(&t, "=3"), PKS_ERR_INVALID);
	/* key "b" + '=' + 253 bytes = 255: fits; 254 does not. */
	CHECK_EQ(mdns_txt_add(&t, "b", value, 254), PKS_ERR_TOO_LARGE);
	CHECK_MEM_EQ(&t, &before, sizeof(t));
	CHECK_OK(mdns_txt_add(&t, "b", value, 253));
	for (unsigned i = 2; i < MDNS_TXT_STRINGS_MAX; i++) {
		char key[4];

		snprintf(key, sizeof(key), "c%u", i);
		CHECK_OK(mdns_txt_add(&t, key, NULL, 0));
	}
	CHECK_EQ(t.n, MDNS_TXT_STRINGS_MAX);
	CHECK_EQ(mdns_txt_add(&t, "z", NULL, 0), PKS_ERR_TOO_LARGE);
}

static void test_build_rejects(void)
{
	struct mdns_txt t;
	uint8_t buf[MDNS_TXT_MAX + 100];
	uint8_t value[MDNS_TXT_STRING_MAX];
	size_t len = 77;
	char key[8];

	memset(value, 'v', sizeof(value));
	mdns_txt_init(&t);
	for (unsigned i = 0; i < 6; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		CHECK_OK(mdns_txt_add(&t, key, value, 252));
	}
	/* Six 256-byte strings: 1536 > MDNS_TXT_MAX even with room in buf. */
	CHECK_EQ(mdns_txt_build(&t, buf, sizeof(buf), &len), PKS_ERR_TOO_LARGE);
	CHECK_EQ(len, 77);
	t.n = 1;
	CHECK_EQ(mdns_txt_build(&t, buf, 100, &len), PKS_ERR_TOO_LARGE);
	CHECK_EQ(mdns_txt_build(&t, buf, 0, &len), PKS_ERR_TOO_LARGE);
	CHECK_EQ(len, 77);
	CHECK_OK(mdns_txt_build(&t, buf, 256, &len));
	CHECK_EQ(len, 256);
	/* A pair edited by hand into something invalid is refused. */
	t.pairs[0].key[0] = '=';
	CHECK_EQ(mdns_txt_build(&t, buf, sizeof(buf), &len), PKS_ERR_INVALID);
	t.pairs[0].key[0] = '\0';
	CHECK_EQ(mdns_txt_build(&t, buf, sizeof(buf), &len), PKS_ERR_INVALID);
	mdns_txt_init(&t);
	CHECK_EQ(mdns_txt_build(&t, buf, 0, &len), PKS_ERR_TOO_LARGE);
}

static void test_parse_rejects(void)
{
	struct mdns_txt t, before;
	uint8_t big[MDNS_TXT_MAX + 1];
	uint8_t many[2 * (MDNS_TXT_STRINGS_MAX + 1)];

	mdns_txt_init(&t);
	CHECK_OK(mdns_txt_add(&t, "keep", "me", 2));
	memcpy(&before, &t, sizeof(t));

	/* Length prefix past the end. */
	CHECK_EQ(parse_bytes("\x05"
			     "abc",
			     4, &t),
		 PKS_ERR_TRUNCATED);
	CHECK_EQ(parse_bytes("\x03v=1\x02", 6, &t), PKS_ERR_TRUNCATED);
	/* Empty strings other than the lone one. */
	CHECK_EQ(parse_bytes("\x00\x00", 2, &t), PKS_ERR_MALFORMED);
	CHECK_EQ(parse_bytes("\x03v=1\x00", 5, &t), PKS_ERR_MALFORMED);
	/* Bad keys: empty, too long, non-printable, non-ASCII. */
	CHECK_EQ(parse_bytes("\x02=1", 3, &t), PKS_ERR_MALFORMED);
	CHECK_EQ(parse_bytes("\x0c"
			     "1234567890=x",
			     13, &t),
		 PKS_ERR_MALFORMED);
	CHECK_EQ(parse_bytes("\x03\x01=x", 4, &t), PKS_ERR_MALFORMED);
	CHECK_EQ(parse_bytes("\x04\xc3\xa9=x", 5, &t), PKS_ERR_MALFORMED);
	/* Duplicate keys, also differing in case only. */
	CHECK_EQ(parse_bytes("\x03v=1\x03v=2", 8, &t), PKS_ERR_MALFORMED);
	CHECK_EQ(parse_bytes("\x03v=1\x01V", 6, &t), PKS_ERR_MALFORMED);
	/* Seventeen strings. */
	for (unsigned i = 0; i <= MDNS_TXT_STRINGS_MAX; i++) {
		many[2 * i] = 1;
		many[2 * i + 1] = (uint8_t)('a' + i);
	}
	CHECK_EQ(mdns_txt_parse(many, sizeof(many), &t), PKS_ERR_TOO_LARGE);
	CHECK_OK(mdns_txt_parse(many, sizeof(many) - 2, &t));
	CHECK_EQ(t.n, MDNS_TXT_STRINGS_MAX);
	memcpy(&t, &before, sizeof(t));
	/* Over the total size limit. */
	memset(big, 1, sizeof(big));
	CHECK_EQ(mdns_txt_parse(big, sizeof(big), &t), PKS_ERR_TOO_LARGE);
	CHECK_EQ(mdns_txt_parse(NULL, 3, &t), PKS_ERR_INVALID);
	CHECK_EQ(mdns_txt_parse(big, 1, NULL), PKS_ERR_INVALID);
	/* Nothing was written on any error. */
	CHECK_MEM_EQ(&t, &before, sizeof(t));
}

CHECK_MAIN({"/mdns-txt/round-trip", test_round_trip}, {"/mdns-txt/empty", test_empty},
	   {"/mdns-txt/limits-round-trip", test_limits_round_trip},
	   {"/mdns-txt/add-rejects", test_add_rejects},
	   {"/mdns-txt/build-rejects", test_build_rejects},
	   {"/mdns-txt/parse-rejects", test_parse_rejects}, )
