#!/bin/bash
# The pksync command line on its own: usage errors, help texts, the
# connection error, JSON errors and argument limits, then the client side of
# the control protocol against a fake agent (a python3 heredoc below) that
# sends canned, slow, malformed and oversized answers.
#
# usage: cli-usage.sh PATH/TO/pksync        (TAP on stdout)
set -u
export LC_ALL=C

PKSYNC=${1:?usage: cli-usage.sh PATH/TO/pksync}
PY=/usr/bin/python3
if [ ! -x "$PKSYNC" ] || [ ! -x "$PY" ]; then
	echo "Bail out! no $PKSYNC or $PY to run"
	exit 1
fi
tmp=$(mktemp -d /tmp/pks-cli-XXXXXX)
fake_pid=
cleanup() {
	if [ -n "$fake_pid" ]; then
		kill "$fake_pid" 2>/dev/null
		wait "$fake_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
unset PKSYNC_STATE_DIR XDG_RUNTIME_DIR XDG_DATA_HOME
export HOME="$tmp/home"
state="$tmp/s"
mkdir -p "$state" "$HOME"
chmod 700 "$state"

n=0
failed=0
rc=0
out=
err=

# run ARGS...: runs pksync, keeping rc, out and err.
stdin_file=/dev/null
run() {
	"$PKSYNC" "$@" >"$tmp/out" 2>"$tmp/err" <"$stdin_file"
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
}

# check DESCRIPTION COMMAND...: one TAP line; on failure the last run is shown.
check() {
	local desc=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $desc"
	else
		failed=1
		echo "not ok $n - $desc"
		echo "#   rc=$rc"
		sed 's/^/#   out: /' "$tmp/out" | head -20
		sed 's/^/#   err: /' "$tmp/err" | head -20
	fi
}

# One line on stderr that starts with "pksync: ", nothing on stdout.
one_error_line() {
	[ -z "$out" ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && [[ $err == "pksync: "* ]]
}
usage_error() { [ "$rc" -eq 2 ] && one_error_line; }
plain_error() { [ "$rc" -eq 1 ] && one_error_line; }
err_has() { [[ $err == *"$1"* ]]; }
out_has() { [[ $out == *"$1"* ]]; }

# stdout is exactly one line, a JSON document {"error": "<non-empty string>"}.
json_error_shape() {
	[ "$(wc -l <"$tmp/out")" -eq 1 ] && "$PY" -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"], doc
' "$tmp/out" 2>/dev/null
}

########## usage errors and help

run
check "no command: exit 2 with a message" usage_error
run frobnicate
check "unknown command: exit 2" usage_error
run --bogus list
check "unknown global option: exit 2" usage_error
run list --bogus
check "unknown command option: exit 2" usage_error
run new --rp
check "option without its value: exit 2" usage_error
run new --user alice
check "new without --rp: exit 2 naming it" eval 'usage_error && err_has "--rp"'
run show
check "show without ID: exit 2" usage_error
run show abcd1234 abcd5678
check "show with two IDs: exit 2" usage_error
run show zz
check "show with a non-hex ID: exit 2" usage_error
run edit abcd1234
check "edit with nothing to change: exit 2" usage_error
run init --no-passphrase --passphrase-file /dev/null
check "init with both passphrase flags: exit 2" usage_error
run import "$tmp/x" --format pdf
check "import --format pdf: exit 2" usage_error
run export --format cxf
check "export without --out: exit 2" usage_error
run export --format zip --out "$tmp/x"
check "export --format zip: exit 2" usage_error
run sync --timeout soon
check "sync --timeout soon: exit 2" usage_error
run --state-dir "" list
check "empty --state-dir: exit 2" usage_error

commands="init unlock lock status devices new list show edit rm restore import export assert
	pair join revoke sync"
help_ok=1
for c in $commands; do
	for form in "$c --help" "help $c"; do
		# shellcheck disable=SC2086 # word splitting wanted
		run $form
		if [ "$rc" -ne 0 ] || [[ $out != "usage: pksync $c"* ]] || [ -n "$err" ]; then
			help_ok=0
			echo "# no help from 'pksync $form'"
		fi
	done
done
check "--help and 'help COMMAND' for every command" test "$help_ok" = 1
run --help
check "pksync --help lists every command" eval '[ "$rc" -eq 0 ] && out_has "usage: pksync" &&
	for c in $commands; do out_has "  $c "; done'
run help nosuch
check "help of an unknown command: exit 2" usage_error
run --version
check "--version" eval '[ "$rc" -eq 0 ] && [[ $out == "pksync "[0-9]* ]]'

########## no agent

run --state-dir "$state" list
check "no agent: exit 1 naming the socket and the way to start the agent" eval 'plain_error &&
	err_has "cannot reach pksync-agent at $state/control.sock" &&
	err_has "pksync-agent --state-dir $state"'
run list --state-dir "$state"
check "--state-dir after the command works the same" eval 'plain_error &&
	err_has "$state/control.sock"'
PKSYNC_STATE_DIR="$tmp/envdir" run list
check "PKSYNC_STATE_DIR names the socket" err_has "$tmp/envdir/control.sock"
XDG_RUNTIME_DIR="$tmp/run" XDG_DATA_HOME="$tmp/data" run status
hint="start it with 'pksync-agent')"
check "default dirs: the socket in XDG_RUNTIME_DIR, plain 'pksync-agent' hint" eval '
	plain_error && err_has "at $tmp/run/pksync/control.sock" && err_has "$hint"'
run --state-dir "$tmp/$(head -c 120 /dev/zero | tr '\0' d)" list
check "socket path longer than sun_path: exit 1, said plainly" eval 'plain_error &&
	err_has "longer than 107 bytes"'
run --state-dir "$state" list --json
check "--json error: {\"error\": ...} on stdout, exit 1, stderr quiet" eval '[ "$rc" -eq 1 ] &&
	json_error_shape && [ -z "$err" ]'
run --json --state-dir "$state" show zz
check "--json usage error: {\"error\": ...} on stdout, exit 2" eval '[ "$rc" -eq 2 ] &&
	json_error_shape'
run --state-dir "$state" pair --timeout 30
check "pair without an agent: exit 1, says how to start it" eval 'plain_error &&
	err_has "cannot reach pksync-agent"'
run --state-dir "$state" pair --timeout 4000
check "pair --timeout over an hour: exit 2" usage_error
run --state-dir "$state" join 12345678 --qr pksync1:00 --peer 10.0.0.1:7393 --no-passphrase
check "join with both CODE and --qr: exit 2" eval 'usage_error && err_has "one of them"'
run --state-dir "$state" join --peer 10.0.0.1:7393 --no-passphrase
check "join with neither CODE nor --qr: exit 2" usage_error
run --state-dir "$state" join 12345678 --passphrase-file x --no-passphrase
check "join --passphrase-file with --no-passphrase: exit 2" usage_error

########## argument limits, checked before anything is sent

long=$(head -c 9000 /dev/zero | tr '\0' a)
run --state-dir "$state" new --rp example.org --user "$long"
check "an argument over 8 KiB: exit 2 (not a connection error)" eval 'usage_error &&
	err_has "longer than 8192 bytes"'
run --state-dir "$state" edit abcd1234 --notes "$long"
check "--notes over 8 KiB: exit 2" usage_error
run --state-dir "$state" show "abcd$long"
check "a positional argument over 8 KiB: exit 2" usage_error
hash63=$(head -c 63 /dev/zero | tr '\0' a)
run --state-dir "$state" assert --rp example.org --client-data-hash "$hash63"
check "--client-data-hash of 63 characters: exit 2" eval 'usage_error &&
	err_has "64 hex characters"'
run --state-dir "$state" assert --rp example.org --client-data-hash "${hash63}g"
check "--client-data-hash with a non-hex character: exit 2" usage_error
run --state-dir "$state" assert --client-data-hash "${hash63}a"
check "assert without --rp: exit 2" usage_error
truncate -s 65M "$tmp/huge.json"
run --state-dir "$state" import "$tmp/huge.json"
check "an import file over 64 MiB is refused before sending" eval 'plain_error &&
	err_has "64 MiB" && ! err_has "cannot reach"'
printf '\x00\x01binary' >"$tmp/nul.json"
run --state-dir "$state" import "$tmp/nul.json"
check "an import file with NUL bytes is refused before sending" eval 'plain_error &&
	! err_has "cannot reach"'
printf '{"a": "\xff\xfe"}' >"$tmp/latin.json"
run --state-dir "$state" import "$tmp/latin.json"
check "an import file that is not UTF-8 is refused before sending" eval 'plain_error &&
	err_has "UTF-8"'

########## the fake agent

cat >"$tmp/fake-agent.py" <<'PYEOF'
"""Answers one control-socket connection with a canned reply.

usage: fake-agent.py SOCKET MODE REQUEST_OUT READY_FILE
"""
import json
import os
import socket
import struct
import sys
import time

sock_path, mode, req_out, ready = sys.argv[1:5]


def frame(obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def rec(i, rp, user, display):
    return {"id": "%032x" % ((0xabcdef012345 + i) << 80), "rp_id": rp, "user_name": user,
            "user_display_name": display, "credential_id": "Y3JlZA", "user_handle": "dXNlcg",
            "alg": -7, "public_key": "MFkw", "backup_eligible": True, "backup_state": True,
            "sign_count": 0, "created_at": "2024-05-0%dT10:00:00Z" % (i + 1),
            "updated_at": "2024-05-09T10:00:00Z", "notes": "line one\nline two",
            "source": "pksync", "trashed": False}


RECS = [rec(0, "example.org", "alice", "Alice"),
        rec(1, "a-much-longer-relying-party.example.com", "eve\x1b[31mred", "Eve \u202eevil"),
        rec(2, "example.net", "bob", "")]
OK = lambda result: frame({"ok": True, "result": result})  # noqa: E731
REPLIES = {
    "list": [OK(RECS)],
    "list-empty": [OK([])],
    "list-big": [OK([rec(i % 9, "example.org", "user%05d" % i, "x" * 200) for i in range(3000)])],
    "show": [OK(RECS[1])],
    "import": [frame({"progress": {"done": d, "total": 3, "what": "importing"}})
               for d in (1, 2, 3)] +
              [OK({"format": "cxf", "total": 3, "added": 2, "updated": 1, "unchanged": 0})],
    "locked": [frame({"ok": False, "error": "The vault is locked: run 'pksync unlock'."})],
    "garbage": [frame(b"this is not json")],
    "not-object": [frame(b"[1, 2, 3]")],
    "no-ok": [frame({"result": 1})],
    "no-reason": [frame({"ok": False})],
    "dup-keys": [frame(b'{"ok": true, "ok": false, "result": 1}')],
    "bad-progress": [frame({"progress": {"done": "x"}})],
    "empty-frame": [struct.pack(">I", 0)],
    "oversized": [struct.pack(">I", 0xfffffff0) + b"{}"],
    "truncated": [struct.pack(">I", 100) + b'{"ok": tru'],
    "close": [],
    "deep": [frame(b'{"ok": true, "result": ' + b"[" * 100000 + b"]" * 100000 + b"}")],
    "export-kpxc": [OK({"format": "keepassxc", "count": 4, "files": [
        {"name": "example.org-alice.passkey", "data": "first"},
        {"name": "../evil.passkey", "data": "second"},
        {"name": "example.org-alice.passkey", "data": "third"},
        {"name": ".hidden/\x1bx", "data": "fourth"}]})],
    "export-cxf": [OK({"format": "cxf", "count": 2,
                       "files": [{"name": "pksync.json", "data": '{"cxf": true}\n'}]})],
    "export-none": [OK({"format": "keepassxc", "count": 0, "files": []})],
    "assert": [OK({"id": RECS[0]["id"], "credential_id": "Y3JlZA",
                   "authenticator_data": "YXV0aA", "signature": "c2ln",
                   "user_handle": "dXNlcg"})],
    "status": [OK({"initialized": True, "locked": False, "device_id": "d" * 64,
                   "device_name": "laptop", "vault_id": "v" * 32, "records": 3, "trash": 1,
                   "digest": "ab" * 16, "peers": [], "transports": [], "last_sync": None,
                   "state_dir": "/somewhere", "version": "0.1.0"})],
    "init": [OK({"device_id": "d" * 64, "device_name": "laptop", "vault_id": "v" * 32})],
    "plain-ok": [OK({})],
}

REPLIES["status-uninit"] = [OK({"initialized": False, "state_dir": "/x", "version": "0"})]
REPLIES["status-locked"] = [OK(dict(json.loads(REPLIES["status"][0][4:])["result"],
                                    locked=True))]


def serve(conn, mode, out):
    conn.settimeout(20)
    head = b""
    while len(head) < 4:
        chunk = conn.recv(4 - len(head))
        if not chunk:
            return
        head += chunk
    (length,) = struct.unpack(">I", head)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    with open(out, "wb") as f:
        f.write(body)
    with open(out + ".all", "ab") as f:
        f.write(body + b"\n")
    try:
        for i, data in enumerate(REPLIES[mode]):
            if mode == "import" and i == 0:
                # Dribble the first frame out to exercise short reads.
                for b in data:
                    conn.sendall(bytes([b]))
                    time.sleep(0.002)
            else:
                conn.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    conn.close()


# MODE may be a comma-separated list: one connection per mode, in order.
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sock_path)
srv.listen(1)
srv.settimeout(20)
open(ready, "w").close()
for m in mode.split(","):
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        break
    serve(conn, m, req_out)
srv.close()
os.unlink(sock_path)
PYEOF

# with_fake MODE ARGS...: runs pksync against a fake agent answering MODE.
with_fake() {
	local mode=$1
	shift
	rm -f "$state/control.sock" "$tmp/ready" "$tmp/request" "$tmp/request.all"
	"$PY" "$tmp/fake-agent.py" "$state/control.sock" "$mode" "$tmp/request" "$tmp/ready" &
	fake_pid=$!
	for _ in $(seq 100); do
		[ -e "$tmp/ready" ] && break
		sleep 0.05
	done
	run --state-dir "$state" "$@"
	wait "$fake_pid" 2>/dev/null
	fake_pid=
}

# request_is PYTHON-EXPRESSION: true when the request the fake agent got (as r) satisfies it.
request_is() {
	"$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
' "$tmp/request" "$1" 2>/dev/null
}

with_fake list list
check "list renders a table" eval '[ "$rc" -eq 0 ] && [ -z "$err" ] &&
	[[ $(head -1 "$tmp/out") == "ID "*"RP "*"USER "*"DISPLAY NAME "*"CREATED" ]] &&
	[ "$(wc -l <"$tmp/out")" -eq 4 ] && request_is "r == {\"cmd\": \"list\"}"'
check "list: 12-character id prefixes, dates, aligned columns" "$PY" -c '
import sys
lines = open(sys.argv[1]).read().splitlines()
head = lines[0]
cols = [head.index(h) for h in ("RP", "USER", "DISPLAY NAME", "CREATED")]
for line in lines[1:]:
    int(line[:12], 16)
    assert line[12:14] == "  ", line
    for c in cols:
        assert line[c - 2:c] == "  " and line[c] != " ", (c, line)
assert lines[1][cols[3]:] == "2024-05-01", lines[1]
assert "abcdef012345" in lines[1]
' "$tmp/out"
check "list escapes terminal control and bidi characters" "$PY" -c '
import sys
text = open(sys.argv[1], "rb").read()
assert b"\x1b" not in text and "\u202e".encode() not in text, text
assert b"eve\\x1b[31mred" in text and b"Eve \\u202eevil" in text, text
' "$tmp/out"
with_fake list list --rp example.org --trash
check "list --rp --trash: sent as arguments, TRASHED column" eval '[ "$rc" -eq 0 ] &&
	request_is "r == {\"cmd\": \"list\", \"rp\": \"example.org\", \"trash\": True}" &&
	[[ $(head -1 "$tmp/out") == *"TRASHED" ]]'
with_fake list-empty list
check "list of nothing says so" eval '[ "$rc" -eq 0 ] && [ "$out" = "No passkeys." ]'
with_fake list-big list
check "a 1 MiB answer is read whole" eval '[ "$rc" -eq 0 ] && [ "$(wc -l <"$tmp/out")" -eq 3001 ]'
with_fake list list --json
check "list --json prints the agent's result unchanged" "$PY" -c '
import json, sys
got = json.load(open(sys.argv[1]))
assert isinstance(got, list) and len(got) == 3 and got[1]["user_name"] == "eve\x1b[31mred"
assert got[0]["notes"] == "line one\nline two"
' "$tmp/out"

with_fake show show abcdef01
check "show prints key: value lines with escapes" eval '[ "$rc" -eq 0 ] &&
	grep -q "^rp_id: *a-much-longer-relying-party.example.com$" "$tmp/out" &&
	grep -q "^notes: *line one\\\\nline two$" "$tmp/out" &&
	grep -q "^backup_eligible: *true$" "$tmp/out" &&
	request_is "r == {\"cmd\": \"show\", \"id\": \"abcdef01\"}"'
with_fake show edit --notes "new notes" abcdef01 --display Eve
check "edit: options before and after the ID all reach the agent" eval '[ "$rc" -eq 0 ] &&
	request_is "r == {\"cmd\": \"edit\", \"id\": \"abcdef01\", \"notes\": \"new notes\",
	\"display\": \"Eve\"}"'
with_fake show new --rp example.org --user alice
check "new sends rp and user" eval '[ "$rc" -eq 0 ] && out_has "Created passkey" &&
	request_is "r == {\"cmd\": \"new\", \"rp\": \"example.org\", \"user\": \"alice\"}"'

printf '{"accounts": ["caf\xc3\xa9 \\"quoted\\""]}\n' >"$tmp/import.json"
with_fake import import "$tmp/import.json" --format cxf
check "import consumes progress frames, prints counts, nothing on a piped stderr" eval '
	[ "$rc" -eq 0 ] && [ -z "$err" ] &&
	[ "$out" = "Imported 3 passkeys from $tmp/import.json (2 new, 1 updated, 0 unchanged)." ]'
check "import sends the file text, format and name" request_is "r['cmd'] == 'import' and
	r['data'] == open('$tmp/import.json', encoding='utf-8').read() and r['format'] == 'cxf' and
	r['filename'] == '$tmp/import.json'"
stdin_file="$tmp/import.json"
with_fake import import --json -
stdin_file=/dev/null
check "import - reads standard input; --json prints the counts" "$PY" -c '
import json, sys
assert json.load(open(sys.argv[1]))["added"] == 2
r = json.load(open(sys.argv[2]))
assert r["data"] == open(sys.argv[3], encoding="utf-8").read() and r["filename"] == "standard input"
' "$tmp/out" "$tmp/request" "$tmp/import.json"

with_fake locked list
check "agent error: its sentence on stderr, exit 1" eval 'plain_error &&
	[ "$err" = "pksync: The vault is locked: run '"'pksync unlock'"'." ]'
with_fake locked list --json
check "agent error with --json: {\"error\": ...} on stdout, exit 1" eval '[ "$rc" -eq 1 ] &&
	json_error_shape && [ -z "$err" ] && out_has "The vault is locked"'

for mode in garbage not-object no-ok no-reason dup-keys bad-progress empty-frame oversized \
	truncated close deep; do
	with_fake "$mode" status
	check "malformed answer ($mode): one clean error line, exit 1" plain_error
done
with_fake oversized status
check "oversized answer names the limit" err_has "256 MiB"

printf 'pw with spaces\nsecond line\n' >"$tmp/pass"
chmod 600 "$tmp/pass"
with_fake init init --name laptop --passphrase-file "$tmp/pass"
check "init --passphrase-file sends the first line, newline stripped" eval '[ "$rc" -eq 0 ] &&
	[ -z "$err" ] && request_is "r == {\"cmd\": \"init\", \"name\": \"laptop\",
	\"passphrase\": \"pw with spaces\"}"'
chmod 644 "$tmp/pass"
with_fake init init --passphrase-file "$tmp/pass"
check "a passphrase file readable by others draws a warning" eval '[ "$rc" -eq 0 ] &&
	err_has "warning" && request_is "r[\"passphrase\"] == \"pw with spaces\""'
printf 'crlf\r\n' >"$tmp/pass-crlf"
with_fake plain-ok unlock --passphrase-file "$tmp/pass-crlf"
check "unlock --passphrase-file strips \\r\\n" eval '[ "$rc" -eq 0 ] &&
	request_is "r == {\"cmd\": \"unlock\", \"passphrase\": \"crlf\"}"'
: >"$tmp/pass-empty"
chmod 600 "$tmp/pass-empty"
run --state-dir "$state" unlock --passphrase-file "$tmp/pass-empty"
check "an empty passphrase file is refused" plain_error
with_fake init init --no-passphrase --json
check "init --no-passphrase --json" eval '[ "$rc" -eq 0 ] &&
	request_is "r == {\"cmd\": \"init\", \"no_passphrase\": True}" &&
	"$PY" -c "import json,sys; assert json.load(open(sys.argv[1]))[\"vault_id\"]" "$tmp/out"'
if command -v setsid >/dev/null; then
	setsid -w "$PKSYNC" --state-dir "$state" init >"$tmp/out" 2>"$tmp/err" </dev/null
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
	check "init with no terminal and no flag asks for a flag" eval 'plain_error &&
		err_has "--passphrase-file" && err_has "--no-passphrase"'
else
	n=$((n + 1))
	echo "ok $n - init with no terminal # SKIP setsid is not installed"
fi

# The terminal prompt, on a pseudo-terminal the driver below holds.
cat >"$tmp/pty-run.py" <<'PYEOF'
"""usage: pty-run.py RESULT_JSON INPUTS_JSON PROGRAM ARGS...

Runs PROGRAM on a new pseudo-terminal, types each input after a prompt
(": ") shows up, and records the transcript, the exit, and whether echo
was off while the prompt waited and on again afterwards.
"""
import json
import os
import pty
import select
import signal
import sys
import termios
import time

result_path, inputs = sys.argv[1], json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])
transcript = b""
echo_during = []
deadline = time.time() + 20


