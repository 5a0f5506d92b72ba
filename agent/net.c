#include "agent/net.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/pairing.h"
#include "common/bytes.h"
#include "common/err.h"
#include "proto/cpace.h"
#include "proto/membership.h"
#include "proto/noise.h"
#include "proto/sync.h"
#include "transport/ble.h"
#include "transport/tcp.h"

#define NET_PROTOCOL "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
#define NET_MEMBER_PROLOGUE "pksync member v1"
#define NET_PAIR_PROLOGUE "pksync pair v1"
#define NET_PAIR_CI "pksync pair v1"
#define NET_PAIR_PSK_CONTEXT "pksync pair psk v1"
#define NET_FIRST_MEMBER 0x01
#define NET_FIRST_PAIR_CODE 0x02
#define NET_FIRST_PAIR_QR 0x03
#define NET_SID_LEN 16
#define NET_FRAME_MAX 65535
#define NET_JOIN_OPS_MAX 4096

enum net_kind {
	NET_MEMBER,
	NET_SPONSOR,
	NET_JOINER,
};

enum net_state {
	NET_FIRST,     /* inbound, nothing received yet */
	NET_CPACE,     /* joiner: waiting for the sponsor's CPace message */
	NET_HANDSHAKE, /* Noise messages */
	NET_OPEN,      /* transport */
	NET_CLOSED,
};

struct net_dialer;

/* What a session runs over: a TCP connection or a BLE link. */
struct net_link {
	enum net_transport kind;
	union {
		struct tcp_conn *tcp;
		struct ble_link *ble;
	} u;
};

struct net_session {
	struct net *net;
	struct net_session *next;
	struct net_link link;
	/* BLE links have no idle timeout: the handshake must end by then. */
	uint64_t handshake_deadline_ms;
	/* net_send_sealed() said BUSY without asking the link (which then
	   never calls on_drain): the tick drains once the queue is low. */
	bool want_drain;
	struct net_dialer *dialer;
	bool outbound;
	enum net_kind kind;
	enum net_state state;
	struct noise_handshake *hs;
	struct noise_cipher *tx;
	struct noise_cipher *rx;
	struct cpace *cpace;
	uint8_t peer[DEVICE_ID_LEN];
	bool peer_known;
	char addr[TCP_ADDR_MAX + 1];
	struct sync_session *sync;
	uint64_t connected_ms;
	uint64_t last_sync_ms;
	bool synced;
	bool equal;
	uint8_t peer_digest[32];
	/* Joiner: what arrived so far. */
	struct vault_join_bundle *bundle;
	uint8_t **ops;
	size_t *op_lens;
	size_t n_ops;
	bool keys_in;
	/* Joiner: the sponsor answered our CPace message, so it spent one of
	   the code's tries on this attempt. */
	bool cpace_answered;
};

struct net_dialer {
	struct net *net;
	struct net_dialer *next;
	struct tcp_dialer *d;
	char addr[TCP_ADDR_MAX + 1];
	struct net_session *session;
	/* Paused while a session with this device runs over another connection. */
	bool paused;
	uint8_t paused_for[DEVICE_ID_LEN];
	bool is_join;
	/* Made for an address discovery reported for this device. */
	bool discovered;
	uint8_t device[DEVICE_ID_LEN];
};

/* A member device seen over BLE. */
struct net_ble_peer {
	uint8_t device[DEVICE_ID_LEN];
	char addr[18];
	uint64_t first_seen_ms, last_seen_ms;
	/* Last time a TCP session with the device was up (0: never). */
	uint64_t tcp_last_ms;
	uint64_t retry_at_ms, backoff_ms;
	bool connecting;
};

/* One ble_connect() in flight (its done callback always runs). */
struct net_ble_connect {
	struct net *net;
	uint8_t device[DEVICE_ID_LEN];
	bool join;
};

struct net_waiter {
	struct net_waiter *next;
	net_sync_fn fn;
	void *user;
	uint64_t deadline_ms;
};

struct net {
	uv_loop_t *loop;
	struct vault *vault;
	struct pks_logger log;
	struct tcp_listener *listener;
	struct net_dialer *dialers;
	struct net_session *sessions;
	struct net_waiter *waiters;
	uv_timer_t *tick;
	uint8_t *scratch; /* one frame, for encryption and decryption */
	uint64_t bytes_in, bytes_out, n_sessions;
	/* net_free() ran: the last session to close frees the rest. */
	bool stopping;
	/* Pairing as sponsor. */
	struct {
		bool active;
		bool busy; /* a joiner got past the code and is being added */
		char code[PAIRING_CODE_DIGITS + 1];
		char qr_secret[2 * PAIRING_QR_SECRET_LEN + 1];
		int tries_left;
		uint64_t expires_ms;
		net_pair_fn fn;
		void *user;
	} pair;
	/* Joining. */
	struct {
		bool active;
		char secret[2 * PAIRING_QR_SECRET_LEN + 1];
		bool qr;
		char peer[TCP_ADDR_MAX + 1];
		char name[VAULT_NAME_MAX + 1];
		char *passphrase; /* sodium_malloc */
		size_t passphrase_len;
		bool key_file;
		struct vault_identity *ident;
		uint64_t deadline_ms;
		net_join_fn fn;
		void *user;
		struct net_dialer *dialer;
		char failure[256];
		/* No address given: the sponsor is found by discovery. */
		bool await_sponsor, discovered;
		/* Connecting to a sponsor over BLE. */
		bool ble_connecting;
		uint64_t started_ms;
		/* When join.dialer was made for a discovered sponsor. */
		uint64_t dialed_ms;
		/* Discovered sponsors ("ADDR:PORT" or "ble:ADDRESS") that refused
		   before the code was checked, left alone until until_ms. */
		struct {
			char peer[TCP_ADDR_MAX + 1];
			uint64_t until_ms;
		} refused[NET_JOIN_REFUSED_MAX];
	} join;
	bool discovery;
	/* BLE: the handle (owned by discovery-ble), members seen, connects in flight. */
	struct ble *ble;
	struct net_ble_peer ble_peers[NET_PEERS_MAX];
	size_t n_ble_peers;
	size_t ble_pending;
};

static uint64_t net_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t net_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void net_rng(void *user_data, uint8_t *buf, size_t n)
{
	(void)user_data;
	randombytes_buf(buf, n);
}

static void net_id_hex(const uint8_t id[DEVICE_ID_LEN], char out[17])
{
	sodium_bin2hex(out, 17, id, 8);
}

/* ---- links ---- */

static int net_link_send(const struct net_link *l, const uint8_t *body, size_t len)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return tcp_conn_send(l->u.tcp, body, len);
	case NET_TRANSPORT_BLE:
		return ble_link_send(l->u.ble, body, len);
	}
	return PKS_ERR_INVALID;
}

static size_t net_link_queued(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return tcp_conn_queued(l->u.tcp);
	case NET_TRANSPORT_BLE:
		return ble_link_queued(l->u.ble);
	}
	return 0;
}

/* The queue level at which on_drain fires. */
static size_t net_link_queue_low(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return TCP_SEND_QUEUE_LOW;
	case NET_TRANSPORT_BLE:
		return BLE_SEND_QUEUE_LOW;
	}
	return 0;
}

/* What the link still accepts before PKS_ERR_BUSY. */
static size_t net_link_queue_max(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return TCP_SEND_QUEUE_MAX;
	case NET_TRANSPORT_BLE:
		return BLE_SEND_QUEUE_MAX;
	}
	return 0;
}

static void net_link_close(const struct net_link *l, const char *reason)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		tcp_conn_close(l->u.tcp, reason);
		break;
	case NET_TRANSPORT_BLE:
		ble_link_close(l->u.ble, reason);
		break;
	}
}

static const char *net_link_peer(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return tcp_conn_peer(l->u.tcp);
	case NET_TRANSPORT_BLE:
		return ble_link_peer(l->u.ble);
	}
	return "?";
}

static uint64_t net_link_bytes_in(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return tcp_conn_bytes_in(l->u.tcp);
	case NET_TRANSPORT_BLE:
		return ble_link_bytes_in(l->u.ble);
	}
	return 0;
}

static uint64_t net_link_bytes_out(const struct net_link *l)
{
	switch (l->kind) {
	case NET_TRANSPORT_TCP:
		return tcp_conn_bytes_out(l->u.tcp);
	case NET_TRANSPORT_BLE:
		return ble_link_bytes_out(l->u.ble);
	}
	return 0;
}

const char *net_transport_name(enum net_transport t)
{
	switch (t) {
	case NET_TRANSPORT_TCP:
		return "tcp";
	case NET_TRANSPORT_BLE:
		return "ble";
	}
	return "?";
}

/* ---- sessions: lifetime ---- */

static void net_session_close(struct net_session *s, const char *reason);
static void net_join_finish(struct net *n, int err, const char *sentence);
static void net_pair_finish(struct net *n, int err, const char *sentence,
			    const uint8_t device_id[32], const char *name);
static void net_waiters_check(struct net *n);
static struct net_session *net_joiner_session(struct net *n);
static void net_join_refuse(struct net *n, const char *why);

/* For BLE links nobody wants any more (closing them still runs on_close). */
static const struct ble_link_cb net_ble_no_cb;

static void net_session_free(struct net_session *s)
{
	if (s == NULL)
		return;
	noise_handshake_free(s->hs);
	noise_cipher_free(s->tx);
	noise_cipher_free(s->rx);
	cpace_free(s->cpace);
	sync_session_free(s->sync);
	vault_join_bundle_free(s->bundle);
	for (size_t i = 0; i < s->n_ops; i++)
		free(s->ops[i]);
	free(s->ops);
	free(s->op_lens);
	free(s);
}

static void net_unlink(struct net *n, struct net_session *s)
{
	for (struct net_session **p = &n->sessions; *p != NULL; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			return;
		}
	}
}

static void net_tick_closed(uv_handle_t *h)
{
	free(h);
}

/* The memory of a stopped net, once no session needs it any more. */
static void net_release(struct net *n)
{
	if (n->scratch != NULL)
		sodium_free(n->scratch);
	free(n);
}

