/*
 * transport/frame: header encoding and stream reassembly under every
 * chunking, including seeded random splits (seed printed on failure,
 * PKSYNC_FRAME_SEED overrides it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tests/check.h"
#include "transport/frame.h"

/* Collects frames re-encoded back into a stream, so any loss shows. */
struct collect {
	uint8_t *out;
	size_t out_len;
	size_t out_cap;
	size_t frames;
	size_t stop_after; /* 0 = never */
};

static int collect_fn(void *user, const uint8_t *body, size_t len)
{
	struct collect *col = user;
	uint8_t hdr[2];

	if (frame_header(len, hdr) != PKS_OK)
		return PKS_ERR_INTERNAL;
	if (col->out_len + 2 + len > col->out_cap) {
		size_t cap = (col->out_len + 2 + len) * 2;
		uint8_t *p = realloc(col->out, cap);
		if (p == NULL)
			return PKS_ERR_NOMEM;
		col->out = p;
		col->out_cap = cap;
	}
	memcpy(col->out + col->out_len, hdr, 2);
	memcpy(col->out + col->out_len + 2, body, len);
	col->out_len += 2 + len;
	col->frames++;
	if (col->stop_after != 0 && col->frames == col->stop_after)
		return PKS_ERR_STATE;
	return PKS_OK;
}

static uint64_t prng_state;

