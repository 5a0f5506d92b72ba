/* A QR code drawn with Unicode half blocks, two modules per character cell. */
#include <qrencode.h>
#include <stdio.h>

#include "tools/cli.h"

#define CLI_QR_QUIET 2

static int cli_qr_dark(const QRcode *q, int x, int y)
{
	if (x < 0 || y < 0 || x >= q->width || y >= q->width)
		return 0;
	return q->data[y * q->width + x] & 1;
}

int cli_qr_print(FILE *f, const char *text)
{
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);

	if (q == NULL)
		return -1;
	/* Light modules are drawn as full blocks so the code reads on dark terminals too. */
	for (int y = -CLI_QR_QUIET; y < q->width + CLI_QR_QUIET; y += 2) {
		for (int x = -CLI_QR_QUIET; x < q->width + CLI_QR_QUIET; x++) {
			int top = cli_qr_dark(q, x, y), bottom = cli_qr_dark(q, x, y + 1);
			const char *cell = !top && !bottom ? "\u2588"
					   : !top          ? "\u2580"
					   : !bottom       ? "\u2584"
							   : " ";
			fputs(cell, f);
		}
		fputc('\n', f);
	}
	QRcode_free(q);
	return 0;
}
