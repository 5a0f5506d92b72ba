/*
 * Fuzzes the Assuan escaping used with pinentry: unescaping arbitrary data
 * lines never overruns and never grows them, and escaping any text then
 * unescaping it gives the text back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/pinentry.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, *esc;
	size_t n = size, cap = size * 3 + 1;

	if (size > PINENTRY_LINE_MAX)
		return 0;
	s = malloc(size + 1);
	esc = malloc(cap);
	if (s == NULL || esc == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	if (pinentry_unescape(s, &n) == PKS_OK && n > size)
		abort();
	/* Round trip of the text up to its first NUL. */
	memcpy(s, data, size);
	s[size] = '\0';
	if (pinentry_escape(s, esc, cap) != PKS_OK)
		abort();
	n = strlen(esc);
	if (pinentry_unescape(esc, &n) != PKS_OK || n != strlen(s) || memcmp(esc, s, n) != 0)
		abort();
	free(s);
	free(esc);
	return 0;
}
