/*
 * agent/ctaphid: CTAPHID framing driven report by report with an injected
 * clock. The host side (fragmenting requests, reassembling answers) is
 * written here independently of the module, so a framing bug on either side
 * shows as a mismatch. Random sequences are seeded (seed printed on failure,
 * PKSYNC_CTAPHID_SEED overrides it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ctaphid.h"
#include "common/err.h"
#include "tests/check.h"

#define FX_MAX_REPORTS 8192

struct fx {
	struct ctaphid *h;
	uint8_t (*reports)[CTAPHID_REPORT_LEN];
	size_t n_reports;
	size_t overflow;

	size_t n_requests;
	uint32_t req_cid;
	uint8_t req_cmd;
	uint8_t req_data[CTAPHID_MAX_MSG];
	size_t req_len;
	/* When set, the request callback answers at once with this command. */
	int respond_in_callback;

	size_t n_cancels;
	uint32_t cancel_cid;
	size_t n_winks;
	uint32_t wink_cid;
};

static void fx_send(void *user, const uint8_t report[CTAPHID_REPORT_LEN])
{
	struct fx *fx = user;

	if (fx->n_reports >= FX_MAX_REPORTS) {
		fx->overflow++;
		return;
	}
	memcpy(fx->reports[fx->n_reports++], report, CTAPHID_REPORT_LEN);
}

static void fx_request(void *user, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len)
{
	struct fx *fx = user;

	fx->n_requests++;
	fx->req_cid = cid;
	fx->req_cmd = cmd;
	fx->req_len = len <= sizeof(fx->req_data) ? len : sizeof(fx->req_data);
	memcpy(fx->req_data, data, fx->req_len);
	if (fx->respond_in_callback)
		CHECK_OK(ctaphid_respond(fx->h, cid, cmd, data, len));
}

static void fx_cancel(void *user, uint32_t cid)
{
	struct fx *fx = user;

	fx->n_cancels++;
	fx->cancel_cid = cid;
}

static void fx_wink(void *user, uint32_t cid)
{
	struct fx *fx = user;

	fx->n_winks++;
	fx->wink_cid = cid;
}

static struct fx *fx_new(void)
{
	static const struct ctaphid_cb cb = {
	    .send = fx_send,
	    .request = fx_request,
	    .cancel = fx_cancel,
	    .wink = fx_wink,
	};
	struct fx *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return NULL;
	fx->reports = calloc(FX_MAX_REPORTS, CTAPHID_REPORT_LEN);
	if (fx->reports == NULL || ctaphid_new(&cb, fx, &fx->h) != PKS_OK) {
		free(fx->reports);
		free(fx);
		return NULL;
	}
	return fx;
}

static void fx_free(struct fx *fx)
{
	if (fx == NULL)
		return;
	ctaphid_free(fx->h);
	free(fx->reports);
	free(fx);
}

