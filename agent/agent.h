/* The running agent: the pieces agent-main.c wires together. */
#ifndef PKS_AGENT_AGENT_H
#define PKS_AGENT_AGENT_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "agent/control.h"
#include "agent/net.h"
#include "agent/paths.h"
#include "agent/vault.h"
#include "common/log.h"

struct discovery;
struct discovery_ble;

struct agent {
	uv_loop_t *loop;
	struct paths paths;
	struct pks_logger log;
	struct vault *vault;
	struct control_server *control;
	struct net *net;
	/* NULL when off or unavailable. */
	struct discovery *discovery;
	struct discovery_ble *discovery_ble;
	/* Wrong passphrases: answers are delayed and new attempts refused meanwhile. */
	unsigned int unlock_failures;
	uint64_t unlock_blocked_until_ms;
	int unlock_pending;
};

/* The control handler (agent/commands.c); user_data is the struct agent. */
void commands_handle(void *user_data, struct control_request *req, const char *cmd,
		     json_t *request);

#endif
