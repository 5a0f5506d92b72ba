/*
 * Fuzz harness for proto/noise.
 *
 * Input: one selector byte, then a sequence of messages, each a 2-byte
 * big-endian length and that many bytes (a length past the end is cut
 * short). The selector picks a scenario:
 *   0..5  XXpsk0, IK or NK1 as responder or initiator with fixed keys: our
 *         side writes its messages itself and reads the peer's from the input;
 *         after Split() every remaining input message goes to the transport
 *         decrypt (an empty one rekeys instead), and we answer each with an
 *         encrypt.
 *   6     an NN session completed in memory, every input message to its
 *         transport decrypt.
 *   7     the first message is a protocol name; then as in 0..5, with the
 *         role from bit 3 of the selector (this exercises the name parser).
 * All keys and ephemerals are fixed, so a transcript captured from an honest
 * peer with the same keys replays to the end: the seed corpus holds such
 * transcripts (and broken ones) to let the fuzzer start deep.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "common/err.h"
#include "proto/noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOISE_SCENARIOS 8

static const uint8_t fuzz_init_static[NOISE_KEY_LEN] = {
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11};
static const uint8_t fuzz_resp_static[NOISE_KEY_LEN] = {
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22,
    0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22};
static const uint8_t fuzz_init_ephemeral[NOISE_KEY_LEN] = {
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33};
static const uint8_t fuzz_resp_ephemeral[NOISE_KEY_LEN] = {
    0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44,
    0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44};
static const uint8_t fuzz_psk[NOISE_PSK_LEN] = {
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55};
static const uint8_t fuzz_prologue[] = "pksync fuzz";
/* What our side sends in each handshake message. */
static const uint8_t fuzz_payload[] = "fuzz payload";