static uint32_t prng_next(void)
{
	/* xorshift64*: deterministic, seeded per test. */
	prng_state ^= prng_state >> 12;
	prng_state ^= prng_state << 25;
	prng_state ^= prng_state >> 27;
	return (uint32_t)((prng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Appends one encoded frame of len bytes of a pattern to buf at *pos. */
static void put_frame(uint8_t *buf, size_t *pos, size_t len, uint8_t salt)
{
	CHECK_OK(frame_header(len, buf + *pos));
	for (size_t i = 0; i < len; i++)
		buf[*pos + 2 + i] = (uint8_t)(i * 31 + salt);
	*pos += 2 + len;
}

static void test_header(void)
{
	uint8_t h[2] = {0xaa, 0xbb};

	CHECK_OK(frame_header(1, h));
	CHECK_EQ(h[0], 0);
	CHECK_EQ(h[1], 1);
	CHECK_OK(frame_header(256, h));
	CHECK_EQ(h[0], 1);
	CHECK_EQ(h[1], 0);
	CHECK_OK(frame_header(FRAME_MAX, h));
	CHECK_EQ(h[0], 0xff);
	CHECK_EQ(h[1], 0xff);
	h[0] = 0x11;
	h[1] = 0x22;
	CHECK_EQ(frame_header(0, h), PKS_ERR_INVALID);
	CHECK_EQ(frame_header(FRAME_MAX + 1, h), PKS_ERR_TOO_LARGE);
	CHECK_EQ(frame_header(SIZE_MAX, h), PKS_ERR_TOO_LARGE);
	CHECK_EQ(h[0], 0x11);
	CHECK_EQ(h[1], 0x22);
}

/* 1-byte, 65535-byte and middling frames, fed whole, bytewise and in 7s. */
static void test_chunkings(void)
{
	static const size_t sizes[] = {1, FRAME_MAX, 2, 300, 1, 65534, 17};
	static struct frame_reader r;
	size_t cap = 0, len = 0;
	uint8_t *stream;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		cap += 2 + sizes[i];
	stream = malloc(cap);
	CHECK(stream != NULL);
	if (stream == NULL)
		return;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		put_frame(stream, &len, sizes[i], (uint8_t)i);
	CHECK_EQ(len, cap);

	static const size_t steps[] = {SIZE_MAX, 1, 7, 2, 65536, 65537};
	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		struct collect col = {0};
		frame_reader_init(&r);
		for (size_t pos = 0; pos < len;) {
			size_t n = len - pos < steps[s] ? len - pos : steps[s];
			CHECK_OK(frame_reader_feed(&r, stream + pos, n, collect_fn, &col));
			pos += n;
		}
		CHECK_EQ(col.frames, sizeof(sizes) / sizeof(sizes[0]));
		CHECK_EQ(col.out_len, len);
		if (col.out_len == len)
			CHECK_MEM_EQ(col.out, stream, len);
		/* Nothing half-read is left behind. */
		CHECK_EQ(r.hdr_got, 0);
		CHECK_EQ(r.got, 0);
		free(col.out);
	}
	free(stream);
}

static void test_random_chunking(void)
{
	static struct frame_reader r;
	uint64_t seed = 0x5eedf4a3e001ULL;
	const char *env = getenv("PKSYNC_FRAME_SEED");
	enum {
		ROUNDS = 40,
		FRAMES = 60
	};

	if (env != NULL)
		seed = strtoull(env, NULL, 0);
	for (int round = 0; round < ROUNDS; round++) {
		struct collect col = {0};
		size_t cap = FRAMES * (2 + FRAME_MAX), len = 0;
		uint8_t *stream = malloc(cap);
		int failed_before = check_failed_current;

		CHECK(stream != NULL);
		if (stream == NULL)
			return;
		prng_state = seed + (uint64_t)round;
		for (int f = 0; f < FRAMES; f++) {
			uint32_t k = prng_next() % 8;
			/* Mostly small, sometimes huge, sometimes exactly the limits. */
			size_t n = k == 0   ? 1
				   : k == 1 ? FRAME_MAX
				   : k == 2 ? 1 + prng_next() % FRAME_MAX
					    : 1 + prng_next() % 64;
			put_frame(stream, &len, n, (uint8_t)f);
		}
		frame_reader_init(&r);
		for (size_t pos = 0; pos < len;) {
			uint32_t k = prng_next() % 4;
			size_t n = k == 0 ? 1 : k == 1 ? prng_next() % 3 : prng_next() % 100000;
			if (n > len - pos)
				n = len - pos;
			CHECK_OK(frame_reader_feed(&r, stream + pos, n, collect_fn, &col));
			pos += n;
		}
		CHECK_EQ(col.frames, FRAMES);
		CHECK_EQ(col.out_len, len);
		if (col.out_len == len)
			CHECK_MEM_EQ(col.out, stream, len);
		if (check_failed_current && !failed_before)
			printf("# seed 0x%llx round %d\n", (unsigned long long)seed, round);
		free(col.out);
		free(stream);
	}
}

static void test_zero_length(void)
{
	static struct frame_reader r;
	struct collect col = {0};
	/* A good frame, then a zero length header, then a frame never delivered. */
	const uint8_t stream[] = {0x00, 0x02, 'h', 'i', 0x00, 0x00, 0x00, 0x01, 'x'};
	const uint8_t good[] = {0x00, 0x01, 'y'};

	frame_reader_init(&r);
	CHECK_EQ(frame_reader_feed(&r, stream, sizeof(stream), collect_fn, &col),
		 PKS_ERR_MALFORMED);
	CHECK_EQ(col.frames, 1);
	/* Sticky: the stream is dead until re-initialised. */
	CHECK_EQ(frame_reader_feed(&r, good, sizeof(good), collect_fn, &col), PKS_ERR_MALFORMED);
	CHECK_EQ(col.frames, 1);
	frame_reader_init(&r);
	CHECK_OK(frame_reader_feed(&r, good, sizeof(good), collect_fn, &col));
	CHECK_EQ(col.frames, 2);

	/* Split across calls, header byte by byte. */
	frame_reader_init(&r);
	CHECK_OK(frame_reader_feed(&r, stream + 4, 1, collect_fn, &col));
	CHECK_EQ(frame_reader_feed(&r, stream + 5, 1, collect_fn, &col), PKS_ERR_MALFORMED);
	CHECK_EQ(col.frames, 2);
	free(col.out);
}

static void test_callback_stops(void)
{
	static struct frame_reader r;
	struct collect col = {0};
	uint8_t stream[3 * 5];
	size_t len = 0;

	for (int i = 0; i < 5; i++)
		put_frame(stream, &len, 1, (uint8_t)i);
	frame_reader_init(&r);
	col.stop_after = 2;
	CHECK_EQ(frame_reader_feed(&r, stream, len, collect_fn, &col), PKS_ERR_STATE);
	CHECK_EQ(col.frames, 2);
	free(col.out);
}

static void test_bad_args(void)
{
	static struct frame_reader r;
	struct collect col = {0};
	const uint8_t one[] = {0x00};

	frame_reader_init(&r);
	CHECK_EQ(frame_reader_feed(NULL, one, 1, collect_fn, &col), PKS_ERR_INVALID);
	CHECK_EQ(frame_reader_feed(&r, NULL, 1, collect_fn, &col), PKS_ERR_INVALID);
	CHECK_EQ(frame_reader_feed(&r, one, 1, NULL, &col), PKS_ERR_INVALID);
	CHECK_OK(frame_reader_feed(&r, NULL, 0, collect_fn, &col));
	CHECK_EQ(col.frames, 0);
}

CHECK_MAIN({"/frame/header", test_header}, {"/frame/chunkings", test_chunkings},
	   {"/frame/random-chunking", test_random_chunking},
	   {"/frame/zero-length", test_zero_length}, {"/frame/callback-stops", test_callback_stops},
	   {"/frame/bad-args", test_bad_args})
