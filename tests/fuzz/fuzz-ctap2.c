/*
 * Fuzzes the CTAP2 command layer: the input is one request (command byte and
 * CBOR) given to ctap2_begin(); a request that waits for the person is then
 * finished with each outcome in turn (and a bogus one), on a fresh
 * authenticator each time, followed by a getNextAssertion.
 *
 * The backend is a fake without cryptography: rp "example.com" holds two
 * discoverable credentials (ids 16 x 0x11 and 16 x 0x22) so allowList,
 * excludeList and getNextAssertion paths are reachable; signatures are fixed
 * bytes. Oracles: the returned status is the first response byte; an error
 * response is that byte alone; a success response is one whole CBOR map
 * within CTAP2_MSG_MAX; no response while waiting for the person; every
 * credential handle the backend gave out is released.
 */
#include <cbor.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ctap2.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake {
	long handles;
	int created;
};

static void fake_fill(struct ctap2_cred *c, uint8_t fill, const char *name)
{
	memset(c, 0, sizeof(*c));
	memset(c->id, fill, 16);
	c->id_len = 16;
	strcpy(c->rp_id, "example.com");
	memset(c->user_id, fill, 8);
	c->user_id_len = 8;
	strcpy(c->user_name, name);
	strcpy(c->display_name, name);
	c->alg = fill == 0x11 ? -7 : -8;
	c->be = c->bs = true;
}

static int fake_find(void *user, const char *rp_id, const struct ctap2_allow *allow,
		     struct ctap2_cred *out, size_t max, size_t *n)
{
	static const uint8_t fills[2] = {0x22, 0x11};
	struct fake *f = user;
	size_t k = 0;

	if (strcmp(rp_id, "locked.example") == 0)
		return PKS_ERR_LOCKED;
	if (strcmp(rp_id, "example.com") != 0) {
		*n = 0;
		return PKS_OK;
	}
	for (size_t i = 0; i < 2 && k < max; i++) {
		struct ctap2_cred c;
		bool hit = allow == NULL;

		fake_fill(&c, fills[i], i == 0 ? "bob" : "alice");
		for (size_t a = 0; allow != NULL && a < allow->count; a++)
			if (allow->id_len[a] == c.id_len &&
			    memcmp(allow->id[a], c.id, c.id_len) == 0)
				hit = true;
		if (!hit)
			continue;
		out[k++] = c;
		f->handles++;
	}
	*n = k;
	return PKS_OK;
}

static int fake_create(void *user, const char *rp_id, const char *rp_name, const uint8_t *user_id,
		       size_t user_id_len, const char *user_name, const char *display_name, int alg,
		       struct ctap2_cred *out, uint8_t *cose, size_t cose_cap, size_t *cose_len)
{
	static const uint8_t okp[] = {0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x41, 0x00};
	struct fake *f = user;

	(void)rp_name;
	if (rp_id == NULL || user_id == NULL || user_id_len == 0 || user_id_len > 64 ||
	    user_name == NULL || display_name == NULL || (alg != -7 && alg != -8) ||
	    strlen(rp_id) == 0 || strlen(rp_id) > CTAP2_RP_ID_MAX ||
	    strlen(user_name) > CTAP2_NAME_MAX || strlen(display_name) > CTAP2_NAME_MAX ||
	    cose_cap < sizeof(okp))
		abort();
	fake_fill(out, 0x33, "new");
	out->alg = alg;
	memcpy(cose, okp, sizeof(okp));
	*cose_len = sizeof(okp);
	f->handles++;
	f->created++;
	return PKS_OK;
}

static int fake_sign(void *user, const struct ctap2_cred *cred, const uint8_t *msg, size_t len,
		     uint8_t *sig, size_t cap, size_t *sig_len)
{
	(void)user;
	(void)cred;
	if (msg == NULL || len != 37 + 32 || cap < 64)
		abort();
	memset(sig, 0x5a, 64);
	*sig_len = 64;
	return PKS_OK;
}

static void fake_release(void *user, struct ctap2_cred *cred)
{
	struct fake *f = user;

	(void)cred;
	f->handles--;
}

static const struct ctap2_backend fake_ops = {fake_find, fake_create, fake_sign, fake_release};

static void check_resp(uint8_t st, const uint8_t *resp, size_t len)
{
	struct cbor_load_result res;
	cbor_item_t *it;

	if (resp == NULL)
		return;
	if (len == 0 || resp[0] != st || len > CTAP2_MSG_MAX)
		abort();
	if (st != CTAP2_OK) {
		if (len != 1)
			abort();
		return;
	}
	if (len == 1)
		return; /* selection */
	it = cbor_load(resp + 1, len - 1, &res);
	if (it == NULL || res.read != len - 1 || !cbor_isa_map(it))
		abort();
	cbor_decref(&it);
}

static void run(const uint8_t *data, size_t size, int outcome, bool uv)
{
	static const uint8_t aaguid[CTAP2_AAGUID_LEN] = {1};
	struct fake f = {0, 0};
	struct ctap2 *c = NULL;
	struct ctap2_pending p;
	uint8_t *resp = NULL;
	size_t len = 0;
	uint8_t st, next = CTAP2_CMD_GET_NEXT_ASSERTION;

	if (ctap2_new(&fake_ops, &f, aaguid, uv, &c) != PKS_OK)
		abort();
	st = ctap2_begin(c, data, size, 1000, &p, &resp, &len);
	if (st == CTAP2_OK && p.needs_up) {
		if (resp != NULL || p.op == CTAP2_OP_NONE || p.make != (p.op == CTAP2_OP_MAKE) ||
		    memchr(p.rp_id, 0, sizeof(p.rp_id)) == NULL ||
		    memchr(p.user, 0, sizeof(p.user)) == NULL)
			abort();
		st = ctap2_finish(c, outcome, 2000, &resp, &len);
	} else if (st == CTAP2_OK && resp == NULL) {
		abort();
	}
	check_resp(st, resp, len);
	free(resp);
	resp = NULL;
	st = ctap2_begin(c, &next, 1, 3000, &p, &resp, &len);
	check_resp(st, resp, len);
	free(resp);
	ctap2_free(c);
	if (f.handles != 0 || f.created > 1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int outcome = CTAP2_OUTCOME_PRESENT; outcome <= CTAP2_OUTCOME_TIMEOUT + 1; outcome++)
		run(data, size, outcome, outcome % 2 == 1);
	return 0;
}
