/*
 * The CTAP2 command layer of the FIDO2 authenticator (CTAP 2.1, section 6):
 * decodes authenticatorMakeCredential (0x01), GetAssertion (0x02), GetInfo
 * (0x04), Reset (0x07), GetNextAssertion (0x08) and Selection (0x0B),
 * validates them against hard limits, and encodes canonical CBOR responses.
 *
 * Pure apart from the backend: no I/O, no clock (time comes in as now_ms), no
 * randomness (credentials are made by the backend). The vault sits behind
 * struct ctap2_backend; the CTAPHID framing and the prompt are the caller's.
 *
 * A request takes two steps because user presence is asked asynchronously:
 * ctap2_begin() parses and checks it and says in struct ctap2_pending what to
 * ask the person; when the person has answered, ctap2_finish() makes the
 * response. Requests that need nobody (getInfo, getNextAssertion, a
 * getAssertion with up=false, every error) are answered by ctap2_begin().
 *
 * Responses: every function returns the CTAP status byte (CTAP2_OK = 0). The
 * whole response to send is *resp (status byte followed by CBOR, malloc'd,
 * the caller frees it with free()) whenever *resp is not NULL; when *resp is
 * NULL and there is nothing pending, the response is the single status byte
 * returned (that only happens when memory ran out). Error responses are
 * always just the status byte.
 *
 * getInfo announces versions FIDO_2_0 and FIDO_2_1, the AAGUID, options
 * {rk: true, up: true, uv: uv_configured, plat: false}, maxMsgSize
 * CTAP2_MSG_MAX, maxCredentialCountInList CTAP2_LIST_MAX,
 * maxCredentialIdLength CTAP2_CRED_ID_MAX, transports ["usb"] and the
 * algorithms ES256 and EdDSA; no extensions, no PIN/UV auth protocol.
 *
 * Decisions: authenticatorReset is refused with CTAP2_ERR_NOT_ALLOWED without
 * asking anybody: the vault is synced to the person's other devices and a
 * browser must never wipe it. clientPIN (0x06) and every other command are
 * CTAP1_ERR_INVALID_COMMAND. Every credential made is discoverable (rk=false
 * is accepted and ignored). Requests are not required to be canonical, but
 * indefinite lengths, duplicate keys and trailing bytes are
 * CTAP2_ERR_INVALID_CBOR. A getAssertion whose allowList matches nothing,
 * or an rp without credentials, is CTAP2_ERR_NO_CREDENTIALS at once,
 * without asking the person. pinUvAuthParam is refused
 * (CTAP2_ERR_MISSING_PARAMETER without a protocol, else
 * CTAP1_ERR_INVALID_PARAMETER), as is enterpriseAttestation.
 */
#ifndef PKS_CTAP2_H
#define PKS_CTAP2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Commands (first byte of a CTAPHID_CBOR request). */
enum {
	CTAP2_CMD_MAKE_CREDENTIAL = 0x01,
	CTAP2_CMD_GET_ASSERTION = 0x02,
	CTAP2_CMD_GET_INFO = 0x04,
	CTAP2_CMD_CLIENT_PIN = 0x06,
	CTAP2_CMD_RESET = 0x07,
	CTAP2_CMD_GET_NEXT_ASSERTION = 0x08,
	CTAP2_CMD_SELECTION = 0x0b,
};

/* Status codes (first byte of every response). */
enum {
	CTAP2_OK = 0x00,
	CTAP1_ERR_INVALID_COMMAND = 0x01,
	CTAP1_ERR_INVALID_PARAMETER = 0x02,
	CTAP1_ERR_INVALID_LENGTH = 0x03,
	CTAP2_ERR_CBOR_UNEXPECTED_TYPE = 0x11,
	CTAP2_ERR_INVALID_CBOR = 0x12,
	CTAP2_ERR_MISSING_PARAMETER = 0x14,
	CTAP2_ERR_LIMIT_EXCEEDED = 0x15,
	CTAP2_ERR_CREDENTIAL_EXCLUDED = 0x19,
	CTAP2_ERR_UNSUPPORTED_ALGORITHM = 0x26,
	CTAP2_ERR_OPERATION_DENIED = 0x27,
	CTAP2_ERR_KEY_STORE_FULL = 0x28,
	CTAP2_ERR_UNSUPPORTED_OPTION = 0x2b,
	CTAP2_ERR_INVALID_OPTION = 0x2c,
	CTAP2_ERR_KEEPALIVE_CANCEL = 0x2d,
	CTAP2_ERR_NO_CREDENTIALS = 0x2e,
	CTAP2_ERR_USER_ACTION_TIMEOUT = 0x2f,
	CTAP2_ERR_NOT_ALLOWED = 0x30,
	CTAP2_ERR_REQUEST_TOO_LARGE = 0x39,
	CTAP1_ERR_OTHER = 0x7f,
};

