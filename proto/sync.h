/*
 * The sync protocol of one member session (DESIGN §6) as a pure state
 * machine: no I/O, no clock. The agent runs one sync_session per connected
 * peer, over a Noise channel; the deterministic simulation in tests/ runs the
 * same engine over a faulty in-memory channel. Both give it a replica (the
 * local store of membership operations and sealed record versions) through
 * struct sync_replica_ops.
 *
 * Messages (each one Noise transport message, so at most SYNC_MSG_MAX bytes)
 * are canonical CBOR arrays whose first item is the message type:
 *
 *   HELLO     [1, version, [head...], memb_digest]
 *   MEMB_OPS  [2, [op...], end]            ops the peer lacks, parents first
 *   STATE     [3, [[author, seq]...], digest, records]
 *   VERSIONS  [4, batch, [sealed...], end] batch numbers count from 1
 *   ACK       [5, batch]
 *   DONE      [6, digest]
 *   SUMMARY   [7, [[author, seq, chain_hash]...], end]
 *   KEYS      [8, [epoch_be32 || key32 ...], end]   data keys for the peer
 *
 * A session goes:
 *   1. membership: both send HELLO; on the peer's HELLO each sends the ops
 *      the peer lacks (given its heads) as MEMB_OPS messages, the last with
 *      end = true (an empty one when nothing is missing). Each MEMB_OPS is
 *      applied with memb_apply. Once both ends are seen the peer must still
 *      be a member (peer_allowed), else the session fails with
 *      PKS_ERR_REJECTED.
 *      With keys_export set, each side then sends one KEYS message with
 *      every epoch key it holds (none when it holds none): a device added concurrently with a key
 *      rotation was not among those the rotation sealed its key to, and
 *      without this it could never open what was written under that epoch.
 *      A KEYS message is accepted once, after the peer's membership end,
 *      before its STATE, and only while the peer is allowed.
 *   2. state: both send STATE (vector of highest contiguous seq per author,
 *      digest of the visible state). Each then streams, per author, the
 *      versions above the peer's seq in VERSIONS batches of at most
 *      SYNC_BATCH_BYTES with at most SYNC_WINDOW batches unacknowledged; the
 *      last batch of this initial transfer has end = true (maybe empty). The
 *      receiver applies each batch in one transaction (versions_apply) and
 *      then ACKs it.
 *   3. done: when its own transfer is fully acknowledged and the peer's end
 *      batch was applied, a side sends DONE with its current digest. With
 *      both DONEs: equal digests mean synced (on_synced(equal = true)).
 *      Different digests start one full reconciliation: both send SUMMARY
 *      (per author: highest seq and the chain hash of its versions); for
 *      each author whose (seq, hash) differ, each side sends all its
 *      versions of that author (VERSIONS, end = true on the last), then DONE
 *      again. At most SYNC_RECONCILE_MAX reconciliations per session; after
 *      that on_synced(equal = false) and the session stays up.
 *   4. live: a DONE in the live phase is a digest probe, answered with a
 *      DONE (see sync_session_check()). After phase 2 started, sync_session_local_change() sends
 * every version and membership op the peer is not known to hold (what it announced plus what was
 * sent to it or received from it), as VERSIONS (end = false) and MEMB_OPS (end = false) messages.
 * Received live batches are applied and ACKed like any other.
 *
 * Any message that is malformed, over a limit, or not expected in the
 * current phase (a second HELLO, an ACK for a batch never sent, VERSIONS
 * before STATE, ...) makes sync_session_receive() fail; the caller closes
 * the session. Nothing is applied from a message that fails to decode.
 */
#ifndef PKS_SYNC_H
#define PKS_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYNC_PROTOCOL_VERSION 1
/* A frame is at most 65535 bytes and the Noise tag takes 16. */
#define SYNC_MSG_MAX 65519
#define SYNC_ID_LEN 32
#define SYNC_DIGEST_LEN 32
#define SYNC_HEADS_MAX 64
#define SYNC_AUTHORS_MAX 512
#define SYNC_BLOBS_MAX 1024    /* ops or versions in one message */
#define SYNC_BLOB_MAX 32768    /* one op or sealed version */
#define SYNC_KEYS_MAX 256      /* epoch keys in one KEYS message */
#define SYNC_KEY_BLOB_LEN 36   /* epoch (big-endian 32 bits) and a 32-byte key */
#define SYNC_BATCH_BYTES 60000 /* payload bytes of one VERSIONS batch */
#define SYNC_WINDOW 8          /* VERSIONS batches in flight, unacknowledged */
#define SYNC_RECONCILE_MAX 2

