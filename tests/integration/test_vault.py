#!/usr/bin/python3
"""The local vault, end to end: real agents, the real CLI, independent verifiers.

usage: test_vault.py BUILD_DIR SHARED_DIR [case-filter]
"""
import json
import os
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pkslib import Agent, CliError, Tap, b64u_decode, b64u_encode  # noqa: E402
from verify import assert_and_verify  # noqa: E402

BUILD, SHARED = sys.argv[1], sys.argv[2]
SAMPLES = os.path.join(SHARED, "samples", "passkeys")
tap = Tap()


def fresh(name="dev", passphrase=None):
    a = Agent(BUILD, name=name).start()
    a.init(passphrase=passphrase)
    return a


def import_sample(agent, name, fmt=None):
    args = ["import", os.path.join(SAMPLES, name), "--json"]
    if fmt:
        args += ["--format", fmt]
    _, out, _ = agent.cli(*args)
    return json.loads(out)


@tap.case
def new_passkey_verifies():
    a = fresh()
    try:
        rec = a.json("new", "--rp", "example.org", "--user", "alice", "--display", "Alice")
        assert rec["rp_id"] == "example.org" and rec["user_name"] == "alice"
        assert rec["alg"] == -7 and rec["backup_eligible"] and rec["backup_state"]
        assert len(b64u_decode(rec["credential_id"])) >= 16
        listed = a.json("list")
        assert [r["id"] for r in listed] == [rec["id"]]
        for key in ("id", "rp_id", "user_name", "user_display_name", "credential_id",
                    "user_handle", "alg", "public_key", "backup_eligible",
                    "backup_state", "created_at", "updated_at"):
            assert key in listed[0], key
        assert_and_verify(a, rec)
    finally:
        a.cleanup()


@tap.case
def samples_import_and_verify():
    a = fresh()
    try:
        seen = {}
        for name, fmt in (("cxf-example.json", "cxf"),
                          ("keepassxc-export.passkey", "keepassxc"),
                          ("bitwarden-export.json", "bitwarden")):
            res = import_sample(a, name)
            assert res["format"] == fmt, res
            seen[fmt] = res
        # The Bitwarden sample names one credential twice (UUID and b64. forms).
        assert seen["bitwarden"]["total"] == 1 or seen["bitwarden"]["added"] == 1, seen
        recs = a.json("list")
        assert len(recs) == 3, [r["rp_id"] for r in recs]
        rps = sorted(r["rp_id"] for r in recs)
        assert rps == ["example.com", "webauthn.io", "webauthn.io"], rps
        for rec in recs:
            assert_and_verify(a, rec)
        cxf = [r for r in recs if r["user_name"] == "johndoe"][0]
        assert b64u_decode(cxf["credential_id"]) == b"credentialIdExample"
        assert cxf["user_display_name"] == "John Doe"
    finally:
        a.cleanup()


@tap.case
def reimport_yields_one_record():
    a = fresh()
    try:
        first = import_sample(a, "cxf-example.json")
        assert first["added"] == 1
        second = import_sample(a, "cxf-example.json")
        assert second["added"] == 0 and second["unchanged"] == 1, second
        assert len(a.json("list")) == 1
    finally:
        a.cleanup()


@tap.case
def export_cxf_round_trip():
    a = fresh("a")
    b = Agent(BUILD, root=a.root, name="b").start()
    b.init()
    try:
        for name in ("cxf-example.json", "keepassxc-export.passkey",
                     "bitwarden-export.json"):
            import_sample(a, name)
        a.json("new", "--rp", "example.net", "--user", "bob")
        out = os.path.join(a.root, "export.json")
        rc, _, err = a.cli("export", "--format", "cxf", "--out", out)
        assert "private keys" in err, err
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        b.cli("import", out)
        # Record ids are keyed per vault; the credential is what must match.
        ra = {(r["rp_id"], r["credential_id"]): r for r in a.json("list")}
        rb = {(r["rp_id"], r["credential_id"]): r for r in b.json("list")}
        assert sorted(ra) == sorted(rb), (sorted(ra), sorted(rb))
        for rid, rec in ra.items():
            other = rb[rid]
            for key in ("rp_id", "user_name", "user_display_name", "credential_id",
                        "user_handle", "alg", "public_key", "backup_eligible",
                        "backup_state"):
                assert rec[key] == other[key], (key, rec[key], other[key])
            # Same private key: B signs, and A's public key verifies it.
            assert_and_verify(b, dict(rec, id=other["id"]))
        os.unlink(out)
    finally:
        b.stop()
        a.cleanup()