static void fx_clear(struct fx *fx)
{
	fx->n_reports = 0;
	fx->overflow = 0;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* One initialisation packet with a declared length bcnt and up to 57 bytes. */
static void host_init_packet(struct fx *fx, uint32_t cid, uint8_t cmd, size_t bcnt,
			     const uint8_t *data, size_t n, uint64_t now)
{
	uint8_t r[CTAPHID_REPORT_LEN] = {0};

	put_be32(r, cid);
	r[4] = cmd;
	r[5] = (uint8_t)(bcnt >> 8);
	r[6] = (uint8_t)bcnt;
	if (n > 57)
		n = 57;
	if (n > 0)
		memcpy(r + 7, data, n);
	CHECK_OK(ctaphid_input(fx->h, r, now));
}

static void host_cont_packet(struct fx *fx, uint32_t cid, uint8_t seq, const uint8_t *data,
			     size_t n, uint64_t now)
{
	uint8_t r[CTAPHID_REPORT_LEN] = {0};

	put_be32(r, cid);
	r[4] = seq;
	if (n > 59)
		n = 59;
	if (n > 0)
		memcpy(r + 5, data, n);
	CHECK_OK(ctaphid_input(fx->h, r, now));
}

/* A whole message as a host fragments it. */
static void host_send(struct fx *fx, uint32_t cid, uint8_t cmd, const uint8_t *data, size_t len,
		      uint64_t now)
{
	size_t off = len < 57 ? len : 57;
	uint8_t seq = 0;

	host_init_packet(fx, cid, cmd, len, data, off, now);
	while (off < len) {
		size_t n = len - off < 59 ? len - off : 59;
		host_cont_packet(fx, cid, seq++, data + off, n, now);
		off += n;
	}
}

/*
 * Reassembles the answer starting at report *idx as a host would, checking
 * the sequence numbers and that every packet is on the same channel.
 * Returns 0 and advances *idx past it, or -1.
 */
static int host_read(struct fx *fx, size_t *idx, uint32_t *cid, uint8_t *cmd, uint8_t *buf,
		     size_t cap, size_t *len)
{
	size_t i = *idx, total, got;
	const uint8_t *r;
	uint8_t seq = 0;

	if (i >= fx->n_reports)
		return -1;
	r = fx->reports[i++];
	if ((r[4] & 0x80) == 0)
		return -1;
	*cid = get_be32(r);
	*cmd = r[4];
	total = (size_t)r[5] << 8 | r[6];
	if (total > cap)
		return -1;
	got = total < 57 ? total : 57;
	memcpy(buf, r + 7, got);
	while (got < total) {
		size_t n = total - got < 59 ? total - got : 59;
		if (i >= fx->n_reports)
			return -1;
		r = fx->reports[i++];
		if (get_be32(r) != *cid || r[4] != seq)
			return -1;
		seq++;
		memcpy(buf + got, r + 5, n);
		got += n;
	}
	*len = total;
	*idx = i;
	return 0;
}

/* Checks that report idx is exactly CTAPHID_ERROR(code) on cid. */
static void check_error_report(struct fx *fx, size_t idx, uint32_t cid, uint8_t code, int line)
{
	if (idx >= fx->n_reports) {
		printf("# line %d: no report %zu (have %zu)\n", line, idx, fx->n_reports);
		check_failed_current = 1;
		return;
	}
	const uint8_t *r = fx->reports[idx];
	if (get_be32(r) != cid || r[4] != CTAPHID_ERROR || r[5] != 0 || r[6] != 1 || r[7] != code) {
		printf("# line %d: expected error 0x%02x on %08x, got cid %08x cmd %02x len %u "
		       "code %02x\n",
		       line, code, cid, get_be32(r), r[4], (unsigned)(r[5] << 8 | r[6]), r[7]);
		check_failed_current = 1;
	}
}
#define CHECK_ERROR_REPORT(fx, idx, cid, code) check_error_report(fx, idx, cid, code, __LINE__)

/* Allocates a channel through a broadcast INIT and returns its id (0 on failure). */
static uint32_t open_channel(struct fx *fx, uint64_t now)
{
	static const uint8_t nonce[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint8_t buf[64];
	uint32_t cid;
	uint8_t cmd;
	size_t len, idx = 0;

	fx_clear(fx);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, sizeof(nonce), now);
	if (fx->n_reports != 1 || host_read(fx, &idx, &cid, &cmd, buf, sizeof(buf), &len) != 0 ||
	    cid != CTAPHID_BROADCAST_CID || cmd != CTAPHID_INIT || len != 17 ||
	    memcmp(buf, nonce, 8) != 0)
		return 0;
	fx_clear(fx);
	return get_be32(buf + 8);
}

static uint64_t prng_state;

static uint32_t prng_next(void)
{
	prng_state ^= prng_state >> 12;
	prng_state ^= prng_state << 25;
	prng_state ^= prng_state >> 27;
	return (uint32_t)((prng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t salt)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 131 + salt * 7 + (i >> 8));
}

static void test_init_allocates(void)
{
	struct fx *fx = fx_new();
	uint8_t nonce[8] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04};
	uint8_t buf[64];
	uint32_t cid, a, b;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	ctaphid_set_device_version(fx->h, 1, 2, 3);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 8, 0);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, buf, sizeof(buf), &len), 0);
	CHECK_EQ(cid, CTAPHID_BROADCAST_CID);
	CHECK_EQ(cmd, CTAPHID_INIT);
	CHECK_EQ(len, 17);
	CHECK_MEM_EQ(buf, nonce, 8);
	a = get_be32(buf + 8);
	CHECK(a != 0);
	CHECK(a != CTAPHID_BROADCAST_CID);
	CHECK_EQ(buf[12], 2);
	CHECK_EQ(buf[13], 1);
	CHECK_EQ(buf[14], 2);
	CHECK_EQ(buf[15], 3);
	CHECK_EQ(buf[16], CTAPHID_CAP_WINK | CTAPHID_CAP_CBOR | CTAPHID_CAP_NMSG);
	/* Unused bytes of a report are zero. */
	for (size_t i = 7 + 17; i < CTAPHID_REPORT_LEN; i++)
		CHECK_EQ(fx->reports[0][i], 0);

	/* A second INIT gets another channel, and the nonce is echoed each time. */
	nonce[0] = 0x55;
	fx_clear(fx);
	idx = 0;
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 8, 1);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, buf, sizeof(buf), &len), 0);
	CHECK_MEM_EQ(buf, nonce, 8);
	b = get_be32(buf + 8);
	CHECK(b != a);
	CHECK(b != 0 && b != CTAPHID_BROADCAST_CID);

	/* INIT on an allocated channel answers on it and keeps its id. */
	fx_clear(fx);
	idx = 0;
	nonce[7] = 0x77;
	host_send(fx, a, CTAPHID_INIT, nonce, 8, 2);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, buf, sizeof(buf), &len), 0);
	CHECK_EQ(cid, a);
	CHECK_EQ(cmd, CTAPHID_INIT);
	CHECK_MEM_EQ(buf, nonce, 8);
	CHECK_EQ(get_be32(buf + 8), a);

	/* Capabilities are what the owner set. */
	ctaphid_set_capabilities(fx->h, CTAPHID_CAP_CBOR);
	fx_clear(fx);
	idx = 0;
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 8, 3);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, buf, sizeof(buf), &len), 0);
	CHECK_EQ(buf[16], CTAPHID_CAP_CBOR);

	/* A nonce of any length but 8 is refused. */
	fx_clear(fx);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 7, 4);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, CTAPHID_BROADCAST_CID, CTAPHID_ERR_INVALID_LEN);
	fx_clear(fx);
	host_init_packet(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, 9, nonce, 8, 5);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, CTAPHID_BROADCAST_CID, CTAPHID_ERR_INVALID_LEN);
	fx_free(fx);
}

static void test_ping_sizes(void)
{
	static const size_t sizes[] = {0, 1, 57, 58, 116, 117, 1000, 7608, 7609};
	struct fx *fx = fx_new();
	uint8_t *in = malloc(CTAPHID_MAX_MSG), *out = malloc(CTAPHID_MAX_MSG);
	uint32_t cid, ch;
	uint8_t cmd;
	size_t len, idx;

	CHECK(fx != NULL && in != NULL && out != NULL);
	if (fx == NULL || in == NULL || out == NULL)
		goto out;
	ch = open_channel(fx, 0);
	CHECK(ch != 0);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = sizes[k];
		size_t want_reports = n <= 57 ? 1 : 1 + (n - 57 + 58) / 59;

		fill_pattern(in, n, (uint32_t)k);
		fx_clear(fx);
		host_send(fx, ch, CTAPHID_PING, in, n, 10 + k);
		CHECK_EQ(fx->n_reports, want_reports);
		idx = 0;
		memset(out, 0, CTAPHID_MAX_MSG);
		CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, CTAPHID_MAX_MSG, &len), 0);
		CHECK_EQ(idx, fx->n_reports);
		CHECK_EQ(cid, ch);
		CHECK_EQ(cmd, CTAPHID_PING);
		CHECK_EQ(len, n);
		CHECK_MEM_EQ(out, in, n);
	}
	/* The largest message takes every sequence number 0..127. */
	CHECK_EQ(fx->n_reports, 129);
	CHECK_EQ(fx->reports[128][4], 127);
out:
	free(in);
	free(out);
	fx_free(fx);
}