/* A stopped net goes once no session and no BLE connect needs it. */
static void net_maybe_release(struct net *n)
{
	if (n->stopping && n->sessions == NULL && n->ble_pending == 0)
		net_release(n);
}

static struct net_ble_peer *net_ble_peer_find(struct net *n, const uint8_t device[DEVICE_ID_LEN])
{
	for (size_t i = 0; i < n->n_ble_peers; i++)
		if (memcmp(n->ble_peers[i].device, device, DEVICE_ID_LEN) == 0)
			return &n->ble_peers[i];
	return NULL;
}

/* A member session with device (any state but closed); tcp_only: over TCP. */
static bool net_session_with(const struct net *n, const uint8_t device[DEVICE_ID_LEN],
			     bool tcp_only)
{
	for (const struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->kind == NET_MEMBER && s->peer_known && s->state != NET_CLOSED &&
		    (!tcp_only || s->link.kind == NET_TRANSPORT_TCP) &&
		    memcmp(s->peer, device, DEVICE_ID_LEN) == 0)
			return true;
	return false;
}

/* Resumes dialers that paused for a device whose session just ended. */
static void net_resume_dialers(struct net *n, const uint8_t device[DEVICE_ID_LEN])
{
	for (struct net_dialer *d = n->dialers; d != NULL; d = d->next) {
		if (d->paused && memcmp(d->paused_for, device, DEVICE_ID_LEN) == 0) {
			d->paused = false;
			tcp_dialer_reset(d->d);
			tcp_dialer_start(d->d);
		}
	}
}

/* The link of s is gone (its on_close): account, tell and free. */
static void net_session_gone(struct net_session *s, int err)
{
	struct net *n = s->net;

	n->bytes_in += net_link_bytes_in(&s->link);
	n->bytes_out += net_link_bytes_out(&s->link);
	if (n->stopping) {
		net_unlink(n, s);
		net_session_free(s);
		net_maybe_release(n);
		return;
	}
	if (s->state == NET_OPEN && s->kind == NET_MEMBER) {
		char hex[17];
		net_id_hex(s->peer, hex);
		pks_log(&n->log, PKS_LOG_INFO, "net: session with %s (%s) ended: %s", hex, s->addr,
			err == PKS_OK ? "closed" : pks_strerror(err));
	}
	s->state = NET_CLOSED;
	net_unlink(n, s);
	if (s->kind == NET_JOINER && n->join.active && n->join.await_sponsor && !s->cpace_answered)
		net_join_refuse(n, "not pairing any more, or busy");
	else if (s->kind == NET_JOINER && n->join.active)
		net_join_finish(n, PKS_ERR_CLOSED,
				n->join.failure[0] ? n->join.failure
						   : "The sponsor closed the connection: the code "
						     "is wrong, expired or already used.");
	if (s->kind == NET_SPONSOR && n->pair.busy) {
		/* The joiner left before it was added: the code stays spent. */
		n->pair.busy = false;
		if (n->pair.active && n->pair.tries_left <= 0)
			net_pair_finish(n, PKS_ERR_AUTH,
					"Too many wrong codes; pairing stopped. Run pksync pair "
					"again for a new code.",
					NULL, NULL);
	}
	if (s->dialer != NULL) {
		struct net_dialer *d = s->dialer;
		d->session = NULL;
		if (!d->is_join && !d->paused)
			tcp_dialer_connection_lost(d->d);
	}
	if (s->peer_known && s->kind == NET_MEMBER && s->link.kind == NET_TRANSPORT_TCP) {
		/* The LAN went: fail over to BLE after the grace, backoff reset. */
		struct net_ble_peer *bp = net_ble_peer_find(n, s->peer);
		if (bp != NULL) {
			bp->tcp_last_ms = net_now_ms();
			bp->retry_at_ms = 0;
			bp->backoff_ms = 0;
		}
	}
	if (s->peer_known && s->kind == NET_MEMBER) {
		bool other = false;
		for (struct net_session *o = n->sessions; o != NULL; o = o->next)
			if (o->peer_known && memcmp(o->peer, s->peer, DEVICE_ID_LEN) == 0)
				other = true;
		if (!other)
			net_resume_dialers(n, s->peer);
	}
	if (s->kind == NET_MEMBER) {
		bool members = false;
		for (struct net_session *o = n->sessions; o != NULL; o = o->next)
			if (o->kind == NET_MEMBER)
				members = true;
		if (!members)
			vault_sync_idle(n->vault);
	}
	net_session_free(s);
	net_waiters_check(n);
}

static void net_session_close(struct net_session *s, const char *reason)
{
	if (s->state == NET_CLOSED)
		return;
	s->state = NET_CLOSED;
	net_link_close(&s->link, reason);
}

/* ---- sending ---- */

static int net_send_plain(struct net_session *s, const uint8_t *body, size_t len)
{
	return net_link_send(&s->link, body, len);
}

/* Encrypts and sends one transport message; BUSY (nothing consumed) when the queue is full. */
static int net_send_sealed(struct net_session *s, const uint8_t *msg, size_t len)
{
	struct net *n = s->net;
	size_t out_len = 0;
	int r;

	if (s->state != NET_OPEN)
		return PKS_ERR_CLOSED;
	if (len + 16 > NET_FRAME_MAX)
		return PKS_ERR_TOO_LARGE;
	if (net_link_queued(&s->link) + len + 16 + 2 > net_link_queue_max(&s->link)) {
		s->want_drain = true;
		return PKS_ERR_BUSY;
	}
	r = noise_cipher_encrypt(s->tx, NULL, 0, msg, len, n->scratch, NET_FRAME_MAX, &out_len);
	if (r == PKS_OK)
		r = net_link_send(&s->link, n->scratch, out_len);
	sodium_memzero(n->scratch, out_len);
	return r;
}

/* ---- member sessions ---- */

static int net_sync_send(void *user, const uint8_t *msg, size_t len)
{
	return net_send_sealed(user, msg, len);
}

static void net_sync_synced(void *user, bool equal, const uint8_t peer_digest[32])
{
	struct net_session *s = user;
	char hex[17];

	s->synced = true;
	s->equal = equal;
	s->last_sync_ms = net_wall_ms();
	memcpy(s->peer_digest, peer_digest, 32);
	net_id_hex(s->peer, hex);
	pks_log(&s->net->log, equal ? PKS_LOG_INFO : PKS_LOG_WARN, "net: %s with %s",
		equal ? "in sync" : "still different after reconciliation", hex);
	net_waiters_check(s->net);
}

static void net_sync_applied(void *user, size_t versions, size_t ops)
{
	struct net_session *s = user;
	struct net *n = s->net;

	(void)versions;
	s->last_sync_ms = net_wall_ms();
	/* Relay to every other peer; membership changes may also shut peers out. */
	for (struct net_session *o = n->sessions; o != NULL; o = o->next) {
		if (o == s || o->state != NET_OPEN || o->kind != NET_MEMBER || o->sync == NULL)
			continue;
		if (ops > 0 && !membership_is_member(vault_membership(n->vault), o->peer)) {
			net_session_close(o, "the peer was revoked");
			continue;
		}
		if (sync_session_local_change(o->sync) != PKS_OK)
			net_session_close(o, "sync failed");
	}
	if (ops > 0 && !membership_is_member(vault_membership(n->vault), s->peer))
		net_session_close(s, "the peer was revoked");
}

static const struct sync_session_cb net_sync_cb = {
    .send = net_sync_send,
    .on_synced = net_sync_synced,
    .on_applied = net_sync_applied,
};

static bool net_initiator_lower(const struct net *n, const struct net_session *s)
{
	uint8_t me[DEVICE_ID_LEN];

	vault_device_id(n->vault, me);
	return memcmp(s->outbound ? me : s->peer, s->outbound ? s->peer : me, DEVICE_ID_LEN) < 0;
}

/*
 * One session per pair of devices: TCP is kept over BLE (LAN preferred);
 * of two over the same transport, keep the one dialed by the device with
 * the smaller id (both ends agree); with the same dialer keep the newer one.
 */
static bool net_keep_new_session(struct net *n, struct net_session *s)
{
	for (struct net_session *o = n->sessions; o != NULL; o = o->next) {
		bool keep_new;
		if (o == s || o->state != NET_OPEN || o->kind != NET_MEMBER ||
		    memcmp(o->peer, s->peer, DEVICE_ID_LEN) != 0)
			continue;
		if (o->link.kind != s->link.kind) {
			keep_new = s->link.kind == NET_TRANSPORT_TCP;
			pks_log(&n->log, PKS_LOG_INFO,
				"net: LAN preferred: closing the BLE session with %s (%s)",
				keep_new ? o->addr : s->addr,
				keep_new ? "TCP is back" : "TCP is up");
		} else if (o->outbound == s->outbound) {
			keep_new = true;
		} else {
			keep_new = net_initiator_lower(n, s);
		}
		if (keep_new) {
			if (o->dialer != NULL) {
				o->dialer->paused = true;
				memcpy(o->dialer->paused_for, o->peer, DEVICE_ID_LEN);
			}
			net_session_close(o, o->link.kind != s->link.kind
						 ? "the LAN is back: a TCP session replaced it"
						 : "a newer session with this device replaced it");
		} else {
			if (s->dialer != NULL) {
				s->dialer->paused = true;
				memcpy(s->dialer->paused_for, s->peer, DEVICE_ID_LEN);
			}
			net_session_close(s, o->link.kind != s->link.kind
						 ? "already connected to this device over TCP"
						 : "already connected to this device");
			return false;
		}
	}
	return true;
}

