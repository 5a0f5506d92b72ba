#include "transport/ble-adv.h"

#include <string.h>

#include "common/err.h"

int ble_adv_build(const uint8_t *hint, size_t hint_len, bool pairing, uint8_t *out, size_t cap,
		  size_t *out_len)
{
	int r = PKS_ERR_INVALID;

	if (out == NULL || out_len == NULL || (hint == NULL && hint_len > 0))
		goto out;
	r = PKS_ERR_TOO_LARGE;
	if (hint_len > BLE_ADV_HINT_MAX || cap < 2 + hint_len)
		goto out;
	out[0] = BLE_ADV_VERSION;
	out[1] = pairing ? BLE_ADV_FLAG_PAIRING : 0;
	if (hint_len > 0)
		memcpy(out + 2, hint, hint_len);
	*out_len = 2 + hint_len;
	r = PKS_OK;
out:
	return r;
}

int ble_adv_parse(const uint8_t *data, size_t len, struct ble_adv_info *out)
{
	int r = PKS_ERR_INVALID;

	if (out == NULL || (data == NULL && len > 0))
		goto out;
	r = PKS_ERR_TRUNCATED;
	if (len < 2)
		goto out;
	r = PKS_ERR_TOO_LARGE;
	if (len > BLE_ADV_PAYLOAD_MAX)
		goto out;
	r = PKS_ERR_UNSUPPORTED;
	if (data[0] != BLE_ADV_VERSION)
		goto out;
	out->version = data[0];
	out->pairing = (data[1] & BLE_ADV_FLAG_PAIRING) != 0;
	out->hint = data + 2;
	out->hint_len = len - 2;
	r = PKS_OK;
out:
	return r;
}

size_t ble_adv_length(const struct ble_adv_layout *l)
{
	size_t n = BLE_ADV_FLAGS_BYTES;

	if (l->n_uuid16 > 0)
		n += 2 + 2 * l->n_uuid16;
	n += l->n_service_data16 * 4 + l->service_data_len;
	if (l->has_mfg || l->mfg_len > 0)
		n += 4 + l->mfg_len;
	if (l->name_len > 0)
		n += 2 + l->name_len;
	return n;
}

bool ble_adv_fits_legacy(const struct ble_adv_layout *l)
{
	return ble_adv_length(l) <= BLE_ADV_LEGACY_MAX;
}

struct ble_adv_layout ble_adv_pksync_layout(size_t payload_len)
{
	struct ble_adv_layout l = {
	    .n_uuid16 = 1,
	    .n_service_data16 = 1,
	    .service_data_len = payload_len,
	};
	return l;
}

static int ble_adv_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads n hex digits into *v; false on any other character. */
static bool ble_adv_hex_run(const char *s, size_t n, uint32_t *v)
{
	uint32_t acc = 0;

	for (size_t i = 0; i < n; i++) {
		int d = ble_adv_hex(s[i]);
		if (d < 0)
			return false;
		acc = (acc << 4) | (uint32_t)d;
	}
	*v = acc;
	return true;
}

int ble_adv_parse_uuid16(const char *text, size_t len, uint16_t *out)
{
	static const char base_tail[] = "-0000-1000-8000-00805f9b34fb";
	uint32_t v = 0;
	int r = PKS_ERR_INVALID;

	if (text == NULL || out == NULL)
		goto out;
	r = PKS_ERR_TOO_LARGE;
	if (len > BLE_ADV_UUID_TEXT_MAX)
		goto out;
	r = PKS_ERR_MALFORMED;
	if (len == 4 || len == 8) {
		if (!ble_adv_hex_run(text, len, &v))
			goto out;
		r = PKS_ERR_UNSUPPORTED;
		if (v > 0xffffu)
			goto out;
	} else if (len == 36) {
		/* 8-4-4-4-12 hex digits; first check the shape, then the base. */
		static const size_t dash[] = {8, 13, 18, 23};
		bool on_base = true;
		size_t k = 0;

		for (size_t i = 0; i < 36; i++) {
			if (k < 4 && i == dash[k]) {
				if (text[i] != '-')
					goto out;
				k++;
				continue;
			}
			if (ble_adv_hex(text[i]) < 0)
				goto out;
		}
		for (size_t i = 8; i < 36; i++) {
			char c = text[i];
			if (c >= 'A' && c <= 'F')
				c = (char)(c - 'A' + 'a');
			if (c != base_tail[i - 8])
				on_base = false;
		}
		if (!ble_adv_hex_run(text, 8, &v))
			goto out;
		r = PKS_ERR_UNSUPPORTED;
		if (!on_base || v > 0xffffu)
			goto out;
	} else {
		goto out;
	}
	*out = (uint16_t)v;
	r = PKS_OK;
out:
	return r;
}