static void test_cbor_reassembly(void)
{
	struct fx *fx = fx_new();
	uint8_t *in = malloc(CTAPHID_MAX_MSG), *out = malloc(CTAPHID_MAX_MSG);
	uint32_t cid, ch;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL && in != NULL && out != NULL);
	if (fx == NULL || in == NULL || out == NULL)
		goto out;
	ch = open_channel(fx, 0);
	fill_pattern(in, 1000, 9);
	host_send(fx, ch, CTAPHID_CBOR, in, 1000, 10);
	CHECK_EQ(fx->n_reports, 0);
	CHECK_EQ(fx->n_requests, 1);
	CHECK_EQ(fx->req_cid, ch);
	CHECK_EQ(fx->req_cmd, CTAPHID_CBOR);
	CHECK_EQ(fx->req_len, 1000);
	CHECK_MEM_EQ(fx->req_data, in, 1000);

	/* A long answer goes out as 1 + ceil((3000 - 57) / 59) = 51 reports. */
	fill_pattern(in, 3000, 21);
	CHECK_OK(ctaphid_respond(fx->h, ch, CTAPHID_CBOR, in, 3000));
	CHECK_EQ(fx->n_reports, 51);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, CTAPHID_MAX_MSG, &len), 0);
	CHECK_EQ(cid, ch);
	CHECK_EQ(cmd, CTAPHID_CBOR);
	CHECK_EQ(len, 3000);
	CHECK_MEM_EQ(out, in, 3000);

	/* Only one answer per request, and only for the outstanding one. */
	CHECK_EQ(ctaphid_respond(fx->h, ch, CTAPHID_CBOR, in, 1), PKS_ERR_STATE);
	host_send(fx, ch, CTAPHID_CBOR, in, 1, 20);
	CHECK_EQ(fx->n_requests, 2);
	CHECK_EQ(ctaphid_respond(fx->h, ch + 1, CTAPHID_CBOR, in, 1), PKS_ERR_STATE);
	CHECK_EQ(ctaphid_respond(fx->h, ch, CTAPHID_CBOR, in, CTAPHID_MAX_MSG + 1),
		 PKS_ERR_TOO_LARGE);
	CHECK_EQ(ctaphid_respond(fx->h, ch, 0x10, in, 1), PKS_ERR_INVALID);
	CHECK_OK(ctaphid_respond(fx->h, ch, CTAPHID_CBOR, NULL, 0));

	/* The owner may answer from inside the request callback. */
	fx_clear(fx);
	fx->respond_in_callback = 1;
	fill_pattern(in, 300, 3);
	host_send(fx, ch, CTAPHID_CBOR, in, 300, 30);
	CHECK_EQ(fx->n_requests, 3);
	idx = 0;
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, CTAPHID_MAX_MSG, &len), 0);
	CHECK_EQ(len, 300);
	CHECK_MEM_EQ(out, in, 300);
	CHECK_EQ(idx, fx->n_reports);
out:
	free(in);
	free(out);
	fx_free(fx);
}

static void test_invalid_channel(void)
{
	struct fx *fx = fx_new();
	uint8_t data[8] = {0};
	uint32_t ch;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	ch = open_channel(fx, 0);
	host_send(fx, 0, CTAPHID_PING, data, 1, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, 0, CTAPHID_ERR_INVALID_CHANNEL);
	fx_clear(fx);
	host_send(fx, 0, CTAPHID_INIT, data, 8, 1);
	CHECK_ERROR_REPORT(fx, 0, 0, CTAPHID_ERR_INVALID_CHANNEL);
	fx_clear(fx);
	host_send(fx, ch + 100, CTAPHID_PING, data, 1, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch + 100, CTAPHID_ERR_INVALID_CHANNEL);
	fx_clear(fx);
	host_send(fx, ch + 100, CTAPHID_INIT, data, 8, 1);
	CHECK_ERROR_REPORT(fx, 0, ch + 100, CTAPHID_ERR_INVALID_CHANNEL);
	/* Only INIT may use the broadcast channel. */
	fx_clear(fx);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_PING, data, 1, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, CTAPHID_BROADCAST_CID, CTAPHID_ERR_INVALID_CHANNEL);
	fx_clear(fx);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_CBOR, data, 1, 1);
	CHECK_ERROR_REPORT(fx, 0, CTAPHID_BROADCAST_CID, CTAPHID_ERR_INVALID_CHANNEL);
	CHECK_EQ(fx->n_requests, 0);
	fx_free(fx);
}

static void test_invalid_cmd(void)
{
	struct fx *fx = fx_new();
	uint8_t data[8] = {4, 0, 0, 0, 0, 0, 0, 0};
	uint32_t ch;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	ch = open_channel(fx, 0);
	static const uint8_t bad[] = {0x80, 0x82, 0x85, 0xa5, 0xbb, 0xbf, 0xc0, 0xff};
	for (size_t i = 0; i < sizeof(bad); i++) {
		fx_clear(fx);
		host_send(fx, ch, bad[i], data, 1, 1);
		CHECK_EQ(fx->n_reports, 1);
		CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_CMD);
	}
	/* MSG is refused while NMSG is announced (the default)... */
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_MSG, data, 5, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_CMD);
	CHECK_EQ(fx->n_requests, 0);
	/* ...and handed over once it is not. */
	ctaphid_set_capabilities(fx->h, CTAPHID_CAP_CBOR | CTAPHID_CAP_WINK);
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_MSG, data, 5, 1);
	CHECK_EQ(fx->n_reports, 0);
	CHECK_EQ(fx->n_requests, 1);
	CHECK_EQ(fx->req_cmd, CTAPHID_MSG);
	CHECK_OK(ctaphid_respond(fx->h, ch, CTAPHID_MSG, data, 2));
	/* Without CBOR or WINK in the capabilities those commands are unknown. */
	ctaphid_set_capabilities(fx->h, CTAPHID_CAP_NMSG);
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_CBOR, data, 1, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_CMD);
	host_send(fx, ch, CTAPHID_WINK, data, 0, 1);
	CHECK_ERROR_REPORT(fx, 1, ch, CTAPHID_ERR_INVALID_CMD);
	CHECK_EQ(fx->n_requests, 1);
	CHECK_EQ(fx->n_winks, 0);
	fx_free(fx);
}