def read_some(wait):
    global transcript
    r, _, _ = select.select([fd], [], [], wait)
    if not r:
        return True
    try:
        data = os.read(fd, 4096)
    except OSError:
        return False
    transcript += data
    return bool(data)


for text in inputs:
    seen = transcript.count(b": ")
    while transcript.count(b": ") == seen and time.time() < deadline:
        if not read_some(0.1):
            break
    time.sleep(0.1)
    echo_during.append(bool(termios.tcgetattr(fd)[3] & termios.ECHO))
    os.write(fd, text.encode())
while time.time() < deadline and read_some(0.5):
    pass
echo_after = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
_, status = os.waitpid(pid, 0)
with open(result_path, "w") as f:
    json.dump({"exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
               "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
               "echo_during": echo_during, "echo_after": echo_after,
               "transcript": transcript.decode(errors="replace")}, f)
PYEOF

# with_pty MODES INPUTS_JSON ARGS...: pksync on a terminal against the fake agent.
with_pty() {
	local mode=$1 inputs=$2
	shift 2
	rm -f "$state/control.sock" "$tmp/ready" "$tmp/request" "$tmp/request.all" "$tmp/pty.json"
	"$PY" "$tmp/fake-agent.py" "$state/control.sock" "$mode" "$tmp/request" "$tmp/ready" &
	fake_pid=$!
	for _ in $(seq 100); do
		[ -e "$tmp/ready" ] && break
		sleep 0.05
	done
	"$PY" "$tmp/pty-run.py" "$tmp/pty.json" "$inputs" "$PKSYNC" --state-dir "$state" "$@" \
		>"$tmp/out" 2>"$tmp/err"
	rc=$?
	kill "$fake_pid" 2>/dev/null
	wait "$fake_pid" 2>/dev/null
	fake_pid=
	cp "$tmp/pty.json" "$tmp/out" 2>/dev/null
}

