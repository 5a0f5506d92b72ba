/*
 * cpace-vectors FILE: checks proto/cpace against the draft's test vectors
 * (the "G_Coffee25519" and "G_Coffee25519_points" objects of
 * testvectors.json, i.e. CPACE-RISTR255-SHA512). Every field is checked
 * through the exported API: the generator, both public shares, K from both
 * sides, ISK_IR and ISK_SY from both sides, the optional sid outputs, the
 * valid scalar_mult_vfy case and the refusal of every invalid point.
 * Prints each failure and, last and alone on its line, "N passed, M failed".
 * Exit 1 on any failure or if nothing passed.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "proto/cpace.h"

#define VEC_FIELD_MAX 1024

struct tally {
	int passed;
	int failed;
};

struct hexfield {
	uint8_t data[VEC_FIELD_MAX];
	size_t len;
};

static void vec_result(struct tally *t, int ok, const char *what)
{
	if (ok) {
		t->passed++;
	} else {
		t->failed++;
		printf("FAIL: %s\n", what);
	}
}

static void vec_print_hex(const char *label, const uint8_t *p, size_t n)
{
	printf("  %s: ", label);
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

/* Decodes the hex string obj[key]; 0 on success, -1 if missing or bad. */
static int vec_hex(json_t *obj, const char *key, struct hexfield *out)
{
	json_t *v = json_object_get(obj, key);
	const char *s;

	if (!json_is_string(v))
		return -1;
	s = json_string_value(v);
	if (sodium_hex2bin(out->data, sizeof(out->data), s, strlen(s), NULL, &out->len, NULL) != 0)
		return -1;
	return 0;
}

/* Checks got against the hex field key of obj; a missing field is a failure. */
static void vec_expect(struct tally *t, json_t *obj, const char *key, const uint8_t *got,
		       size_t got_len, const char *what)
{
	struct hexfield want;
	int ok;

	if (vec_hex(obj, key, &want) != 0) {
		printf("FAIL: %s: field \"%s\" missing or not hex\n", what, key);
		t->failed++;
		return;
	}
	ok = want.len == got_len && memcmp(want.data, got, got_len) == 0;
	vec_result(t, ok, what);
	if (!ok) {
		vec_print_hex("want", want.data, want.len);
		vec_print_hex("got ", got, got_len);
	}
}

struct vec_inputs {
	struct hexfield prs, ci, sid, ya, yb, ada, adb;
};

static int vec_party(struct cpace **out, const struct vec_inputs *in, enum cpace_role role,
		     const struct hexfield *scalar, const struct hexfield *ad)
{
	struct cpace_config cfg = {
	    .role = role,
	    .prs = in->prs.data,
	    .prs_len = in->prs.len,
	    .ci = in->ci.data,
	    .ci_len = in->ci.len,
	    .sid = in->sid.data,
	    .sid_len = in->sid.len,
	    .ad = ad->data,
	    .ad_len = ad->len,
	    .scalar = scalar->data,
	};

	if (scalar->len != CPACE_SCALAR_BYTES)
		return PKS_ERR_INVALID;
	return cpace_new(out, &cfg);
}