@tap.case
def export_keepassxc_round_trip():
    a = fresh("a")
    b = Agent(BUILD, root=a.root, name="b").start()
    b.init()
    try:
        rec = a.json("new", "--rp", "example.org", "--user", "carol")
        out = os.path.join(a.root, "one.passkey")
        a.cli("export", "--format", "keepassxc", "--id", rec["id"], "--out", out)
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
        with open(out) as f:
            doc = json.load(f)
        assert doc["relyingParty"] == "example.org" and "BEGIN PRIVATE KEY" in doc["privateKey"]
        b.cli("import", out)
        got = b.json("list")
        assert len(got) == 1 and got[0]["public_key"] == rec["public_key"]
        assert_and_verify(b, got[0])
    finally:
        b.stop()
        a.cleanup()


def counts_match_lists(a):
    """status's counts (kept incrementally) agree with the listings."""
    st = a.json("status")
    live, trash = len(a.json("list")), len(a.json("list", "--trash"))
    assert (st["records"], st["trash"]) == (live, trash), (st["records"], st["trash"], live,
                                                           trash)


@tap.case
def edit_delete_restore_trash():
    a = fresh()
    try:
        counts_match_lists(a)
        rec = a.json("new", "--rp", "example.org", "--user", "dave")
        a.json("new", "--rp", "example.com", "--user", "erin")
        counts_match_lists(a)
        a.cli("edit", rec["id"][:8], "--user", "dave2", "--notes", "work account")
        counts_match_lists(a)
        shown = a.json("show", rec["id"])
        assert shown["user_name"] == "dave2" and shown["notes"] == "work account", shown
        a.cli("rm", rec["id"])
        counts_match_lists(a)
        assert rec["id"] not in [r["id"] for r in a.json("list")]
        trash = a.json("list", "--trash")
        assert [r["id"] for r in trash] == [rec["id"]] and trash[0]["trashed"]
        rc, _, err = a.cli("assert", "--rp", "example.org", "--client-data-hash", "00" * 32,
                           "--credential", rec["id"], check=False)
        assert rc != 0, "a trashed passkey must not sign"
        a.cli("restore", rec["id"])
        counts_match_lists(a)
        assert rec["id"] in [r["id"] for r in a.json("list")]
        assert a.json("list", "--trash") == []
        assert_and_verify(a, a.json("show", rec["id"]))
    finally:
        a.cleanup()


@tap.case
def unknown_and_ambiguous_ids():
    a = fresh()
    try:
        rc, _, err = a.cli("show", "ffffffff", check=False)
        assert rc == 1 and "No passkey" in err, err
        rc, _, err = a.cli("show", "zz", check=False)
        assert rc != 0 and err.strip(), err
        rc, out, _ = a.cli("show", "ffffffff", "--json", check=False)
        assert rc == 1 and "error" in json.loads(out)
    finally:
        a.cleanup()


