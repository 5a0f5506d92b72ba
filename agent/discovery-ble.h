/*
 * Finding the vault's other devices over Bluetooth LE (transport/ble.h):
 * the BLE twin of agent/discovery.h. One struct ble per agent lives here;
 * agent/net.c connects and accepts links through it.
 *
 * What is advertised, and when (transport/ble-adv.h, 31-byte legacy
 * advertisement): the same 16-byte rotating member hint as over mDNS
 * (proto/hint.h, a fresh nonce at every rotation) and the pairing flag. A
 * device that is not a member (no vault yet, locked) advertises nothing and
 * serves no GATT service; it still scans, so a joining device finds a
 * sponsor in pairing mode. The hint rotates every rotate_ms and whenever
 * the state changes.
 *
 * No system bus or no adapter: BLE is simply absent (logged once); an
 * adapter that appears later is used.
 */
#ifndef PKS_AGENT_DISCOVERY_BLE_H
#define PKS_AGENT_DISCOVERY_BLE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agent/vault.h"
#include "common/log.h"
#include "transport/ble.h"

/* Devices in pairing mode remembered (and told again every tick). */
#define DISCOVERY_BLE_SPONSORS_MAX 8
/* A sponsor not seen for this long is forgotten. */
#define DISCOVERY_BLE_SPONSOR_TTL_MS 30000u

struct discovery_ble;

struct discovery_ble_cb {
	/* A member device (not this one) advertised; address "AA:BB:CC:DD:EE:FF". */
	void (*member)(void *user, const uint8_t device_id[32], const char *address);
	/* A device in pairing mode advertised (told again every tick). */
	void (*sponsor)(void *user, const char *address);
	/* Polled every tick: whether this device is in pairing mode. */
	bool (*pairing)(void *user);
	/* A central opened a link to us; set its callbacks before returning. */
	void (*accepted)(void *user, struct ble_link *l);
};

struct discovery_ble_options {
	uint64_t rotate_ms;      /* 0: DISCOVERY_ROTATE_MS */
	const char *bus_address; /* NULL: the system bus (DBUS_SYSTEM_BUS_ADDRESS) */
};

/* Starts scanning (and advertising and serving once the vault allows).
   PKS_ERR_NOMEM, or the ble_new() error when there is no usable bus (then
   BLE is absent; logged). */
int discovery_ble_new(uv_loop_t *loop, struct vault *v, const struct pks_logger *log,
		      const struct discovery_ble_options *opt, const struct discovery_ble_cb *cb,
		      void *user, struct discovery_ble **out);

/* Stops, closes every BLE link and frees asynchronously. NULL is fine. */
void discovery_ble_free(struct discovery_ble *d);

/* The BLE handle links are made through; NULL for NULL. */
struct ble *discovery_ble_handle(struct discovery_ble *d);

/* Rotates now (state changed outside the tick). */
void discovery_ble_rotate(struct discovery_ble *d);

#endif