# pty_is PYTHON-EXPRESSION over p (the driver's result) and reqs (the requests sent).
pty_is() {
	"$PY" -c '
import json, os, sys
p = json.load(open(sys.argv[1]))
reqs = [json.loads(l) for l in open(sys.argv[2])] if os.path.exists(sys.argv[2]) else []
sys.exit(0 if eval("(" + sys.argv[3] + ")") else 1)
' "$tmp/pty.json" "$tmp/request.all" "$1" 2>/dev/null
}

with_pty status-uninit,init '["secret words\n", "secret words\n"]' init --name laptop
check "init asks twice on the terminal with echo off, then sends the passphrase" pty_is '
	p["exit"] == 0 and p["echo_during"] == [False, False] and p["echo_after"] and
	"secret" not in p["transcript"] and "Repeat" in p["transcript"] and
	reqs == [{"cmd": "status"},
		 {"cmd": "init", "name": "laptop", "passphrase": "secret words"}]'
with_pty status-uninit '["one\n", "two\n"]' init
check "init refuses two different passphrases" pty_is '
	p["exit"] == 1 and "do not match" in p["transcript"] and reqs == [{"cmd": "status"}]'
with_pty status-locked '["\u0003"]' unlock
check "Ctrl-C at the prompt restores echo and dies of SIGINT" pty_is '
	p["signal"] == 2 and p["echo_during"] == [False] and p["echo_after"]'
