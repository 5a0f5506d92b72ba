/*
 * Fuzzes the BLE advertisement payload parser and the UUID text parser.
 * Oracles: a payload that parses rebuilds to the same bytes except reserved
 * flag bits; a UUID that parses is a 16-bit value whose text forms parse back
 * to it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/ble-adv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ble_adv_info info;
	uint8_t buf[BLE_ADV_PAYLOAD_MAX];
	size_t n = 0;
	uint16_t u;

	if (ble_adv_parse(data, size, &info) == PKS_OK) {
		if (size < 2 || size > BLE_ADV_PAYLOAD_MAX || info.hint_len != size - 2)
			abort();
		if (ble_adv_build(info.hint, info.hint_len, info.pairing, buf, sizeof(buf), &n) !=
		    PKS_OK)
			abort();
		if (n != size || buf[0] != data[0] || (buf[1] & 1) != (data[1] & 1) ||
		    memcmp(buf + 2, data + 2, size - 2) != 0)
			abort();
		struct ble_adv_layout l = ble_adv_pksync_layout(n);
		if (!ble_adv_fits_legacy(&l))
			abort();
	}
	if (ble_adv_parse_uuid16((const char *)data, size, &u) == PKS_OK) {
		char text[40];
		uint16_t v = 0;
		snprintf(text, sizeof(text), "%04x", u);
		if (ble_adv_parse_uuid16(text, 4, &v) != PKS_OK || v != u)
			abort();
		snprintf(text, sizeof(text), "0000%04X-0000-1000-8000-00805F9B34FB", u);
		if (ble_adv_parse_uuid16(text, 36, &v) != PKS_OK || v != u)
			abort();
	}
	return 0;
}
