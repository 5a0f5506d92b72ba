#include "common/bytes.h"
#include "common/err.h"
#include "tests/check.h"

static void test_cursor_bounds(void)
{
	const uint8_t data[] = {0x01, 0x02, 0x03, 0x04, 0x05};
	struct pks_cursor c = pks_cursor_init(data, sizeof(data));
	uint16_t v16 = 0;
	uint32_t v32 = 0;
	const uint8_t *p = NULL;

	CHECK_OK(pks_cursor_be16(&c, &v16));
	CHECK_EQ(v16, 0x0102);
	CHECK_EQ(pks_cursor_be32(&c, &v32), PKS_ERR_TRUNCATED);
	CHECK_EQ(v32, 0);
	CHECK_EQ(pks_cursor_left(&c), 3);
	CHECK_OK(pks_cursor_take(&c, 3, &p));
	CHECK_EQ(p[0], 0x03);
	CHECK_EQ(pks_cursor_take(&c, 1, &p), PKS_ERR_TRUNCATED);
	CHECK_EQ(pks_cursor_take(&c, SIZE_MAX, &p), PKS_ERR_TRUNCATED);
}

static void test_buf_limit(void)
{
	struct pks_buf b;
	uint8_t chunk[10] = {0};

	pks_buf_init(&b, 25);
	CHECK_OK(pks_buf_append(&b, chunk, 10));
	CHECK_OK(pks_buf_be64(&b, 0x0102030405060708ull));
	CHECK_EQ(b.len, 18);
	CHECK_EQ(b.data[10], 0x01);
	CHECK_EQ(b.data[17], 0x08);
	CHECK_EQ(pks_buf_append(&b, chunk, 10), PKS_ERR_TOO_LARGE);
	CHECK_EQ(b.len, 18);
	CHECK_EQ(pks_buf_append(&b, chunk, SIZE_MAX), PKS_ERR_TOO_LARGE);
	pks_buf_free(&b);
	CHECK(b.data == NULL);
}

static void test_strerror(void)
{
	CHECK_STR_EQ(pks_strerror(PKS_OK), "success");
	CHECK_STR_EQ(pks_strerror(PKS_ERR_NOMEM), "out of memory");
	CHECK_STR_EQ(pks_strerror(12345), "unknown error");
}

CHECK_MAIN({"/bytes/cursor-bounds", test_cursor_bounds}, {"/bytes/buf-limit", test_buf_limit},
	   {"/common/strerror", test_strerror})
