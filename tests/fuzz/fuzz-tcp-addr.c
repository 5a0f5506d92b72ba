/*
 * Fuzzes the "ADDR:PORT" parser of transport/tcp. The first byte's low bit
 * is allow_zero, the rest is the text (a NUL ends it early). Oracles: an
 * accepted text is at most TCP_ADDR_MAX long, has a port of 0 only when
 * allowed, and its address printed back numerically parses to the same
 * socket address.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "transport/tcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		abort();
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		if (x->sin_port != y->sin_port || x->sin_addr.s_addr != y->sin_addr.s_addr)
			abort();
	} else {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		if (x->sin6_port != y->sin6_port || x->sin6_scope_id != y->sin6_scope_id ||
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[512];
	char host[NI_MAXHOST], serv[NI_MAXSERV], again[NI_MAXHOST + NI_MAXSERV + 4];
	struct sockaddr_storage ss, ss2;
	socklen_t len = 0, len2 = 0;
	bool allow_zero;
	uint16_t port;
	int r;

	if (size < 1)
		return 0;
	allow_zero = (data[0] & 1) != 0;
	size--;
	if (size >= sizeof(text))
		size = sizeof(text) - 1;
	memcpy(text, data + 1, size);
	text[size] = '\0';

	r = tcp_parse_addr(text, allow_zero, &ss, &len);
	if (r != PKS_OK) {
		if (r != PKS_ERR_INVALID && r != PKS_ERR_TOO_LARGE)
			abort();
		return 0;
	}
	if (strlen(text) > TCP_ADDR_MAX)
		abort();
	if (ss.ss_family == AF_INET) {
		if (len != sizeof(struct sockaddr_in))
			abort();
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		if (len != sizeof(struct sockaddr_in6))
			abort();
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	} else {
		abort();
	}
	if (port == 0 && !allow_zero)
		abort();
	if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		abort();
	if (ss.ss_family == AF_INET6)
		snprintf(again, sizeof(again), "[%s]:%s", host, serv);
	else
		snprintf(again, sizeof(again), "%s:%s", host, serv);
	if (tcp_parse_addr(again, true, &ss2, &len2) != PKS_OK || len2 != len)
		abort();
	fuzz_same(&ss, &ss2);
	return 0;
}
