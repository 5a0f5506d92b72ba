/*
 * Private loading of libavahi-core; see avahi-core-dl.h for why.
 */
#include "transport/avahi-core-dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

/* The soname has been stable since Avahi 0.6. */
#define AVAHI_CORE_DL_SONAME "libavahi-core.so.7"

#if defined(__SANITIZE_ADDRESS__)
#define AVAHI_CORE_DL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AVAHI_CORE_DL_SANITIZED 1
#endif
#endif

#ifndef AVAHI_CORE_DL_SANITIZED
static struct avahi_core_dl avahi_core_dl_table;
#endif
static const struct avahi_core_dl *avahi_core_dl_ready;
static const char *avahi_core_dl_why = "not loaded";
static pthread_once_t avahi_core_dl_once = PTHREAD_ONCE_INIT;

static void avahi_core_dl_load(void)
{
#ifdef AVAHI_CORE_DL_SANITIZED
	avahi_core_dl_why = "not available in AddressSanitizer builds (RTLD_DEEPBIND)";
#else
	void *h = dlopen(AVAHI_CORE_DL_SONAME, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);

	if (h == NULL) {
		avahi_core_dl_why = AVAHI_CORE_DL_SONAME " cannot be loaded";
		return;
	}
	/* dlsym returns void *; POSIX guarantees it converts to a function
	   pointer, which memcpy does without a cast ISO C frowns upon. */
#define AVAHI_CORE_DL_LOAD(name)                                                                   \
	{                                                                                          \
		void *sym = dlsym(h, #name);                                                       \
		if (sym == NULL) {                                                                 \
			avahi_core_dl_why = AVAHI_CORE_DL_SONAME " lacks " #name;                  \
			return;                                                                    \
		}                                                                                  \
		_Static_assert(sizeof(sym) == sizeof(avahi_core_dl_table.name), "pointer size");   \
		memcpy(&avahi_core_dl_table.name, &sym, sizeof(sym));                              \
	}
	AVAHI_CORE_DL_FUNCTIONS(AVAHI_CORE_DL_LOAD)
#undef AVAHI_CORE_DL_LOAD
	avahi_core_dl_ready = &avahi_core_dl_table;
	avahi_core_dl_why = NULL;
#endif
}

const struct avahi_core_dl *avahi_core_dl_get(const char **why)
{
	pthread_once(&avahi_core_dl_once, avahi_core_dl_load);
	if (avahi_core_dl_ready == NULL && why != NULL)
		*why = avahi_core_dl_why;
	return avahi_core_dl_ready;
}