static void net_member_open(struct net_session *s)
{
	struct net *n = s->net;
	char hex[17];
	int r;

	if (!net_keep_new_session(n, s))
		return;
	if (s->link.kind == NET_TRANSPORT_TCP)
		tcp_conn_set_idle_timeout(s->link.u.tcp, 0);
	s->handshake_deadline_ms = 0;
	if (s->dialer != NULL)
		tcp_dialer_reset(s->dialer->d);
	r = sync_session_new(&vault_replica_ops, n->vault, s->peer, &net_sync_cb, s, &s->sync);
	if (r == PKS_OK)
		r = sync_session_start(s->sync);
	net_id_hex(s->peer, hex);
	if (r != PKS_OK) {
		pks_log(&n->log, PKS_LOG_WARN, "net: sync with %s could not start: %s", hex,
			pks_strerror(r));
		net_session_close(s, "sync failed to start");
		return;
	}
	n->n_sessions++;
	pks_log(&n->log, PKS_LOG_INFO, "net: session with %s (%s, %s, %s)", hex, s->addr,
		net_transport_name(s->link.kind), s->outbound ? "outbound" : "inbound");
}

/* Checks the peer's static key against the membership (and that it is not us). */
static int net_check_member(struct net_session *s)
{
	struct net *n = s->net;
	struct membership_device d;
	uint8_t rs[32], me[DEVICE_ID_LEN];
	const struct membership *m = vault_membership(n->vault);

	if (m == NULL || noise_handshake_remote_static(s->hs, rs) != PKS_OK)
		return PKS_ERR_STATE;
	if (membership_find_by_dh(m, rs, &d) != PKS_OK || d.revoked)
		return PKS_ERR_PERM;
	vault_device_id(n->vault, me);
	if (memcmp(d.device_id, me, DEVICE_ID_LEN) == 0) {
		/* Dialed ourselves (our own address among the peers): stop that dialer. */
		if (s->dialer != NULL)
			tcp_dialer_stop(s->dialer->d);
		return PKS_ERR_INVALID;
	}
	memcpy(s->peer, d.device_id, DEVICE_ID_LEN);
	s->peer_known = true;
	return PKS_OK;
}

static int net_hs_new(struct net_session *s, enum noise_role role, const uint8_t psk[32],
		      const char *prologue)
{
	struct net *n = s->net;
	const uint8_t *sk;
	int r;

	if (s->kind == NET_JOINER)
		sk = n->join.ident->dh_sk;
	else
		sk = vault_dh_sk(n->vault);
	if (sk == NULL)
		return PKS_ERR_LOCKED;
	r = noise_handshake_new(NET_PROTOCOL, role, &s->hs);
	if (r == PKS_OK)
		r = noise_handshake_set_prologue(s->hs, (const uint8_t *)prologue,
						 strlen(prologue));
	if (r == PKS_OK)
		r = noise_handshake_set_local_static(s->hs, sk);
	if (r == PKS_OK)
		r = noise_handshake_set_psk(s->hs, 0, psk);
	if (r == PKS_OK)
		r = noise_handshake_set_rng(s->hs, net_rng, NULL);
	if (r == PKS_OK)
		r = noise_handshake_start(s->hs);
	return r;
}

/* Writes the next handshake message, with prefix byte when non-zero. */
static int net_hs_write(struct net_session *s, uint8_t prefix)
{
	uint8_t msg[512];
	size_t len = 0, off = prefix ? 1 : 0;
	int r;

	msg[0] = prefix;
	r = noise_handshake_write_message(s->hs, NULL, 0, msg + off, sizeof(msg) - off, &len);
	if (r == PKS_OK)
		r = net_send_plain(s, msg, len + off);
	return r;
}

static void net_pair_open(struct net_session *s);
static void net_join_open(struct net_session *s);

static int net_hs_split(struct net_session *s)
{
	int r = noise_handshake_split(s->hs, &s->tx, &s->rx);

	if (r != PKS_OK)
		return r;
	s->state = NET_OPEN;
	switch (s->kind) {
	case NET_MEMBER:
		net_member_open(s);
		break;
	case NET_SPONSOR:
		net_pair_open(s);
		break;
	case NET_JOINER:
		net_join_open(s);
		break;
	}
	return PKS_OK;
}

/* One handshake message in: read it, check keys, answer or split. */
static void net_hs_read(struct net_session *s, const uint8_t *body, size_t len)
{
	uint8_t payload[64], rs[32];
	size_t payload_len = 0;
	int r =
	    noise_handshake_read_message(s->hs, body, len, payload, sizeof(payload), &payload_len);

	if (r != PKS_OK) {
		/* A wrong psk: not a member of this vault, or a wrong pairing code. */
		pks_log(&s->net->log, PKS_LOG_INFO, "net: handshake from %s failed: %s", s->addr,
			pks_strerror(r));
		net_session_close(s, "handshake failed");
		return;
	}
	/* Authorise the peer as soon as its static key is known, before revealing ours. */
	if (s->kind == NET_MEMBER && !s->peer_known &&
	    noise_handshake_remote_static(s->hs, rs) == PKS_OK) {
		r = net_check_member(s);
		if (r != PKS_OK) {
			pks_log(&s->net->log, PKS_LOG_WARN,
				"net: %s is not a member of this vault (%s); closed", s->addr,
				r == PKS_ERR_INVALID ? "it is this device" : pks_strerror(r));
			net_session_close(s, "not a member");
			return;
		}
	}
	if (noise_handshake_action(s->hs) == NOISE_ACTION_WRITE_MESSAGE) {
		r = net_hs_write(s, 0);
		if (r != PKS_OK) {
			net_session_close(s, "handshake write failed");
			return;
		}
	}
	if (noise_handshake_action(s->hs) == NOISE_ACTION_SPLIT && net_hs_split(s) != PKS_OK)
		net_session_close(s, "handshake split failed");
}

/* ---- pairing: CPace ---- */

static void net_pair_psk(const uint8_t isk[CPACE_ISK_BYTES], uint8_t psk[32])
{
	crypto_generichash(psk, 32, (const uint8_t *)NET_PAIR_PSK_CONTEXT,
			   sizeof(NET_PAIR_PSK_CONTEXT) - 1, isk, CPACE_ISK_BYTES);
}

static int net_cpace_new(struct cpace **out, enum cpace_role role, const char *secret,
			 const uint8_t sid[NET_SID_LEN])
{
	struct cpace_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.role = role;
	cfg.prs = (const uint8_t *)secret;
	cfg.prs_len = strlen(secret);
	cfg.ci = (const uint8_t *)NET_PAIR_CI;
	cfg.ci_len = sizeof(NET_PAIR_CI) - 1;
	cfg.sid = sid;
	cfg.sid_len = NET_SID_LEN;
	cfg.rng = net_rng;
	return cpace_new(out, &cfg);
}

/* Sponsor: the joiner's first frame. Every attempt spends one of the tries. */
static void net_sponsor_first(struct net_session *s, const uint8_t *body, size_t len)
{
	struct net *n = s->net;
	uint8_t isk[CPACE_ISK_BYTES], psk[32];
	uint8_t msg[CPACE_MESSAGE_MAX];
	size_t msg_len = 0;
	bool qr = body[0] == NET_FIRST_PAIR_QR;
	int r;

	if (!n->pair.active || n->pair.busy || n->pair.tries_left <= 0 ||
	    net_now_ms() > n->pair.expires_ms || len < 1 + NET_SID_LEN + 1 ||
	    vault_is_locked(n->vault)) {
		net_session_close(s, "no pairing in progress");
		return;
	}
	n->pair.tries_left--;
	s->kind = NET_SPONSOR;
	r = net_cpace_new(&s->cpace, CPACE_ROLE_RESPONDER, qr ? n->pair.qr_secret : n->pair.code,
			  body + 1);
	if (r == PKS_OK)
		r = cpace_message(s->cpace, msg, sizeof(msg), &msg_len);
	if (r == PKS_OK)
		r = cpace_derive(s->cpace, body + 1 + NET_SID_LEN, len - 1 - NET_SID_LEN, isk);
	if (r == PKS_OK) {
		net_pair_psk(isk, psk);
		r = net_hs_new(s, NOISE_ROLE_RESPONDER, psk, NET_PAIR_PROLOGUE);
	}
	if (r == PKS_OK)
		r = net_send_plain(s, msg, msg_len);
	sodium_memzero(isk, sizeof(isk));
	sodium_memzero(psk, sizeof(psk));
	if (r != PKS_OK) {
		pks_log(&n->log, PKS_LOG_INFO, "net: a pairing attempt from %s failed: %s", s->addr,
			pks_strerror(r));
		net_session_close(s, "pairing failed");
		return;
	}
	/* Until the handshake proves the code, this attempt counts as wrong. */
	n->pair.busy = true;
	s->state = NET_HANDSHAKE;
}

/* Joiner: the sponsor's CPace message. */
static void net_joiner_cpace(struct net_session *s, const uint8_t *body, size_t len)
{
	uint8_t isk[CPACE_ISK_BYTES], psk[32];
	int r;

	s->cpace_answered = true;
	r = cpace_derive(s->cpace, body, len, isk);

	if (r == PKS_OK) {
		net_pair_psk(isk, psk);
		r = net_hs_new(s, NOISE_ROLE_INITIATOR, psk, NET_PAIR_PROLOGUE);
	}
	if (r == PKS_OK)
		r = net_hs_write(s, 0);
	sodium_memzero(isk, sizeof(isk));
	sodium_memzero(psk, sizeof(psk));
	if (r != PKS_OK) {
		net_session_close(s, "pairing failed");
		return;
	}
	s->state = NET_HANDSHAKE;
}

/* ---- pairing: the sponsor's side of the channel ---- */

static void net_pair_open(struct net_session *s)
{
	struct net *n = s->net;

	/* The code was right: it is spent, whatever happens next. */
	n->pair.tries_left = 0;
	pks_log(&n->log, PKS_LOG_INFO, "net: a device proved the pairing code");
}

static int net_send_fail(struct net_session *s, const char *reason)
{
	uint8_t msg[1 + PAIRING_REASON_MAX];
	size_t len = strlen(reason);

	if (len > PAIRING_REASON_MAX)
		len = PAIRING_REASON_MAX;
	msg[0] = PAIRING_FAIL;
	memcpy(msg + 1, reason, len);
	return net_send_sealed(s, msg, len + 1);
}