/* Runs one exchange in the given mode and checks ISK and sid output on both sides. */
static void vec_exchange(struct tally *t, json_t *vec, const struct vec_inputs *in, int symmetric)
{
	struct cpace *a = NULL, *b = NULL;
	uint8_t msg_a[CPACE_MESSAGE_MAX], msg_b[CPACE_MESSAGE_MAX];
	size_t msg_a_len = 0, msg_b_len = 0;
	uint8_t isk_a[CPACE_ISK_BYTES], isk_b[CPACE_ISK_BYTES];
	uint8_t sid_a[CPACE_SID_OUTPUT_BYTES], sid_b[CPACE_SID_OUTPUT_BYTES];
	uint8_t y[CPACE_POINT_BYTES];
	const char *isk_key = symmetric ? "ISK_SY" : "ISK_IR";
	const char *sid_key = symmetric ? "sid_output_oc" : "sid_output_ir";
	char what[128];
	int r;

	r = vec_party(&a, in, symmetric ? CPACE_ROLE_SYMMETRIC : CPACE_ROLE_INITIATOR, &in->ya,
		      &in->ada);
	if (r == PKS_OK)
		r = vec_party(&b, in, symmetric ? CPACE_ROLE_SYMMETRIC : CPACE_ROLE_RESPONDER,
			      &in->yb, &in->adb);
	if (r != PKS_OK) {
		snprintf(what, sizeof(what), "%s: cpace_new: %s", isk_key, pks_strerror(r));
		vec_result(t, 0, what);
		goto out;
	}
	if (!symmetric) {
		cpace_public_share(a, y);
		vec_expect(t, vec, "Ya", y, sizeof(y), "Ya = scalar_mult(ya, g)");
		cpace_public_share(b, y);
		vec_expect(t, vec, "Yb", y, sizeof(y), "Yb = scalar_mult(yb, g)");
	}
	if (cpace_message(a, msg_a, sizeof(msg_a), &msg_a_len) != PKS_OK ||
	    cpace_message(b, msg_b, sizeof(msg_b), &msg_b_len) != PKS_OK) {
		vec_result(t, 0, "cpace_message");
		goto out;
	}
	r = cpace_derive(a, msg_b, msg_b_len, isk_a);
	snprintf(what, sizeof(what), "%s: derive by A: %s", isk_key, pks_strerror(r));
	vec_result(t, r == PKS_OK, what);
	if (r == PKS_OK) {
		snprintf(what, sizeof(what), "%s as derived by A", isk_key);
		vec_expect(t, vec, isk_key, isk_a, sizeof(isk_a), what);
		if (json_object_get(vec, sid_key) != NULL && cpace_sid_output(a, sid_a) == PKS_OK) {
			snprintf(what, sizeof(what), "%s as derived by A", sid_key);
			vec_expect(t, vec, sid_key, sid_a, sizeof(sid_a), what);
		}
	}
	r = cpace_derive(b, msg_a, msg_a_len, isk_b);
	snprintf(what, sizeof(what), "%s: derive by B: %s", isk_key, pks_strerror(r));
	vec_result(t, r == PKS_OK, what);
	if (r == PKS_OK) {
		snprintf(what, sizeof(what), "%s as derived by B", isk_key);
		vec_expect(t, vec, isk_key, isk_b, sizeof(isk_b), what);
		if (json_object_get(vec, sid_key) != NULL && cpace_sid_output(b, sid_b) == PKS_OK) {
			snprintf(what, sizeof(what), "%s as derived by B", sid_key);
			vec_expect(t, vec, sid_key, sid_b, sizeof(sid_b), what);
		}
	}
out:
	cpace_free(a);
	cpace_free(b);
}

static void vec_main_case(struct tally *t, json_t *vec)
{
	struct vec_inputs in;
	struct hexfield ya_pub, yb_pub;
	uint8_t g[CPACE_POINT_BYTES], k[CPACE_POINT_BYTES];
	int r;

	if (!json_is_object(vec) || vec_hex(vec, "PRS", &in.prs) != 0 ||
	    vec_hex(vec, "CI", &in.ci) != 0 || vec_hex(vec, "sid", &in.sid) != 0 ||
	    vec_hex(vec, "ya", &in.ya) != 0 || vec_hex(vec, "yb", &in.yb) != 0 ||
	    vec_hex(vec, "ADa", &in.ada) != 0 || vec_hex(vec, "ADb", &in.adb) != 0 ||
	    vec_hex(vec, "Ya", &ya_pub) != 0 || vec_hex(vec, "Yb", &yb_pub) != 0 ||
	    ya_pub.len != CPACE_POINT_BYTES || yb_pub.len != CPACE_POINT_BYTES ||
	    in.ya.len != CPACE_SCALAR_BYTES || in.yb.len != CPACE_SCALAR_BYTES) {
		vec_result(t, 0, "G_Coffee25519: missing or malformed input fields");
		return;
	}

	r = cpace_calculate_generator(g, in.prs.data, in.prs.len, in.ci.data, in.ci.len,
				      in.sid.data, in.sid.len);
	vec_result(t, r == PKS_OK, "calculate_generator returns PKS_OK");
	if (r == PKS_OK)
		vec_expect(t, vec, "g", g, sizeof(g), "g = calculate_generator(PRS, CI, sid)");

	r = cpace_scalar_mult_vfy(k, in.ya.data, yb_pub.data);
	vec_result(t, r == PKS_OK, "scalar_mult_vfy(ya, Yb) returns PKS_OK");
	if (r == PKS_OK)
		vec_expect(t, vec, "K", k, sizeof(k), "K = scalar_mult_vfy(ya, Yb)");
	r = cpace_scalar_mult_vfy(k, in.yb.data, ya_pub.data);
	vec_result(t, r == PKS_OK, "scalar_mult_vfy(yb, Ya) returns PKS_OK");
	if (r == PKS_OK)
		vec_expect(t, vec, "K", k, sizeof(k), "K = scalar_mult_vfy(yb, Ya)");

	vec_exchange(t, vec, &in, 0);
	vec_exchange(t, vec, &in, 1);
}

