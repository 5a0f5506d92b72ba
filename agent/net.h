/*
 * The agent's network side: a TCP listener and dialers, Noise sessions with
 * other members (XXpsk0, psk from the network key, the static key checked
 * against the membership), one sync session per connected member, pairing
 * as sponsor (a code or QR secret, CPace-keyed Noise) and joining.
 *
 * First frame of a connection, from the dialer:
 *   0x01 | Noise XXpsk0 message 1                 member session
 *   0x02 | sid 16 | CPace message                 pairing with the 8-digit code
 *   0x03 | sid 16 | CPace message                 pairing with the QR secret
 * and for pairing the sponsor answers with its CPace message; after that
 * every frame is a Noise message. Nothing else is ever answered.
 */
#ifndef PKS_AGENT_NET_H
#define PKS_AGENT_NET_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/vault.h"
#include "common/log.h"

#define NET_PEERS_MAX 64
#define NET_PAIR_TRIES 5
#define NET_PAIR_DEFAULT_TIMEOUT_S 300
#define NET_JOIN_TIMEOUT_MS 30000
#define NET_HANDSHAKE_TIMEOUT_MS 15000
/* LAN first: a member seen over BLE is dialed over BLE only after this long
   with no TCP session with it (nor one being set up). */
#define NET_BLE_GRACE_MS 3000
/* A BLE sighting older than this no longer counts as "seen". */
#define NET_BLE_SEEN_MS 60000
/* Failed BLE connects to one device back off from MIN doubling up to MAX. */
#define NET_BLE_BACKOFF_MIN_MS 2000
#define NET_BLE_BACKOFF_MAX_MS 60000
/* A joiner with no address gives mDNS this long before a BLE sponsor. */
#define NET_JOIN_BLE_DELAY_MS 1500
/* A joiner with no address leaves a device that refused before the code was
   checked (or did not take the connection within NET_JOIN_CONNECT_MS) alone
   for this long, and tries the other devices in pairing mode meanwhile. */
#define NET_JOIN_REFUSED_MS 3000
#define NET_JOIN_CONNECT_MS 3000
#define NET_JOIN_REFUSED_MAX 8

struct net;
struct ble;
struct ble_link;

/* What a session runs over (status --json "transport"). */
enum net_transport {
	NET_TRANSPORT_TCP,
	NET_TRANSPORT_BLE,
};

/* "tcp" or "ble". */
const char *net_transport_name(enum net_transport t);

struct net_options {
	const char *listen;       /* "ADDR:PORT"; NULL: no listener */
	const char *const *peers; /* static peers */
	size_t n_peers;
	struct pks_logger log;
	bool discovery; /* devices are also found by discovery (join needs no address) */
};

int net_new(uv_loop_t *loop, struct vault *v, const struct net_options *opt, struct net **out);
/* Closes every connection and frees (asynchronously for libuv handles). */
void net_free(struct net *n);
/*
 * Starts member networking when the vault is unlocked: dialers for the
 * static and remembered peers. Safe to call again (after unlock, join).
 */
int net_start(struct net *n);
/* Ends every member session (lock). */
void net_stop_sessions(struct net *n);
/* A local change: push it to every synced peer. */
void net_local_change(struct net *n);
/* The listener's port (0 when none). */
uint16_t net_listen_port(const struct net *n);

/* status --json "peers" and "transports". */
json_t *net_peers_json(struct net *n);

/* Sponsor side. The code and QR text are ready when net_pair_start returns. */
typedef void (*net_pair_fn)(void *user, int err, const char *sentence, const uint8_t device_id[32],
			    const char *name);
int net_pair_start(struct net *n, uint64_t timeout_ms, net_pair_fn fn, void *user, char code[9],
		   char *qr, size_t qr_cap, json_t **addrs);
void net_pair_cancel(struct net *n);

/* Joining: secret is the 8-digit code or a QR payload. */
typedef void (*net_join_fn)(void *user, int err, const char *sentence);
struct net_join_request {
	const char *code; /* or NULL */
	const char *qr;   /* or NULL */
	const char *peer; /* ADDR:PORT, or NULL when the QR has one */
	const char *name;
	const char *passphrase; /* NULL: key file */
	size_t passphrase_len;
};
int net_join(struct net *n, const struct net_join_request *req, net_join_fn fn, void *user,
	     char *err, size_t err_len);

/*
 * sync: redials every peer now; with wait, fn is called once every
 * connected member has reported our digest (or at the timeout, with
 * PKS_ERR_TIMEOUT). Without wait fn is called at once.
 */
typedef void (*net_sync_fn)(void *user, int err, size_t peers);
int net_sync(struct net *n, bool wait, uint64_t timeout_ms, net_sync_fn fn, void *user);

/* Byte counters of member sessions since start (for the benchmark). */
/* Discovery saw a member device at addr ("ADDR:PORT"): dial it unless a
   session with it is open. */
void net_member_found(struct net *n, const uint8_t device_id[32], const char *addr);
/* Discovery saw a device in pairing mode: a join waiting for its sponsor dials it. */
void net_sponsor_found(struct net *n, const char *addr);
/*
 * BLE (agent/discovery-ble.h owns the struct ble): the handle member and
 * join sessions connect through; NULL turns BLE dialing off. Set it to NULL
 * before freeing the handle while n lives; after net_free() the handle may
 * be freed at any time (its callbacks still find n).
 */
void net_set_ble(struct net *n, struct ble *b);
/* A central opened a BLE link to us: a session starts on it (like accept). */
void net_ble_accepted(struct net *n, struct ble_link *l);
/* BLE discovery saw a member device at address ("AA:BB:CC:DD:EE:FF"): it is
   connected over BLE when no TCP session with it exists (see
   NET_BLE_GRACE_MS). */
void net_member_found_ble(struct net *n, const uint8_t device_id[32], const char *address);
/* BLE discovery saw a device in pairing mode: a join waiting for a sponsor
   (and not finding one over mDNS) connects to it. */
void net_sponsor_found_ble(struct net *n, const char *address);
/* This device shows a pairing code now. */
bool net_pairing_active(const struct net *n);

void net_counters(const struct net *n, uint64_t *bytes_in, uint64_t *bytes_out, uint64_t *sessions);

#endif