/* Hard limits. Longer user names and display names are truncated (at a UTF-8
   character boundary) to CTAP2_NAME_MAX bytes, which CTAP 2.1 allows down to
   64; everything else over its limit is rejected. */
#define CTAP2_MSG_MAX 7609 /* = CTAPHID_MAX_MSG, announced as maxMsgSize */
#define CTAP2_RP_ID_MAX 253
#define CTAP2_RP_NAME_MAX 255
#define CTAP2_USER_ID_MAX 64
#define CTAP2_NAME_MAX 255
#define CTAP2_CRED_ID_MAX 1023
#define CTAP2_LIST_MAX 64 /* allowList, excludeList, pubKeyCredParams entries */
#define CTAP2_CLIENT_DATA_HASH_LEN 32
#define CTAP2_AAGUID_LEN 16
#define CTAP2_COSE_KEY_MAX 256
#define CTAP2_SIG_MAX 128
/* Discoverable credentials of one RP offered by one getAssertion. */
#define CTAP2_ASSERTION_CREDS_MAX 32
/* getNextAssertion is accepted this long after the previous assertion. */
#define CTAP2_NEXT_ASSERTION_MS 30000

/* A credential as the backend sees it. Strings are NUL-terminated UTF-8. */
struct ctap2_cred {
	uint8_t id[CTAP2_CRED_ID_MAX + 1];
	size_t id_len;
	char rp_id[CTAP2_RP_ID_MAX + 1];
	uint8_t user_id[CTAP2_USER_ID_MAX];
	size_t user_id_len;
	char user_name[CTAP2_NAME_MAX + 1], display_name[CTAP2_NAME_MAX + 1];
	int alg; /* -7 ES256, -8 EdDSA */
	bool be, bs;
	void *key; /* backend's handle, opaque; see release */
};

/* Credential ids from an allowList or excludeList (entries of type
   "public-key" only); ids point into the request and are borrowed. */
struct ctap2_allow {
	size_t count;
	const uint8_t *id[CTAP2_LIST_MAX];
	size_t id_len[CTAP2_LIST_MAX];
};

/*
 * The vault. Every callback returns PKS_OK or a PKS_ERR_* code and writes its
 * out-parameters only on success; user is the be_user given to ctap2_new().
 * A failure becomes CTAP1_ERR_OTHER (PKS_ERR_LOCKED: CTAP2_ERR_NOT_ALLOWED;
 * PKS_ERR_TOO_LARGE from create: CTAP2_ERR_KEY_STORE_FULL).
 */
struct ctap2_backend {
	/* Credentials of rp_id: all discoverable ones (allow == NULL) or those
	   whose id is in allow; at most max, newest first. *n = 0 is success. */
	int (*find)(void *user, const char *rp_id, const struct ctap2_allow *allow,
		    struct ctap2_cred *out, size_t max, size_t *n);
	/* A new resident credential (BE=1, BS=1) of alg, stored by the backend:
	   fills *out (id 1..CTAP2_CRED_ID_MAX bytes) and the COSE public key. */
	int (*create)(void *user, const char *rp_id, const char *rp_name, const uint8_t *user_id,
		      size_t user_id_len, const char *user_name, const char *display_name, int alg,
		      struct ctap2_cred *out, uint8_t *cose, size_t cose_cap, size_t *cose_len);
	/* Signature (DER for ES256, raw 64 bytes for EdDSA) over msg by cred. */
	int (*sign)(void *user, const struct ctap2_cred *cred, const uint8_t *msg, size_t len,
		    uint8_t *sig, size_t cap, size_t *sig_len);
	/* Optional (may be NULL): called once for every credential that find or
	   create filled in, when this layer no longer needs it, so the backend
	   can drop cred->key. */
	void (*release)(void *user, struct ctap2_cred *cred);
};