static const struct {
	const char *name;
	enum noise_role role;
} fuzz_scenarios[6] = {
    {"Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_RESPONDER},
    {"Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_INITIATOR},
    {"Noise_IK_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_RESPONDER},
    {"Noise_IK_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_INITIATOR},
    {"Noise_NK1_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_RESPONDER},
    {"Noise_NK1_25519_ChaChaPoly_BLAKE2b", NOISE_ROLE_INITIATOR},
};

/* The length-prefixed messages of the input. */
struct fuzz_input {
	const uint8_t *data;
	size_t size;
	size_t off;
};

static bool fuzz_next(struct fuzz_input *in, const uint8_t **msg, size_t *len)
{
	size_t n;

	if (in->size - in->off < 2)
		return false;
	n = (size_t)in->data[in->off] << 8 | in->data[in->off + 1];
	in->off += 2;
	if (n > in->size - in->off)
		n = in->size - in->off;
	*msg = in->data + in->off;
	*len = n;
	in->off += n;
	return true;
}

/* A stand-in for randomness, only reached if a pattern needs a second e. */
static void fuzz_rng(void *user_data, uint8_t *buf, size_t n)
{
	(void)user_data;
	memset(buf, 0x66, n);
}

/*
 * Creates our side with the fixed keys for its role. The remote static key
 * is offered to every pattern; those without a pre-message refuse it.
 */
static struct noise_handshake *fuzz_handshake_new(const char *name, enum noise_role role)
{
	struct noise_handshake *hs = NULL;
	bool init = role == NOISE_ROLE_INITIATOR;
	uint8_t remote_pub[NOISE_KEY_LEN];

	if (noise_handshake_new(name, role, &hs) != PKS_OK)
		return NULL;
	crypto_scalarmult_base(remote_pub, init ? fuzz_resp_static : fuzz_init_static);
	(void)noise_handshake_set_prologue(hs, fuzz_prologue, sizeof(fuzz_prologue));
	(void)noise_handshake_set_local_static(hs, init ? fuzz_init_static : fuzz_resp_static);
	(void)noise_handshake_set_local_ephemeral(hs,
						  init ? fuzz_init_ephemeral : fuzz_resp_ephemeral);
	(void)noise_handshake_set_rng(hs, fuzz_rng, NULL);
	for (size_t i = 0; i < noise_handshake_psk_count(hs); i++)
		(void)noise_handshake_set_psk(hs, i, fuzz_psk);
	(void)noise_handshake_set_remote_static(hs, remote_pub);
	if (noise_handshake_start(hs) != PKS_OK) {
		noise_handshake_free(hs);
		return NULL;
	}
	return hs;
}

/* Every remaining input message to recv; each answered through send. */
static void fuzz_transport(struct fuzz_input *in, struct noise_cipher *send,
			   struct noise_cipher *recv)
{
	static uint8_t buf[NOISE_MAX_MESSAGE];
	const uint8_t *msg;
	size_t len, out_len;

	while (fuzz_next(in, &msg, &len)) {
		if (recv == NULL)
			break;
		if (len == 0) {
			(void)noise_cipher_rekey(recv);
			continue;
		}
		if (noise_cipher_decrypt(recv, NULL, 0, msg, len, buf, sizeof(buf), &out_len) !=
		    PKS_OK)
			continue;
		if (send != NULL)
			(void)noise_cipher_encrypt(send, NULL, 0, buf, out_len, buf, sizeof(buf),
						   &out_len);
	}
}

/* Runs our side of a handshake against the input, then its transport. */
static void fuzz_session(struct noise_handshake *hs, struct fuzz_input *in)
{
	static uint8_t buf[NOISE_MAX_MESSAGE];
	struct noise_cipher *send = NULL, *recv = NULL;
	const uint8_t *msg;
	size_t len, out_len;
	bool going = true;
	uint8_t pub[NOISE_KEY_LEN], hash[NOISE_MAX_HASH_LEN];

	while (going) {
		switch (noise_handshake_action(hs)) {
		case NOISE_ACTION_WRITE_MESSAGE:
			if (noise_handshake_write_message(hs, fuzz_payload, sizeof(fuzz_payload),
							  buf, sizeof(buf), &out_len) != PKS_OK)
				going = false;
			break;
		case NOISE_ACTION_READ_MESSAGE:
			if (!fuzz_next(in, &msg, &len) ||
			    noise_handshake_read_message(hs, msg, len, buf, sizeof(buf),
							 &out_len) != PKS_OK)
				going = false;
			(void)noise_handshake_remote_static(hs, pub);
			break;
		case NOISE_ACTION_SPLIT:
			(void)noise_handshake_hash(hs, hash, sizeof(hash), &out_len);
			if (noise_handshake_split(hs, &send, &recv) == PKS_OK)
				fuzz_transport(in, send, recv);
			going = false;
			break;
		case NOISE_ACTION_NONE:
		case NOISE_ACTION_COMPLETE:
		case NOISE_ACTION_FAILED:
			going = false;
			break;
		}
	}
	noise_cipher_free(send);
	noise_cipher_free(recv);
}

/* Scenario 6: an honest NN session, then the input at its transport. */
static void fuzz_nn_transport(struct fuzz_input *in)
{
	static uint8_t buf[256];
	const char *name = "Noise_NN_25519_ChaChaPoly_BLAKE2b";
	struct noise_handshake *i = fuzz_handshake_new(name, NOISE_ROLE_INITIATOR);
	struct noise_handshake *r = fuzz_handshake_new(name, NOISE_ROLE_RESPONDER);
	struct noise_cipher *is = NULL, *ir = NULL, *rs = NULL, *rr = NULL;
	uint8_t pay[64];
	size_t len, plen;

	if (i == NULL || r == NULL)
		goto out;
	if (noise_handshake_write_message(i, NULL, 0, buf, sizeof(buf), &len) != PKS_OK ||
	    noise_handshake_read_message(r, buf, len, pay, sizeof(pay), &plen) != PKS_OK ||
	    noise_handshake_write_message(r, NULL, 0, buf, sizeof(buf), &len) != PKS_OK ||
	    noise_handshake_read_message(i, buf, len, pay, sizeof(pay), &plen) != PKS_OK ||
	    noise_handshake_split(i, &is, &ir) != PKS_OK ||
	    noise_handshake_split(r, &rs, &rr) != PKS_OK)
		goto out;
	fuzz_transport(in, rs, rr);
out:
	noise_cipher_free(is);
	noise_cipher_free(ir);
	noise_cipher_free(rs);
	noise_cipher_free(rr);
	noise_handshake_free(i);
	noise_handshake_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size, 1};
	struct noise_handshake *hs = NULL;
	unsigned scenario;

	if (size < 1)
		return 0;
	scenario = data[0] % FUZZ_NOISE_SCENARIOS;
	if (scenario < 6) {
		hs = fuzz_handshake_new(fuzz_scenarios[scenario].name,
					fuzz_scenarios[scenario].role);
	} else if (scenario == 6) {
		fuzz_nn_transport(&in);
	} else {
		char name[NOISE_MAX_PROTOCOL_NAME + 2];
		const uint8_t *msg;
		size_t len;
		if (!fuzz_next(&in, &msg, &len) || len >= sizeof(name))
			return 0;
		memcpy(name, msg, len);
		name[len] = '\0';
		hs = fuzz_handshake_new(name, (data[0] & 0x08) != 0 ? NOISE_ROLE_RESPONDER
								    : NOISE_ROLE_INITIATOR);
	}
	if (hs != NULL)
		fuzz_session(hs, &in);
	noise_handshake_free(hs);
	return 0;
}
