/*
 * Vault membership (DESIGN §3): a DAG of signed, immutable operations.
 *
 * Wire form of one op ("signed encoding"), canonical CBOR:
 *
 *   [body: bstr, signature: bstr(64)]
 *
 * signature = Ed25519 by the author over "pksync membership op v1" (with its
 * NUL) || body. The op id is BLAKE2b-256 of the whole signed encoding. body is
 * a canonical CBOR map with integer keys, ascending, shortest forms:
 *
 *    1 kind (uint)             6 time (uint, Unix ms, informational only)
 *    2 vault id (bstr 16)      7 device sign pk (bstr 32)   ADD
 *    3 author sign pk (bstr 32) 8 device dh pk (bstr 32)    GENESIS, ADD
 *    4 parents [bstr 32...]    9 name (tstr 0..64 UTF-8)    GENESIS, ADD, RENAME
 *      strictly ascending;    10 target device id (bstr 32) REVOKE, RENAME
 *      none for GENESIS,      11 cutoff seq (uint)          REVOKE
 *      1..16 otherwise        12 epoch (uint32, >= 2)       ROTATE
 *    5 depth (uint): 0 for    13 sealed keys               ROTATE
 *      GENESIS, else 1 + the     [[device id, crypto_box_seal of the
 *      largest parent depth        32-byte key to its dh pk (80)]...],
 *                                  1..256, ascending by device id
 *
 * GENESIS's device is its author. Every key not listed for a kind is refused.
 *
 * Rules (every decision depends only on the set of ops, never on the order
 * of arrival). "The view of a set" is the outcome of these rules on a
 * causally closed set of ops; "the causal past" of an op is its ancestors.
 *  - Acceptance: an op is accepted when its author is a member in the view
 *    of its causal past. Otherwise membership_apply() refuses it with
 *    PKS_ERR_REJECTED and does not keep it. Likewise, in that view: ADD's
 *    device must never have been a device (member or revoked: a revoked key
 *    can never be re-added, and a concurrent re-add is outvoted by the
 *    revoke, see below), REVOKE's and RENAME's target must be a member,
 *    ROTATE's epoch must be one more than the newest epoch and its keys
 *    must go to members only. Acceptance is decided once, as the causal
 *    past of an op never changes.
 *  - Strong remove: an accepted op counts ("is effective") when the ADD (or
 *    GENESIS) of its author that it descends from counts, and no counting
 *    REVOKE of its author exists of which it is not an ancestor (whatever
 *    time it claims). Exception: of two concurrent REVOKEs of each other's
 *    authors neither removes the other, so concurrent mutual revokes remove
 *    both. When revokes wait on each other in a longer cycle (say a revoked
 *    device adds a puppet behind the revoke's back, and the puppet revokes
 *    the revoker), every REVOKE on the cycle counts: removal wins in doubt,
 *    so a revoked device can at worst take its revoker with it, never stay.
 *  - A device is a member iff a counting ADD (or the GENESIS) adds it and
 *    no counting REVOKE targets it. Any member may add, revoke, rename (any
 *    member, itself included) or rotate (household model).
 *  - Of several counting ADDs of one device (concurrent adds) the one with
 *    the smallest (depth, op id) gives its dh key, added_at and added_by; a
 *    device's name is that of its counting RENAME with the largest (depth,
 *    op id), else the ADD's.
 *  - Record versions under strong remove: each REVOKE carries cutoff_seq,
 *    the highest author seq of the revoked device the revoking agent knew
 *    in the revoke's causal past. Versions of a revoked device with
 *    seq <= cutoff stand; later ones are ignored (with several revokes of
 *    one device the smallest cutoff applies). See
 *    membership_version_admissible().
 *  - Epochs: epoch 1 exists from genesis (its key is made by the vault, not
 *    carried by ops). Each counting ROTATE names a new epoch; of concurrent
 *    ROTATEs to one epoch the one with the smallest op id wins, on every
 *    device. Both were sealed to the members their authors knew, so members
 *    can open whichever wins. A ROTATE concurrent with a REVOKE may still be
 *    sealed to the revoked device: membership_rotate_needed() says when the
 *    agent must rotate again.
 *
 * Limits: MEMBERSHIP_OPS_MAX applied ops (PKS_ERR_TOO_LARGE beyond),
 * MEMBERSHIP_PENDING_MAX ops waiting for parents (PKS_ERR_BUSY beyond), an
 * op adding a device to MEMBERSHIP_MEMBERS_MAX members of its causal past is
 * refused (PKS_ERR_TOO_LARGE), as is an op that would leave more than
 * MEMBERSHIP_HEADS_MAX heads.
 *
 * Not thread-safe; proto does no I/O: time comes from the caller. ROTATE
 * sealing uses libsodium's crypto_box_seal (its own ephemeral randomness).
 * Call sodium_init() before using this module.
 */