/* A peer message lv_cat(Y, "") carrying the raw point y. */
static size_t vec_message_for_point(uint8_t *msg, const uint8_t *y, size_t y_len)
{
	msg[0] = (uint8_t)y_len;
	memcpy(msg + 1, y, y_len);
	msg[1 + y_len] = 0;
	return y_len + 2;
}

static void vec_points_case(struct tally *t, json_t *points)
{
	static const uint8_t prs[] = "Password";
	json_t *valid = json_object_get(points, "Valid");
	struct hexfield s = {.len = 0}, x = {.len = 0};
	uint8_t out[CPACE_POINT_BYTES];
	const char *key;
	json_t *value;
	int invalid_seen = 0;
	int r;

	if (!json_is_object(points)) {
		vec_result(t, 0, "G_Coffee25519_points: missing");
		return;
	}
	if (vec_hex(valid, "s", &s) != 0 || vec_hex(valid, "X", &x) != 0 ||
	    s.len != CPACE_SCALAR_BYTES || x.len != CPACE_POINT_BYTES) {
		vec_result(t, 0, "G_Coffee25519_points.Valid: missing or malformed s or X");
	} else {
		r = cpace_scalar_mult_vfy(out, s.data, x.data);
		vec_result(t, r == PKS_OK, "Valid: scalar_mult_vfy(s, X) returns PKS_OK");
		if (r == PKS_OK) {
			vec_expect(t, valid, "G.scalar_mult_vfy(s,X)", out, sizeof(out),
				   "Valid: G.scalar_mult_vfy(s,X)");
			vec_expect(t, valid, "G.scalar_mult(s,decode(X))", out, sizeof(out),
				   "Valid: G.scalar_mult(s,decode(X))");
		}
	}

	json_object_foreach(points, key, value)
	{
		struct hexfield y;
		struct cpace *c = NULL;
		struct cpace_config cfg = {
		    .role = CPACE_ROLE_RESPONDER,
		    .prs = prs,
		    .prs_len = sizeof(prs) - 1,
		    .scalar = s.data,
		};
		uint8_t msg[2 + CPACE_POINT_BYTES], isk[CPACE_ISK_BYTES];
		char what[160];
		size_t msg_len;

		if (strncmp(key, "Invalid", 7) != 0)
			continue;
		invalid_seen++;
		if (!json_is_string(value) || vec_hex(points, key, &y) != 0 ||
		    y.len != CPACE_POINT_BYTES || s.len != CPACE_SCALAR_BYTES) {
			snprintf(what, sizeof(what), "%s: malformed vector", key);
			vec_result(t, 0, what);
			continue;
		}
		r = cpace_scalar_mult_vfy(out, s.data, y.data);
		snprintf(what, sizeof(what), "%s: scalar_mult_vfy refuses it (got %s)", key,
			 pks_strerror(r));
		vec_result(t, r != PKS_OK, what);

		/* The same point inside a peer message must stop the exchange. */
		r = cpace_new(&c, &cfg);
		if (r != PKS_OK) {
			snprintf(what, sizeof(what), "%s: cpace_new: %s", key, pks_strerror(r));
			vec_result(t, 0, what);
			continue;
		}
		msg_len = vec_message_for_point(msg, y.data, y.len);
		r = cpace_derive(c, msg, msg_len, isk);
		snprintf(what, sizeof(what), "%s: cpace_derive refuses it (got %s)", key,
			 pks_strerror(r));
		vec_result(t, r != PKS_OK, what);
		cpace_free(c);
	}
	if (invalid_seen == 0)
		vec_result(t, 0, "G_Coffee25519_points: no Invalid cases found");
}

int main(int argc, char **argv)
{
	struct tally t = {0, 0};
	json_error_t jerr;
	json_t *root = NULL;

	if (argc != 2) {
		fprintf(stderr, "usage: cpace-vectors FILE\n");
		return 2;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "cpace-vectors: sodium_init failed\n");
		return 1;
	}
	root = json_load_file(argv[1], JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		printf("FAIL: %s:%d: %s\n", argv[1], jerr.line, jerr.text);
		t.failed++;
	} else {
		vec_main_case(&t, json_object_get(root, "G_Coffee25519"));
		vec_points_case(&t, json_object_get(root, "G_Coffee25519_points"));
	}
	json_decref(root);
	printf("%d passed, %d failed\n", t.passed, t.failed);
	return (t.failed > 0 || t.passed == 0) ? 1 : 0;
}
