/*
 * libavahi-core, loaded at run time into a private symbol scope.
 *
 * libavahi-core and libavahi-client both export a function named
 * avahi_entry_group_free (the core's is internal, with other arguments).
 * Linked into one process, one library's calls land in the other's function
 * and crash. So the core is not linked: it is dlopen()ed with RTLD_LOCAL |
 * RTLD_DEEPBIND, which makes its own calls resolve inside itself first, and
 * mdns.c calls it through this table. The shared libavahi-common is the same
 * instance for both, so memory and string lists pass freely between them.
 *
 * AddressSanitizer refuses RTLD_DEEPBIND: in sanitizer builds the table is
 * not available and the embedded backend reports itself unavailable.
 */
#ifndef PKS_TRANSPORT_AVAHI_CORE_DL_H
#define PKS_TRANSPORT_AVAHI_CORE_DL_H

#include <avahi-core/core.h>
#include <avahi-core/log.h>
#include <avahi-core/lookup.h>
#include <avahi-core/publish.h>

/* Every libavahi-core function mdns.c uses. */
#define AVAHI_CORE_DL_FUNCTIONS(X)                                                                 \
	X(avahi_server_config_init)                                                                \
	X(avahi_server_config_free)                                                                \
	X(avahi_server_new)                                                                        \
	X(avahi_server_free)                                                                       \
	X(avahi_server_get_state)                                                                  \
	X(avahi_server_errno)                                                                      \
	X(avahi_server_get_host_name)                                                              \
	X(avahi_server_set_host_name)                                                              \
	X(avahi_server_add_service_strlst)                                                         \
	X(avahi_s_entry_group_new)                                                                 \
	X(avahi_s_entry_group_free)                                                                \
	X(avahi_s_entry_group_reset)                                                               \
	X(avahi_s_entry_group_commit)                                                              \
	X(avahi_s_service_browser_new)                                                             \
	X(avahi_s_service_browser_free)                                                            \
	X(avahi_s_service_resolver_new)                                                            \
	X(avahi_s_service_resolver_free)                                                           \
	X(avahi_set_log_function)

struct avahi_core_dl {
#define AVAHI_CORE_DL_MEMBER(name) __typeof__(name) *name;
	AVAHI_CORE_DL_FUNCTIONS(AVAHI_CORE_DL_MEMBER)
#undef AVAHI_CORE_DL_MEMBER
};

/*
 * Loads the library once per process (thread-safe) and returns the table,
 * or NULL when the library or a symbol is missing or this is a sanitizer
 * build; *why (may be NULL) then gets a static reason. The table is never
 * unloaded.
 */
const struct avahi_core_dl *avahi_core_dl_get(const char **why);

#endif
