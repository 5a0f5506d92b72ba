/*
 * Passkey records: signed, encrypted record versions and the CRDT that
 * merges them into one state per record (DESIGN §5).
 *
 * A version is one immutable change by one author device (create, update of
 * some mutable fields, delete, restore, purge). It is encoded as canonical
 * CBOR, encrypted under an epoch's data key and signed by its author
 * ("sealed"). A record state is the join of any set of versions of one record:
 * applying the same set in any order, with any duplicates, gives the same
 * state and the same digest.
 *
 * Call sodium_init() before using this module.
 */
#ifndef PKS_RECORD_H
#define PKS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/hlc.h"

#define RECORD_ID_LEN 16
/* A device id is BLAKE2b-256 of the device's Ed25519 public key. */
#define DEVICE_ID_LEN 32
#define RECORD_ID_KEY_LEN 32
#define RECORD_DATA_KEY_LEN 32
#define RECORD_NONCE_LEN 24
#define RECORD_DIGEST_LEN 32

/* Limits, inclusive, in bytes. Strings are UTF-8 without NUL bytes. */
#define RECORD_CREDENTIAL_ID_MIN 1
#define RECORD_CREDENTIAL_ID_MAX 1023
#define RECORD_RP_ID_MIN 1
#define RECORD_RP_ID_MAX 253
#define RECORD_USER_HANDLE_MIN 1
#define RECORD_USER_HANDLE_MAX 64
#define RECORD_USER_NAME_MAX 1024
#define RECORD_DISPLAY_NAME_MAX 1024
#define RECORD_NOTES_MAX 8192
#define RECORD_PRIVATE_KEY_MIN 1
#define RECORD_PRIVATE_KEY_MAX 512
#define RECORD_PUBLIC_KEY_MIN 1
#define RECORD_PUBLIC_KEY_MAX 512
#define RECORD_SOURCE_MAX 128
#define RECORD_RESTORE_TAGS_MIN 1
#define RECORD_RESTORE_TAGS_MAX 64
/* Largest CBOR encoding of one version. */
#define RECORD_ENCODED_MAX 16384

/* COSE algorithm numbers. */
enum record_alg {
	RECORD_ALG_ES256 = -7,
	RECORD_ALG_EDDSA = -8,
};

enum record_op {
	RECORD_OP_CREATE = 1,
	RECORD_OP_UPDATE = 2,
	RECORD_OP_DELETE = 3,
	RECORD_OP_RESTORE = 4,
	RECORD_OP_PURGE = 5,
};

/* The mutable fields, merged last-writer-wins each on its own stamp. */
enum record_field {
	RECORD_FIELD_USER_NAME = 0,
	RECORD_FIELD_DISPLAY_NAME = 1,
	RECORD_FIELD_NOTES = 2,
};
#define RECORD_FIELD_COUNT 3
#define RECORD_FIELD_BIT(f) (1u << (unsigned int)(f))
#define RECORD_FIELDS_ALL 0x7u

/* A mutable field's value (owned, malloc, NUL-terminated) and its stamp. */
struct record_field_value {
	char *value;
	hlc_t stamp;
};

/* A delete is identified by its tag: the delete's stamp and its author. */
struct record_delete_tag {
	hlc_t hlc;
	uint8_t author[DEVICE_ID_LEN];
};

/*
 * One version, a plain struct the caller fills. Every pointer is owned by
 * the struct and freed by record_version_free(): strings and byte strings
 * with malloc, private_key too but wiped before it is freed (sodium_malloc's
 * guard pages cost four system calls per version; the setters below do this
 * right). Which members are allowed depends on op:
 *
 *   all ops   record_id, author, seq (>= 1), epoch, op
 *   CREATE    hlc, credential_id, rp_id, user_handle, alg, private_key,
 *             public_key, backup_eligible, backup_state, created_at,
 *             source (NULL means ""), and any of the mutable fields
 *   UPDATE    at least one mutable field; hlc must be 0 (each field carries
 *             its own stamp)
 *   DELETE    hlc (the delete tag is (hlc, author))
 *   RESTORE   hlc, restore_tags: 1..64 distinct delete tags it undoes (any
 *             order; the encoding sorts them)
 *   PURGE     hlc
 *
 * Members not allowed for the op must be zero/NULL; `fields` is a bitmask of
 * RECORD_FIELD_BIT(f) for each field[f] present (value non-NULL, maybe "").
 */