with_pty status,plain-ok '[]' unlock
check "unlock of an unlocked vault does not prompt" pty_is '
	p["exit"] == 0 and "assphrase" not in p["transcript"] and
	reqs == [{"cmd": "status"}, {"cmd": "unlock"}]'
with_pty status '["x\n", "x\n"]' init
check "init on an initialised vault stops before prompting" pty_is '
	p["exit"] == 1 and "already holds a vault" in p["transcript"] and
	"assphrase" not in p["transcript"]'

with_pty import '[]' import "$tmp/import.json"
check "import draws a progress bar on a terminal, then clears it" pty_is '
	p["exit"] == 0 and "importing [####" in p["transcript"] and "3/3 100%" in p["transcript"]
	and "\r\x1b[KImported 3 passkeys" in p["transcript"]'

with_fake export-kpxc export --format keepassxc --out "$tmp/exp"
check "KeePassXC export of several files: a 0700 directory of 0600 files, sanitised names" \
	eval '[ "$rc" -eq 0 ] && [ "$(stat -c %a "$tmp/exp")" = 700 ] &&
	[ "$(ls -A "$tmp/exp" | sort | tr "\n" " ")" = \
"_._evil.passkey _hidden__x example.org-alice-2.passkey example.org-alice.passkey " ] &&
	[ "$(cat "$tmp/exp/example.org-alice.passkey")" = first ] &&
	[ "$(cat "$tmp/exp/example.org-alice-2.passkey")" = third ] &&
	[ ! -e "$tmp/evil.passkey" ] &&
	[ -z "$(find "$tmp/exp" -type f ! -perm 600)" ]'
