/*
 * Hybrid logical clock (Kulkarni et al.), packed into one uint64_t so stamps
 * compare as integers. Remote stamps too far ahead of our wall clock are
 * refused instead of adopted: adopting them would pin our clock to the
 * remote's future until real time caught up.
 */
#include "proto/hlc.h"

#include "common/err.h"

void hlc_clock_init(struct hlc_clock *c, hlc_t last_seen, uint64_t max_skew_ms)
{
	c->last = last_seen;
	c->max_skew_ms = max_skew_ms ? max_skew_ms : HLC_DEFAULT_MAX_SKEW_MS;
}

/* The smallest stamp strictly greater than h, saturating at HLC_MAX. */
static hlc_t hlc_next(hlc_t h)
{
	if (h == HLC_MAX)
		return HLC_MAX;
	/* Counter overflow carries into the millisecond bits by itself. */
	return h + 1;
}

hlc_t hlc_clock_now(struct hlc_clock *c, uint64_t wall_ms)
{
	hlc_t wall = hlc_make(wall_ms, 0);

	if (wall > c->last)
		c->last = wall;
	else
		c->last = hlc_next(c->last);
	return c->last;
}

int hlc_clock_observe(struct hlc_clock *c, hlc_t remote, uint64_t wall_ms)
{
	uint64_t limit = wall_ms + c->max_skew_ms;

	if (limit < wall_ms)
		limit = UINT64_MAX;
	if (hlc_wall_ms(remote) > limit)
		return PKS_ERR_REJECTED;
	if (remote > c->last)
		c->last = remote;
	return PKS_OK;
}

hlc_t hlc_clock_last(const struct hlc_clock *c)
{
	return c->last;
}