struct record_version {
	uint8_t record_id[RECORD_ID_LEN];
	uint8_t author[DEVICE_ID_LEN];
	uint64_t seq;
	uint32_t epoch;
	enum record_op op;
	hlc_t hlc;

	uint8_t *credential_id;
	size_t credential_id_len;
	char *rp_id;
	uint8_t *user_handle;
	size_t user_handle_len;
	enum record_alg alg;
	uint8_t *private_key; /* PKCS#8 DER, malloc, wiped when freed */
	size_t private_key_len;
	uint8_t *public_key; /* SPKI DER */
	size_t public_key_len;
	bool backup_eligible;
	bool backup_state;
	uint64_t created_at; /* Unix ms */
	char *source;

	unsigned int fields;
	struct record_field_value field[RECORD_FIELD_COUNT];

	struct record_delete_tag *restore_tags;
	size_t restore_tag_count;
};

/* Orders delete tags by hlc, then author bytes: <0, 0, >0 like memcmp. */
int record_delete_tag_cmp(const struct record_delete_tag *a, const struct record_delete_tag *b);

/* A zeroed version (NULL when out of memory); set op and the rest. */
struct record_version *record_version_new(void);
/* Wipes and frees every owned member and the struct; NULL is fine. */
void record_version_free(struct record_version *v);

/*
 * Setters that copy their arguments into owned memory, replacing (and
 * wiping) any previous value. PKS_ERR_TOO_LARGE / PKS_ERR_INVALID when the
 * value breaks a limit or is not valid UTF-8, PKS_ERR_NOMEM.
 */
int record_version_set_field(struct record_version *v, enum record_field f, const char *value,
			     hlc_t stamp);
int record_version_set_credential(struct record_version *v, const uint8_t *credential_id,
				  size_t credential_id_len, const char *rp_id,
				  const uint8_t *user_handle, size_t user_handle_len);
int record_version_set_keys(struct record_version *v, enum record_alg alg,
			    const uint8_t *private_key, size_t private_key_len,
			    const uint8_t *public_key, size_t public_key_len);
int record_version_set_source(struct record_version *v, const char *source);
/* Appends one tag to a RESTORE's list. */
int record_version_add_restore_tag(struct record_version *v, const struct record_delete_tag *tag);

/*
 * Checks a filled version against the rules above: PKS_OK, PKS_ERR_TOO_LARGE
 * for a length or count over its limit, PKS_ERR_INVALID for anything else.
 */
int record_version_validate(const struct record_version *v);

/*
 * The record id of a credential: keyed BLAKE2b-128 (key = the vault's id key)
 * over an unambiguous encoding of (rp id, credential id), so the same
 * credential maps to the same record on every device. PKS_ERR_INVALID when a
 * length is outside its limit.
 */
int record_id_derive(const uint8_t id_key[RECORD_ID_KEY_LEN], const char *rp_id,
		     const uint8_t *cred_id, size_t cred_len, uint8_t out[RECORD_ID_LEN]);

/*
 * For a CREATE: PKS_OK when its record id is the one record_id_derive()
 * gives for its rp id and credential id, PKS_ERR_REJECTED otherwise. The
 * agent runs this on every CREATE it accepts, so one credential cannot be
 * planted under another record's id.
 */
int record_version_check_id(const struct record_version *v,
			    const uint8_t id_key[RECORD_ID_KEY_LEN]);

/* Device id of an Ed25519 public key: BLAKE2b-256 of the key. */
void record_device_id(const uint8_t sign_pk[32], uint8_t out[DEVICE_ID_LEN]);

/*
 * Canonical CBOR (integer map keys, sorted, shortest forms, definite
 * lengths). *out is malloc'd and may contain a private key: wipe it with
 * sodium_memzero before free(). Errors as record_version_validate().
 */
int record_version_encode(const struct record_version *v, uint8_t **out, size_t *out_len);

/*
 * Decodes one version; the caller owns *out (record_version_free). Errors:
 * PKS_ERR_TOO_LARGE (input or a field over its limit), PKS_ERR_NONCANONICAL
 * (valid CBOR but not the canonical encoding: unsorted or duplicate keys,
 * long-form integers or lengths, indefinite lengths), PKS_ERR_MALFORMED
 * (anything else: bad CBOR, trailing bytes, unknown op or key, a field not
 * allowed for the op, a required field missing, too deep nesting),
 * PKS_ERR_TRUNCATED (the CBOR item ends early), PKS_ERR_NOMEM.
 */