check "export warns about unencrypted private keys" eval 'err_has "holds unencrypted private keys" &&
	err_has "$tmp/exp"'
printf 'an older, longer file that must be replaced\n' >"$tmp/old.json"
chmod 644 "$tmp/old.json"
with_fake export-cxf export --format cxf --out "$tmp/old.json" --rp example.org
check "CXF export replaces an existing file and makes it 0600" eval '[ "$rc" -eq 0 ] &&
	[ "$(stat -c %a "$tmp/old.json")" = 600 ] &&
	[ "$(cat "$tmp/old.json")" = "{\"cxf\": true}" ] &&
	out_has "Exported 2 passkeys to $tmp/old.json" &&
	request_is "r == {\"cmd\": \"export\", \"format\": \"cxf\", \"rp\": \"example.org\"}"'
echo untouched >"$tmp/target"
ln -s "$tmp/target" "$tmp/link.json"
with_fake export-cxf export --format cxf --out "$tmp/link.json"
check "export refuses to write through a symbolic link" eval 'plain_error &&
	[ "$(cat "$tmp/target")" = untouched ]'
with_fake export-cxf export --format cxf --out "$tmp/exp" --json
check "export into an existing directory, --json lists the files" eval '[ "$rc" -eq 0 ] &&
	[ -f "$tmp/exp/pksync.json" ] && "$PY" -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d == {\"format\": \"cxf\", \"count\": 2, \"files\": [sys.argv[2]]}, d
" "$tmp/out" "$tmp/exp/pksync.json"'
echo file >"$tmp/plainfile"
with_fake export-kpxc export --format keepassxc --out "$tmp/plainfile"
check "several KeePassXC files and --out naming a file: a clear error" eval 'plain_error &&
	err_has "not a directory"'
with_fake export-none export --format keepassxc --out "$tmp/none"
check "nothing to export: exit 1, nothing written" eval 'plain_error && [ ! -e "$tmp/none" ]'

with_fake assert assert --rp example.org --client-data-hash "$(printf 'AB%.0s' $(seq 32))"
check "assert prints the four base64url fields and sends the hash in lower case" eval '
	[ "$rc" -eq 0 ] && [ "$(wc -l <"$tmp/out")" -eq 4 ] &&
	grep -q "^credential_id  *Y3JlZA$" "$tmp/out" && grep -q "^signature  *c2ln$" "$tmp/out" &&
	grep -q "^authenticator_data  *YXV0aA$" "$tmp/out" &&
	grep -q "^user_handle  *dXNlcg$" "$tmp/out" &&
	request_is "r[\"client_data_hash\"] == \"ab\" * 32"'

with_fake status status
check "status prints lines" eval '[ "$rc" -eq 0 ] && grep -q "^device: *laptop" "$tmp/out" &&
	grep -q "^passkeys: *3 (1 in the trash)$" "$tmp/out" && grep -q "^locked: *no$" "$tmp/out"'

echo "1..$n"
exit "$failed"
