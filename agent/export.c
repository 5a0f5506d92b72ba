/* Passkey exporters (in progress: the API in export.h is final). */
#include "agent/export.h"

#include "common/err.h"

int export_cxf(const struct passkey_item *items, size_t n, const char *exporter_display_name,
	       uint64_t now_unix, char **json_out)
{
	(void)items;
	(void)n;
	(void)exporter_display_name;
	(void)now_unix;
	(void)json_out;
	return PKS_ERR_UNSUPPORTED;
}

int export_keepassxc(const struct passkey_item *item, char **json_out)
{
	(void)item;
	(void)json_out;
	return PKS_ERR_UNSUPPORTED;
}
