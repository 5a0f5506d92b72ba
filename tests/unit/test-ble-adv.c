/*
 * transport/ble-adv: payload build/parse round trip, limits, and the
 * 31-byte legacy budget counted like BlueZ (flags + UUID list + service data
 * leave 20 bytes of payload).
 */
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/ble-adv.h"

static void test_round_trip(void)
{
	uint8_t hint[BLE_ADV_HINT_MAX], buf[BLE_ADV_PAYLOAD_MAX];
	struct ble_adv_info info;
	size_t n = 0;

	for (size_t i = 0; i < sizeof(hint); i++)
		hint[i] = (uint8_t)(0xa0 + i);
	for (size_t len = 0; len <= BLE_ADV_HINT_MAX; len++) {
		for (int pairing = 0; pairing < 2; pairing++) {
			CHECK_OK(ble_adv_build(hint, len, pairing, buf, sizeof(buf), &n));
			CHECK_EQ(n, 2 + len);
			CHECK_EQ(buf[0], BLE_ADV_VERSION);
			CHECK_EQ(buf[1], pairing ? 1 : 0);
			CHECK_OK(ble_adv_parse(buf, n, &info));
			CHECK_EQ(info.version, BLE_ADV_VERSION);
			CHECK_EQ(info.pairing, pairing);
			CHECK_EQ(info.hint_len, len);
			CHECK(info.hint == buf + 2);
			CHECK_MEM_EQ(info.hint, hint, len);
		}
	}
	CHECK_OK(ble_adv_build(NULL, 0, false, buf, 2, &n));
	CHECK_EQ(n, 2);
}

static void test_limits(void)
{
	uint8_t hint[32] = {0}, buf[64];
	struct ble_adv_info info = {0};
	size_t n = 7;

	CHECK_EQ(ble_adv_build(hint, BLE_ADV_HINT_MAX + 1, false, buf, sizeof(buf), &n),
		 PKS_ERR_TOO_LARGE);
	CHECK_EQ(ble_adv_build(hint, 4, false, buf, 5, &n), PKS_ERR_TOO_LARGE);
	CHECK_EQ(ble_adv_build(NULL, 4, false, buf, sizeof(buf), &n), PKS_ERR_INVALID);
	CHECK_EQ(n, 7);

	buf[0] = BLE_ADV_VERSION;
	buf[1] = 0;
	CHECK_EQ(ble_adv_parse(buf, 0, &info), PKS_ERR_TRUNCATED);
	CHECK_EQ(ble_adv_parse(buf, 1, &info), PKS_ERR_TRUNCATED);
	CHECK_EQ(ble_adv_parse(buf, BLE_ADV_PAYLOAD_MAX + 1, &info), PKS_ERR_TOO_LARGE);
	CHECK_OK(ble_adv_parse(buf, BLE_ADV_PAYLOAD_MAX, &info));
	CHECK_EQ(info.hint_len, BLE_ADV_HINT_MAX);
	buf[0] = 2;
	CHECK_EQ(ble_adv_parse(buf, 4, &info), PKS_ERR_UNSUPPORTED);
	buf[0] = 0;
	CHECK_EQ(ble_adv_parse(buf, 4, &info), PKS_ERR_UNSUPPORTED);
	/* Reserved flag bits are ignored; only bit 0 means pairing. */
	buf[0] = BLE_ADV_VERSION;
	buf[1] = 0xfe;
	CHECK_OK(ble_adv_parse(buf, 2, &info));
	CHECK(!info.pairing);
	buf[1] = 0xff;
	CHECK_OK(ble_adv_parse(buf, 2, &info));
	CHECK(info.pairing);
	CHECK_EQ(ble_adv_parse(NULL, 3, &info), PKS_ERR_INVALID);
}