static void test_invalid_len(void)
{
	struct fx *fx = fx_new();
	uint8_t data[64] = {1};
	uint32_t ch;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	ch = open_channel(fx, 0);
	host_init_packet(fx, ch, CTAPHID_PING, CTAPHID_MAX_MSG + 1, data, 57, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_LEN);
	fx_clear(fx);
	host_init_packet(fx, ch, CTAPHID_CBOR, 0xffff, data, 57, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_LEN);
	/* Nothing was started: a continuation that follows is ignored. */
	fx_clear(fx);
	host_cont_packet(fx, ch, 0, data, 59, 1);
	CHECK_EQ(fx->n_reports, 0);
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_LOCK, data, 2, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_LEN);
	host_send(fx, ch, CTAPHID_LOCK, data, 0, 1);
	CHECK_ERROR_REPORT(fx, 1, ch, CTAPHID_ERR_INVALID_LEN);
	host_send(fx, ch, CTAPHID_CBOR, data, 0, 1);
	CHECK_ERROR_REPORT(fx, 2, ch, CTAPHID_ERR_INVALID_LEN);
	CHECK_EQ(fx->n_reports, 3);
	CHECK_EQ(fx->n_requests, 0);
	fx_free(fx);
}

static void test_invalid_seq(void)
{
	struct fx *fx = fx_new();
	uint8_t data[200];
	uint8_t out[256];
	uint32_t ch, cid;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(data, sizeof(data), 1);
	ch = open_channel(fx, 0);
	/* Skipping sequence number 0. */
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 1);
	host_cont_packet(fx, ch, 1, data + 57, 59, 2);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_SEQ);
	/* The message is gone: the rest of it is ignored. */
	fx_clear(fx);
	host_cont_packet(fx, ch, 2, data + 116, 59, 3);
	host_cont_packet(fx, ch, 0, data + 57, 59, 3);
	CHECK_EQ(fx->n_reports, 0);
	/* A repeated sequence number. */
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 4);
	host_cont_packet(fx, ch, 0, data + 57, 59, 5);
	host_cont_packet(fx, ch, 0, data + 57, 59, 6);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_SEQ);
	/* A new command on the channel in the middle of a message. */
	fx_clear(fx);
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 7);
	host_init_packet(fx, ch, CTAPHID_PING, 3, data, 3, 8);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_INVALID_SEQ);
	/* The channel works afterwards. */
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_PING, data, 200, 9);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(len, 200);
	CHECK_MEM_EQ(out, data, 200);
	fx_free(fx);
}

static void test_timeouts(void)
{
	struct fx *fx = fx_new();
	uint8_t data[200];
	uint8_t out[256];
	uint32_t ch, cid;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(data, sizeof(data), 2);
	ch = open_channel(fx, 1000);
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 1000);
	ctaphid_tick(fx->h, 1250);
	ctaphid_tick(fx->h, 1499);
	CHECK_EQ(fx->n_reports, 0);
	ctaphid_tick(fx->h, 1500);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_MSG_TIMEOUT);
	ctaphid_tick(fx->h, 3000);
	CHECK_EQ(fx->n_reports, 1);
	/* What is left of the message is ignored. */
	host_cont_packet(fx, ch, 0, data + 57, 59, 3010);
	CHECK_EQ(fx->n_reports, 1);

	/* A late continuation is caught even without a tick in between. */
	fx_clear(fx);
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 4000);
	host_cont_packet(fx, ch, 0, data + 57, 59, 4600);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_MSG_TIMEOUT);

	/* Every packet restarts the 500 ms. */
	fx_clear(fx);
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 5000);
	ctaphid_tick(fx->h, 5400);
	host_cont_packet(fx, ch, 0, data + 57, 59, 5450);
	ctaphid_tick(fx->h, 5900);
	host_cont_packet(fx, ch, 1, data + 116, 59, 5940);
	ctaphid_tick(fx->h, 6400);
	host_cont_packet(fx, ch, 2, data + 175, 25, 6430);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cmd, CTAPHID_PING);
	CHECK_EQ(len, 200);
	CHECK_MEM_EQ(out, data, 200);
	CHECK_EQ(idx, fx->n_reports);

	/* A clock that steps back does not fire or postpone anything oddly. */
	fx_clear(fx);
	host_init_packet(fx, ch, CTAPHID_PING, 200, data, 57, 7000);
	ctaphid_tick(fx->h, 10);
	CHECK_EQ(fx->n_reports, 0);
	ctaphid_tick(fx->h, 7500);
	CHECK_ERROR_REPORT(fx, 0, ch, CTAPHID_ERR_MSG_TIMEOUT);
	fx_free(fx);
}

static size_t count_keepalives(struct fx *fx, uint32_t cid, uint8_t status)
{
	size_t n = 0;

	for (size_t i = 0; i < fx->n_reports; i++) {
		const uint8_t *r = fx->reports[i];
		if (r[4] == CTAPHID_KEEPALIVE && get_be32(r) == cid && r[5] == 0 && r[6] == 1 &&
		    r[7] == status)
			n++;
	}
	return n;
}