enum sync_msg_type {
	SYNC_MSG_HELLO = 1,
	SYNC_MSG_MEMB_OPS = 2,
	SYNC_MSG_STATE = 3,
	SYNC_MSG_VERSIONS = 4,
	SYNC_MSG_ACK = 5,
	SYNC_MSG_DONE = 6,
	SYNC_MSG_SUMMARY = 7,
	SYNC_MSG_KEYS = 8,
};

/* A byte string owned by someone else. */
struct sync_blob {
	const uint8_t *data;
	size_t len;
};

struct sync_vector_entry {
	uint8_t author[SYNC_ID_LEN];
	uint64_t seq;
};

/* Per-author highest contiguous seq; entries sorted by author bytes, seq >= 1. */
struct sync_vector {
	size_t n;
	struct sync_vector_entry e[SYNC_AUTHORS_MAX];
};

struct sync_summary_entry {
	uint8_t author[SYNC_ID_LEN];
	uint64_t seq;
	uint8_t hash[SYNC_DIGEST_LEN];
};

/* One decoded message; pointers point into the decoded input buffer. */
struct sync_msg {
	enum sync_msg_type type;
	uint64_t version; /* HELLO */
	size_t n_heads;   /* HELLO */
	uint8_t heads[SYNC_HEADS_MAX][SYNC_ID_LEN];
	uint8_t digest[SYNC_DIGEST_LEN]; /* HELLO (membership), STATE, DONE */
	struct sync_vector vector;       /* STATE */
	uint64_t records;                /* STATE */
	uint64_t batch;                  /* VERSIONS, ACK */
	bool end;                        /* MEMB_OPS, VERSIONS, SUMMARY */
	size_t n_blobs;                  /* MEMB_OPS, VERSIONS */
	struct sync_blob blobs[SYNC_BLOBS_MAX];
	size_t n_summary; /* SUMMARY */
	struct sync_summary_entry summary[SYNC_AUTHORS_MAX];
};

/*
 * Decodes one message into *msg (a caller-provided struct; it is large, so
 * heap-allocate it). Blob pointers point into buf. PKS_ERR_MALFORMED,
 * PKS_ERR_NONCANONICAL, PKS_ERR_TOO_LARGE (a count or length over its
 * limit), PKS_ERR_TRUNCATED. Unsorted or duplicate vector/summary authors are
 * PKS_ERR_MALFORMED.
 */
int sync_msg_decode(const uint8_t *buf, size_t len, struct sync_msg *msg);
/* Encodes msg canonically; *out is malloc'd. PKS_ERR_TOO_LARGE over SYNC_MSG_MAX. */
int sync_msg_encode(const struct sync_msg *msg, uint8_t **out, size_t *out_len);

/* Emits one blob; returns PKS_OK to go on, 1 to stop early (not an error), or an error. */
typedef int (*sync_emit_fn)(void *ctx, const uint8_t *data, size_t len);

/*
 * The replica a session reads and writes. Every function returns PKS_OK or
 * an error (which fails the session), unless noted.
 */
struct sync_replica_ops {
	/* Membership DAG heads (at most max) and digest. */
	size_t (*memb_heads)(void *replica, uint8_t heads[][SYNC_ID_LEN], size_t max);
	void (*memb_digest)(void *replica, uint8_t out[SYNC_DIGEST_LEN]);
	/* Emits every op the peer lacks given its heads (unknown heads ignored), parents first. */
	int (*memb_missing)(void *replica, const uint8_t (*peer_heads)[SYNC_ID_LEN], size_t n,
			    sync_emit_fn emit, void *ctx);
	/*
	 * Applies received ops in one transaction. Ops whose parents are
	 * missing wait inside the replica; an op that is invalid (bad signature,
	 * author not a member) is skipped and logged by the replica, not an error.
	 */
	int (*memb_apply)(void *replica, const struct sync_blob *ops, size_t n);
	/* Whether the session's peer is still a member. */
	bool (*peer_allowed)(void *replica, const uint8_t peer[SYNC_ID_LEN]);

