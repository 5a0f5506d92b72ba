/*
 * Runs Noise test vectors in the cacophony JSON schema against proto/noise:
 *
 *   noise-vectors FILE [--min-pass N]
 *
 * For each vector whose suite we implement, an initiator and a responder are
 * configured from it; every handshake message is written by its sender and
 * compared with the vector's ciphertext, and the vector's ciphertext is read
 * by the receiver and its payload compared; after Split() the remaining
 * messages go through the transport ciphers the same way, and the handshake
 * hash is compared when present. Suites we do not implement
 * (PKS_ERR_UNSUPPORTED) are counted as skipped. One line per failure, then
 * "N passed, M failed, K skipped" last. Exit 1 on any failure, when fewer
 * than N vectors passed, or when none passed at all.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/err.h"
#include "proto/noise.h"

/* Hex fields are at most one Noise message. */
#define VEC_MAX_HEX (2 * NOISE_MAX_MESSAGE)
/* Message buffers: one message plus room to notice an overlong result. */
#define VEC_BUF (NOISE_MAX_MESSAGE + 64)

enum vec_result {
	VEC_PASS,
	VEC_FAIL,
	VEC_SKIP,
};

struct vec_bytes {
	uint8_t *data;
	size_t len;
};

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes a JSON hex string; false when missing, not a string or not hex. */
static bool vec_hex(const json_t *j, struct vec_bytes *out)
{
	const char *s;
	size_t n;

	out->data = NULL;
	out->len = 0;
	if (!json_is_string(j))
		return false;
	s = json_string_value(j);
	n = strlen(s);
	if (n % 2 != 0 || n > VEC_MAX_HEX)
		return false;
	out->data = malloc(n / 2 + 1);
	if (out->data == NULL)
		return false;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hex_nibble(s[2 * i]), lo = hex_nibble(s[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			free(out->data);
			out->data = NULL;
			return false;
		}
		out->data[i] = (uint8_t)(hi << 4 | lo);
	}
	out->len = n / 2;
	return true;
}

static void vec_bytes_free(struct vec_bytes *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

struct vec_ctx {
	size_t index;
	const char *name;
	char why[256];
};

#define VEC_FAILF(ctx, ...) snprintf((ctx)->why, sizeof((ctx)->why), __VA_ARGS__)

/* Sets a 32-byte key from field prefix+suffix if the vector has it. */
static bool vec_set_key(struct vec_ctx *ctx, struct noise_handshake *hs, const json_t *v,
			const char *prefix, const char *suffix,
			int (*set)(struct noise_handshake *, const uint8_t *))
{
	char field[64];
	const json_t *j;
	struct vec_bytes b;
	int r;

	snprintf(field, sizeof(field), "%s_%s", prefix, suffix);
	j = json_object_get(v, field);
	if (j == NULL)
		return true;
	if (!vec_hex(j, &b) || b.len != NOISE_KEY_LEN) {
		vec_bytes_free(&b);
		VEC_FAILF(ctx, "%s is not a 32-byte hex key", field);
		return false;
	}
	r = set(hs, b.data);
	vec_bytes_free(&b);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "setting %s: %s", field, pks_strerror(r));
		return false;
	}
	return true;
}

static bool vec_configure(struct vec_ctx *ctx, struct noise_handshake *hs, const json_t *v,
			  const char *prefix)
{
	char field[64];
	const json_t *j;
	struct vec_bytes b;
	int r;

	snprintf(field, sizeof(field), "%s_prologue", prefix);
	j = json_object_get(v, field);
	if (j != NULL) {
		if (!vec_hex(j, &b)) {
			VEC_FAILF(ctx, "%s is not hex", field);
			return false;
		}
		r = noise_handshake_set_prologue(hs, b.data, b.len);
		vec_bytes_free(&b);
		if (r != PKS_OK) {
			VEC_FAILF(ctx, "setting %s: %s", field, pks_strerror(r));
			return false;
		}
	}
	if (!vec_set_key(ctx, hs, v, prefix, "static", noise_handshake_set_local_static) ||
	    !vec_set_key(ctx, hs, v, prefix, "remote_static", noise_handshake_set_remote_static) ||
	    !vec_set_key(ctx, hs, v, prefix, "ephemeral", noise_handshake_set_local_ephemeral))
		return false;

	snprintf(field, sizeof(field), "%s_psks", prefix);
	j = json_object_get(v, field);
	if (j != NULL) {
		if (!json_is_array(j) || json_array_size(j) != noise_handshake_psk_count(hs)) {
			VEC_FAILF(ctx, "%s: %zu psks, the pattern has %zu", field,
				  json_is_array(j) ? json_array_size(j) : 0,
				  noise_handshake_psk_count(hs));
			return false;
		}
		for (size_t i = 0; i < json_array_size(j); i++) {
			if (!vec_hex(json_array_get(j, i), &b) || b.len != NOISE_PSK_LEN) {
				vec_bytes_free(&b);
				VEC_FAILF(ctx, "%s[%zu] is not a 32-byte hex key", field, i);
				return false;
			}
			r = noise_handshake_set_psk(hs, i, b.data);
			vec_bytes_free(&b);
			if (r != PKS_OK) {
				VEC_FAILF(ctx, "setting %s[%zu]: %s", field, i, pks_strerror(r));
				return false;
			}
		}
	}
	r = noise_handshake_start(hs);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "%s start: %s", prefix, pks_strerror(r));
		return false;
	}
	return true;
}

