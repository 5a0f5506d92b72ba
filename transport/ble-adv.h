/*
 * The pksync BLE advertisement, pure (no I/O): the 16-bit service data
 * payload that rides in a legacy (31-byte) advertisement, its parser, and the
 * byte budget counted the way BlueZ counts it.
 *
 * Payload (service data of BLE_ADV_UUID16, 2..BLE_ADV_PAYLOAD_MAX bytes):
 *
 *   byte 0      version, BLE_ADV_VERSION (others are refused)
 *   byte 1      flags: bit 0 = pairing mode; other bits are reserved, sent
 *               as 0 and ignored on receipt (room for later versions)
 *   byte 2..    the hint: opaque bytes chosen by the agent (a rotating
 *               member hint), 0..BLE_ADV_HINT_MAX bytes
 *
 * The advertisement itself carries a complete 16-bit service UUID list with
 * BLE_ADV_UUID16 (so scanners can filter on it) and the service data above:
 * 3 (flags, added by the kernel) + 4 (UUID list) + 4 + 20 (service data) =
 * 31 bytes at the largest hint. The local name goes in the scan response.
 *
 * BLE_ADV_UUID16 is NOT a Bluetooth SIG assigned number: it lies in the
 * unassigned 0xFFF0..0xFFFF range that development boards use. A shipped
 * product needs a member UUID from the SIG; only this constant changes.
 */
#ifndef PKS_TRANSPORT_BLE_ADV_H
#define PKS_TRANSPORT_BLE_ADV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLE_ADV_UUID16 0xfff6u
/* The same UUID in the 128-bit form BlueZ uses as ServiceData keys. */
#define BLE_ADV_UUID128_STR "0000fff6-0000-1000-8000-00805f9b34fb"
/* The 16-bit form BlueZ takes in LEAdvertisement1.ServiceUUIDs/ServiceData. */
#define BLE_ADV_UUID16_STR "fff6"

#define BLE_ADV_VERSION 1u
#define BLE_ADV_FLAG_PAIRING 0x01u
#define BLE_ADV_PAYLOAD_MAX 20u
#define BLE_ADV_HINT_MAX (BLE_ADV_PAYLOAD_MAX - 2u)
/* A legacy advertisement's data, flags included. */
#define BLE_ADV_LEGACY_MAX 31u
/* The flags field BlueZ (the kernel) prepends to a connectable advert. */
#define BLE_ADV_FLAGS_BYTES 3u
/* Longest UUID text ble_adv_parse_uuid16() looks at. */
#define BLE_ADV_UUID_TEXT_MAX 36u

/* A parsed payload; hint points into the parsed buffer (borrowed). */
struct ble_adv_info {
	uint8_t version;
	bool pairing;
	const uint8_t *hint;
	size_t hint_len;
};

/*
 * Writes the payload for hint (hint_len <= BLE_ADV_HINT_MAX; hint may be NULL
 * when hint_len is 0) into out (cap bytes) and its length into *out_len.
 * PKS_ERR_TOO_LARGE for a longer hint or a too small out, PKS_ERR_INVALID
 * for NULL arguments; nothing is written on error.
 */
int ble_adv_build(const uint8_t *hint, size_t hint_len, bool pairing, uint8_t *out, size_t cap,
		  size_t *out_len);

/*
 * Parses a service data payload (as received: untrusted). PKS_ERR_TRUNCATED
 * under 2 bytes, PKS_ERR_TOO_LARGE over BLE_ADV_PAYLOAD_MAX,
 * PKS_ERR_UNSUPPORTED for another version, PKS_ERR_INVALID for NULL
 * arguments. *out is written only on success and borrows data.
 */
int ble_adv_parse(const uint8_t *data, size_t len, struct ble_adv_info *out);

/*
 * Bytes a legacy advertisement takes, counted like BlueZ (src/shared/ad.c
 * plus the flags the kernel adds): flags 3; a 16-bit UUID list 2 + 2 per
 * UUID (0 when n_uuid16 is 0); each 16-bit service data 2 + 2 + its length;
 * manufacturer data 2 + 2 + its length (when mfg_len is not 0 or has_mfg);
 * a local name in the advertisement 2 + its length (0 when name_len is 0).
 */
struct ble_adv_layout {
	size_t n_uuid16;
	size_t n_service_data16;
	size_t service_data_len; /* summed payload bytes of all service data */
	bool has_mfg;
	size_t mfg_len;
	size_t name_len;
};
size_t ble_adv_length(const struct ble_adv_layout *l);

/* True when the layout fits BLE_ADV_LEGACY_MAX. */
bool ble_adv_fits_legacy(const struct ble_adv_layout *l);

/* The layout pksync registers for a payload of payload_len bytes. */
struct ble_adv_layout ble_adv_pksync_layout(size_t payload_len);

/*
 * Reads a UUID text as BlueZ reports it ("fff6", "0000fff6", or the
 * 128-bit form on the Bluetooth base UUID, any case) and gives the 16-bit
 * value. PKS_ERR_UNSUPPORTED for a 128-bit UUID off the base (a valid UUID
 * that has no 16-bit form), PKS_ERR_MALFORMED for anything that is not a
 * UUID, PKS_ERR_TOO_LARGE past BLE_ADV_UUID_TEXT_MAX characters (len bytes,
 * no terminator needed).
 */
int ble_adv_parse_uuid16(const char *text, size_t len, uint16_t *out);

#endif