int record_version_decode(const uint8_t *buf, size_t len, struct record_version **out);

/*
 * Sealed version:
 *   header     format (1) | record id (16) | author (32) | seq (8, BE) |
 *              epoch (4, BE) | nonce (24)
 *   ciphertext XChaCha20-Poly1305 of the CBOR body, key = data key,
 *              associated data = header
 *   signature  Ed25519 by the author over a domain string, header and
 *              ciphertext
 */
#define RECORD_SEALED_FORMAT 1
#define RECORD_SEALED_HEADER_LEN 85
#define RECORD_SEALED_MAC_LEN 16
#define RECORD_SEALED_SIG_LEN 64
#define RECORD_SEALED_MIN                                                                          \
	(RECORD_SEALED_HEADER_LEN + RECORD_SEALED_MAC_LEN + 1 + RECORD_SEALED_SIG_LEN)
#define RECORD_SEALED_MAX                                                                          \
	(RECORD_SEALED_HEADER_LEN + RECORD_SEALED_MAC_LEN + RECORD_ENCODED_MAX +                   \
	 RECORD_SEALED_SIG_LEN)

struct record_sealed_header {
	uint8_t format;
	uint8_t record_id[RECORD_ID_LEN];
	uint8_t author[DEVICE_ID_LEN];
	uint64_t seq;
	uint32_t epoch;
	uint8_t nonce[RECORD_NONCE_LEN];
};

/*
 * Seals v. sign_sk is the author's libsodium Ed25519 secret key (64 bytes,
 * public key in its second half); PKS_ERR_INVALID when v->author is not that
 * key's device id. The nonce must never repeat under one data key (take it
 * from randombytes_buf). *out is malloc'd; free() it.
 */
int record_version_seal(const struct record_version *v, const uint8_t data_key[RECORD_DATA_KEY_LEN],
			const uint8_t sign_sk[64], const uint8_t nonce[RECORD_NONCE_LEN],
			uint8_t **out, size_t *out_len);

/*
 * Parses only the clear header, without any crypto, so the caller can look
 * up the author and the epoch key. PKS_ERR_TRUNCATED (shorter than
 * RECORD_SEALED_MIN), PKS_ERR_TOO_LARGE (longer than RECORD_SEALED_MAX),
 * PKS_ERR_MALFORMED (unknown format or seq 0).
 */
int record_sealed_peek(const uint8_t *blob, size_t len, struct record_sealed_header *h);

/*
 * Verifies the signature with author_pk (which must hash to the header's
 * author), decrypts with data_key, decodes, and checks the body's record id,
 * author, seq and epoch equal the header's. PKS_ERR_AUTH when the signature,
 * the key binding or the MAC fails; peek's and decode's errors for shape;
 * PKS_ERR_MALFORMED when body and header disagree.
 */
int record_version_open(const uint8_t *blob, size_t len, const uint8_t author_pk[32],
			const uint8_t data_key[RECORD_DATA_KEY_LEN], struct record_version **out);

/*
 * The merged state of one record, opaque. Rules:
 *  - CREATE sets the immutable fields. Creates agreeing on credential id, rp
 *    id, user handle, alg, keys and backup_eligible merge (concurrent imports
 *    of one credential); created_at, backup_state and source come from the
 *    earliest of them by (hlc, author). Of conflicting creates the earliest by
 *    (hlc, author) wins everywhere; a later one gets PKS_ERR_REJECTED and
 *    changes nothing visible.
 *  - user name, display name, notes: last writer wins per field on (stamp,
 *    author device id), then value bytes (only a buggy or hostile author can
 *    tie on the first two).
 *  - Trash: the record is trashed iff some DELETE tag is not listed by any
 *    RESTORE; edits still apply to a trashed record.
 *  - PURGE is final: everything but the record id and the earliest purge's
 *    (hlc, author) is wiped; later versions are accepted and ignored.
 *  - Versions may arrive before their CREATE; the record is not visible until
 *    it does.
 */
struct record_state;