#ifndef PKS_MEMBERSHIP_H
#define PKS_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEMBERSHIP_OP_ID_LEN 32
#define MEMBERSHIP_OP_MAX 32768
#define MEMBERSHIP_NAME_MAX 64
#define MEMBERSHIP_MEMBERS_MAX 256
#define MEMBERSHIP_PARENTS_MAX 16
#define MEMBERSHIP_HEADS_MAX 64 /* heads a DAG may have; more is refused */
#define MEMBERSHIP_OPS_MAX 4096 /* ops in one vault */
#define MEMBERSHIP_PENDING_MAX 256
#define MEMBERSHIP_VAULT_ID_LEN 16
#define MEMBERSHIP_SEALED_KEY_LEN 80 /* crypto_box_SEALBYTES + 32 */

enum membership_kind {
	MEMBERSHIP_GENESIS = 1,
	MEMBERSHIP_ADD,
	MEMBERSHIP_REVOKE,
	MEMBERSHIP_RENAME,
	MEMBERSHIP_ROTATE
};

struct membership; /* opaque */

struct membership_device { /* plain value */
	uint8_t device_id[32];
	uint8_t sign_pk[32];
	uint8_t dh_pk[32];
	char name[MEMBERSHIP_NAME_MAX + 1];
	uint64_t added_at_ms;
	uint8_t added_by[32]; /* genesis: itself */
	bool revoked;
	uint64_t revoked_at_ms; /* the earliest revoke by (depth, op id) */
};

/* An empty membership, no genesis yet. PKS_ERR_NOMEM. */
int membership_new(struct membership **out);
/* Frees everything; NULL is fine. */
void membership_free(struct membership *m);

/*
 * Op authoring. sign_sk / author_sign_sk are libsodium Ed25519 secret keys
 * (64 bytes, public key in the second half); they are only borrowed. Each
 * function builds, signs and applies the op to m (so the author's view is
 * current) and hands its signed encoding to the caller in *op (malloc'd,
 * free() it). The parents are m's current heads (the 16 smallest ids when
 * there are more). Errors: PKS_ERR_REJECTED
 * when the author is not a current member (or the op would be refused by
 * membership_apply()), PKS_ERR_INVALID for bad arguments (name too long or
 * not UTF-8), PKS_ERR_EXISTS for adding a device that is or was a device of
 * the vault (or whose dh key a current member has), PKS_ERR_NOT_FOUND for a target that is not a
 * current member, PKS_ERR_STATE without genesis (or, for membership_genesis, with one),
 * PKS_ERR_TOO_LARGE at a limit, PKS_ERR_NOMEM, PKS_ERR_CRYPTO.
 */
/* Author a GENESIS (vault id 16 bytes); applies it to m; *op malloc'd. */
int membership_genesis(struct membership *m, const uint8_t vault_id[16], const uint8_t sign_sk[64],
		       const uint8_t dh_pk[32], const char *name, uint64_t now_ms, uint8_t **op,
		       size_t *op_len);
int membership_add_device(struct membership *m, const uint8_t author_sign_sk[64],
			  const uint8_t sign_pk[32], const uint8_t dh_pk[32], const char *name,
			  uint64_t now_ms, uint8_t **op, size_t *op_len);
/* cutoff_seq: the revoked device's versions with seq <= cutoff stand. */
int membership_revoke(struct membership *m, const uint8_t author_sign_sk[64],
		      const uint8_t device_id[32], uint64_t cutoff_seq, uint64_t now_ms,
		      uint8_t **op, size_t *op_len);
int membership_rename(struct membership *m, const uint8_t author_sign_sk[64],
		      const uint8_t device_id[32], const char *name, uint64_t now_ms, uint8_t **op,
		      size_t *op_len);
/* New epoch = current epoch + 1, key sealed to every current member. */
int membership_rotate(struct membership *m, const uint8_t author_sign_sk[64], const uint8_t key[32],
		      uint64_t now_ms, uint8_t **op, size_t *op_len);

/*
 * Apply a received op (borrowed): PKS_OK (applied or already known),
 * PKS_ERR_AUTH (bad signature), PKS_ERR_REJECTED (author not a member in
 * its causal past, wrong vault, second genesis, re-add of a device, a rule
 * above broken), PKS_ERR_MALFORMED / PKS_ERR_NONCANONICAL /
 * PKS_ERR_TOO_LARGE / PKS_ERR_TRUNCATED for bad encodings (and a depth that
 * does not match the parents: MALFORMED), PKS_ERR_PENDING when a parent is
 * missing: the op is kept (at most MEMBERSHIP_PENDING_MAX, PKS_ERR_BUSY
 * beyond) and applied when its parents arrive (a pending op later found bad
 * is dropped silently), PKS_ERR_NOMEM. On any error m is unchanged (but for
 * the pending set).
 */