static bool vec_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* One handshake message: sender writes it, receiver reads the vector's. */
static bool vec_handshake_message(struct vec_ctx *ctx, size_t i, struct noise_handshake *sender,
				  struct noise_handshake *receiver, const struct vec_bytes *payload,
				  const struct vec_bytes *ct, uint8_t *buf)
{
	size_t out_len = 0;
	int r;

	if (noise_handshake_action(sender) != NOISE_ACTION_WRITE_MESSAGE ||
	    noise_handshake_action(receiver) != NOISE_ACTION_READ_MESSAGE) {
		VEC_FAILF(ctx, "message %zu: unexpected actions %d/%d", i,
			  (int)noise_handshake_action(sender),
			  (int)noise_handshake_action(receiver));
		return false;
	}
	r = noise_handshake_write_message(sender, payload->data, payload->len, buf, VEC_BUF,
					  &out_len);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "message %zu: write: %s", i, pks_strerror(r));
		return false;
	}
	if (!vec_equal(buf, out_len, ct->data, ct->len)) {
		VEC_FAILF(ctx, "message %zu: ciphertext differs (%zu vs %zu bytes)", i, out_len,
			  ct->len);
		return false;
	}
	r = noise_handshake_read_message(receiver, ct->data, ct->len, buf, VEC_BUF, &out_len);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "message %zu: read: %s", i, pks_strerror(r));
		return false;
	}
	if (!vec_equal(buf, out_len, payload->data, payload->len)) {
		VEC_FAILF(ctx, "message %zu: payload differs", i);
		return false;
	}
	return true;
}

static bool vec_transport_message(struct vec_ctx *ctx, size_t i, struct noise_cipher *send,
				  struct noise_cipher *recv, const struct vec_bytes *payload,
				  const struct vec_bytes *ct, uint8_t *buf)
{
	size_t out_len = 0;
	int r;

	if (send == NULL || recv == NULL) {
		VEC_FAILF(ctx, "message %zu: no cipher for this direction", i);
		return false;
	}
	r = noise_cipher_encrypt(send, NULL, 0, payload->data, payload->len, buf, VEC_BUF,
				 &out_len);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "message %zu: encrypt: %s", i, pks_strerror(r));
		return false;
	}
	if (!vec_equal(buf, out_len, ct->data, ct->len)) {
		VEC_FAILF(ctx, "message %zu: transport ciphertext differs", i);
		return false;
	}
	r = noise_cipher_decrypt(recv, NULL, 0, ct->data, ct->len, buf, VEC_BUF, &out_len);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "message %zu: decrypt: %s", i, pks_strerror(r));
		return false;
	}
	if (!vec_equal(buf, out_len, payload->data, payload->len)) {
		VEC_FAILF(ctx, "message %zu: transport payload differs", i);
		return false;
	}
	return true;
}

/* After the last handshake message: Split() both and compare hashes. */
static bool vec_split(struct vec_ctx *ctx, const json_t *v, struct noise_handshake *init,
		      struct noise_handshake *resp, struct noise_cipher *ciphers[4])
{
	uint8_t hi[NOISE_MAX_HASH_LEN], hr[NOISE_MAX_HASH_LEN];
	size_t hi_len = 0, hr_len = 0;
	const json_t *j;
	struct vec_bytes want;
	int r;

	if (noise_handshake_action(init) != NOISE_ACTION_SPLIT ||
	    noise_handshake_action(resp) != NOISE_ACTION_SPLIT) {
		VEC_FAILF(ctx, "handshake not finished when expected");
		return false;
	}
	if (noise_handshake_hash(init, hi, sizeof(hi), &hi_len) != PKS_OK ||
	    noise_handshake_hash(resp, hr, sizeof(hr), &hr_len) != PKS_OK ||
	    !vec_equal(hi, hi_len, hr, hr_len)) {
		VEC_FAILF(ctx, "handshake hashes missing or different");
		return false;
	}
	j = json_object_get(v, "handshake_hash");
	if (j != NULL) {
		if (!vec_hex(j, &want)) {
			VEC_FAILF(ctx, "handshake_hash is not hex");
			return false;
		}
		bool same = vec_equal(hi, hi_len, want.data, want.len);
		vec_bytes_free(&want);
		if (!same) {
			VEC_FAILF(ctx, "handshake_hash differs");
			return false;
		}
	}
	r = noise_handshake_split(init, &ciphers[0], &ciphers[1]);
	if (r == PKS_OK)
		r = noise_handshake_split(resp, &ciphers[2], &ciphers[3]);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "split: %s", pks_strerror(r));
		return false;
	}
	return true;
}