struct net_ops_out {
	struct net_session *s;
	struct pks_buf buf;
	size_t in_msg;
	uint32_t total;
	int err;
};

static int net_ops_flush(struct net_ops_out *o)
{
	int r;

	if (o->in_msg == 0)
		return PKS_OK;
	o->buf.data[1] = (uint8_t)(o->in_msg >> 8);
	o->buf.data[2] = (uint8_t)o->in_msg;
	r = net_send_sealed(o->s, o->buf.data, o->buf.len);
	o->buf.len = 0;
	o->in_msg = 0;
	return r;
}

static int net_ops_one(void *user, const uint8_t id[32], const uint8_t *op, size_t len)
{
	struct net_ops_out *o = user;
	int r;

	(void)id;
	if (o->buf.len + 2 + len > PAIRING_MSG_MAX - 16 || o->in_msg == PAIRING_OPS_PER_MSG) {
		r = net_ops_flush(o);
		if (r != PKS_OK)
			return r;
	}
	if (o->in_msg == 0) {
		if ((r = pks_buf_u8(&o->buf, PAIRING_OPS)) != PKS_OK ||
		    (r = pks_buf_be16(&o->buf, 0)) != PKS_OK)
			return r;
	}
	if ((r = pks_buf_be16(&o->buf, (uint16_t)len)) != PKS_OK ||
	    (r = pks_buf_append(&o->buf, op, len)) != PKS_OK)
		return r;
	o->in_msg++;
	o->total++;
	return PKS_OK;
}

static void net_sponsor_join(struct net_session *s, const uint8_t *msg, size_t len)
{
	struct net *n = s->net;
	struct pairing_join j;
	struct vault_join_bundle *b = NULL;
	struct net_ops_out o;
	uint8_t hash[64], device[DEVICE_ID_LEN], rs[32], end[5];
	uint8_t *keys = NULL;
	size_t hash_len = 0, keys_len = 0;
	const char *why = NULL;
	int r;

	memset(&o, 0, sizeof(o));
	pks_buf_init(&o.buf, PAIRING_MSG_MAX);
	r = noise_handshake_hash(s->hs, hash, sizeof(hash), &hash_len);
	if (r == PKS_OK)
		r = pairing_join_decode(msg, len, hash, &j);
	if (r == PKS_OK && (noise_handshake_remote_static(s->hs, rs) != PKS_OK ||
			    sodium_memcmp(rs, j.dh_pk, 32) != 0))
		r = PKS_ERR_AUTH;
	if (r != PKS_OK) {
		why = "The join request was not valid.";
		goto out;
	}
	r = vault_add_device(n->vault, j.sign_pk, j.dh_pk, j.name, device);
	if (r != PKS_OK) {
		why = r == PKS_ERR_REJECTED ? "This device cannot be added (it was revoked before)."
					    : "The sponsor could not add the device.";
		goto out;
	}
	r = vault_join_bundle_new(n->vault, &b);
	if (r == PKS_OK)
		r = pairing_keys_encode(b, &keys, &keys_len);
	if (r == PKS_OK)
		r = net_send_sealed(s, keys, keys_len);
	o.s = s;
	if (r == PKS_OK)
		r = membership_foreach_op(vault_membership(n->vault), net_ops_one, &o);
	if (r == PKS_OK)
		r = net_ops_flush(&o);
	if (r == PKS_OK) {
		end[0] = PAIRING_END;
		end[1] = (uint8_t)(o.total >> 24);
		end[2] = (uint8_t)(o.total >> 16);
		end[3] = (uint8_t)(o.total >> 8);
		end[4] = (uint8_t)o.total;
		r = net_send_sealed(s, end, sizeof(end));
	}
	if (r != PKS_OK) {
		why = "The sponsor could not send the vault.";
		goto out;
	}
	n->pair.busy = false;
	net_pair_finish(n, PKS_OK, NULL, device, j.name);
	/* Push the new member to the other devices. */
	net_local_change(n);
out:
	if (why != NULL) {
		pks_log(&n->log, PKS_LOG_WARN, "net: pairing failed: %s (%s)", why,
			pks_strerror(r));
		net_send_fail(s, why);
		n->pair.busy = false;
		net_pair_finish(n, r, why, NULL, NULL);
	}
	pairing_secret_free(keys);
	vault_join_bundle_free(b);
	pks_buf_free(&o.buf);
}

/* ---- joining: the joiner's side ---- */

static void net_join_open(struct net_session *s)
{
	struct net *n = s->net;
	uint8_t hash[64];
	size_t hash_len = 0;
	uint8_t *msg = NULL;
	size_t len = 0;
	int r = noise_handshake_hash(s->hs, hash, sizeof(hash), &hash_len);

	if (r == PKS_OK)
		r = pairing_join_encode(n->join.ident, n->join.name, hash, &msg, &len);
	if (r == PKS_OK)
		r = net_send_sealed(s, msg, len);
	free(msg);
	if (r != PKS_OK)
		net_session_close(s, "join request failed");
}

static int net_joiner_keep_ops(struct net_session *s, const uint8_t *msg, size_t len)
{
	struct vault_blob ops[PAIRING_OPS_PER_MSG];
	size_t n = 0;
	int r = pairing_ops_decode(msg, len, ops, PAIRING_OPS_PER_MSG, &n);

	if (r != PKS_OK)
		return r;
	if (s->n_ops + n > NET_JOIN_OPS_MAX)
		return PKS_ERR_TOO_LARGE;
	if (s->ops == NULL) {
		s->ops = calloc(NET_JOIN_OPS_MAX, sizeof(*s->ops));
		s->op_lens = calloc(NET_JOIN_OPS_MAX, sizeof(*s->op_lens));
		if (s->ops == NULL || s->op_lens == NULL)
			return PKS_ERR_NOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		s->ops[s->n_ops] = malloc(ops[i].len);
		if (s->ops[s->n_ops] == NULL)
			return PKS_ERR_NOMEM;
		memcpy(s->ops[s->n_ops], ops[i].data, ops[i].len);
		s->op_lens[s->n_ops] = ops[i].len;
		s->n_ops++;
	}
	return PKS_OK;
}

static int net_joiner_finish(struct net_session *s)
{
	struct net *n = s->net;
	struct vault_blob *blobs = calloc(s->n_ops ? s->n_ops : 1, sizeof(*blobs));
	int r;

	if (blobs == NULL)
		return PKS_ERR_NOMEM;
	for (size_t i = 0; i < s->n_ops; i++) {
		blobs[i].data = s->ops[i];
		blobs[i].len = s->op_lens[i];
	}
	s->bundle->ops = blobs;
	s->bundle->n_ops = s->n_ops;
	r = vault_create_identity(n->vault, n->join.name,
				  n->join.key_file ? NULL : n->join.passphrase,
				  n->join.passphrase_len, n->join.ident, s->bundle);
	s->bundle->ops = NULL;
	free(blobs);
	/* A discovered address may change; discovery finds the sponsor again. */
	if (r == PKS_OK && !n->join.discovered)
		r = vault_remember_peer(n->vault, n->join.peer);
	return r;
}

static void net_joiner_message(struct net_session *s, const uint8_t *msg, size_t len)
{
	struct net *n = s->net;
	char reason[PAIRING_REASON_MAX + 1];
	uint32_t total = 0;
	int r = PKS_ERR_MALFORMED;

	switch (len > 0 ? msg[0] : 0) {
	case PAIRING_KEYS:
		if (s->keys_in)
			break;
		s->bundle = sodium_malloc(sizeof(*s->bundle));
		if (s->bundle == NULL) {
			r = PKS_ERR_NOMEM;
			break;
		}
		sodium_memzero(s->bundle, sizeof(*s->bundle));
		r = pairing_keys_decode(msg, len, s->bundle);
		s->keys_in = r == PKS_OK;
		break;
	case PAIRING_OPS:
		if (s->keys_in)
			r = net_joiner_keep_ops(s, msg, len);
		break;
	case PAIRING_END:
		if (!s->keys_in || pairing_end_decode(msg, len, &total) != PKS_OK ||
		    total != s->n_ops)
			break;
		r = net_joiner_finish(s);
		if (r == PKS_OK) {
			net_join_finish(n, PKS_OK, NULL);
			net_session_close(s, "joined");
			net_start(n);
			return;
		}
		snprintf(n->join.failure, sizeof(n->join.failure), "Joining failed: %s.",
			 pks_strerror(r));
		break;
	case PAIRING_FAIL:
		if (pairing_fail_decode(msg, len, reason, sizeof(reason)) == PKS_OK)
			snprintf(n->join.failure, sizeof(n->join.failure),
				 "The sponsor refused: %.200s", reason);
		break;
	default:
		break;
	}
	if (r != PKS_OK) {
		if (n->join.failure[0] == '\0')
			snprintf(n->join.failure, sizeof(n->join.failure),
				 "The sponsor sent something unexpected (%s).", pks_strerror(r));
		net_session_close(s, "join failed");
	}
}

/* ---- frames in ---- */

static void net_open_frame(struct net_session *s, const uint8_t *body, size_t len)
{
	struct net *n = s->net;
	size_t plain_len = 0;
	int r;

	r = noise_cipher_decrypt(s->rx, NULL, 0, body, len, n->scratch, NET_FRAME_MAX, &plain_len);
	if (r != PKS_OK) {
		pks_log(&n->log, PKS_LOG_WARN,
			"net: a message from %s did not authenticate; closed", s->addr);
		net_session_close(s, "bad message");
		return;
	}
	switch (s->kind) {
	case NET_MEMBER:
		r = sync_session_receive(s->sync, n->scratch, plain_len);
		if (r != PKS_OK) {
			pks_log(&n->log, PKS_LOG_WARN, "net: sync with %s failed: %s; closed",
				s->addr, pks_strerror(r));
			net_session_close(s, "sync protocol error");
		}
		break;
	case NET_SPONSOR:
		if (plain_len > 0 && n->scratch[0] == PAIRING_JOIN && n->pair.busy)
			net_sponsor_join(s, n->scratch, plain_len);
		else
			net_session_close(s, "unexpected pairing message");
		break;
	case NET_JOINER:
		net_joiner_message(s, n->scratch, plain_len);
		break;
	}
	sodium_memzero(n->scratch, plain_len);
}