@tap.case
def passphrase_lock_unlock():
    a = fresh(passphrase="correct horse battery staple")
    try:
        a.json("new", "--rp", "example.org", "--user", "erin")
        a.stop()
        a.start()
        st = a.json("status")
        assert st["locked"] is True, st
        rc, _, err = a.cli("list", check=False)
        assert rc == 1 and "locked" in err, err
        bad = os.path.join(a.root, "bad-pass")
        with open(bad, "w") as f:
            f.write("wrong\n")
        t0 = time.time()
        rc, _, err = a.cli("unlock", "--passphrase-file", bad, check=False)
        assert rc == 1 and "passphrase" in err.lower(), err
        rc, _, err = a.cli("unlock", "--passphrase-file", bad, check=False)
        assert rc == 1
        # The second failure waits longer than the first.
        assert time.time() - t0 >= 2.5, time.time() - t0
        good = os.path.join(a.root, "pass-" + os.path.basename(a.state_dir))
        time.sleep(2.1)
        a.cli("unlock", "--passphrase-file", good)
        assert len(a.json("list")) == 1
        a.cli("lock")
        assert a.json("status")["locked"] is True
    finally:
        a.cleanup()


@tap.case
def nothing_in_plaintext_at_rest():
    a = fresh(passphrase="pw for plaintext scan")
    try:
        for name in ("cxf-example.json", "keepassxc-export.passkey",
                     "bitwarden-export.json"):
            import_sample(a, name)
        a.json("new", "--rp", "plaintext-probe.example", "--user", "probe-user-name")
        recs = a.json("list")
        a.stop()  # the WAL stays as it is: nothing may be in it either
        needles = [b"plaintext-probe.example", b"probe-user-name", b"webauthn.io",
                   b"example.com", b"johndoe", b"KPXC_BITWARDEN", b"credentialIdExample"]
        for r in recs:
            needles.append(b64u_decode(r["credential_id"]))
            needles.append(b64u_decode(r["user_handle"]))
            needles.append(r["credential_id"].encode())
        # The private keys of the samples, as DER.
        with open(os.path.join(SAMPLES, "cxf-example.json")) as f:
            cxf = json.load(f)
        for acct in cxf["accounts"]:
            for item in acct["items"]:
                for c in item["credentials"]:
                    if c.get("type") == "passkey":
                        needles.append(b64u_decode(c["key"])[-32:])
        files = list(a.state_files())
        assert any(f.endswith("vault.db") for f in files), files
        for path in files:
            with open(path, "rb") as f:
                data = f.read()
            for n in needles:
                assert n not in data, "plaintext %r found in %s" % (n[:20], path)
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path
    finally:
        a.cleanup()


BROKEN = {
    "truncated": lambda good: good[: len(good) // 2],
    "garbage": lambda good: os.urandom(300),
    "deep": lambda good: b"[" * 100000 + b"]" * 100000,
    "long-string": lambda good: b'{"relyingParty": "' + b"a" * (2 * 1024 * 1024) + b'"}',
    "bad-key": lambda good: good.replace(b'"key": "MIGH', b'"key": "AAAA'),
    "dup-keys": lambda good: good.replace(b'"rpId": "webauthn.io"',
                                          b'"rpId": "webauthn.io", "rpId": "x.io"'),
}


@tap.case
def broken_imports_refused_whole():
    a = fresh()
    try:
        a.json("new", "--rp", "example.org", "--user", "frank")
        before = a.json("status")["digest"]
        with open(os.path.join(SAMPLES, "cxf-example.json"), "rb") as f:
            good = f.read()
        for label, make in BROKEN.items():
            path = os.path.join(a.root, "broken-" + label)
            with open(path, "wb") as f:
                f.write(make(good))
            rc, _, err = a.cli("import", path, check=False)
            assert rc == 1, (label, rc)
            assert err.startswith("pksync: ") and len(err.strip().splitlines()) == 1, (label, err)
            assert a.alive(), "agent died on " + label
            assert a.json("status")["digest"] == before, label
        # One good and one bad passkey in a file: nothing is imported.
        doc = json.loads(good)
        items = doc["accounts"][0]["items"]
        passkey_item = [it for it in items
                        if any(c.get("type") == "passkey" for c in it["credentials"])][0]
        bad = json.loads(json.dumps(passkey_item))
        bad["id"] = "second-item"
        # A valid, different credential beside the broken one must not land either.
        for c in bad["credentials"]:
            if c.get("type") == "passkey":
                c["credentialId"] = "not base64url!"
        items.append(bad)
        good_other = json.loads(json.dumps(passkey_item))
        for c in good_other["credentials"]:
            if c.get("type") == "passkey":
                c["credentialId"] = "YW5vdGhlci1jcmVkZW50aWFs"
        items.insert(0, good_other)
        path = os.path.join(a.root, "half-bad.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        rc, _, err = a.cli("import", path, check=False)
        assert rc == 1 and "credentialId" in err, err
        assert len(a.json("list")) == 1
        assert a.json("status")["digest"] == before
    finally:
        a.cleanup()


@tap.case
def control_socket_private():
    a = fresh()
    try:
        sock = os.path.join(a.state_dir, "control.sock")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(a.state_dir).st_mode) == 0o700
        if os.geteuid() == 0:
            # Even with the file mode opened up, another uid is refused by SO_PEERCRED.
            os.chmod(a.state_dir, 0o755)
            os.chmod(sock, 0o666)
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                a.cli_bin, "--state-dir", a.state_dir, "list"],
                               capture_output=True)
            assert p.returncode != 0, p.stdout
            assert a.alive()
            os.chmod(sock, 0o600)
            os.chmod(a.state_dir, 0o700)
    finally:
        a.cleanup()


