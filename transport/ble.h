/*
 * BLE through BlueZ's D-Bus API (bluetoothd >= 5.56), on sd-bus driven from
 * the libuv loop (transport/sdbus-uv.h). One struct ble per process:
 *
 * - finds the adapter through org.bluez's ObjectManager and follows it
 *   appearing and disappearing (InterfacesAdded/Removed, bluetoothd
 *   restarting): with no adapter (or no bluetoothd) the handle still works
 *   and says so through the adapter callback; requests are remembered and
 *   carried out when an adapter appears;
 * - advertises the pksync service data (transport/ble-adv.h) with an
 *   LEAdvertisement1 object; a new hint re-registers (BlueZ reads an
 *   advertisement's properties once);
 * - scans (SetDiscoveryFilter + StartDiscovery) and reports every device
 *   whose service data carries a valid pksync payload;
 * - serves a GATT application with one service and two characteristics, a
 *   write-without-response one (centrals write) and a notify one (we
 *   notify), both used through the fds of AcquireWrite/AcquireNotify, and
 *   accepts links from centrals on them;
 * - connects to a peer as central (Device1.Connect, ServicesResolved,
 *   AcquireNotify then AcquireWrite on the peer's characteristics).
 *
 * A link carries frames of 1..FRAME_MAX bytes with the reliable protocol of
 * transport/ble-frag.h. On the peripheral one write fd and one notify fd
 * serve every central: datagrams carry the link tag, and a central ignores
 * notifications for other tags. Frames are never logged.
 *
 * Peer texts: "ble:AA:BB:CC:DD:EE:FF" for links we made as central; for
 * links accepted as peripheral "ble:central/TAG" (hex), since a write on the
 * shared fd does not say which device sent it. Accepted links send with the
 * MTU BlueZ gave with AcquireNotify (once per subscription epoch); a later
 * central with a smaller MTU would see cut notifications and its link
 * fails. A peripheral learns that a central left only from the link (its
 * CLOSE, the dead-peer timeout) or from the notify fd closing when the last
 * subscriber leaves.
 *
 * Handles are freed asynchronously, libuv style: after ble_free() the loop
 * must run until the close callbacks have fired before uv_loop_close().
 */
#ifndef PKS_TRANSPORT_BLE_H
#define PKS_TRANSPORT_BLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/log.h"

/* The pksync GATT service and its characteristics (random 128-bit UUIDs). */
#define BLE_SERVICE_UUID "7a3c9e10-5b2f-4d6e-9c1a-2f8b4e6d0a01"
#define BLE_WRITE_CHAR_UUID "7a3c9e10-5b2f-4d6e-9c1a-2f8b4e6d0a02"
#define BLE_NOTIFY_CHAR_UUID "7a3c9e10-5b2f-4d6e-9c1a-2f8b4e6d0a03"

/* ble_link_send() refuses a frame that would queue more than this. */
#define BLE_SEND_QUEUE_MAX (256u * 1024u)
/* After PKS_ERR_BUSY, on_drain fires once the queue is at or below this. */
#define BLE_SEND_QUEUE_LOW (BLE_SEND_QUEUE_MAX / 4u)
/* Connect (Connect + services + Acquire* + link handshake) gives up after this. */
#define BLE_CONNECT_TIMEOUT_MS 30000u
/* Devices remembered for scan reports; the oldest is forgotten first. */
#define BLE_MAX_DEVICES 64u
/* Links accepted as peripheral at once; more OPENs are ignored. */
#define BLE_MAX_ACCEPTED 8u

struct ble;      /* opaque */
struct ble_link; /* opaque, freed by the module after on_close ran */

/* A pksync advertisement seen while scanning; everything is borrowed for
   the call only. rssi is in dBm, 0 when BlueZ gave none. */
struct ble_peer_info {
	char address[18];
	int16_t rssi;
	const uint8_t *hint;
	size_t hint_len;
	bool pairing;
};

struct ble_cb {
	/* An advertisement seen or updated (called again on every change). */
	void (*peer)(void *user, const struct ble_peer_info *p);
	/* A central opened a link to us; set its callbacks before returning. */
	void (*accepted)(void *user, struct ble_link *l);
	/* An adapter appeared (true) or went away (false). Called once from
	   the loop after ble_new() with the initial state. */
	void (*adapter)(void *user, bool present);
};

struct ble_link_cb {
	/* A whole frame; valid only during the call. */
	void (*on_frame)(void *user, struct ble_link *l, const uint8_t *frame, size_t len);
	/* The send queue fell to BLE_SEND_QUEUE_LOW after PKS_ERR_BUSY. */
	void (*on_drain)(void *user, struct ble_link *l);
	/* Exactly once; l is freed right after. err is PKS_OK after a local
	   ble_link_close(), PKS_ERR_CLOSED when the peer closed or the radio
	   link dropped, PKS_ERR_TIMEOUT when the peer went silent,
	   PKS_ERR_MALFORMED on a protocol violation. */
	void (*on_close)(void *user, struct ble_link *l, int err);
};

