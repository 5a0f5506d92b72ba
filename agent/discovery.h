/*
 * Finding the vault's other devices with no address typed: the agent
 * publishes a `_pksync._tcp` service on the LAN (transport/mdns) whose only
 * content is a rotating member hint (proto/hint.h), and browses for the
 * others. A device in pairing mode adds a bare flag, so a joining device can
 * find its sponsor; nothing derived from the code is ever published (an
 * observer could test all 10^8 codes against it).
 *
 * What is published, and when:
 *   instance  "pksync-" + 8 random hex digits, new at every rotation
 *   TXT       v=1, h=<hint as 32 hex digits> (members only), p=1 (pairing)
 * A fresh device (no vault yet) publishes nothing. The hint and the name
 * rotate every DISCOVERY_ROTATE_MS and whenever the state changes (unlock,
 * join, pairing on or off).
 */
#ifndef PKS_AGENT_DISCOVERY_H
#define PKS_AGENT_DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/vault.h"
#include "common/log.h"
#include "transport/mdns.h"

#define DISCOVERY_ROTATE_MS (15u * 60u * 1000u)
#define DISCOVERY_TICK_MS 250u
#define DISCOVERY_SPONSORS_MAX 8

struct discovery;

struct discovery_cb {
	/* A member device (not this one) announced itself at addr ("ADDR:PORT"). */
	void (*member)(void *user, const uint8_t device_id[32], const char *addr);
	/* A device in pairing mode announced itself at addr. */
	void (*sponsor)(void *user, const char *addr);
	/* Polled every tick: whether this device is in pairing mode. */
	bool (*pairing)(void *user);
};

struct discovery_options {
	uint16_t port; /* the TCP port others should dial; 0: publish nothing */
	enum mdns_backend_choice backend;
	uint64_t rotate_ms; /* 0: DISCOVERY_ROTATE_MS */
};

/* Starts browsing (and publishing once the vault allows). PKS_ERR_NOMEM, or
   the mdns error when no mDNS stack at all can run (logged). */
int discovery_new(uv_loop_t *loop, struct vault *v, const struct pks_logger *log,
		  const struct discovery_options *opt, const struct discovery_cb *cb, void *user,
		  struct discovery **out);

/* Stops and frees (asynchronously, like libuv handles). NULL is fine. */
void discovery_free(struct discovery *d);

/* Rotates now (for tests and when the state changed outside the tick). */
void discovery_rotate(struct discovery *d);

/* "avahi-client", "avahi-core" or "none". */
const char *discovery_backend(const struct discovery *d);

#endif