/* NULL when out of memory. */
struct record_state *record_state_new(const uint8_t id[RECORD_ID_LEN]);
/* Wipes and frees; NULL is fine. */
void record_state_free(struct record_state *st);

/*
 * Joins one version into the state (v stays the caller's). PKS_OK (also for
 * duplicates and for anything after a purge); PKS_ERR_REJECTED for a CREATE
 * that conflicts with an earlier one: nothing visible changes. The state
 * still remembers it so the outcome cannot depend on arrival order; the
 * caller may log it and should store it like any other valid version
 * (record_state_dominated() says what may be dropped). PKS_ERR_INVALID for another record's id or
 * a version that fails record_version_validate(), PKS_ERR_NOMEM,
 * PKS_ERR_TOO_LARGE when one record holds absurdly many (65536) delete or
 * restored tags. On these other errors the state is unchanged.
 */
int record_state_apply(struct record_state *st, const struct record_version *v);

/*
 * True when v (applied or not) contributes nothing to the state any more, so
 * the store may drop it: an UPDATE whose every field is beaten by another
 * update, a DELETE undone by a restore, anything but the winning PURGE once
 * purged. CREATEs and RESTOREs of a live record are never dominated.
 */
bool record_state_dominated(const struct record_state *st, const struct record_version *v);

/*
 * BLAKE2b-256 of the merged state (immutable fields, each mutable field with
 * its stamp and author, the outstanding delete tags, updated_at, purge), equal
 * on two devices iff they hold the same merged record. Dropping dominated
 * versions does not change it.
 */
void record_state_digest(const struct record_state *st, uint8_t out[RECORD_DIGEST_LEN]);

/* Accessors. Pointers are borrowed and valid until the next apply or free. */
const uint8_t *record_state_id(const struct record_state *st);
/* A CREATE has been applied (false again after a purge). */
bool record_state_has_create(const struct record_state *st);
/* has_create and not purged: the record should be listed (maybe in trash). */
bool record_state_visible(const struct record_state *st);
bool record_state_purged(const struct record_state *st);
/* The winning purge's stamp, 0 when not purged. */
hlc_t record_state_purged_hlc(const struct record_state *st);

/* Immutable fields: NULL / 0 / false without a create or after a purge. */
const uint8_t *record_state_credential_id(const struct record_state *st, size_t *len);
const char *record_state_rp_id(const struct record_state *st);
const uint8_t *record_state_user_handle(const struct record_state *st, size_t *len);
enum record_alg record_state_alg(const struct record_state *st);
const uint8_t *record_state_public_key(const struct record_state *st, size_t *len);
bool record_state_backup_eligible(const struct record_state *st);
bool record_state_backup_state(const struct record_state *st);
uint64_t record_state_created_at(const struct record_state *st);
const char *record_state_source(const struct record_state *st);
/*
 * Borrowed view of the PKCS#8 private key: PKS_OK, or PKS_ERR_STATE without
 * a create or after a purge. The state wipes it when purged or freed; it is
 * in plain heap memory (one guarded sodium_malloc mapping per record would
 * exhaust the process's mappings in a large vault), so copy it into
 * sodium_malloc memory if it must outlive a short use.
 */
int record_state_private_key(const struct record_state *st, const uint8_t **key, size_t *len);

/*
 * A mutable field's merged value, NULL when no version ever set it; *stamp
 * and author (either may be NULL) receive the winning writer.
 */
const char *record_state_field(const struct record_state *st, enum record_field f, hlc_t *stamp,
			       uint8_t author[DEVICE_ID_LEN]);
/* The same, with "" for a field never set. */
const char *record_state_user_name(const struct record_state *st);
const char *record_state_display_name(const struct record_state *st);
const char *record_state_notes(const struct record_state *st);

/*
 * Newest stamp among the contributions that count (the create, winning
 * field values, outstanding deletes, restores, purge); 0 when none.
 */
hlc_t record_state_updated_at(const struct record_state *st);
bool record_state_trashed(const struct record_state *st);
/* Unix ms of the newest outstanding delete, 0 when not trashed. */
uint64_t record_state_trashed_at(const struct record_state *st);
/*
 * The outstanding delete tags (what a RESTORE must list), ascending by
 * (hlc, author): copies up to cap of them into out and returns how many
 * there are in all.
 */
size_t record_state_delete_tags(const struct record_state *st, struct record_delete_tag *out,
				size_t cap);

#endif