@tap.case
def agent_hardening():
    a = fresh()
    try:
        with open("/proc/%d/status" % a.proc.pid) as f:
            status = f.read()
        with open("/proc/%d/limits" % a.proc.pid) as f:
            limits = f.read()
        core = [line for line in limits.splitlines() if line.startswith("Max core file size")]
        assert core and core[0].split()[4] == "0", core
        # PR_SET_DUMPABLE 0 makes /proc/PID owned by root and hides the environ.
        umask = [line for line in status.splitlines() if line.startswith("Umask")]
        assert umask and umask[0].split()[1] == "0077", umask
    finally:
        a.cleanup()


@tap.case
def second_agent_on_same_dir_refused():
    a = fresh()
    try:
        p = subprocess.run([a.agent_bin, "--state-dir", a.state_dir], capture_output=True,
                           timeout=10)
        assert p.returncode != 0 and b"already running" in p.stderr, p.stderr
    finally:
        a.cleanup()


@tap.case
def kill_during_import_loses_nothing_committed():
    """SIGKILL at points spread over an import: every restart shows all or none."""
    a = fresh()
    try:
        a.json("new", "--rp", "example.org", "--user", "grace")
        base = {r["id"] for r in a.json("list")}
        path = os.path.join(a.root, "big.json")
        subprocess.run([os.path.join(BUILD, "tools", "pksync-bench"), "--make-cxf", "2000",
                        path], check=True, capture_output=True)
        # How long a whole import takes here, on a scratch agent.
        probe = Agent(BUILD, root=a.root, name="probe").start()
        probe.init()
        t0 = time.time()
        probe.cli("import", path)
        full = time.time() - t0
        probe.stop()
        interrupted = 0
        for fraction in (0.3, 0.6, 0.8, 0.9, 0.97):
            p = subprocess.Popen([a.cli_bin, "--state-dir", a.state_dir, "import", path],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=a.env)
            time.sleep(full * fraction)
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            if p.wait(timeout=60) != 0:
                interrupted += 1
            a.proc = None
            a.log.close()
            a.start()
            ids = {r["id"] for r in a.json("list")}
            assert base <= ids, "a committed passkey disappeared"
            # One transaction: the 2000 are all there or none of them.
            assert len(ids - base) in (0, 2000), len(ids - base)
            base = ids
        assert interrupted > 0, "no kill landed inside an import (full import %.2fs)" % full
        print("# %d of 5 kills landed inside an import of %.2fs" % (interrupted, full))
    finally:
        a.cleanup()


sys.exit(tap.run(sys.argv[2:]))