/* What the person is asked. */
enum ctap2_op {
	CTAP2_OP_NONE = 0, /* nothing to ask: the response is ready */
	CTAP2_OP_MAKE,     /* register a new passkey for rp_id and user */
	CTAP2_OP_GET,      /* sign in to rp_id (as user, or one of n_creds) */
	CTAP2_OP_SELECT,   /* authenticatorSelection: "touch" this key */
};

struct ctap2_pending {
	bool needs_up; /* ask the person, then call ctap2_finish() */
	bool needs_uv; /* the request wants user verification too */
	bool make;     /* op == CTAP2_OP_MAKE */
	bool excluded; /* make: the rp already has one of the excludeList
			  credentials; the answer will be CREDENTIAL_EXCLUDED */
	enum ctap2_op op;
	char rp_id[CTAP2_RP_ID_MAX + 1];
	char rp_name[CTAP2_RP_NAME_MAX + 1]; /* make only; may be empty */
	char user[CTAP2_NAME_MAX + 1];       /* name, else display name; may be empty */
	size_t n_creds;                      /* get: matching credentials (>= 1) */
};

/* The person's answer to a pending request. */
enum ctap2_outcome {
	CTAP2_OUTCOME_PRESENT = 0, /* confirmed (user presence) */
	CTAP2_OUTCOME_VERIFIED,    /* confirmed and verified (sets the UV flag) */
	CTAP2_OUTCOME_DENIED,      /* CTAP2_ERR_OPERATION_DENIED */
	CTAP2_OUTCOME_CANCELLED,   /* CTAP2_ERR_KEEPALIVE_CANCEL */
	CTAP2_OUTCOME_TIMEOUT,     /* CTAP2_ERR_USER_ACTION_TIMEOUT */
};

/* One authenticator: AAGUID, backend, the pending request and the
   getNextAssertion state. Not thread-safe. */
struct ctap2;

/*
 * be (copied) must have find, create and sign; be_user is borrowed. aaguid is
 * copied. uv_configured: the caller can verify the person (getInfo announces
 * uv: true and requests with uv: true are accepted; without it they get
 * CTAP2_ERR_UNSUPPORTED_OPTION). PKS_ERR_INVALID, PKS_ERR_NOMEM.
 */
int ctap2_new(const struct ctap2_backend *be, void *be_user, const uint8_t aaguid[CTAP2_AAGUID_LEN],
	      bool uv_configured, struct ctap2 **out);

/* Releases held credentials and frees; NULL is fine. */
void ctap2_free(struct ctap2 *c);

/*
 * Step 1: req is the command byte followed by its CBOR parameters (len <=
 * CTAP2_MSG_MAX, else CTAP2_ERR_REQUEST_TOO_LARGE; empty is
 * CTAP1_ERR_INVALID_LENGTH). now_ms is any monotonic clock in milliseconds.
 * *pending is always written. With CTAP2_OK and pending->needs_up the
 * request waits for ctap2_finish() and *resp is NULL; otherwise *resp is the
 * response (see the top of this file). A new begin drops a request still
 * pending, and every command but getNextAssertion ends the
 * getNextAssertion state.
 */
uint8_t ctap2_begin(struct ctap2 *c, const uint8_t *req, size_t len, uint64_t now_ms,
		    struct ctap2_pending *pending, uint8_t **resp, size_t *resp_len);

/*
 * Step 2, after the person answered (outcome is an enum ctap2_outcome):
 * makes the credential or the assertion. CTAP2_OUTCOME_PRESENT for a request
 * that needs_uv gives CTAP2_ERR_OPERATION_DENIED. Without a pending request:
 * CTAP2_ERR_NOT_ALLOWED. now_ms starts the getNextAssertion window.
 */
uint8_t ctap2_finish(struct ctap2 *c, int outcome, uint64_t now_ms, uint8_t **resp,
		     size_t *resp_len);

/* Drops a pending request (the host cancelled or went away); no response. */
void ctap2_cancel(struct ctap2 *c);

#endif