/*
 * Connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS honoured) and starts
 * following org.bluez. cb is copied (members may be NULL), log is copied
 * and may be NULL. No adapter is not an error: the adapter callback tells.
 * PKS_ERR_IO / PKS_ERR_NOT_FOUND / PKS_ERR_PERM when there is no usable
 * system bus (BLE is then absent), PKS_ERR_NOMEM.
 */
int ble_new(uv_loop_t *loop, const struct pks_logger *log, const struct ble_cb *cb, void *user,
	    struct ble **out);

/* As ble_new() on the bus at address ("unix:path=..."); NULL = system bus. */
int ble_new_on_bus(uv_loop_t *loop, const char *address, const struct pks_logger *log,
		   const struct ble_cb *cb, void *user, struct ble **out);

/*
 * Unregisters everything, closes every link (their on_close runs from
 * here with PKS_ERR_CLOSED; pending connects complete with PKS_ERR_CLOSED)
 * and frees asynchronously. NULL is fine. Not from a callback of this
 * module.
 */
void ble_free(struct ble *b);

/* True while an adapter is known. */
bool ble_adapter_present(const struct ble *b);

/*
 * Advertises (or replaces the advertisement with) the pksync payload for
 * hint (<= BLE_ADV_HINT_MAX bytes) and the pairing flag. Registration
 * happens asynchronously (again whenever an adapter appears); failures are
 * logged. PKS_ERR_TOO_LARGE for a longer hint, PKS_ERR_INVALID.
 */
int ble_advertise(struct ble *b, const uint8_t *hint, size_t len, bool pairing);

/* Stops advertising. */
void ble_advertise_stop(struct ble *b);

/* Starts or stops discovery (filtered on the pksync UUID, LE only). */
int ble_scan(struct ble *b, bool on);

/*
 * Accepts links from centrals: registers the GATT application (again
 * whenever an adapter appears). Off by default so a scan-only user does not
 * expose a service. PKS_OK; registration errors are logged.
 */
int ble_serve(struct ble *b, bool on);

typedef void (*ble_connect_fn)(void *user, struct ble_link *l, int err);

/*
 * Connects to address ("AA:BB:CC:DD:EE:FF", as reported by the peer
 * callback) as central and opens a link. BlueZ only knows devices it has
 * seen, so scan first: an address never seen gives PKS_ERR_NOT_FOUND. done runs exactly once from
 * the loop: with the open link (set its callbacks there) and PKS_OK, or with NULL and
 * PKS_ERR_NOT_FOUND (no such device or no pksync service), PKS_ERR_STATE (no adapter),
 * PKS_ERR_TIMEOUT, PKS_ERR_IO (BlueZ refused), PKS_ERR_CLOSED (ble_free()). Returns PKS_ERR_INVALID
 * for a bad address, PKS_ERR_NOMEM, else PKS_OK.
 */
int ble_connect(struct ble *b, const char *address, ble_connect_fn done, void *user);

/* Sets the callbacks (copied) and their user pointer; members may be NULL. */
void ble_link_set_cb(struct ble_link *l, const struct ble_link_cb *cb, void *user);

/*
 * Queues one frame (copied). PKS_ERR_BUSY past BLE_SEND_QUEUE_MAX (nothing
 * queued; on_drain follows), PKS_ERR_TOO_LARGE over FRAME_MAX,
 * PKS_ERR_INVALID for an empty frame, PKS_ERR_CLOSED once closing,
 * PKS_ERR_NOMEM.
 */
int ble_link_send(struct ble_link *l, const uint8_t *frame, size_t len);

/* Bytes of frames queued and not yet acknowledged by the peer. */
size_t ble_link_queued(const struct ble_link *l);

/*
 * Closes: queued frames are still delivered for a short while (the link
 * lingers until acknowledged), then the peer is told. reason is logged (a
 * fixed text). Idempotent; on_close follows from the loop with PKS_OK.
 */
void ble_link_close(struct ble_link *l, const char *reason);

/* See the header comment; valid until on_close returns. */
const char *ble_link_peer(const struct ble_link *l);

/* Datagram bytes on the fds, link headers included. */
uint64_t ble_link_bytes_in(const struct ble_link *l);
uint64_t ble_link_bytes_out(const struct ble_link *l);

/* True when we connected as central. */
bool ble_link_outbound(const struct ble_link *l);

/* The ATT MTU the link sends with. */
unsigned ble_link_mtu(const struct ble_link *l);

#endif