	/* The per-author vector of what the replica holds. */
	int (*vector)(void *replica, struct sync_vector *out);
	/*
	 * Emits the author's versions with seq > after_seq in seq order until
	 * emit returns 1 or none is left.
	 */
	int (*versions_after)(void *replica, const uint8_t author[SYNC_ID_LEN], uint64_t after_seq,
			      sync_emit_fn emit, void *ctx);
	/*
	 * Applies received sealed versions in one transaction. A version that
	 * is inadmissible (unknown or revoked author past its cutoff, bad
	 * signature, not the next seq of its author, undecryptable) is skipped
	 * and counted by the replica, not an error.
	 */
	int (*versions_apply)(void *replica, const struct sync_blob *versions, size_t n);
	/* Digest of the visible merged state. */
	void (*digest)(void *replica, uint8_t out[SYNC_DIGEST_LEN]);
	/*
	 * Full reconciliation: the author's highest contiguous seq and the
	 * chain hash of its versions 1..seq: h_0 = 32 zero bytes, h_i =
	 * BLAKE2b-256(h_{i-1} || BLAKE2b-256(sealed_i)). seq 0 and h_0 when none.
	 */
	int (*author_summary)(void *replica, const uint8_t author[SYNC_ID_LEN], uint64_t *seq,
			      uint8_t hash[SYNC_DIGEST_LEN]);
	/*
	 * Optional (both or neither): the epoch keys the replica holds, each
	 * emitted as SYNC_KEY_BLOB_LEN bytes (at most SYNC_KEYS_MAX, newest
	 * first), and the keys received from an allowed peer; the replica keeps
	 * those for epochs it has no key for. Blobs hold secrets: the engine
	 * wipes its copies.
	 */
	int (*keys_export)(void *replica, sync_emit_fn emit, void *ctx);
	int (*keys_apply)(void *replica, const struct sync_blob *keys, size_t n);
};

struct sync_session_cb {
	/*
	 * Sends one message. PKS_ERR_BUSY means the transport queue is full and
	 * nothing was sent: the session retries that message after
	 * sync_session_drained(). Any other error fails the call in progress.
	 */
	int (*send)(void *user, const uint8_t *msg, size_t len);
	/* Phase 3 ended: digests equal (synced) or not after reconciliation. */
	void (*on_synced)(void *user, bool equal, const uint8_t peer_digest[SYNC_DIGEST_LEN]);
	/* Received versions or ops were applied (the agent pushes them to other peers). */
	void (*on_applied)(void *user, size_t versions, size_t ops);
};

enum sync_phase {
	SYNC_PHASE_MEMBERSHIP = 1,
	SYNC_PHASE_STATE = 2,
	SYNC_PHASE_DONE = 3, /* DONE sent, waiting for the peer's */
	SYNC_PHASE_LIVE = 4, /* synced; live pushes */
	SYNC_PHASE_FAILED = 5,
};

struct sync_stats {
	uint64_t msgs_out, msgs_in;
	uint64_t bytes_out, bytes_in; /* message bytes, before Noise and framing */
	uint64_t versions_out, versions_in;
	uint64_t ops_out, ops_in;
	uint64_t reconciliations;
};

struct sync_session;

int sync_session_new(const struct sync_replica_ops *ops, void *replica,
		     const uint8_t peer_device[SYNC_ID_LEN], const struct sync_session_cb *cb,
		     void *cb_user, struct sync_session **out);
void sync_session_free(struct sync_session *s);
/* Sends HELLO. */
int sync_session_start(struct sync_session *s);
/* One received message. An error means: close the session (phase FAILED). */
int sync_session_receive(struct sync_session *s, const uint8_t *msg, size_t len);
/* The transport can take more: resume sending. */
int sync_session_drained(struct sync_session *s);
/* The replica changed (local edit, membership op, or versions from another peer). */
int sync_session_local_change(struct sync_session *s);
/*
 * In the live phase: sends DONE with our digest as a probe; the peer answers
 * with its own and on_synced(equal, peer digest) reports the comparison on
 * both sides ("pksync sync --wait"). Before the live phase it does nothing:
 * the session's own DONE exchange is still to come.
 */
int sync_session_check(struct sync_session *s);
enum sync_phase sync_session_phase(const struct sync_session *s);
void sync_session_stats(const struct sync_session *s, struct sync_stats *out);

#endif