int membership_apply(struct membership *m, const uint8_t *op, size_t len);

/*
 * Ops waiting for parents. Anyone with a signing key can fill the pending
 * set (the author's membership is only judged once the parents are there),
 * so the agent clears it when a sync session ends; the peer resends what
 * it still lacks next time.
 */
size_t membership_pending_count(const struct membership *m);
void membership_clear_pending(struct membership *m);

/*
 * Op id (BLAKE2b-256 of the signed encoding) of any byte string; no checks.
 */
void membership_op_id(const uint8_t *op, size_t len, uint8_t out[MEMBERSHIP_OP_ID_LEN]);

bool membership_has_genesis(const struct membership *m);
/* All zero without genesis. */
void membership_vault_id(const struct membership *m, uint8_t out[16]);
bool membership_is_member(const struct membership *m, const uint8_t device_id[32]);
/* Looks up a current member by its X25519 static key (Noise authorisation). */
int membership_find_by_dh(const struct membership *m, const uint8_t dh_pk[32],
			  struct membership_device *out); /* PKS_ERR_NOT_FOUND */
/* Members and revoked devices (devices with a counting ADD or GENESIS). */
int membership_get(const struct membership *m, const uint8_t device_id[32],
		   struct membership_device *out); /* PKS_ERR_NOT_FOUND */
/*
 * Calls fn for every device (members and revoked), ascending by device id;
 * a non-zero return from fn stops the walk and is returned.
 */
typedef int (*membership_device_fn)(void *user, const struct membership_device *d);
int membership_foreach_device(const struct membership *m, membership_device_fn fn, void *user);
/* Number of current members. */
size_t membership_member_count(const struct membership *m);

/*
 * Strong remove for record versions: false when author is not (and never
 * was) a device of this vault, or is revoked and seq > its cutoff (with
 * several revokes of one device, the smallest cutoff).
 */
bool membership_version_admissible(const struct membership *m, const uint8_t author[32],
				   uint64_t seq);

/* DAG heads (op ids), their count <= MEMBERSHIP_HEADS_MAX; returns the count
   (copies at most max, ascending by op id). */
size_t membership_heads(const struct membership *m, uint8_t heads[][32], size_t max);
/* Digest over the set of applied op ids (order-independent). */
void membership_digest(const struct membership *m, uint8_t out[32]);
/* Number of applied ops. */
size_t membership_op_count(const struct membership *m);
/*
 * Every applied op in a topological order (parents first): for persistence
 * (the agent stores them and re-applies on start) and for sending. Pointers
 * are borrowed for the call; a non-zero return from fn stops and is returned.
 */
typedef int (*membership_op_fn)(void *user, const uint8_t id[32], const uint8_t *op, size_t len);
int membership_foreach_op(const struct membership *m, membership_op_fn fn, void *user);
/* The ops a peer lacks, given its heads: every applied op that is not in
   the causal past of any of the peer heads we know (unknown heads are
   ignored), parents first. */
int membership_foreach_missing(const struct membership *m, const uint8_t (*peer_heads)[32],
			       size_t n_heads, membership_op_fn fn, void *user);
bool membership_has_op(const struct membership *m, const uint8_t id[32]);

/*
 * Current epoch (1 before any ROTATE; genesis implies epoch 1 whose key is
 * created by the vault, not carried in ops) and opening a ROTATE's key:
 * PKS_ERR_NOT_FOUND when there is no winning rotate for epoch or it was not
 * sealed to the device with my_dh_pk, PKS_ERR_AUTH when the sealed box does
 * not open with my keys. key_out is written only on success.
 */
uint32_t membership_epoch(const struct membership *m);
int membership_epoch_key(const struct membership *m, uint32_t epoch, const uint8_t my_dh_pk[32],
			 const uint8_t my_dh_sk[32], uint8_t key_out[32]);
/*
 * Every accepted ROTATE to epoch, not only the winner: n = 0 is the winner
 * (when one counts), then the others ascending by op id, also those that no
 * longer count. A version sealed by a device that saw a losing concurrent
 * ROTATE first is under that ROTATE's key, so when the winner's key fails
 * the MAC the agent tries these in turn. PKS_ERR_NOT_FOUND past the last,
 * PKS_ERR_PERM when the n-th holds no key for my_dh_pk, PKS_ERR_AUTH when
 * the box does not open; key_out is written only on success.
 */
int membership_epoch_key_nth(const struct membership *m, uint32_t epoch, size_t n,
			     const uint8_t my_dh_pk[32], const uint8_t my_dh_sk[32],
			     uint8_t key_out[32]);
/*
 * True when the current epoch's key is known to a device that is no longer
 * a member (epoch 1 and some device was ever revoked, or the winning ROTATE
 * sealed it to a now revoked device): the agent should rotate.
 */
bool membership_rotate_needed(const struct membership *m);

#endif