static void test_keepalive(void)
{
	struct fx *fx = fx_new();
	uint8_t data[4] = {1, 2, 3, 4};
	uint32_t ch;
	uint64_t t;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	ch = open_channel(fx, 0);
	host_send(fx, ch, CTAPHID_CBOR, data, 4, 1000);
	CHECK_EQ(fx->n_requests, 1);
	ctaphid_tick(fx->h, 1050);
	ctaphid_tick(fx->h, 1099);
	CHECK_EQ(fx->n_reports, 0);
	/* One keepalive per 100 ms, ticking every 50 ms for one second. */
	for (t = 1100; t <= 2050; t += 50) {
		size_t before = fx->n_reports;
		ctaphid_tick(fx->h, t);
		CHECK_EQ(fx->n_reports - before, (t % 100 == 0) ? 1 : 0);
	}
	CHECK_EQ(fx->n_reports, 10);
	CHECK_EQ(count_keepalives(fx, ch, CTAPHID_STATUS_PROCESSING), 10);

	/* The status follows ctaphid_set_status(). */
	fx_clear(fx);
	ctaphid_set_status(fx->h, CTAPHID_STATUS_UPNEEDED);
	ctaphid_tick(fx->h, 2100);
	ctaphid_tick(fx->h, 2200);
	CHECK_EQ(count_keepalives(fx, ch, CTAPHID_STATUS_UPNEEDED), 2);
	CHECK_EQ(fx->n_reports, 2);

	/* A long gap gives one keepalive, not a burst to catch up. */
	fx_clear(fx);
	ctaphid_tick(fx->h, 5000);
	CHECK_EQ(fx->n_reports, 1);
	ctaphid_tick(fx->h, 5050);
	CHECK_EQ(fx->n_reports, 1);

	/* None after the answer. */
	fx_clear(fx);
	CHECK_OK(ctaphid_respond(fx->h, ch, CTAPHID_CBOR, data, 1));
	CHECK_EQ(fx->n_reports, 1);
	for (t = 5060; t <= 7000; t += 50)
		ctaphid_tick(fx->h, t);
	CHECK_EQ(fx->n_reports, 1);

	/* A new request starts again with PROCESSING. */
	fx_clear(fx);
	host_send(fx, ch, CTAPHID_CBOR, data, 4, 8000);
	ctaphid_tick(fx->h, 8100);
	CHECK_EQ(count_keepalives(fx, ch, CTAPHID_STATUS_PROCESSING), 1);
	fx_free(fx);
}

static void test_cancel(void)
{
	struct fx *fx = fx_new();
	uint8_t data[4] = {1, 2, 3, 4};
	uint8_t answer = 0x2d; /* CTAP2_ERR_KEEPALIVE_CANCEL */
	uint32_t a, b;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	a = open_channel(fx, 0);
	b = open_channel(fx, 0);
	/* Nothing outstanding: ignored, no answer. */
	host_send(fx, a, CTAPHID_CANCEL, NULL, 0, 1);
	CHECK_EQ(fx->n_reports, 0);
	CHECK_EQ(fx->n_cancels, 0);

	host_send(fx, a, CTAPHID_CBOR, data, 4, 10);
	/* CANCEL from another channel is ignored too, without an error. */
	host_send(fx, b, CTAPHID_CANCEL, NULL, 0, 20);
	CHECK_EQ(fx->n_reports, 0);
	CHECK_EQ(fx->n_cancels, 0);
	host_send(fx, a, CTAPHID_CANCEL, NULL, 0, 30);
	CHECK_EQ(fx->n_reports, 0);
	CHECK_EQ(fx->n_cancels, 1);
	CHECK_EQ(fx->cancel_cid, a);
	/* Told once. */
	host_send(fx, a, CTAPHID_CANCEL, NULL, 0, 40);
	CHECK_EQ(fx->n_cancels, 1);
	/* Still outstanding: keepalives go on until the owner answers. */
	ctaphid_tick(fx->h, 110);
	CHECK_EQ(count_keepalives(fx, a, CTAPHID_STATUS_PROCESSING), 1);
	fx_clear(fx);
	CHECK_OK(ctaphid_respond(fx->h, a, CTAPHID_CBOR, &answer, 1));
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(get_be32(fx->reports[0]), a);
	CHECK_EQ(fx->reports[0][4], CTAPHID_CBOR);
	CHECK_EQ(fx->reports[0][6], 1);
	CHECK_EQ(fx->reports[0][7], 0x2d);
	fx_free(fx);
}

static void test_channel_busy(void)
{
	struct fx *fx = fx_new();
	uint8_t data[300], out[300];
	uint8_t nonce[8] = {9, 9, 9, 9, 9, 9, 9, 9};
	uint32_t a, b, cid;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(data, sizeof(data), 5);
	a = open_channel(fx, 0);
	b = open_channel(fx, 0);
	/* While a request on A is outstanding, B is told the device is busy. */
	host_send(fx, a, CTAPHID_CBOR, data, 10, 1);
	host_send(fx, b, CTAPHID_PING, data, 5, 2);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, b, CTAPHID_ERR_CHANNEL_BUSY);
	host_send(fx, b, CTAPHID_CBOR, data, 5, 2);
	CHECK_ERROR_REPORT(fx, 1, b, CTAPHID_ERR_CHANNEL_BUSY);
	host_send(fx, b, CTAPHID_LOCK, data, 1, 2);
	CHECK_ERROR_REPORT(fx, 2, b, CTAPHID_ERR_CHANNEL_BUSY);
	/* And so is A itself, for anything but CANCEL and INIT. */
	host_send(fx, a, CTAPHID_PING, data, 5, 2);
	CHECK_ERROR_REPORT(fx, 3, a, CTAPHID_ERR_CHANNEL_BUSY);
	CHECK_EQ(fx->n_requests, 1);
	/* A new client can still get a channel. */
	fx_clear(fx);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 8, 3);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(fx->reports[0][4], CTAPHID_INIT);
	CHECK_OK(ctaphid_respond(fx->h, a, CTAPHID_CBOR, data, 1));

	/* While A is in the middle of a message, B is busy too. */
	fx_clear(fx);
	host_init_packet(fx, a, CTAPHID_PING, 300, data, 57, 10);
	host_send(fx, b, CTAPHID_PING, data, 5, 11);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, b, CTAPHID_ERR_CHANNEL_BUSY);
	/* B's stray continuation does not disturb A's message. */
	host_cont_packet(fx, b, 0, data, 59, 11);
	CHECK_EQ(fx->n_reports, 1);
	fx_clear(fx);
	for (uint8_t seq = 0; seq < 5; seq++) {
		size_t off = 57 + (size_t)seq * 59;
		host_cont_packet(fx, a, seq, data + off, off + 59 <= 300 ? 59 : 300 - off, 12);
	}
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, a);
	CHECK_EQ(len, 300);
	CHECK_MEM_EQ(out, data, 300);
	/* Not busy any more. */
	fx_clear(fx);
	idx = 0;
	host_send(fx, b, CTAPHID_PING, data, 5, 13);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, b);
	CHECK_EQ(cmd, CTAPHID_PING);
	fx_free(fx);
}