static void net_session_frame(struct net_session *s, const uint8_t *body, size_t len)
{
	struct net *n = s->net;
	uint8_t psk[32];

	switch (s->state) {
	case NET_FIRST:
		if (body[0] == NET_FIRST_MEMBER && len > 1) {
			s->kind = NET_MEMBER;
			if (vault_member_psk(n->vault, psk) != PKS_OK ||
			    net_hs_new(s, NOISE_ROLE_RESPONDER, psk, NET_MEMBER_PROLOGUE) !=
				PKS_OK) {
				sodium_memzero(psk, sizeof(psk));
				net_session_close(s, "not ready for members");
				return;
			}
			sodium_memzero(psk, sizeof(psk));
			s->state = NET_HANDSHAKE;
			net_hs_read(s, body + 1, len - 1);
		} else if (body[0] == NET_FIRST_PAIR_CODE || body[0] == NET_FIRST_PAIR_QR) {
			net_sponsor_first(s, body, len);
		} else {
			pks_log(&n->log, PKS_LOG_WARN, "net: %s sent garbage; closed", s->addr);
			net_session_close(s, "garbage");
		}
		break;
	case NET_CPACE:
		net_joiner_cpace(s, body, len);
		break;
	case NET_HANDSHAKE:
		net_hs_read(s, body, len);
		break;
	case NET_OPEN:
		net_open_frame(s, body, len);
		break;
	case NET_CLOSED:
		break;
	}
}

static void net_session_drain(struct net_session *s)
{
	s->want_drain = false;
	if (s->state == NET_OPEN && s->sync != NULL && sync_session_drained(s->sync) != PKS_OK)
		net_session_close(s, "sync failed");
}

/* TCP and BLE callbacks: the same session underneath. */
static void net_tcp_frame(void *user, struct tcp_conn *c, const uint8_t *body, size_t len)
{
	(void)c;
	net_session_frame(user, body, len);
}

static void net_tcp_drain(void *user, struct tcp_conn *c)
{
	(void)c;
	net_session_drain(user);
}

static void net_tcp_close(void *user, struct tcp_conn *c, int err)
{
	(void)c;
	net_session_gone(user, err);
}

static const struct tcp_conn_cb net_conn_cb = {
    .on_frame = net_tcp_frame,
    .on_drain = net_tcp_drain,
    .on_close = net_tcp_close,
};

static void net_ble_frame(void *user, struct ble_link *l, const uint8_t *body, size_t len)
{
	(void)l;
	net_session_frame(user, body, len);
}

static void net_ble_drain(void *user, struct ble_link *l)
{
	(void)l;
	net_session_drain(user);
}

static void net_ble_close(void *user, struct ble_link *l, int err)
{
	(void)l;
	net_session_gone(user, err);
}

static const struct ble_link_cb net_ble_link_cb = {
    .on_frame = net_ble_frame,
    .on_drain = net_ble_drain,
    .on_close = net_ble_close,
};

static struct net_session *net_session_new(struct net *n, const struct net_link *link,
					   bool outbound)
{
	struct net_session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		if (link->kind == NET_TRANSPORT_BLE)
			ble_link_set_cb(link->u.ble, &net_ble_no_cb, NULL);
		net_link_close(link, "out of memory");
		return NULL;
	}
	s->net = n;
	s->link = *link;
	s->outbound = outbound;
	s->state = NET_FIRST;
	s->connected_ms = net_wall_ms();
	snprintf(s->addr, sizeof(s->addr), "%s", net_link_peer(link));
	s->next = n->sessions;
	n->sessions = s;
	switch (link->kind) {
	case NET_TRANSPORT_TCP:
		tcp_conn_set_cb(link->u.tcp, &net_conn_cb, s);
		tcp_conn_set_idle_timeout(link->u.tcp, NET_HANDSHAKE_TIMEOUT_MS);
		break;
	case NET_TRANSPORT_BLE:
		ble_link_set_cb(link->u.ble, &net_ble_link_cb, s);
		s->handshake_deadline_ms = net_now_ms() + NET_HANDSHAKE_TIMEOUT_MS;
		break;
	}
	return s;
}

static void net_on_accept(void *user, struct tcp_conn *c)
{
	struct net_link l = {.kind = NET_TRANSPORT_TCP, .u.tcp = c};

	net_session_new(user, &l, false);
}

/* An outbound link is up: start pairing (join) or the member handshake. */
static void net_outbound_begin(struct net_session *s, bool join)
{
	struct net *n = s->net;
	uint8_t psk[32];
	uint8_t first[1 + NET_SID_LEN + CPACE_MESSAGE_MAX];
	size_t len = 0;
	int r;

	if (join) {
		s->kind = NET_JOINER;
		first[0] = n->join.qr ? NET_FIRST_PAIR_QR : NET_FIRST_PAIR_CODE;
		randombytes_buf(first + 1, NET_SID_LEN);
		r = net_cpace_new(&s->cpace, CPACE_ROLE_INITIATOR, n->join.secret, first + 1);
		if (r == PKS_OK)
			r = cpace_message(s->cpace, first + 1 + NET_SID_LEN,
					  sizeof(first) - 1 - NET_SID_LEN, &len);
		if (r == PKS_OK)
			r = net_send_plain(s, first, 1 + NET_SID_LEN + len);
		if (r != PKS_OK) {
			net_session_close(s, "pairing failed");
			return;
		}
		s->state = NET_CPACE;
		return;
	}
	s->kind = NET_MEMBER;
	r = vault_member_psk(n->vault, psk);
	if (r == PKS_OK)
		r = net_hs_new(s, NOISE_ROLE_INITIATOR, psk, NET_MEMBER_PROLOGUE);
	sodium_memzero(psk, sizeof(psk));
	if (r == PKS_OK)
		r = net_hs_write(s, NET_FIRST_MEMBER);
	if (r != PKS_OK) {
		net_session_close(s, "handshake failed");
		return;
	}
	s->state = NET_HANDSHAKE;
}

static void net_on_connect(void *user, struct tcp_dialer *td, struct tcp_conn *c)
{
	struct net_dialer *d = user;
	struct net *n = d->net;
	struct net_link l = {.kind = NET_TRANSPORT_TCP, .u.tcp = c};
	struct net_session *s;

	(void)td;
	s = net_session_new(n, &l, true);
	if (s == NULL)
		return;
	s->dialer = d;
	d->session = s;
	if (d->is_join)
		tcp_dialer_stop(d->d);
	net_outbound_begin(s, d->is_join);
}

/* ---- dialers ---- */

static struct net_dialer *net_dialer_add(struct net *n, const char *addr, bool is_join)
{
	struct net_dialer *d;
	size_t count = 0;

	for (d = n->dialers; d != NULL; d = d->next) {
		count++;
		if (!d->is_join && !is_join && strcmp(d->addr, addr) == 0)
			return d;
	}
	if (count >= NET_PEERS_MAX)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	d->net = n;
	d->is_join = is_join;
	snprintf(d->addr, sizeof(d->addr), "%s", addr);
	if (tcp_dialer_new(n->loop, addr, &n->log, net_on_connect, d, &d->d) != PKS_OK) {
		pks_log(&n->log, PKS_LOG_WARN, "net: cannot dial \"%s\": not ADDR:PORT", addr);
		free(d);
		return NULL;
	}
	d->next = n->dialers;
	n->dialers = d;
	tcp_dialer_start(d->d);
	return d;
}

static void net_dialer_remove(struct net *n, struct net_dialer *d)
{
	for (struct net_dialer **p = &n->dialers; *p != NULL; p = &(*p)->next) {
		if (*p == d) {
			*p = d->next;
			break;
		}
	}
	if (d->session != NULL)
		d->session->dialer = NULL;
	tcp_dialer_free(d->d);
	free(d);
}

static int net_add_remembered(void *user, const char *addr)
{
	net_dialer_add(user, addr, false);
	return PKS_OK;
}

int net_start(struct net *n)
{
	if (!vault_is_initialized(n->vault) || vault_is_locked(n->vault))
		return PKS_ERR_STATE;
	for (struct net_dialer *d = n->dialers; d != NULL; d = d->next)
		if (!d->is_join && d->session == NULL && !d->paused)
			tcp_dialer_start(d->d);
	return vault_peers_foreach(n->vault, net_add_remembered, n);
}

void net_stop_sessions(struct net *n)
{
	for (struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->kind == NET_MEMBER)
			net_session_close(s, "vault locked");
	for (struct net_dialer *d = n->dialers; d != NULL; d = d->next)
		if (!d->is_join)
			tcp_dialer_stop(d->d);
}

void net_local_change(struct net *n)
{
	for (struct net_session *s = n->sessions; s != NULL; s = s->next) {
		if (s->state != NET_OPEN || s->kind != NET_MEMBER || s->sync == NULL)
			continue;
		if (!membership_is_member(vault_membership(n->vault), s->peer)) {
			net_session_close(s, "the peer was revoked");
			continue;
		}
		if (sync_session_local_change(s->sync) != PKS_OK)
			net_session_close(s, "sync failed");
	}
}

/* ---- pairing as sponsor ---- */

static void net_pair_finish(struct net *n, int err, const char *sentence,
			    const uint8_t device_id[32], const char *name)
{
	net_pair_fn fn = n->pair.fn;
	void *user = n->pair.user;

	if (!n->pair.active)
		return;
	n->pair.active = false;
	n->pair.busy = false;
	sodium_memzero(n->pair.code, sizeof(n->pair.code));
	sodium_memzero(n->pair.qr_secret, sizeof(n->pair.qr_secret));
	n->pair.fn = NULL;
	if (fn != NULL)
		fn(user, err, sentence, device_id, name);
}

