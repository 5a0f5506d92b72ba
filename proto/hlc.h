/*
 * Hybrid logical clock. A stamp is a plain uint64_t: 48 bits of Unix
 * milliseconds shifted left by 16, or'ed with a 16-bit counter, so stamps
 * compare as integers. The clock does no I/O: the caller passes the wall time
 * on every call, which keeps the code deterministic in tests and fuzzers.
 */
#ifndef PKS_HLC_H
#define PKS_HLC_H

#include <stdint.h>

typedef uint64_t hlc_t;

#define HLC_COUNTER_BITS 16
#define HLC_COUNTER_MAX UINT64_C(0xffff)
#define HLC_WALL_MAX ((UINT64_C(1) << 48) - 1)
/* The largest stamp; a clock that reaches it stays there. */
#define HLC_MAX UINT64_MAX
/* How far ahead of our wall clock a remote stamp may be (10 minutes). */
#define HLC_DEFAULT_MAX_SKEW_MS (UINT64_C(10) * 60 * 1000)

/*
 * A clock is a plain value without secrets: the last stamp issued or
 * observed and the skew limit. Persist hlc_clock_last() and pass it back to
 * hlc_clock_init() so stamps stay monotonic across restarts.
 */
struct hlc_clock {
	hlc_t last;
	uint64_t max_skew_ms;
};

/* Milliseconds part of a stamp. */
static inline uint64_t hlc_wall_ms(hlc_t h)
{
	return h >> HLC_COUNTER_BITS;
}

/* Counter part of a stamp. */
static inline uint16_t hlc_counter(hlc_t h)
{
	return (uint16_t)(h & HLC_COUNTER_MAX);
}

/* A stamp from its parts; ms above 48 bits is clamped to HLC_WALL_MAX. */
static inline hlc_t hlc_make(uint64_t ms, uint16_t counter)
{
	if (ms > HLC_WALL_MAX)
		ms = HLC_WALL_MAX;
	return (ms << HLC_COUNTER_BITS) | counter;
}

/*
 * Starts a clock that has already seen last_seen (0 for a fresh device).
 * max_skew_ms 0 means HLC_DEFAULT_MAX_SKEW_MS.
 */
void hlc_clock_init(struct hlc_clock *c, hlc_t last_seen, uint64_t max_skew_ms);

/*
 * Stamps a local event at wall time wall_ms (Unix ms): the result is strictly
 * greater than every stamp issued or observed before. When the counter would
 * overflow, the stamp moves to the next millisecond. Only at HLC_MAX (year
 * 10889) does it stop growing.
 */
hlc_t hlc_clock_now(struct hlc_clock *c, uint64_t wall_ms);

/*
 * Takes in a stamp received from another device. PKS_ERR_REJECTED (clock
 * unchanged) when its milliseconds are more than max_skew_ms ahead of
 * wall_ms, so a device with a clock in the far future can never drag ours
 * there and freeze it; otherwise PKS_OK and later local stamps exceed it.
 */
int hlc_clock_observe(struct hlc_clock *c, hlc_t remote, uint64_t wall_ms);

/* The last stamp issued or observed, for persisting. */
hlc_t hlc_clock_last(const struct hlc_clock *c);

#endif
