/* Hybrid logical clock: monotonicity, remote stamps, skew, overflow. */
#include "proto/hlc.h"

#include "common/err.h"
#include "tests/check.h"

#define T0 UINT64_C(1700000000000)

static void test_make_parts(void)
{
	hlc_t h = hlc_make(T0, 7);

	CHECK_EQ(hlc_wall_ms(h), T0);
	CHECK_EQ(hlc_counter(h), 7);
	CHECK(hlc_make(T0, 0) > hlc_make(T0 - 1, 0xffff));
	CHECK_EQ(hlc_wall_ms(hlc_make(UINT64_MAX, 0)), HLC_WALL_MAX);
}

static void test_monotonic(void)
{
	struct hlc_clock c;
	hlc_t prev = 0;
	uint64_t walls[] = {T0, T0, T0 + 5, T0 + 3, T0 - 1000, T0 + 5, T0 + 6, 0, T0 + 6};

	hlc_clock_init(&c, 0, 0);
	CHECK_EQ(c.max_skew_ms, HLC_DEFAULT_MAX_SKEW_MS);
	for (size_t i = 0; i < sizeof(walls) / sizeof(walls[0]); i++) {
		hlc_t h = hlc_clock_now(&c, walls[i]);
		CHECK(h > prev);
		CHECK(hlc_wall_ms(h) >= walls[i] || walls[i] < hlc_wall_ms(prev));
		prev = h;
	}
	/* Wall clock ahead of the last stamp: the stamp follows it exactly. */
	CHECK_EQ(hlc_clock_now(&c, T0 + 100), hlc_make(T0 + 100, 0));
	CHECK_EQ(hlc_clock_now(&c, T0 + 100), hlc_make(T0 + 100, 1));
	CHECK_EQ(hlc_clock_last(&c), hlc_make(T0 + 100, 1));
}

static void test_restart(void)
{
	struct hlc_clock c;

	/* A clock restored from a persisted stamp never goes back. */
	hlc_clock_init(&c, hlc_make(T0 + 50, 3), 1000);
	CHECK_EQ(hlc_clock_now(&c, T0), hlc_make(T0 + 50, 4));
}

static void test_observe(void)
{
	struct hlc_clock c;
	hlc_t remote = hlc_make(T0 + 60000, 9);

	hlc_clock_init(&c, 0, 0);
	hlc_clock_now(&c, T0);
	CHECK_OK(hlc_clock_observe(&c, remote, T0));
	CHECK_EQ(hlc_clock_last(&c), remote);
	CHECK(hlc_clock_now(&c, T0) > remote);
	/* An older remote stamp does not move the clock back. */
	hlc_t before = hlc_clock_last(&c);
	CHECK_OK(hlc_clock_observe(&c, hlc_make(T0 - 5, 0), T0));
	CHECK_EQ(hlc_clock_last(&c), before);
}

static void test_skew(void)
{
	struct hlc_clock c;
	hlc_t edge = hlc_make(T0 + HLC_DEFAULT_MAX_SKEW_MS, 0xffff);
	hlc_t over = hlc_make(T0 + HLC_DEFAULT_MAX_SKEW_MS + 1, 0);

	hlc_clock_init(&c, 0, 0);
	hlc_t h = hlc_clock_now(&c, T0);
	CHECK_EQ(hlc_clock_observe(&c, over, T0), PKS_ERR_REJECTED);
	CHECK_EQ(hlc_clock_last(&c), h);
	CHECK_EQ(hlc_clock_observe(&c, hlc_make(UINT64_MAX, 0xffff), T0), PKS_ERR_REJECTED);
	CHECK_EQ(hlc_clock_last(&c), h);
	/* The far-future stamp did not freeze us: local time still drives the clock. */
	CHECK_EQ(hlc_clock_now(&c, T0 + 10), hlc_make(T0 + 10, 0));
	CHECK_OK(hlc_clock_observe(&c, edge, T0));
	CHECK_EQ(hlc_clock_last(&c), edge);
	/* Custom skew. */
	hlc_clock_init(&c, 0, 1000);
	CHECK_EQ(hlc_clock_observe(&c, hlc_make(T0 + 1001, 0), T0), PKS_ERR_REJECTED);
	CHECK_OK(hlc_clock_observe(&c, hlc_make(T0 + 1000, 0), T0));
	/* Wall time near the top of the range must not overflow the limit. */
	hlc_clock_init(&c, 0, UINT64_MAX);
	CHECK_OK(hlc_clock_observe(&c, hlc_make(HLC_WALL_MAX, 0), 5));
}

static void test_counter_overflow(void)
{
	struct hlc_clock c;
	hlc_t h;

	hlc_clock_init(&c, hlc_make(T0, 0xfffe), 0);
	h = hlc_clock_now(&c, T0);
	CHECK_EQ(h, hlc_make(T0, 0xffff));
	h = hlc_clock_now(&c, T0);
	CHECK_EQ(hlc_wall_ms(h), T0 + 1);
	CHECK_EQ(hlc_counter(h), 0);
	/* 70,000 events in one millisecond stay strictly increasing. */
	hlc_clock_init(&c, 0, 0);
	hlc_t prev = 0;
	int bad = 0;
	for (int i = 0; i < 70000; i++) {
		h = hlc_clock_now(&c, T0);
		bad += h <= prev;
		prev = h;
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(hlc_wall_ms(prev), T0 + 1);
	/* At the very top the clock saturates instead of wrapping to 0. */
	hlc_clock_init(&c, HLC_MAX, 0);
	CHECK_EQ(hlc_clock_now(&c, T0), HLC_MAX);
}

CHECK_MAIN({"/hlc/make-parts", test_make_parts}, {"/hlc/monotonic", test_monotonic},
	   {"/hlc/restart", test_restart}, {"/hlc/observe", test_observe}, {"/hlc/skew", test_skew},
	   {"/hlc/counter-overflow", test_counter_overflow})