static json_t *net_local_addrs(struct net *n, const char **first, char *buf, size_t cap)
{
	uv_interface_address_t *ifs = NULL;
	int count = 0;
	uint16_t port = net_listen_port(n);
	json_t *arr = json_array();

	*first = NULL;
	if (arr == NULL || port == 0)
		return arr;
	if (uv_interface_addresses(&ifs, &count) != 0)
		return arr;
	for (int i = 0; i < count; i++) {
		char ip[64], a[96];
		if (ifs[i].address.address4.sin_family == AF_INET) {
			uv_ip4_name(&ifs[i].address.address4, ip, sizeof(ip));
			snprintf(a, sizeof(a), "%s:%u", ip, port);
		} else {
			/* Link-local addresses need a zone; offer the global ones only. */
			if (IN6_IS_ADDR_LINKLOCAL(&ifs[i].address.address6.sin6_addr))
				continue;
			uv_ip6_name(&ifs[i].address.address6, ip, sizeof(ip));
			snprintf(a, sizeof(a), "[%s]:%u", ip, port);
		}
		json_array_append_new(arr, json_string(a));
		/* Prefer an address others can reach over loopback for the QR code. */
		if (*first == NULL || (!ifs[i].is_internal && strncmp(buf, "127.", 4) == 0)) {
			snprintf(buf, cap, "%s", a);
			*first = buf;
		}
	}
	uv_free_interface_addresses(ifs, count);
	return arr;
}

int net_pair_start(struct net *n, uint64_t timeout_ms, net_pair_fn fn, void *user, char code[9],
		   char *qr, size_t qr_cap, json_t **addrs)
{
	uint8_t secret[PAIRING_QR_SECRET_LEN];
	const char *first = NULL;
	char first_buf[96];
	json_t *arr;
	int r;

	if (vault_is_locked(n->vault))
		return PKS_ERR_LOCKED;
	if (n->pair.active)
		return PKS_ERR_BUSY;
	if (n->listener == NULL && n->ble == NULL)
		return PKS_ERR_STATE;
	pairing_new_code(n->pair.code);
	randombytes_buf(secret, sizeof(secret));
	sodium_bin2hex(n->pair.qr_secret, sizeof(n->pair.qr_secret), secret, sizeof(secret));
	sodium_memzero(secret, sizeof(secret));
	arr = net_local_addrs(n, &first, first_buf, sizeof(first_buf));
	r = pairing_qr_format(n->pair.qr_secret, first ? &first : NULL, first ? 1 : 0, qr, qr_cap);
	if (r != PKS_OK) {
		json_decref(arr);
		return r;
	}
	n->pair.active = true;
	n->pair.busy = false;
	n->pair.tries_left = NET_PAIR_TRIES;
	n->pair.expires_ms = net_now_ms() + timeout_ms;
	n->pair.fn = fn;
	n->pair.user = user;
	memcpy(code, n->pair.code, 9);
	*addrs = arr;
	pks_log(&n->log, PKS_LOG_INFO, "net: pairing open for %llu s",
		(unsigned long long)(timeout_ms / 1000));
	return PKS_OK;
}

void net_pair_cancel(struct net *n)
{
	n->pair.fn = NULL;
	net_pair_finish(n, PKS_ERR_CLOSED, NULL, NULL, NULL);
}

/* ---- joining ---- */

static void net_join_finish(struct net *n, int err, const char *sentence)
{
	net_join_fn fn = n->join.fn;
	void *user = n->join.user;

	if (!n->join.active)
		return;
	n->join.active = false;
	n->join.fn = NULL;
	if (n->join.passphrase != NULL) {
		sodium_free(n->join.passphrase);
		n->join.passphrase = NULL;
	}
	sodium_memzero(n->join.secret, sizeof(n->join.secret));
	vault_identity_free(n->join.ident);
	n->join.ident = NULL;
	if (n->join.dialer != NULL) {
		struct net_dialer *d = n->join.dialer;
		n->join.dialer = NULL;
		if (d->session != NULL && err != PKS_OK)
			net_session_close(d->session, "join ended");
		net_dialer_remove(n, d);
	}
	if (err != PKS_OK) {
		struct net_session *js = net_joiner_session(n);
		if (js != NULL)
			net_session_close(js, "join ended");
	}
	if (fn != NULL)
		fn(user, err, sentence);
}

/*
 * A joiner with no address dials whichever device discovery says is pairing,
 * and that may be the wrong one: a sponsor that has just left pairing mode
 * (its announcement lingers for a second or so at the other devices, which
 * repeat it every tick), one busy with another joiner, one that went away.
 * Such a device closes the connection at our first frame, before it sends
 * its CPace message, and it spends no try on it (net_sponsor_first). So an
 * attempt that ends before the sponsor answered our CPace message does not
 * end the join: that device is left alone for NET_JOIN_REFUSED_MS and the
 * join goes on with the others until its deadline. Once the sponsor has
 * answered, one of its 5 tries is spent and the code is checked by the
 * handshake: a failure from then on ends the join as before, so a wrong
 * code still fails at once and is never tried again elsewhere or later.
 * The sponsor cannot say "wrong code" (a listener answers nothing to a
 * stranger), so an attempt cut after the sponsor answered counts as wrong,
 * and one cut before counts as a refusal; a code already used up or expired
 * is such a refusal too and ends at the deadline. With --peer or a QR code
 * the first failure still ends the join: the person chose that device.
 */
static void net_join_refuse(struct net *n, const char *why)
{
	size_t slot = 0;

	for (size_t i = 0; i < NET_JOIN_REFUSED_MAX; i++) {
		if (strcmp(n->join.refused[i].peer, n->join.peer) == 0) {
			slot = i;
			break;
		}
		if (n->join.refused[i].until_ms < n->join.refused[slot].until_ms)
			slot = i;
	}
	snprintf(n->join.refused[slot].peer, sizeof(n->join.refused[slot].peer), "%s",
		 n->join.peer);
	n->join.refused[slot].until_ms = net_now_ms() + NET_JOIN_REFUSED_MS;
	pks_log(&n->log, PKS_LOG_INFO,
		"net: the device in pairing mode at %s refused before the code was checked (%s); "
		"trying the others",
		n->join.peer, why);
	snprintf(n->join.failure, sizeof(n->join.failure),
		 "The device at %.64s refused before the code was checked (%.60s); no other "
		 "device in pairing mode answered. Give --peer ADDR:PORT.",
		 n->join.peer, why);
	if (n->join.dialer != NULL) {
		struct net_dialer *d = n->join.dialer;
		n->join.dialer = NULL;
		if (d->session != NULL)
			net_session_close(d->session, "refused");
		net_dialer_remove(n, d);
	}
}

static bool net_join_refused(const struct net *n, const char *peer)
{
	uint64_t now = net_now_ms();

	for (size_t i = 0; i < NET_JOIN_REFUSED_MAX; i++)
		if (now < n->join.refused[i].until_ms && strcmp(n->join.refused[i].peer, peer) == 0)
			return true;
	return false;
}

int net_join(struct net *n, const struct net_join_request *req, net_join_fn fn, void *user,
	     char *err, size_t err_len)
{
	char qr_addr[TCP_ADDR_MAX + 1] = "";
	int r;

	if (vault_is_initialized(n->vault)) {
		snprintf(err, err_len, "This device already belongs to a vault.");
		return PKS_ERR_EXISTS;
	}
	if (n->join.active) {
		snprintf(err, err_len, "A join is already in progress.");
		return PKS_ERR_BUSY;
	}
	memset(&n->join, 0, sizeof(n->join));
	if (req->qr != NULL) {
		if (pairing_qr_parse(req->qr, n->join.secret, qr_addr, sizeof(qr_addr)) != PKS_OK) {
			snprintf(err, err_len, "The QR text is not a pksync pairing code.");
			return PKS_ERR_INVALID;
		}
		n->join.qr = true;
	} else if (req->code == NULL || pairing_parse_code(req->code, n->join.secret) != PKS_OK) {
		snprintf(err, err_len, "The code must be the 8 digits the sponsor shows.");
		return PKS_ERR_INVALID;
	}
	if (req->peer == NULL && qr_addr[0] == '\0' && !n->discovery) {
		snprintf(err, err_len,
			 "Give the sponsor's address with --peer ADDR:PORT (it is printed by "
			 "pksync pair); discovery is off on this agent.");
		return PKS_ERR_INVALID;
	}
	snprintf(n->join.peer, sizeof(n->join.peer), "%s", req->peer ? req->peer : qr_addr);
	if (!pairing_name_valid(req->name, strlen(req->name))) {
		snprintf(err, err_len, "The device name must be 1 to 64 characters.");
		return PKS_ERR_INVALID;
	}
	snprintf(n->join.name, sizeof(n->join.name), "%s", req->name);
	n->join.key_file = req->passphrase == NULL;
	if (req->passphrase != NULL) {
		n->join.passphrase = sodium_malloc(req->passphrase_len + 1);
		if (n->join.passphrase == NULL)
			return PKS_ERR_NOMEM;
		memcpy(n->join.passphrase, req->passphrase, req->passphrase_len);
		n->join.passphrase[req->passphrase_len] = '\0';
		n->join.passphrase_len = req->passphrase_len;
	}
	r = vault_identity_new(&n->join.ident);
	if (r != PKS_OK)
		goto fail;
	n->join.active = true;
	n->join.fn = fn;
	n->join.user = user;
	n->join.started_ms = net_now_ms();
	n->join.deadline_ms = n->join.started_ms + NET_JOIN_TIMEOUT_MS;
	if (n->join.peer[0] == '\0') {
		/* net_sponsor_found() dials once discovery sees a device in pairing mode. */
		n->join.await_sponsor = true;
		snprintf(n->join.failure, sizeof(n->join.failure),
			 "No device in pairing mode was found on the network; run pksync pair "
			 "on a device of the vault, or give --peer ADDR:PORT.");
		return PKS_OK;
	}
	n->join.dialer = net_dialer_add(n, n->join.peer, true);
	if (n->join.dialer == NULL) {
		n->join.fn = NULL;
		net_join_finish(n, PKS_ERR_INVALID, NULL);
		snprintf(err, err_len, "The sponsor's address must be ADDR:PORT (numeric).");
		return PKS_ERR_INVALID;
	}
	return PKS_OK;
fail:
	if (n->join.passphrase != NULL)
		sodium_free(n->join.passphrase);
	n->join.passphrase = NULL;
	snprintf(err, err_len, "Joining could not start: %s.", pks_strerror(r));
	return r;
}