static void test_budget(void)
{
	struct ble_adv_layout l;

	/* The pksync layout at the largest payload fills the 31 bytes exactly. */
	l = ble_adv_pksync_layout(BLE_ADV_PAYLOAD_MAX);
	CHECK_EQ(ble_adv_length(&l), 31);
	CHECK(ble_adv_fits_legacy(&l));
	l = ble_adv_pksync_layout(BLE_ADV_PAYLOAD_MAX + 1);
	CHECK_EQ(ble_adv_length(&l), 32);
	CHECK(!ble_adv_fits_legacy(&l));
	l = ble_adv_pksync_layout(2);
	CHECK_EQ(ble_adv_length(&l), 13);

	/* Flags alone; a name in the advert; manufacturer data; many UUIDs. */
	memset(&l, 0, sizeof(l));
	CHECK_EQ(ble_adv_length(&l), 3);
	l.name_len = 26;
	CHECK_EQ(ble_adv_length(&l), 31);
	l.name_len = 27;
	CHECK(!ble_adv_fits_legacy(&l));
	memset(&l, 0, sizeof(l));
	l.has_mfg = true;
	CHECK_EQ(ble_adv_length(&l), 7);
	l.mfg_len = 24;
	CHECK_EQ(ble_adv_length(&l), 31);
	memset(&l, 0, sizeof(l));
	l.n_uuid16 = 3;
	CHECK_EQ(ble_adv_length(&l), 3 + 2 + 6);
	/* Adding a local name to pksync's advert does not fit at full hint. */
	l = ble_adv_pksync_layout(BLE_ADV_PAYLOAD_MAX);
	l.name_len = 1;
	CHECK(!ble_adv_fits_legacy(&l));
}

static void test_uuid(void)
{
	uint16_t u = 0;

	CHECK_OK(ble_adv_parse_uuid16("fff6", 4, &u));
	CHECK_EQ(u, BLE_ADV_UUID16);
	CHECK_OK(ble_adv_parse_uuid16("0000FFF6", 8, &u));
	CHECK_EQ(u, 0xfff6);
	CHECK_OK(ble_adv_parse_uuid16(BLE_ADV_UUID128_STR, strlen(BLE_ADV_UUID128_STR), &u));
	CHECK_EQ(u, BLE_ADV_UUID16);
	CHECK_OK(ble_adv_parse_uuid16("0000180D-0000-1000-8000-00805F9B34FB", 36, &u));
	CHECK_EQ(u, 0x180d);
	u = 1;
	CHECK_EQ(ble_adv_parse_uuid16("0001fff6-0000-1000-8000-00805f9b34fb", 36, &u),
		 PKS_ERR_UNSUPPORTED);
	CHECK_EQ(ble_adv_parse_uuid16("0000fff6-0000-1000-8000-00805f9b34fc", 36, &u),
		 PKS_ERR_UNSUPPORTED);
	CHECK_EQ(ble_adv_parse_uuid16("1234fff6", 8, &u), PKS_ERR_UNSUPPORTED);
	CHECK_EQ(ble_adv_parse_uuid16("0000fff6+0000-1000-8000-00805f9b34fb", 36, &u),
		 PKS_ERR_MALFORMED);
	CHECK_EQ(ble_adv_parse_uuid16("0000fff6-0000-1000-8000-00805f9b34fg", 36, &u),
		 PKS_ERR_MALFORMED);
	CHECK_EQ(ble_adv_parse_uuid16("fff", 3, &u), PKS_ERR_MALFORMED);
	CHECK_EQ(ble_adv_parse_uuid16("ffg6", 4, &u), PKS_ERR_MALFORMED);
	CHECK_EQ(ble_adv_parse_uuid16("", 0, &u), PKS_ERR_MALFORMED);
	CHECK_EQ(ble_adv_parse_uuid16("0000fff6-0000-1000-8000-00805f9b34fb0", 37, &u),
		 PKS_ERR_TOO_LARGE);
	CHECK_EQ(u, 1);
}

CHECK_MAIN({"/ble_adv/round_trip", test_round_trip}, {"/ble_adv/limits", test_limits},
	   {"/ble_adv/budget", test_budget}, {"/ble_adv/uuid", test_uuid})