static void test_interleaved(void)
{
	struct fx *fx = fx_new();
	uint8_t da[500], db[500], out[600];
	uint8_t nonce[8] = {7, 7, 7, 7, 7, 7, 7, 7};
	uint32_t a, b, c, cid;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(da, sizeof(da), 11);
	fill_pattern(db, sizeof(db), 12);
	a = open_channel(fx, 0);
	b = open_channel(fx, 0);
	CHECK(a != b);
	/* Alternating whole transactions on two channels. */
	host_send(fx, a, CTAPHID_CBOR, da, 500, 1);
	CHECK_EQ(fx->req_cid, a);
	CHECK_MEM_EQ(fx->req_data, da, 500);
	CHECK_OK(ctaphid_respond(fx->h, a, CTAPHID_CBOR, db, 200));
	host_send(fx, b, CTAPHID_CBOR, db, 400, 2);
	CHECK_EQ(fx->req_cid, b);
	CHECK_EQ(fx->req_len, 400);
	CHECK_MEM_EQ(fx->req_data, db, 400);
	CHECK_OK(ctaphid_respond(fx->h, b, CTAPHID_CBOR, da, 100));
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, a);
	CHECK_EQ(len, 200);
	CHECK_MEM_EQ(out, db, 200);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, b);
	CHECK_EQ(len, 100);
	CHECK_MEM_EQ(out, da, 100);
	CHECK_EQ(idx, fx->n_reports);

	/* A third client allocates a channel in the middle of A's message; A's
	   message survives and B's interleaved packets are refused. */
	fx_clear(fx);
	host_init_packet(fx, a, CTAPHID_PING, 500, da, 57, 10);
	host_cont_packet(fx, a, 0, da + 57, 59, 11);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, nonce, 8, 12);
	host_init_packet(fx, b, CTAPHID_PING, 100, db, 57, 12);
	idx = 0;
	CHECK_EQ(fx->n_reports, 2);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cmd, CTAPHID_INIT);
	c = get_be32(out + 8);
	CHECK(c != a && c != b && c != 0);
	CHECK_ERROR_REPORT(fx, 1, b, CTAPHID_ERR_CHANNEL_BUSY);
	for (uint8_t seq = 1; seq < 8; seq++) {
		size_t off = 57 + (size_t)seq * 59;
		host_cont_packet(fx, a, seq, da + off, off + 59 <= 500 ? 59 : 500 - off, 13);
	}
	idx = 2;
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, a);
	CHECK_EQ(cmd, CTAPHID_PING);
	CHECK_EQ(len, 500);
	CHECK_MEM_EQ(out, da, 500);
	fx_free(fx);
}

static void test_lock(void)
{
	struct fx *fx = fx_new();
	uint8_t secs, data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint32_t a, b;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	a = open_channel(fx, 0);
	b = open_channel(fx, 0);
	secs = 11;
	host_send(fx, a, CTAPHID_LOCK, &secs, 1, 100);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_ERROR_REPORT(fx, 0, a, CTAPHID_ERR_INVALID_PAR);
	fx_clear(fx);
	secs = 5;
	host_send(fx, a, CTAPHID_LOCK, &secs, 1, 1000);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(get_be32(fx->reports[0]), a);
	CHECK_EQ(fx->reports[0][4], CTAPHID_LOCK);
	CHECK_EQ(fx->reports[0][6], 0);
	/* Other channels, even a new client, are busy while A holds the lock. */
	fx_clear(fx);
	host_send(fx, b, CTAPHID_PING, data, 3, 2000);
	CHECK_ERROR_REPORT(fx, 0, b, CTAPHID_ERR_CHANNEL_BUSY);
	host_send(fx, CTAPHID_BROADCAST_CID, CTAPHID_INIT, data, 8, 2000);
	CHECK_ERROR_REPORT(fx, 1, CTAPHID_BROADCAST_CID, CTAPHID_ERR_CHANNEL_BUSY);
	host_send(fx, b, CTAPHID_LOCK, &secs, 1, 2000);
	CHECK_ERROR_REPORT(fx, 2, b, CTAPHID_ERR_CHANNEL_BUSY);
	/* A itself works. */
	host_send(fx, a, CTAPHID_PING, data, 3, 2000);
	CHECK_EQ(fx->n_reports, 4);
	CHECK_EQ(fx->reports[3][4], CTAPHID_PING);
	/* Expiry at 1000 + 5000 ms. */
	fx_clear(fx);
	ctaphid_tick(fx->h, 5999);
	host_send(fx, b, CTAPHID_PING, data, 3, 5999);
	CHECK_ERROR_REPORT(fx, 0, b, CTAPHID_ERR_CHANNEL_BUSY);
	fx_clear(fx);
	ctaphid_tick(fx->h, 6000);
	host_send(fx, b, CTAPHID_PING, data, 3, 6000);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(fx->reports[0][4], CTAPHID_PING);
	/* LOCK 0 releases early. */
	fx_clear(fx);
	secs = 10;
	host_send(fx, b, CTAPHID_LOCK, &secs, 1, 7000);
	host_send(fx, a, CTAPHID_PING, data, 3, 7001);
	CHECK_ERROR_REPORT(fx, 1, a, CTAPHID_ERR_CHANNEL_BUSY);
	secs = 0;
	host_send(fx, b, CTAPHID_LOCK, &secs, 1, 7002);
	CHECK_EQ(fx->reports[2][4], CTAPHID_LOCK);
	host_send(fx, a, CTAPHID_PING, data, 3, 7003);
	CHECK_EQ(fx->n_reports, 4);
	CHECK_EQ(fx->reports[3][4], CTAPHID_PING);
	fx_free(fx);
}