void net_sponsor_found(struct net *n, const char *addr)
{
	if (!n->join.active || !n->join.await_sponsor || n->join.dialer != NULL ||
	    n->join.ble_connecting || net_joiner_session(n) != NULL || net_join_refused(n, addr))
		return;
	snprintf(n->join.peer, sizeof(n->join.peer), "%s", addr);
	n->join.discovered = true;
	n->join.failure[0] = '\0';
	n->join.dialed_ms = net_now_ms();
	n->join.dialer = net_dialer_add(n, n->join.peer, true);
	if (n->join.dialer != NULL)
		pks_log(&n->log, PKS_LOG_INFO, "net: found a device in pairing mode at %s", addr);
}

void net_member_found(struct net *n, const uint8_t device_id[DEVICE_ID_LEN], const char *addr)
{
	struct net_dialer *d;

	if (n->stopping || !vault_is_initialized(n->vault) || vault_is_locked(n->vault))
		return;
	/* One session per pair of devices; a BLE one gives way to the LAN. */
	if (net_session_with(n, device_id, true))
		return;
	for (d = n->dialers; d != NULL; d = d->next) {
		if (!d->discovered || memcmp(d->device, device_id, DEVICE_ID_LEN) != 0)
			continue;
		if (strcmp(d->addr, addr) == 0) {
			if (!d->paused && d->session == NULL)
				tcp_dialer_start(d->d);
			return;
		}
		/* The device moved: forget the old address. */
		net_dialer_remove(n, d);
		break;
	}
	for (d = n->dialers; d != NULL; d = d->next) {
		if (!d->is_join && strcmp(d->addr, addr) == 0) {
			/* A static or remembered peer at that address already. */
			if (!d->paused && d->session == NULL)
				tcp_dialer_start(d->d);
			return;
		}
	}
	d = net_dialer_add(n, addr, false);
	if (d == NULL)
		return;
	d->discovered = true;
	memcpy(d->device, device_id, DEVICE_ID_LEN);
	pks_log(&n->log, PKS_LOG_INFO, "net: discovered a member at %s", addr);
}

bool net_pairing_active(const struct net *n)
{
	return n->pair.active;
}

/* ---- BLE ---- */

static struct net_session *net_joiner_session(struct net *n)
{
	for (struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->kind == NET_JOINER && s->state != NET_CLOSED)
			return s;
	return NULL;
}

void net_set_ble(struct net *n, struct ble *b)
{
	n->ble = b;
}

void net_ble_accepted(struct net *n, struct ble_link *l)
{
	struct net_link link = {.kind = NET_TRANSPORT_BLE, .u.ble = l};

	if (n->stopping) {
		ble_link_set_cb(l, &net_ble_no_cb, NULL);
		ble_link_close(l, "agent stopping");
		return;
	}
	net_session_new(n, &link, false);
}

static void net_ble_backoff(struct net_ble_peer *p)
{
	p->backoff_ms = p->backoff_ms == 0 ? NET_BLE_BACKOFF_MIN_MS : p->backoff_ms * 2;
	if (p->backoff_ms > NET_BLE_BACKOFF_MAX_MS)
		p->backoff_ms = NET_BLE_BACKOFF_MAX_MS;
	p->retry_at_ms = net_now_ms() + p->backoff_ms;
}

static void net_ble_connected(void *user, struct ble_link *l, int err)
{
	struct net_ble_connect *c = user;
	struct net *n = c->net;
	struct net_ble_peer *p = NULL;
	struct net_link link = {.kind = NET_TRANSPORT_BLE, .u.ble = l};
	struct net_session *s;
	const char *why = NULL;

	n->ble_pending--;
	if (c->join)
		n->join.ble_connecting = false;
	else
		p = net_ble_peer_find(n, c->device);
	if (p != NULL)
		p->connecting = false;
	if (n->stopping)
		why = "agent stopping";
	else if (l == NULL) {
		pks_log(&n->log, PKS_LOG_INFO, "net: BLE connect failed: %s", pks_strerror(err));
		if (p != NULL)
			net_ble_backoff(p);
		if (c->join && n->join.active && n->join.await_sponsor)
			net_join_refuse(n, "no BLE connection");
	} else if (c->join) {
		if (!n->join.active || net_joiner_session(n) != NULL)
			why = "join over";
	} else if (vault_is_locked(n->vault) || net_session_with(n, c->device, false)) {
		why = "already connected to this device";
	}
	if (l != NULL && why != NULL) {
		ble_link_set_cb(l, &net_ble_no_cb, NULL);
		ble_link_close(l, why);
	} else if (l != NULL) {
		if (p != NULL)
			p->backoff_ms = 0;
		s = net_session_new(n, &link, true);
		if (s != NULL)
			net_outbound_begin(s, c->join);
	}
	free(c);
	net_maybe_release(n);
}

static int net_ble_dial(struct net *n, const char *addr, const uint8_t *device, bool join)
{
	struct net_ble_connect *c = calloc(1, sizeof(*c));
	int r;

	if (c == NULL)
		return PKS_ERR_NOMEM;
	c->net = n;
	c->join = join;
	if (device != NULL)
		memcpy(c->device, device, DEVICE_ID_LEN);
	r = ble_connect(n->ble, addr, net_ble_connected, c);
	if (r != PKS_OK) {
		free(c);
		return r;
	}
	n->ble_pending++;
	return PKS_OK;
}

void net_member_found_ble(struct net *n, const uint8_t device_id[DEVICE_ID_LEN],
			  const char *address)
{
	struct net_ble_peer *p;
	uint64_t now = net_now_ms();

	if (n->stopping || strlen(address) >= sizeof(p->addr))
		return;
	p = net_ble_peer_find(n, device_id);
	if (p == NULL) {
		if (n->n_ble_peers == NET_PEERS_MAX) {
			/* Forget the one seen longest ago. */
			size_t old = 0;
			for (size_t i = 1; i < n->n_ble_peers; i++)
				if (!n->ble_peers[i].connecting &&
				    n->ble_peers[i].last_seen_ms < n->ble_peers[old].last_seen_ms)
					old = i;
			if (n->ble_peers[old].connecting)
				return;
			n->ble_peers[old] = n->ble_peers[--n->n_ble_peers];
		}
		p = &n->ble_peers[n->n_ble_peers++];
		memset(p, 0, sizeof(*p));
		memcpy(p->device, device_id, DEVICE_ID_LEN);
		p->first_seen_ms = now;
		pks_log(&n->log, PKS_LOG_INFO, "net: a member is in BLE range at %s", address);
	}
	if (strcmp(p->addr, address) != 0) {
		/* A new address (privacy, another adapter): try it at once. */
		snprintf(p->addr, sizeof(p->addr), "%s", address);
		p->retry_at_ms = 0;
		p->backoff_ms = 0;
	}
	p->last_seen_ms = now;
}

void net_sponsor_found_ble(struct net *n, const char *address)
{
	char peer[TCP_ADDR_MAX + 1];

	if (n->stopping || n->ble == NULL || !n->join.active || !n->join.await_sponsor ||
	    n->join.dialer != NULL || n->join.ble_connecting || net_joiner_session(n) != NULL)
		return;
	snprintf(peer, sizeof(peer), "ble:%s", address);
	if (net_join_refused(n, peer))
		return;
	/* mDNS first when it runs: it finds a LAN sponsor within this delay. */
	if (n->discovery && net_now_ms() < n->join.started_ms + NET_JOIN_BLE_DELAY_MS)
		return;
	if (net_ble_dial(n, address, NULL, true) != PKS_OK)
		return;
	n->join.ble_connecting = true;
	n->join.discovered = true;
	n->join.failure[0] = '\0';
	snprintf(n->join.peer, sizeof(n->join.peer), "%s", peer);
	pks_log(&n->log, PKS_LOG_INFO, "net: found a device in pairing mode over BLE at %s",
		address);
}

/* Dials members seen over BLE that the LAN does not reach (DESIGN §7). */
static void net_ble_tick(struct net *n)
{
	uint64_t now = net_now_ms();
	uint8_t me[DEVICE_ID_LEN];

	if (n->ble == NULL || n->stopping || !vault_is_initialized(n->vault) ||
	    vault_is_locked(n->vault))
		return;
	for (size_t i = 0; i < n->n_ble_peers; i++)
		if (net_session_with(n, n->ble_peers[i].device, true))
			n->ble_peers[i].tcp_last_ms = now;
	/* A session whose peer is not known yet may be any of them: wait. */
	for (struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->state != NET_CLOSED && s->state != NET_OPEN && !s->peer_known)
			return;
	vault_device_id(n->vault, me);
	for (size_t i = 0; i < n->n_ble_peers; i++) {
		struct net_ble_peer *p = &n->ble_peers[i];
		uint64_t since =
		    p->tcp_last_ms > p->first_seen_ms ? p->tcp_last_ms : p->first_seen_ms;
		/* Both ends see the LAN go at once: the smaller id dials first,
		   the other a grace later (two links in one radio connection
		   would make the tie-break drop both). */
		uint64_t grace = memcmp(me, p->device, DEVICE_ID_LEN) < 0 ? NET_BLE_GRACE_MS
									  : 2 * NET_BLE_GRACE_MS;
		if (p->connecting || now - p->last_seen_ms > NET_BLE_SEEN_MS ||
		    now - since < grace || now < p->retry_at_ms ||
		    net_session_with(n, p->device, false) ||
		    !membership_is_member(vault_membership(n->vault), p->device))
			continue;
		if (net_ble_dial(n, p->addr, p->device, false) != PKS_OK) {
			net_ble_backoff(p);
			continue;
		}
		p->connecting = true;
		pks_log(&n->log, PKS_LOG_INFO, "net: connecting over BLE to %s (no LAN session)",
			p->addr);
	}
}