static enum vec_result vec_run(struct vec_ctx *ctx, const json_t *v, uint8_t *buf)
{
	struct noise_handshake *init = NULL, *resp = NULL;
	/* initiator send, initiator recv, responder send, responder recv */
	struct noise_cipher *ciphers[4] = {NULL, NULL, NULL, NULL};
	struct vec_bytes payload = {NULL, 0}, ct = {NULL, 0};
	const json_t *messages;
	bool split = false;
	enum vec_result res = VEC_FAIL;
	int r;

	ctx->name = json_string_value(json_object_get(v, "protocol_name"));
	if (ctx->name == NULL) {
		ctx->name = "(no protocol_name)";
		VEC_FAILF(ctx, "protocol_name missing");
		goto out;
	}
	r = noise_handshake_new(ctx->name, NOISE_ROLE_INITIATOR, &init);
	if (r == PKS_ERR_UNSUPPORTED) {
		res = VEC_SKIP;
		goto out;
	}
	if (r == PKS_OK)
		r = noise_handshake_new(ctx->name, NOISE_ROLE_RESPONDER, &resp);
	if (r != PKS_OK) {
		VEC_FAILF(ctx, "new: %s", pks_strerror(r));
		goto out;
	}
	if (!vec_configure(ctx, init, v, "init") || !vec_configure(ctx, resp, v, "resp"))
		goto out;

	messages = json_object_get(v, "messages");
	if (!json_is_array(messages) || json_array_size(messages) == 0) {
		VEC_FAILF(ctx, "no messages");
		goto out;
	}
	for (size_t i = 0; i < json_array_size(messages); i++) {
		const json_t *m = json_array_get(messages, i);
		bool from_init = i % 2 == 0;
		bool ok;

		if (!vec_hex(json_object_get(m, "payload"), &payload) ||
		    !vec_hex(json_object_get(m, "ciphertext"), &ct)) {
			VEC_FAILF(ctx, "message %zu: payload or ciphertext missing", i);
			goto out;
		}
		if (!split && noise_handshake_action(init) == NOISE_ACTION_SPLIT) {
			if (!vec_split(ctx, v, init, resp, ciphers))
				goto out;
			split = true;
		}
		if (!split) {
			ok = from_init
				 ? vec_handshake_message(ctx, i, init, resp, &payload, &ct, buf)
				 : vec_handshake_message(ctx, i, resp, init, &payload, &ct, buf);
		} else {
			/* One-way patterns: every transport message is the initiator's. */
			if (ciphers[1] == NULL)
				from_init = true;
			ok = from_init ? vec_transport_message(ctx, i, ciphers[0], ciphers[3],
							       &payload, &ct, buf)
				       : vec_transport_message(ctx, i, ciphers[2], ciphers[1],
							       &payload, &ct, buf);
		}
		vec_bytes_free(&payload);
		vec_bytes_free(&ct);
		if (!ok)
			goto out;
	}
	if (!split && !vec_split(ctx, v, init, resp, ciphers))
		goto out;
	res = VEC_PASS;
out:
	vec_bytes_free(&payload);
	vec_bytes_free(&ct);
	for (size_t i = 0; i < 4; i++)
		noise_cipher_free(ciphers[i]);
	noise_handshake_free(init);
	noise_handshake_free(resp);
	return res;
}

static int usage(void)
{
	fprintf(stderr, "usage: noise-vectors FILE [--min-pass N]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	unsigned long min_pass = 0;
	size_t passed = 0, failed = 0, skipped = 0;
	json_error_t jerr;
	json_t *root = NULL;
	const json_t *vectors;
	uint8_t *buf = NULL;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--min-pass") == 0 && i + 1 < argc) {
			char *end = NULL;
			errno = 0;
			min_pass = strtoul(argv[++i], &end, 10);
			if (errno != 0 || end == argv[i] || *end != '\0')
				return usage();
		} else if (path == NULL && argv[i][0] != '-') {
			path = argv[i];
		} else {
			return usage();
		}
	}
	if (path == NULL)
		return usage();

	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		fprintf(stderr, "noise-vectors: %s:%d: %s\n", path, jerr.line, jerr.text);
		goto out;
	}
	vectors = json_object_get(root, "vectors");
	if (!json_is_array(vectors)) {
		fprintf(stderr, "noise-vectors: %s: no \"vectors\" array\n", path);
		goto out;
	}
	buf = malloc(VEC_BUF);
	if (buf == NULL)
		goto out;
	for (size_t i = 0; i < json_array_size(vectors); i++) {
		struct vec_ctx ctx = {.index = i, .name = NULL, .why = ""};
		switch (vec_run(&ctx, json_array_get(vectors, i), buf)) {
		case VEC_PASS:
			passed++;
			break;
		case VEC_SKIP:
			skipped++;
			break;
		case VEC_FAIL:
			failed++;
			printf("FAIL vector %zu %s: %s\n", i, ctx.name, ctx.why);
			break;
		}
	}
	if (min_pass > 0 && passed < min_pass)
		printf("# only %zu passed, at least %lu required\n", passed, min_pass);
	printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
	rc = (failed > 0 || passed == 0 || passed < min_pass) ? 1 : 0;
out:
	free(buf);
	json_decref(root);
	return rc;
}