static void test_resync(void)
{
	struct fx *fx = fx_new();
	uint8_t data[300], out[300];
	uint8_t nonce[8] = {3, 1, 4, 1, 5, 9, 2, 6};
	uint32_t a, cid;
	uint8_t cmd;
	size_t len, idx = 0;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(data, sizeof(data), 13);
	a = open_channel(fx, 0);
	/* INIT in the middle of a message drops the message. */
	host_init_packet(fx, a, CTAPHID_PING, 300, data, 57, 10);
	host_send(fx, a, CTAPHID_INIT, nonce, 8, 11);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(host_read(fx, &idx, &cid, &cmd, out, sizeof(out), &len), 0);
	CHECK_EQ(cid, a);
	CHECK_EQ(cmd, CTAPHID_INIT);
	CHECK_EQ(get_be32(out + 8), a);
	host_cont_packet(fx, a, 0, data + 57, 59, 12);
	CHECK_EQ(fx->n_reports, 1);
	/* ...and no timeout fires for it later. */
	ctaphid_tick(fx->h, 2000);
	CHECK_EQ(fx->n_reports, 1);

	/* INIT while a request is outstanding abandons it. */
	fx_clear(fx);
	host_send(fx, a, CTAPHID_CBOR, data, 20, 3000);
	host_send(fx, a, CTAPHID_INIT, nonce, 8, 3010);
	CHECK_EQ(fx->n_cancels, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(fx->reports[0][4], CTAPHID_INIT);
	/* No keepalives for it, and its late answer is dropped. */
	ctaphid_tick(fx->h, 3500);
	CHECK_EQ(fx->n_reports, 1);
	/* The channel is usable, but a new request waits for the owner. */
	host_send(fx, a, CTAPHID_PING, data, 4, 3600);
	CHECK_EQ(fx->n_reports, 2);
	CHECK_EQ(fx->reports[1][4], CTAPHID_PING);
	host_send(fx, a, CTAPHID_CBOR, data, 4, 3600);
	CHECK_ERROR_REPORT(fx, 2, a, CTAPHID_ERR_CHANNEL_BUSY);
	CHECK_EQ(fx->n_requests, 1);
	CHECK_OK(ctaphid_respond(fx->h, a, CTAPHID_CBOR, data, 10));
	CHECK_EQ(fx->n_reports, 3);
	host_send(fx, a, CTAPHID_CBOR, data, 4, 3700);
	CHECK_EQ(fx->n_requests, 2);
	fx_free(fx);
}

static void test_channel_limit(void)
{
	struct fx *fx = fx_new();
	uint32_t ids[CTAPHID_MAX_CHANNELS + 10];
	uint8_t data[4] = {1, 2, 3, 4};
	uint8_t big[64];
	const size_t n = sizeof(ids) / sizeof(ids[0]);
	uint32_t first, extra;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	fill_pattern(big, sizeof(big), 17);
	for (size_t i = 0; i < n; i++) {
		ids[i] = open_channel(fx, i);
		CHECK(ids[i] != 0);
		for (size_t j = 0; j < i; j++)
			CHECK(ids[i] != ids[j]);
	}
	/* The ten oldest were dropped, the rest answer. */
	for (size_t i = 0; i < n; i++) {
		fx_clear(fx);
		host_send(fx, ids[i], CTAPHID_PING, data, 4, 1000);
		CHECK_EQ(fx->n_reports, 1);
		if (i < 10)
			CHECK_ERROR_REPORT(fx, 0, ids[i], CTAPHID_ERR_INVALID_CHANNEL);
		else
			CHECK_EQ(fx->reports[0][4], CTAPHID_PING);
	}
	/* Use refreshes a channel: after touching ids[10] (the oldest), the
	   next allocation drops ids[11] instead. */
	fx_clear(fx);
	host_send(fx, ids[10], CTAPHID_PING, data, 4, 2000);
	extra = open_channel(fx, 2001);
	CHECK(extra != 0);
	host_send(fx, ids[10], CTAPHID_PING, data, 4, 2002);
	CHECK_EQ(fx->reports[0][4], CTAPHID_PING);
	fx_clear(fx);
	host_send(fx, ids[11], CTAPHID_PING, data, 4, 2003);
	CHECK_ERROR_REPORT(fx, 0, ids[11], CTAPHID_ERR_INVALID_CHANNEL);

	/* A channel with an outstanding request is never dropped. */
	first = ids[12];
	fx_clear(fx);
	host_send(fx, first, CTAPHID_CBOR, data, 4, 3000);
	CHECK_EQ(fx->n_requests, 1);
	for (size_t i = 0; i < 2 * CTAPHID_MAX_CHANNELS; i++)
		CHECK(open_channel(fx, 3001) != 0);
	/* Still known (busy, not invalid) and still answered. */
	host_send(fx, first, CTAPHID_PING, data, 4, 3002);
	CHECK_ERROR_REPORT(fx, 0, first, CTAPHID_ERR_CHANNEL_BUSY);
	fx_clear(fx);
	CHECK_OK(ctaphid_respond(fx->h, first, CTAPHID_CBOR, data, 1));
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(get_be32(fx->reports[0]), first);

	/* Nor is one in the middle of a message. */
	fx_clear(fx);
	host_init_packet(fx, first, CTAPHID_PING, 60, big, 57, 4000);
	for (size_t i = 0; i < 2 * CTAPHID_MAX_CHANNELS; i++)
		CHECK(open_channel(fx, 4001) != 0);
	host_cont_packet(fx, first, 0, big + 57, 3, 4002);
	CHECK_EQ(fx->n_reports, 2);
	CHECK_EQ(get_be32(fx->reports[0]), first);
	CHECK_EQ(fx->reports[0][4], CTAPHID_PING);
	CHECK_MEM_EQ(fx->reports[0] + 7, big, 57);
	fx_clear(fx);
	host_send(fx, first, CTAPHID_PING, data, 4, 4003);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(fx->reports[0][4], CTAPHID_PING);
	fx_free(fx);
}

static void test_wink(void)
{
	struct fx *fx = fx_new();
	uint32_t a;

	CHECK(fx != NULL);
	if (fx == NULL)
		return;
	a = open_channel(fx, 0);
	host_send(fx, a, CTAPHID_WINK, NULL, 0, 1);
	CHECK_EQ(fx->n_reports, 1);
	CHECK_EQ(get_be32(fx->reports[0]), a);
	CHECK_EQ(fx->reports[0][4], CTAPHID_WINK);
	CHECK_EQ(fx->reports[0][6], 0);
	CHECK_EQ(fx->n_winks, 1);
	CHECK_EQ(fx->wink_cid, a);
	fx_free(fx);
}

static void test_api_misuse(void)
{
	struct ctaphid_cb cb = {0};
	struct ctaphid *h = NULL;
	uint8_t r[CTAPHID_REPORT_LEN] = {0};

	CHECK_EQ(ctaphid_new(&cb, NULL, &h), PKS_ERR_INVALID);
	CHECK(h == NULL);
	CHECK_EQ(ctaphid_new(NULL, NULL, &h), PKS_ERR_INVALID);
	CHECK_EQ(ctaphid_input(NULL, r, 0), PKS_ERR_INVALID);
	ctaphid_tick(NULL, 0);
	ctaphid_free(NULL);
}

/*
 * Random reports on a mix of channels (broadcast, zero, allocated, unknown)
 * with random commands, lengths and sequence numbers, random clock steps and
 * random answers: nothing crashes, and no call makes more than
 * CTAPHID_MAX_REPORTS_PER_CALL reports. Every report made is well formed:
 * a known command with a length no larger than CTAPHID_MAX_MSG.
 */
static void test_random_sequences(void)
{
	struct fx *fx = fx_new();
	uint64_t seed = 0x5eedc7a9u;
	const char *env = getenv("PKSYNC_CTAPHID_SEED");
	uint32_t cids[8] = {0, CTAPHID_BROADCAST_CID, 1, 2, 3, 0x12345678, 70, 65};
	uint64_t now = 0;
	size_t max_seen = 0, total = 0, requests = 0;
	uint8_t *payload = malloc(CTAPHID_MAX_MSG);

	CHECK(fx != NULL && payload != NULL);
	if (fx == NULL || payload == NULL)
		goto out;
	if (env != NULL)
		seed = strtoull(env, NULL, 0);
	prng_state = seed ? seed : 1;
	fill_pattern(payload, CTAPHID_MAX_MSG, 99);
	for (int round = 0; round < 50000; round++) {
		uint8_t r[CTAPHID_REPORT_LEN];
		uint32_t x = prng_next();
		size_t before = fx->n_requests;

		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (uint8_t)prng_next();
		put_be32(r, cids[x % 8]);
		switch ((x >> 3) % 8) {
		case 0: /* INIT with a proper nonce length */
			r[4] = CTAPHID_INIT;
			r[5] = 0;
			r[6] = 8;
			break;
		case 1: /* a known command with a small or large length */
		case 2: {
			static const uint8_t cmds[] = {CTAPHID_PING, CTAPHID_CBOR,   CTAPHID_LOCK,
						       CTAPHID_WINK, CTAPHID_CANCEL, CTAPHID_MSG};
			r[4] = cmds[(x >> 6) % sizeof(cmds)];
			r[5] = (x >> 9) & 1 ? (uint8_t)((x >> 10) % 0x1e) : 0;
			if (r[4] == CTAPHID_LOCK)
				r[7] = (uint8_t)(r[7] % 12);
			break;
		}
		case 3: /* continuation with a likely sequence number */
		case 4:
			r[4] = (uint8_t)((x >> 6) % 4);
			break;
		default: /* anything */
			break;
		}
		fx_clear(fx);
		CHECK_OK(ctaphid_input(fx->h, r, now));
		if (fx->n_reports > max_seen)
			max_seen = fx->n_reports;
		total += fx->n_reports;
		/* Learn the channels the device hands out. */
		for (size_t i = 0; i < fx->n_reports; i++) {
			const uint8_t *p = fx->reports[i];
			if (get_be32(p) == CTAPHID_BROADCAST_CID && p[4] == CTAPHID_INIT)
				cids[2 + (x >> 20) % 3] = get_be32(p + 7 + 8);
			if (p[4] & 0x80) {
				CHECK(p[4] == CTAPHID_ERROR || p[4] == CTAPHID_INIT ||
				      p[4] == CTAPHID_PING || p[4] == CTAPHID_LOCK ||
				      p[4] == CTAPHID_WINK || p[4] == CTAPHID_KEEPALIVE ||
				      p[4] == CTAPHID_CBOR || p[4] == CTAPHID_MSG);
				CHECK(((size_t)p[5] << 8 | p[6]) <= CTAPHID_MAX_MSG);
			}
		}
		requests += fx->n_requests - before;
		now += prng_next() % 120;
		fx_clear(fx);
		ctaphid_tick(fx->h, now);
		if (fx->n_reports > 2)
			CHECK_EQ(fx->n_reports, 2);
		if (fx->n_requests > 0 && prng_next() % 4 == 0) {
			fx_clear(fx);
			int rr = ctaphid_respond(fx->h, fx->req_cid, fx->req_cmd, payload,
						 prng_next() % (CTAPHID_MAX_MSG + 1));
			CHECK(rr == PKS_OK || rr == PKS_ERR_STATE);
			if (fx->n_reports > max_seen)
				max_seen = fx->n_reports;
		}
		if (max_seen > CTAPHID_MAX_REPORTS_PER_CALL || fx->overflow != 0) {
			CHECK_EQ(max_seen, CTAPHID_MAX_REPORTS_PER_CALL);
			break;
		}
	}
	/* The sequences reached the interesting states. */
	CHECK(requests > 10);
	CHECK(total > 1000);
	if (check_failed_current)
		printf("# seed 0x%llx (PKSYNC_CTAPHID_SEED)\n", (unsigned long long)seed);
out:
	free(payload);
	fx_free(fx);
}

CHECK_MAIN({"/ctaphid/init_allocates", test_init_allocates},
	   {"/ctaphid/ping_sizes", test_ping_sizes},
	   {"/ctaphid/cbor_reassembly", test_cbor_reassembly},
	   {"/ctaphid/invalid_channel", test_invalid_channel},
	   {"/ctaphid/invalid_cmd", test_invalid_cmd}, {"/ctaphid/invalid_len", test_invalid_len},
	   {"/ctaphid/invalid_seq", test_invalid_seq}, {"/ctaphid/timeouts", test_timeouts},
	   {"/ctaphid/keepalive", test_keepalive}, {"/ctaphid/cancel", test_cancel},
	   {"/ctaphid/channel_busy", test_channel_busy}, {"/ctaphid/interleaved", test_interleaved},
	   {"/ctaphid/lock", test_lock}, {"/ctaphid/resync", test_resync},
	   {"/ctaphid/channel_limit", test_channel_limit}, {"/ctaphid/wink", test_wink},
	   {"/ctaphid/api_misuse", test_api_misuse},
	   {"/ctaphid/random_sequences", test_random_sequences})