/* ---- sync and waiting ---- */

/* Every open member session has reported a digest equal to ours. */
static bool net_all_equal(struct net *n, size_t *count)
{
	uint8_t mine[32];
	bool all = true;

	*count = 0;
	vault_digest(n->vault, mine);
	for (struct net_session *s = n->sessions; s != NULL; s = s->next) {
		if (s->kind != NET_MEMBER || s->state == NET_CLOSED)
			continue;
		(*count)++;
		if (s->state != NET_OPEN || !s->synced ||
		    sodium_memcmp(s->peer_digest, mine, 32) != 0 ||
		    sync_session_phase(s->sync) != SYNC_PHASE_LIVE)
			all = false;
	}
	return all;
}

static void net_waiters_check(struct net *n)
{
	struct net_waiter **p = &n->waiters;
	uint64_t now = net_now_ms();
	size_t count = 0;
	bool all = net_all_equal(n, &count);

	while (*p != NULL) {
		struct net_waiter *w = *p;
		if (all || now >= w->deadline_ms) {
			*p = w->next;
			w->fn(w->user, all ? PKS_OK : PKS_ERR_TIMEOUT, count);
			free(w);
			continue;
		}
		p = &w->next;
	}
}

int net_sync(struct net *n, bool wait, uint64_t timeout_ms, net_sync_fn fn, void *user)
{
	struct net_waiter *w;
	size_t count = 0;

	if (vault_is_locked(n->vault))
		return PKS_ERR_LOCKED;
	/* Dial every peer that is not connected now, without waiting for the backoff. */
	for (struct net_dialer *d = n->dialers; d != NULL; d = d->next) {
		if (d->is_join || d->session != NULL || d->paused)
			continue;
		tcp_dialer_reset(d->d);
		tcp_dialer_start(d->d);
	}
	for (size_t i = 0; i < n->n_ble_peers; i++) {
		n->ble_peers[i].retry_at_ms = 0;
		n->ble_peers[i].backoff_ms = 0;
	}
	/* Ask every synced peer for its digest again. */
	for (struct net_session *s = n->sessions; s != NULL; s = s->next) {
		if (s->kind != NET_MEMBER || s->state != NET_OPEN || s->sync == NULL)
			continue;
		if (sync_session_phase(s->sync) == SYNC_PHASE_LIVE) {
			s->synced = false;
			if (sync_session_check(s->sync) != PKS_OK)
				net_session_close(s, "sync failed");
		}
	}
	if (!wait) {
		net_all_equal(n, &count);
		fn(user, PKS_OK, count);
		return PKS_OK;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return PKS_ERR_NOMEM;
	w->fn = fn;
	w->user = user;
	w->deadline_ms = net_now_ms() + timeout_ms;
	w->next = n->waiters;
	n->waiters = w;
	return PKS_OK;
}

static void net_ble_tick(struct net *n);

static void net_tick(uv_timer_t *t)
{
	struct net *n = t->data;
	uint64_t now = net_now_ms();

	/* BLE links have no idle timeout: bound the handshake here. */
	for (struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->handshake_deadline_ms != 0 && s->state != NET_OPEN &&
		    s->state != NET_CLOSED && now > s->handshake_deadline_ms)
			net_session_close(s, "handshake timed out");
	for (struct net_session *s = n->sessions; s != NULL; s = s->next)
		if (s->want_drain && s->state == NET_OPEN &&
		    net_link_queued(&s->link) <= net_link_queue_low(&s->link))
			net_session_drain(s);
	net_ble_tick(n);

	if (n->pair.active && !n->pair.busy && net_now_ms() > n->pair.expires_ms)
		net_pair_finish(n, PKS_ERR_TIMEOUT,
				"No device joined before the code expired; run pksync pair again.",
				NULL, NULL);
	/* A discovered sponsor that does not take the connection (gone, port
	   closed) must not hold the join: the dialer would retry it until the
	   deadline while another device is pairing. */
	if (n->join.active && n->join.await_sponsor && n->join.dialer != NULL &&
	    n->join.dialer->session == NULL &&
	    (now - n->join.dialed_ms > NET_JOIN_CONNECT_MS ||
	     tcp_dialer_next_delay_ms(n->join.dialer->d) > TCP_BACKOFF_MIN_MS))
		net_join_refuse(n, "no connection");
	if (n->join.active && net_now_ms() > n->join.deadline_ms)
		net_join_finish(n, PKS_ERR_TIMEOUT,
				n->join.failure[0] ? n->join.failure
						   : "The sponsor could not be reached in time.");
	net_waiters_check(n);
}

/* ---- status ---- */

static void net_rfc3339(uint64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct net_peers_ctx {
	struct net *n;
	json_t *arr;
	uint8_t me[DEVICE_ID_LEN];
};

static int net_peer_json(void *user, const struct membership_device *d)
{
	struct net_peers_ctx *c = user;
	struct net_session *found = NULL;
	char hex[2 * DEVICE_ID_LEN + 1], when[32];
	json_t *o;

	if (memcmp(d->device_id, c->me, DEVICE_ID_LEN) == 0 || d->revoked)
		return PKS_OK;
	for (struct net_session *s = c->n->sessions; s != NULL; s = s->next)
		if (s->kind == NET_MEMBER && s->state == NET_OPEN &&
		    memcmp(s->peer, d->device_id, DEVICE_ID_LEN) == 0)
			found = s;
	sodium_bin2hex(hex, sizeof(hex), d->device_id, DEVICE_ID_LEN);
	o = json_pack("{s:s, s:s, s:b}", "device_id", hex, "name", d->name, "connected",
		      found != NULL);
	if (o == NULL)
		return PKS_ERR_NOMEM;
	json_object_set_new(o, "address", found ? json_string(found->addr) : json_null());
	json_object_set_new(o, "transport",
			    found ? json_string(net_transport_name(found->link.kind))
				  : json_null());
	if (found != NULL && found->last_sync_ms != 0) {
		net_rfc3339(found->last_sync_ms, when);
		json_object_set_new(o, "last_sync", json_string(when));
	} else {
		json_object_set_new(o, "last_sync", json_null());
	}
	json_object_set_new(o, "in_sync",
			    json_boolean(found != NULL && found->synced && found->equal));
	json_array_append_new(c->arr, o);
	return PKS_OK;
}

json_t *net_peers_json(struct net *n)
{
	struct net_peers_ctx c;
	const struct membership *m = vault_membership(n->vault);

	c.n = n;
	c.arr = json_array();
	vault_device_id(n->vault, c.me);
	if (c.arr != NULL && m != NULL)
		membership_foreach_device(m, net_peer_json, &c);
	return c.arr;
}

uint16_t net_listen_port(const struct net *n)
{
	return n->listener ? tcp_listener_port(n->listener) : 0;
}

void net_counters(const struct net *n, uint64_t *bytes_in, uint64_t *bytes_out, uint64_t *sessions)
{
	*bytes_in = n->bytes_in;
	*bytes_out = n->bytes_out;
	for (struct net_session *s = n->sessions; s != NULL; s = s->next) {
		*bytes_in += net_link_bytes_in(&s->link);
		*bytes_out += net_link_bytes_out(&s->link);
	}
	*sessions = n->n_sessions;
}

/* ---- lifetime ---- */

int net_new(uv_loop_t *loop, struct vault *v, const struct net_options *opt, struct net **out)
{
	struct net *n = calloc(1, sizeof(*n));
	int r = PKS_ERR_NOMEM;

	if (n == NULL)
		return PKS_ERR_NOMEM;
	n->loop = loop;
	n->vault = v;
	n->log = opt->log;
	n->discovery = opt->discovery;
	n->scratch = sodium_malloc(NET_FRAME_MAX);
	n->tick = calloc(1, sizeof(*n->tick));
	if (n->scratch == NULL || n->tick == NULL)
		goto fail;
	if (opt->listen != NULL) {
		r = tcp_listen(loop, opt->listen, &n->log, net_on_accept, n, &n->listener);
		if (r != PKS_OK)
			goto fail;
	}
	for (size_t i = 0; i < opt->n_peers; i++) {
		struct net_dialer *d = net_dialer_add(n, opt->peers[i], false);
		if (d == NULL) {
			r = PKS_ERR_INVALID;
			goto fail;
		}
		/* Static peers wait for an unlocked vault. */
		if (vault_is_locked(v) || !vault_is_initialized(v))
			tcp_dialer_stop(d->d);
	}
	uv_timer_init(loop, n->tick);
	n->tick->data = n;
	uv_timer_start(n->tick, net_tick, 250, 250);
	if (vault_is_initialized(v) && !vault_is_locked(v))
		net_start(n);
	*out = n;
	return PKS_OK;
fail:
	while (n->dialers != NULL)
		net_dialer_remove(n, n->dialers);
	if (n->listener != NULL)
		tcp_listener_close(n->listener);
	if (n->scratch != NULL)
		sodium_free(n->scratch);
	free(n->tick);
	free(n);
	return r;
}

void net_free(struct net *n)
{
	if (n == NULL)
		return;
	net_pair_cancel(n);
	n->join.fn = NULL;
	net_join_finish(n, PKS_ERR_CLOSED, NULL);
	while (n->waiters != NULL) {
		struct net_waiter *w = n->waiters;
		n->waiters = w->next;
		free(w);
	}
	for (struct net_session *s = n->sessions; s != NULL; s = s->next) {
		s->dialer = NULL;
		net_session_close(s, "agent stopping");
	}
	while (n->dialers != NULL)
		net_dialer_remove(n, n->dialers);
	if (n->listener != NULL)
		tcp_listener_close(n->listener);
	uv_timer_stop(n->tick);
	uv_close((uv_handle_t *)n->tick, net_tick_closed);
	/* Sessions free themselves in their close callbacks, which need n; so
	   do BLE connects in flight (ble_free() completes them). */
	n->ble = NULL;
	n->stopping = true;
	net_maybe_release(n);
}
