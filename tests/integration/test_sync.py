#!/usr/bin/python3
"""Devices pair with a code and converge: real agents on loopback, the real CLI.

usage: test_sync.py BUILD_DIR SHARED_DIR [case-filter]
"""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pkslib import Agent, CliError, Tap, free_port  # noqa: E402
from verify import assert_and_verify  # noqa: E402

BUILD, SHARED = sys.argv[1], sys.argv[2]
BENCH = os.path.join(BUILD, "tools", "pksync-bench")
tap = Tap()


class Dev(Agent):
    """An agent listening on its own loopback port."""

    def __init__(self, root, name):
        super().__init__(BUILD, root=root, name=name)
        self.name = name
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.extra = []

    def start(self, extra=()):
        self.extra = list(extra)
        return super().start(["--listen", self.addr, *self.extra])

    def restart(self, extra=None):
        self.stop()
        return self.start(self.extra if extra is None else extra)

    def status(self):
        return self.json("status")

    def digest(self):
        return self.status()["digest"]

    def ids(self, trash=False):
        args = ["list"] + (["--trash"] if trash else [])
        return sorted(r["id"] for r in self.json(*args))


class Lab:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="pks-sync-")
        self.devs = []

    def dev(self, name):
        d = Dev(self.root, name)
        self.devs.append(d)
        return d

    def founder(self, name="alpha"):
        d = self.dev(name).start()
        d.init(name=name)
        return d

    def cleanup(self):
        for d in self.devs:
            d.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_pair(sponsor, timeout=60):
    """Runs 'pksync pair --json' on the sponsor; returns (process, first line)."""
    p = subprocess.Popen([sponsor.cli_bin, "--state-dir", sponsor.state_dir, "pair",
                          "--json", "--timeout", str(timeout)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sponsor.env)
    line = p.stdout.readline()
    if not line:
        raise RuntimeError("pair printed nothing: " + p.stderr.read().decode())
    return p, json.loads(line)


def pair(lab, sponsor, name):
    """A new device joins through sponsor; returns it, started."""
    d = lab.dev(name).start()
    p, first = start_pair(sponsor)
    assert len(first["code"]) == 8 and first["code"].isdigit(), first
    assert first["qr"].startswith("pksync1:"), first
    res = d.json("join", first["code"], "--peer", sponsor.addr, "--name", name,
                 "--no-passphrase")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()
    added = json.loads(out.decode().strip().splitlines()[-1])
    assert added["device_id"] == res["device_id"] and added["name"] == name
    return d


def converge(devs, timeout=30):
    """Waits until every device shows the same digest; returns it."""
    deadline = time.time() + timeout
    digests = []
    while time.time() < deadline:
        digests = [d.digest() for d in devs]
        if len(set(digests)) == 1:
            return digests[0]
        time.sleep(0.1)
    raise AssertionError("no convergence: " + repr(digests) + "\n" +
                         "\n".join(d.read_log()[-1500:] for d in devs))


def never_arrives(devs, rec_id, seconds=3.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        for d in devs:
            assert rec_id not in d.ids() and rec_id not in d.ids(trash=True), d.name
        time.sleep(0.2)


@tap.case
def three_devices_converge():
    lab = Lab()
    try:
        a = lab.founder("alpha")
        for sample in ("cxf-example.json", "bitwarden-export.json", "keepassxc-export.passkey"):
            a.json("import", os.path.join(SHARED, "samples", "passkeys", sample))
        b = pair(lab, a, "beta")
        # gamma pairs with beta, so alpha's changes reach it only through beta.
        c = pair(lab, b, "gamma")
        converge([a, b, c])
        assert a.ids() == b.ids() == c.ids() and len(a.ids()) > 0
        first, last = a.ids()[0], a.ids()[-1]
        rec = c.json("new", "--rp", "example.org", "--user", "carol")
        a.json("edit", first, "--notes", "from alpha")
        b.cli("rm", last)
        converge([a, b, c])
        assert a.ids() == b.ids() == c.ids()
        assert rec["id"] in a.ids() and last not in c.ids() and last in c.ids(trash=True)
        assert c.json("show", first)["notes"] == "from alpha"
        assert sorted(x["name"] for x in c.json("devices")) == ["alpha", "beta", "gamma"]
        # A passkey made on gamma signs on alpha.
        got = [r for r in a.json("list") if r["id"] == rec["id"]][0]
        assert_and_verify(a, got)
        st = a.status()
        assert len(st["peers"]) == 2 and all("last_sync" in p for p in st["peers"])
        assert any(p["connected"] for p in st["peers"])
        res = b.json("sync", "--wait", "--timeout", "20")
        assert res["in_sync"] and res["peers"] == 2, res
    finally:
        lab.cleanup()


def apart(a, b, on_a, on_b):
    """Runs on_a while b is down and on_b while a is down: concurrent changes."""
    b.stop()
    on_a()
    a.stop()
    b.start(b.extra)
    on_b()
    a.start(a.extra)


@tap.case
def concurrent_edits_of_different_fields_both_survive():
    lab = Lab()
    try:
        a = lab.founder()
        rec = a.json("new", "--rp", "example.com", "--user", "alice")
        b = pair(lab, a, "beta")
        converge([a, b])
        apart(a, b, lambda: a.json("edit", rec["id"], "--user", "alice@work"),
              lambda: b.json("edit", rec["id"], "--display", "Alice W."))
        digest = converge([a, b])
        # The digest kept up to date as versions arrive equals one computed afresh.
        a.restart()
        assert a.digest() == digest
        for d in (a, b):
            got = d.json("show", rec["id"])
            assert got["user_name"] == "alice@work", got
            assert got["user_display_name"] == "Alice W.", got
    finally:
        lab.cleanup()


@tap.case
def delete_beats_concurrent_edit():
    lab = Lab()
    try:
        a = lab.founder()
        rec = a.json("new", "--rp", "example.com", "--user", "alice")
        b = pair(lab, a, "beta")
        converge([a, b])
        apart(a, b, lambda: a.cli("rm", rec["id"]),
              lambda: b.json("edit", rec["id"], "--notes", "edited meanwhile"))
        converge([a, b])
        for d in (a, b):
            assert rec["id"] not in d.ids(), d.name
            assert rec["id"] in d.ids(trash=True), d.name
        # Restore is an explicit later operation, and it syncs too.
        b.cli("restore", rec["id"])
        converge([a, b])
        assert rec["id"] in a.ids()
        assert a.json("show", rec["id"])["notes"] == "edited meanwhile"
    finally:
        lab.cleanup()


@tap.case
def revoked_device_is_shut_out():
    lab = Lab()
    try:
        a = lab.founder()
        b = pair(lab, a, "beta")
        c = pair(lab, a, "gamma")
        converge([a, b, c])
        before = c.json("new", "--rp", "before.example", "--user", "c1")
        converge([a, b, c])
        c_id = c.status()["device_id"]
        res = a.json("revoke", "gamma")
        assert res["device_id"] == c_id
        devs = {x["name"]: x for x in a.json("devices")}
        assert devs["gamma"]["revoked"] and not devs["beta"]["revoked"]
        converge([a, b])
        assert {x["name"]: x for x in b.json("devices")}["gamma"]["revoked"]
        # gamma's clock goes back a day; what it writes now reaches nobody.
        c.env["PKSYNC_CLOCK_OFFSET_MS"] = str(-24 * 3600 * 1000)
        c.restart(["--peer", a.addr, "--peer", b.addr])
        late = c.json("new", "--rp", "late.example", "--user", "c2")
        c.cli("edit", before["id"], "--user", "rewritten by a revoked device")
        c.cli("sync")
        never_arrives([a, b], late["id"])
        for d in (a, b):
            assert d.json("show", before["id"])["user_name"] == "c1"
        assert "not a member" in a.read_log() or "not a member" in b.read_log()
        # Changes after the revocation keep flowing between the members left.
        post = b.json("new", "--rp", "after.example", "--user", "b2")
        converge([a, b])
        assert post["id"] in a.ids()
        assert post["id"] not in c.ids()
    finally:
        lab.cleanup()


@tap.case
def revoke_that_stops_counting_loses_nothing():
    """alpha revokes beta while delta, unaware, revokes alpha. gamma first
    learns only of alpha's revoke (beta's late record stops counting there),
    then of delta's: alpha is strong-removed, its revoke of beta no longer
    counts, and beta's record must come back at gamma even though beta is
    gone for good by then."""
    lab = Lab()
    try:
        a = lab.founder("alpha")
        b = pair(lab, a, "beta")
        c = pair(lab, a, "gamma")
        d = pair(lab, a, "delta")
        converge([a, b, c, d])
        for x in (a, b, c, d):
            x.stop()
        # beta writes; nobody but gamma will ever hear of it from beta.
        b.start()
        late = b.json("new", "--rp", "late.example", "--user", "beta-late")
        b.stop()
        # alpha revokes beta without having seen that record.
        a.start()
        a.json("revoke", "beta")
        a.stop()
        # delta, unaware of that, revokes alpha.
        d.start()
        d.json("revoke", "alpha")
        d.stop()
        # gamma gets beta's record from beta, then alpha's revoke of beta.
        # Joiners know only their sponsor's address: tell gamma the others'.
        b.start()
        c.start(["--peer", b.addr])
        converge([b, c])
        assert late["id"] in c.ids()
        b.stop()
        shutil.rmtree(b.state_dir)   # beta is gone for good
        a.start()
        c.restart(["--peer", a.addr])
        converge([a, c])
        assert late["id"] not in c.ids(), "a revoked author's late record still counts"
        a.stop()
        # Now delta: alpha's revoke stops counting, beta's record is back.
        d.start()
        c.restart(["--peer", d.addr])
        converge([c, d], timeout=60)
        devs = {x["name"]: x for x in c.json("devices")}
        assert devs["alpha"]["revoked"] and not devs["beta"]["revoked"], devs
        assert late["id"] in c.ids(), "a record lost to a revoke that stopped counting"
        assert late["id"] in d.ids()
        assert c.json("show", late["id"])["user_name"] == "beta-late"
    finally:
        lab.cleanup()


@tap.case
def device_added_during_a_key_rotation_reads_that_epoch():
    """alpha revokes gamma (a new data-key epoch, sealed to alpha and beta)
    while beta, apart, adds delta: that rotation was never sealed to delta.
    What alpha writes under the new epoch must still reach delta: members
    hand each other the epoch keys they hold."""
    lab = Lab()
    try:
        a = lab.founder("alpha")
        b = pair(lab, a, "beta")
        c = pair(lab, a, "gamma")
        converge([a, b, c])
        b.stop()
        c.stop()
        a.json("revoke", "gamma")
        rec = a.json("new", "--rp", "new-epoch.example", "--user", "alice")
        a.stop()
        b.start()
        d = pair(lab, b, "delta")
        converge([b, d])
        a.start(["--peer", b.addr])
        d.restart(["--peer", a.addr, "--peer", b.addr])
        converge([a, b, d], timeout=60)
        for x in (b, d):
            assert rec["id"] in x.ids(), x.name
        assert d.json("show", rec["id"])["user_name"] == "alice"
        # delta writes now under the newest epoch it learned; alpha reads it.
        back = d.json("new", "--rp", "from-delta.example", "--user", "dee")
        converge([a, b, d])
        assert back["id"] in a.ids()
    finally:
        lab.cleanup()


@tap.case
def pairing_codes_single_use_expiring_five_tries():
    lab = Lab()
    try:
        a = lab.founder()
        j = lab.dev("joiner").start()
        p, first = start_pair(a)
        code = first["code"]
        wrong = [("%08d" % ((int(code) + k) % 10**8)) for k in range(1, 6)]
        for w in wrong:
            rc, _, err = j.cli("join", w, "--peer", a.addr, "--no-passphrase", check=False)
            assert rc != 0 and "code" in err, err
        # The right code after five wrong ones: dead.
        rc, _, err = j.cli("join", code, "--peer", a.addr, "--no-passphrase", check=False)
        assert rc != 0, err
        out, err = p.communicate(timeout=30)
        # With --json the error is the last line of standard output.
        assert p.returncode != 0 and b"wrong codes" in out, out
        assert not j.status()["initialized"]

        # Single use: a second device with the same code is refused.
        p, first = start_pair(a)
        j.json("join", first["code"], "--peer", a.addr, "--no-passphrase")
        p.communicate(timeout=30)
        k = lab.dev("late").start()
        rc, _, err = k.cli("join", first["code"], "--peer", a.addr, "--no-passphrase",
                           check=False)
        assert rc != 0 and not k.status()["initialized"], err

        # Expiry.
        p, first = start_pair(a, timeout=1)
        time.sleep(1.5)
        rc, _, err = k.cli("join", first["code"], "--peer", a.addr, "--no-passphrase",
                           check=False)
        assert rc != 0, err
        out, err = p.communicate(timeout=30)
        assert p.returncode != 0 and b"expired" in out, out

        # The QR payload joins too (its secret is not the code).
        p, first = start_pair(a)
        k.json("join", "--qr", first["qr"], "--peer", a.addr, "--no-passphrase")
        p.communicate(timeout=30)
        assert p.returncode == 0
        converge([a, j, k])
    finally:
        lab.cleanup()


@tap.case
def kill9_during_first_sync_then_complete():
    lab = Lab()
    try:
        a = lab.founder()
        big = os.path.join(lab.root, "big.cxf.json")
        subprocess.run([BENCH, "--make-cxf", "3000", big], check=True,
                       capture_output=True)
        a.json("import", big)
        b = pair(lab, a, "beta")
        # Kill beta while the first sync is under way.
        deadline = time.time() + 60
        killed_at = None
        while time.time() < deadline:
            n = b.status().get("records") or 0
            if 0 < n < 3000:
                killed_at = n
                break
            if n >= 3000:
                break
            time.sleep(0.01)
        b.stop(signal.SIGKILL)
        assert killed_at is not None, "the first sync finished before it could be cut"
        b.start(b.extra)
        # What beta committed before the kill is all there, whole records only.
        assert b.status()["records"] >= killed_at
        converge([a, b], timeout=120)
        assert a.ids() == b.ids() and len(b.ids()) == 3000
        tap_note("killed beta at %s of 3000 records" % killed_at)
    finally:
        lab.cleanup()


def tap_note(text):
    print("# " + text, flush=True)


@tap.case
def garbage_peers_dropped_others_keep_syncing():
    lab = Lab()
    try:
        a = lab.founder()
        b = pair(lab, a, "beta")
        converge([a, b])
        rnd = random.Random(7)
        payloads = [
            bytes(rnd.getrandbits(8) for _ in range(300)),          # not even a frame
            b"\x00\x00",                                              # zero-length frame
            b"\x00\x05\x09garb",                                      # a frame, but no known kind
            b"\x01\x00" + b"\x01" + bytes(255),                       # bad member handshake
            b"\x00\x40" + b"\x02" + bytes(rnd.getrandbits(8) for _ in range(63)),  # pairing, none open
            b"\xff\xff" + bytes(100),                                 # frame cut short
        ]
        socks = []
        for data in payloads:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            s.sendall(data)
            socks.append(s)
        # While they hang on, the members keep syncing.
        rec = b.json("new", "--rp", "during.example", "--user", "bob")
        converge([a, b])
        assert rec["id"] in a.ids()
        for s in socks:
            s.settimeout(5)
            try:
                got = s.recv(64)
            except socket.timeout:
                got = None
            # Nothing is ever answered to a stranger, and they get closed.
            assert got in (b"", None), got
            s.close()
        assert a.alive() and b.alive()
        log = a.read_log()
        assert "garbage" in log and "handshake" in log, log[-2000:]
    finally:
        lab.cleanup()


class FrameProxy:
    """A TCP relay between a dialing device and a listening one that counts
    frames (2-byte big-endian length, then the body) and, for the connection
    it is told to spoil, replaces or follows a frame with garbage towards the
    listener. Connections after that are relayed faithfully."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.plan = []          # per new connection: None, "during" or "after"
        self.spoiled = []       # what was done, for the report
        self.stop = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        self.srv.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            mode = self.plan.pop(0) if self.plan else None
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            for a, b, up in ((c, u, True), (u, c, False)):
                t = threading.Thread(target=self._pump, args=(a, b, up, mode), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _read_frame(s):
        hdr = b""
        while len(hdr) < 2:
            got = s.recv(2 - len(hdr))
            if not got:
                return None
            hdr += got
        n = int.from_bytes(hdr, "big")
        body = b""
        while len(body) < n:
            got = s.recv(n - len(body))
            if not got:
                return None
            body += got
        return hdr + body

    def _pump(self, src, dst, upstream, mode):
        # Only the dialer-to-listener direction is ever spoiled. Frame 1 of
        # that direction is handshake message 1, frame 2 is message 3, later
        # frames are transport messages.
        rnd = random.Random(11)
        garbage = bytes(rnd.getrandbits(8) for _ in range(120))
        n = 0
        src.settimeout(None)
        try:
            while not self.stop:
                f = self._read_frame(src)
                if f is None:
                    break
                n += 1
                if upstream and mode == "during" and n == 2:
                    dst.sendall(len(garbage).to_bytes(2, "big") + garbage)
                    self.spoiled.append("during")
                    continue
                dst.sendall(f)
                if upstream and mode == "after" and n == 3:
                    dst.sendall(len(garbage).to_bytes(2, "big") + garbage)
                    self.spoiled.append("after")
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.srv.close()


@tap.case
def garbage_during_and_after_handshake_from_member_link():
    lab = Lab()
    proxy = None
    try:
        a = lab.founder()
        b = pair(lab, a, "beta")
        proxy = FrameProxy(a.port)
        # gamma listens nowhere: the only way it reaches alpha is the proxy,
        # the address it joined through and remembers.
        g = lab.dev("gamma")
        Agent.start(g, ["--no-listen"])
        p, first = start_pair(a)
        g.json("join", first["code"], "--peer", proxy.addr, "--name", "gamma",
               "--no-passphrase")
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err.decode()
        converge([a, b, g])
        # Spoil gamma's next two sessions: garbage in place of handshake
        # message 3, then garbage right after a good first transport frame.
        proxy.plan = ["during", "after"]
        g.stop()
        Agent.start(g, ["--no-listen"])
        rec = b.json("new", "--rp", "while-spoiled.example", "--user", "bob")
        converge([a, b])
        # gamma's own sessions were cut, but its dialer retries and the third
        # connection through the proxy is faithful: everything arrives.
        converge([a, b, g], timeout=90)
        assert rec["id"] in g.ids()
        assert proxy.spoiled == ["during", "after"], proxy.spoiled
        assert a.alive() and b.alive() and g.alive()
        log = a.read_log()
        assert "handshake from" in log and "failed" in log, log[-2000:]
        assert "did not authenticate; closed" in log, log[-2000:]
        tap_note("; ".join(l.split("net: ", 1)[-1] for l in log.splitlines()
                           if "net: handshake from" in l or "did not authenticate" in l))
    finally:
        if proxy:
            proxy.close()
        lab.cleanup()


sys.exit(tap.run(sys.argv[2:]))
