#!/usr/bin/python3
"""pksync-agent as a FIDO2 security key, driven by independent FIDO clients.

Real agents serve CTAPHID on --ctaphid-socket (one datagram = one 64-byte HID
report, as on a hidraw node) and ask the person through a pinentry program,
here tests/integration/fake-pinentry. The clients share no code with pksync:
python3-fido2 (Fido2Client, Fido2Server, Ctap2) and libfido2 (through
tests/interop/fido2-socket), plus a raw CTAPHID client for misuse.

usage: test_authn.py BUILD_DIR SOURCE_DIR FIDO2_SOCKET [case-filter]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctaphid_socket as hid  # noqa: E402
from pkslib import Agent, Tap, b64u_decode, b64u_encode, free_port  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from fido2 import cbor  # noqa: E402
from fido2.client import Fido2Client  # noqa: E402
from fido2.cose import CoseKey  # noqa: E402
from fido2.ctap import STATUS, CtapError  # noqa: E402
from fido2.ctap2 import Ctap2  # noqa: E402
from fido2.hid import CTAPHID  # noqa: E402
from fido2.server import Fido2Server  # noqa: E402
from fido2.webauthn import PublicKeyCredentialParameters  # noqa: E402

BUILD, SOURCE, FIDO2_SOCKET = sys.argv[1], sys.argv[2], sys.argv[3]
FAKE_PINENTRY = os.path.join(SOURCE, "tests", "integration", "fake-pinentry")


class AuthnTap(Tap):
    """pkslib's Tap plus TAP's TODO directive: a case that shows a known,
    reported bug still runs and prints its failure, but as "not ok # TODO"
    (meson: expected fail); once the bug is fixed it reports "ok # TODO",
    which meson counts as an unexpected pass, so the mark gets removed."""

    def __init__(self):
        super().__init__()
        self.todo = {}

    def run(self, argv):
        only = argv[1] if len(argv) > 1 else None
        cases = [c for c in self.cases if only is None or only in c.__name__]
        print("1..%d" % len(cases), flush=True)
        failed = 0
        for i, fn in enumerate(cases, 1):
            todo = self.todo.get(fn.__name__)
            directive = " # TODO " + todo if todo else ""
            try:
                fn()
                print("ok %d %s%s" % (i, fn.__name__, directive), flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure as TAP
                import traceback

                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                msg = str(e)[:200].replace("#", "")
                print("not ok %d %s: %s%s" % (i, fn.__name__, msg, directive), flush=True)
                if not todo:
                    failed += 1
        return 1 if failed else 0


tap = AuthnTap()

FLAG_UP, FLAG_UV, FLAG_BE, FLAG_BS = 0x01, 0x04, 0x08, 0x10
ES256, EDDSA = -7, -8
ALG_NAME = {ES256: "ES256", EDDSA: "EdDSA"}

ERR_INVALID_CBOR = 0x12
ERR_CREDENTIAL_EXCLUDED = 0x19
ERR_OPERATION_DENIED = 0x27
ERR_KEEPALIVE_CANCEL = 0x2D
ERR_NO_CREDENTIALS = 0x2E
ERR_USER_ACTION_TIMEOUT = 0x2F
ERR_NOT_ALLOWED = 0x30


def note(text):
    for line in str(text).splitlines():
        print("# " + line, flush=True)


class Dev(Agent):
    """An agent on a loopback port serving CTAPHID on a socket, asking the
    person through the fake pinentry (whose answers a config file sets)."""

    def __init__(self, root, name, up_timeout=None):
        super().__init__(BUILD, root=root, name=name)
        self.name = name
        self.addr = "127.0.0.1:%d" % free_port()
        self.hid_path = os.path.join(root, name + ".hid")
        self.pin_conf = os.path.join(root, name + ".pinentry.conf")
        self.pin_log = os.path.join(root, name + ".pinentry.log")
        self.up_timeout = up_timeout
        # A wrapper rather than the environment, so the test does not depend
        # on which variables the agent passes on to its pinentry.
        self.pinentry = os.path.join(root, name + ".pinentry")
        with open(self.pinentry, "w") as f:
            f.write("#!/bin/sh\nexport FAKE_PINENTRY_CONFIG='%s'\nexport FAKE_PINENTRY_LOG='%s'\n"
                    "exec /usr/bin/python3 '%s' \"$@\"\n"
                    % (self.pin_conf, self.pin_log, FAKE_PINENTRY))
        os.chmod(self.pinentry, 0o700)
        self.answer("allow")

    def answer(self, mode, pin="", delay=0):
        """What the next prompts answer (read by the pinentry at each prompt)."""
        with open(self.pin_conf + ".tmp", "w") as f:
            f.write("MODE=%s\nPIN=%s\nDELAY=%s\n" % (mode, pin, delay))
        os.replace(self.pin_conf + ".tmp", self.pin_conf)

    def start(self, extra=()):
        args = ["--listen", self.addr, "--ctaphid-socket", self.hid_path,
                "--pinentry", self.pinentry]
        if self.up_timeout is not None:
            args += ["--up-timeout", str(self.up_timeout)]
        super().start(args + list(extra))
        deadline = time.time() + 10
        while not os.path.exists(self.hid_path):
            if time.time() > deadline:
                raise RuntimeError("no CTAPHID socket at %s: %s" % (self.hid_path,
                                                                   self.read_log()))
            time.sleep(0.05)
        return self

    def device(self, **kw):
        return hid.open_device(self.hid_path, **kw)

    def ctap2(self, **kw):
        return Ctap2(self.device(**kw))

    def read_log_full(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def pinentry_log(self):
        try:
            with open(self.pin_log, encoding="utf-8") as f:
                return [urllib.parse.unquote(l.rstrip("\n")) for l in f]
        except OSError:
            return []

    def records(self):
        return self.json("list")

    def digest(self):
        return self.json("status")["digest"]


class Lab:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="pks-authn-")
        self.devs = []

    def dev(self, name, **kw):
        d = Dev(self.root, name, **kw)
        self.devs.append(d)
        return d

    def founder(self, name="alpha", passphrase=None, **kw):
        d = self.dev(name, **kw).start()
        d.init(name=name, passphrase=passphrase)
        return d

    def cleanup(self):
        for d in self.devs:
            if d.proc is not None and not d.alive():
                note("%s's agent died (exit %s); its log ends:\n%s"
                     % (d.name, d.proc.returncode, d.read_log()[-3000:]))
            d.stop()
        if os.environ.get("PKSYNC_AUTHN_KEEP"):
            note("kept " + self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def pair(lab, sponsor, name):
    """A new device joins through sponsor (as test_sync.py does it)."""
    d = lab.dev(name).start()
    p = subprocess.Popen([sponsor.cli_bin, "--state-dir", sponsor.state_dir, "pair", "--json",
                          "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=sponsor.env)
    try:
        first = json.loads(p.stdout.readline() or b"null")
        if not first:
            raise RuntimeError("pair printed nothing: " + p.stderr.read().decode())
        d.json("join", first["code"], "--peer", sponsor.addr, "--name", name, "--no-passphrase")
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err.decode()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return d


def converge(devs, timeout=30):
    deadline = time.time() + timeout
    digests = []
    while time.time() < deadline:
        digests = [d.digest() for d in devs]
        if len(set(digests)) == 1:
            return digests[0]
        time.sleep(0.1)
    raise AssertionError("no convergence: %r" % digests)


def expect_ctap_error(code, fn, *args, **kw):
    """Runs fn and requires CtapError code; returns the seconds it took."""
    t0 = time.monotonic()
    try:
        res = fn(*args, **kw)
    except CtapError as e:
        took = time.monotonic() - t0
        if e.code != code:
            raise AssertionError("CTAP error 0x%02x, expected 0x%02x" % (e.code, code))
        return took
    raise AssertionError("expected CTAP error 0x%02x, got a success: %r" % (code, res))


def check_flags(auth_data, what, uv=False):
    flags = auth_data.flags
    assert flags & FLAG_UP, "%s: UP not set (flags 0x%02x)" % (what, flags)
    assert flags & FLAG_BE, "%s: BE not set (flags 0x%02x)" % (what, flags)
    assert flags & FLAG_BS, "%s: BS not set (flags 0x%02x)" % (what, flags)
    assert bool(flags & FLAG_UV) == uv, "%s: UV is %s (flags 0x%02x)" % (what, not uv, flags)
    assert auth_data.counter == 0, "%s: signCount %d" % (what, auth_data.counter)


def cdh():
    return os.urandom(32)


RP = {"id": "example.com", "name": "Example"}


def make(ctap, user, rp=RP, alg=ES256, **kw):
    """makeCredential through Ctap2; returns (AttestationResponse, cred data)."""
    att = ctap.make_credential(cdh(), rp, user, [{"type": "public-key", "alg": alg}],
                               options={"rk": True}, **kw)
    return att, att.auth_data.credential_data


def user_entity(name):
    return {"id": name.encode() + b"-id", "name": name, "displayName": name.title()}


# --- python3-fido2 and libfido2 across two paired devices --------------------

_pair_lab = {}


def paired():
    """alpha (founder) and beta (joined through alpha), each with a socket."""
    if "lab" not in _pair_lab:
        lab = Lab()
        _pair_lab["lab"] = lab
        a = lab.founder("alpha")
        b = pair(lab, a, "beta")
        converge([a, b])
        _pair_lab["devs"] = (a, b)
    return _pair_lab["devs"]


def fido2_register(dev, server, user, alg):
    server.allowed_algorithms = [PublicKeyCredentialParameters("public-key", alg)]
    options, state = server.register_begin(user, resident_key=True,
                                           user_verification="discouraged")
    client = Fido2Client(dev, "https://example.com")
    res = client.make_credential(options["publicKey"])
    auth_data = server.register_complete(state, res.client_data, res.attestation_object)
    return res.attestation_object, auth_data


@tap.case
def fido2_register_on_one_device_login_on_another():
    a, b = paired()
    server = Fido2Server({"id": "example.com", "name": "Example"})
    creds = {}
    dev = a.device()
    try:
        for alg, name in ((ES256, "alice"), (EDDSA, "bob")):
            att, auth_data = fido2_register(dev, server, user_entity(name), alg)
            cd = auth_data.credential_data
            assert cd.public_key.ALGORITHM == alg, (cd.public_key, alg)
            check_flags(auth_data, "registration %s" % ALG_NAME[alg])
            note("registered %s (%s) through alpha's socket: fmt %s, flags 0x%02x, "
                 "id %d bytes" % (name, ALG_NAME[alg], att.fmt, auth_data.flags,
                                  len(cd.credential_id)))
            creds[name] = cd
    finally:
        dev.close()
    # The passkeys are vault records on alpha.
    recs = {r["credential_id"]: r for r in a.records()}
    for name, cd in creds.items():
        r = recs.get(b64u_encode(cd.credential_id))
        assert r is not None, "%s's credential not in alpha's pksync list" % name
        assert r["rp_id"] == "example.com" and r["user_name"] == name, r
        assert r["alg"] == cd.public_key.ALGORITHM, r
        assert r["backup_eligible"] is True and r["backup_state"] is True, r
        assert b64u_decode(r["user_handle"]) == user_entity(name)["id"], r
        spki = serialization.load_der_public_key(b64u_decode(r["public_key"]))
        assert CoseKey.for_alg(r["alg"]).from_cryptography_key(spki) == cd.public_key, r
    # After sync --wait they are on beta.
    res = a.json("sync", "--wait", "--timeout", "20")
    assert res.get("in_sync"), res
    on_b = {r["credential_id"] for r in b.records()}
    for name, cd in creds.items():
        assert b64u_encode(cd.credential_id) in on_b, "%s's credential not on beta" % name

    # Discoverable login through beta's socket: no allowList.
    dev = b.device()
    try:
        client = Fido2Client(dev, "https://example.com")
        options, state = server.authenticate_begin([], user_verification="discouraged")
        assert not options["publicKey"].allow_credentials
        sel = client.get_assertion(options["publicKey"])
        got = sel.get_assertions()
        assert len(got) == 2, "discoverable login offered %d credentials" % len(got)
        seen = set()
        for i in range(len(got)):
            r = sel.get_response(i)
            server.authenticate_complete(state, list(creds.values()), r.credential_id,
                                         r.client_data, r.authenticator_data, r.signature)
            check_flags(r.authenticator_data, "discoverable assertion %d" % i)
            name = [n for n, cd in creds.items() if cd.credential_id == r.credential_id][0]
            assert r.user_handle == user_entity(name)["id"], r.user_handle
            seen.add(name)
        assert seen == {"alice", "bob"}, seen
        # allowList login, one credential at a time.
        for name, cd in creds.items():
            options, state = server.authenticate_begin([cd], user_verification="discouraged")
            sel = client.get_assertion(options["publicKey"])
            assert len(sel.get_assertions()) == 1
            r = sel.get_response(0)
            assert r.credential_id == cd.credential_id
            server.authenticate_complete(state, [cd], r.credential_id, r.client_data,
                                         r.authenticator_data, r.signature)
            check_flags(r.authenticator_data, "allowList assertion for %s" % name)
        # A signature made over other data must not verify: the check can fail.
        r = sel.get_response(0)
        try:
            server.authenticate_complete(state, [cd], r.credential_id, r.client_data,
                                         r.authenticator_data, r.signature[:-1] + bytes(
                                             [r.signature[-1] ^ 1]))
        except ValueError:
            pass
        else:
            raise AssertionError("a corrupted signature verified")
        note("beta: discoverable login (2 credentials) and allowList logins verified by "
             "Fido2Server.authenticate_complete; BE, BS set, signCount 0")
    finally:
        dev.close()


def run_fido2_socket(dev, *args, timeout=60):
    p = subprocess.run([FIDO2_SOCKET, dev.hid_path, *args], capture_output=True,
                       timeout=timeout)
    out = p.stdout.decode(errors="replace")
    fields = {}
    for line in out.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            fields.setdefault(k, v)
    return p.returncode, out + p.stderr.decode(errors="replace"), fields


@tap.case
def libfido2_register_on_one_device_login_on_another():
    a, b = paired()
    with tempfile.TemporaryDirectory() as tmp:
        made = []
        for alg, kind, user in ((ES256, "es256", "carol"), (EDDSA, "eddsa", "dave")):
            pem = os.path.join(tmp, kind + ".pem")
            rc, out, f = run_fido2_socket(a, "make", "libfido2.example", user, "--alg", kind,
                                          "--pubkey-out", pem)
            assert rc == 0, "fido2-socket make (%s) failed:\n%s" % (kind, out)
            note("libfido2 make %s: fmt %s, flags %s, x5c %s, %s" % (
                kind, f.get("fmt"), f.get("flags"), f.get("x5c"), f.get("verify")))
            flags = int(f["flags"], 16)
            assert flags & FLAG_BE and flags & FLAG_BS and flags & FLAG_UP, f["flags"]
            assert f["sigcount"] == "0", f["sigcount"]
            assert int(f["type"]) == alg, f["type"]
            made.append((kind, f["id"], pem, user))
        recs = {r["credential_id"]: r for r in a.records()}
        for kind, cid, _, user in made:
            assert cid in recs and recs[cid]["user_name"] == user, (cid, sorted(recs))
        res = a.json("sync", "--wait", "--timeout", "20")
        assert res.get("in_sync"), res
        on_b = {r["credential_id"] for r in b.records()}
        for kind, cid, pem, user in made:
            assert cid in on_b, "%s not on beta" % user
            rc, out, f = run_fido2_socket(b, "assert", "libfido2.example", cid, pem,
                                          "--alg", kind)
            assert rc == 0, "fido2-socket assert (%s) failed:\n%s" % (kind, out)
            flags = int(f["flags"], 16)
            assert flags & FLAG_BE and flags & FLAG_BS and flags & FLAG_UP, f["flags"]
            assert f["sigcount"] == "0", f
            assert f.get("verify 0", "").startswith("ok "), out
        # Discoverable (no allowList): libfido2 collects both with
        # getNextAssertion; the ES256 key verifies exactly one of them.
        rc, out, f = run_fido2_socket(b, "assert", "libfido2.example", "-", made[0][2])
        assert rc == 0, out
        assert f["count"] == "2", out
        assert sum(1 for k in ("verify 0", "verify 1") if f.get(k, "").startswith("ok ")) == 1, out
        # The other account's key does not verify the first one's assertion.
        rc, out, f = run_fido2_socket(b, "assert", "libfido2.example", made[0][1], made[1][2],
                                      "--alg", "eddsa")
        assert rc != 0 and f.get("verify 0", "").startswith("failed"), out
        note("libfido2 (fido2-socket): ES256 and EdDSA made on alpha, asserted and verified "
             "with fido_assert_verify on beta")


# --- one device: refusals, two accounts, prompts, latency -------------------

_solo = {}


def solo():
    """One device with --up-timeout 2 and a credential at example.com.

    The cases share one fido2 connection (_solo["ctap"]), as a browser keeps
    the device open: a client leaving just as another connects is a case of
    its own (reconnect_right_after_a_client_leaves).
    """
    if "dev" not in _solo:
        lab = Lab()
        _solo["lab"] = lab
        d = lab.founder("solo", up_timeout=2)
        _solo["ctap"] = d.ctap2()
        _, cd = make(_solo["ctap"], user_entity("alice"))
        _solo["dev"] = d
        _solo["cred"] = cd
    return _solo["dev"], _solo["cred"]


def good_request(d, cred):
    """A following good request works: an allowList login, verified."""
    ctap = _solo["ctap"]
    h = cdh()
    r = ctap.get_assertion("example.com", h, [{"type": "public-key", "id": cred.credential_id}])
    r.verify(h, cred.public_key)
    check_flags(r.auth_data, "good request")


def confirms(d):
    return sum(1 for l in d.pinentry_log() if l.split(" ", 1)[0] == "CONFIRM")


@tap.case
def refusals_presence_denied_and_timed_out():
    d, cred = solo()
    ctap = _solo["ctap"]
    user = user_entity("mallory")
    for mode, code in (("deny", ERR_OPERATION_DENIED), ("timeout", ERR_USER_ACTION_TIMEOUT)):
        d.answer(mode)
        n = len(d.records())
        took = expect_ctap_error(code, make, ctap, user)
        assert len(d.records()) == n, "a refused makeCredential stored a passkey"
        took2 = expect_ctap_error(code, ctap.get_assertion, "example.com", cdh())
        note("pinentry %s: makeCredential and getAssertion 0x%02x (%.0f ms, %.0f ms)"
             % (mode, code, took * 1000, took2 * 1000))
        d.answer("allow")
        good_request(d, cred)
    # A pinentry that never answers: the agent gives up after --up-timeout 2.
    d.answer("hang")
    took = expect_ctap_error(ERR_USER_ACTION_TIMEOUT, ctap.get_assertion, "example.com", cdh())
    note("pinentry hang with --up-timeout 2: 0x2f after %.2f s (the pinentry's own 2 s, "
         "then the agent's grace)" % took)
    assert 1.5 <= took <= 10, "answered after %.2f s, not about 2 s" % took
    d.answer("allow")
    good_request(d, cred)
    assert d.alive()


@tap.case
def refusals_excluded_unknown_rp_and_bad_cbor():
    d, cred = solo()
    ctap = _solo["ctap"]
    n = len(d.records())
    expect_ctap_error(ERR_CREDENTIAL_EXCLUDED, make, ctap, user_entity("alice2"),
                      exclude_list=[{"type": "public-key", "id": cred.credential_id}])
    assert len(d.records()) == n, "an excluded makeCredential stored a passkey"
    good_request(d, cred)
    before = confirms(d)
    expect_ctap_error(ERR_NO_CREDENTIALS, ctap.get_assertion, "nobody.example", cdh())
    expect_ctap_error(ERR_NO_CREDENTIALS, ctap.get_assertion, "example.com", cdh(),
                      [{"type": "public-key", "id": b"\x01" * 32}])
    assert confirms(d) == before, "the person was asked about an rp without credentials"
    good_request(d, cred)
    # Broken CBOR is INVALID_CBOR (0x12); well-formed CBOR of the wrong type
    # (an array for the parameter map) may say CBOR_UNEXPECTED_TYPE (0x11).
    bad = {
        "truncated map": (b"\x02\xa2\x01", {ERR_INVALID_CBOR}),
        "trailing bytes": (b"\x02" + cbor.encode({1: "example.com", 2: b"\0" * 32}) + b"\x00",
                           {ERR_INVALID_CBOR}),
        "indefinite map": (b"\x02\xbf\x01\x6bexample.com\x02\x58\x20" + b"\0" * 32 + b"\xff",
                           {ERR_INVALID_CBOR}),
        "duplicate key": (b"\x02\xa3\x01\x6bexample.com\x01\x6bexample.com\x02\x58\x20"
                          + b"\0" * 32, {ERR_INVALID_CBOR}),
        "bad utf-8 rp id": (b"\x02\xa2\x01\x62\xff\xfe\x02\x58\x20" + b"\0" * 32,
                            {ERR_INVALID_CBOR}),
        "not a map": (b"\x01\x82\x01\x02", {ERR_INVALID_CBOR, 0x11}),
    }
    for what, (req, codes) in bad.items():
        resp = ctap.device.call(CTAPHID.CBOR, req)
        assert resp[:1] and resp[0] in codes and len(resp) == 1, \
            "%s: answered %s" % (what, resp[:8].hex())
        note("malformed CBOR (%s): status 0x%02x" % (what, resp[0]))
    # The device still answers on the same channel.
    info = ctap.get_info()
    assert "FIDO_2_0" in info.versions, info
    good_request(d, cred)


def cbor_make_request(rp="example.com", name="raw"):
    params = {1: cdh(), 2: {"id": rp, "name": "Example"},
              3: {"id": name.encode(), "name": name},
              4: [{"type": "public-key", "alg": ES256}], 7: {"rk": True}}
    return bytes([Ctap2.CMD.MAKE_CREDENTIAL]) + cbor.encode(params)


@tap.case
def ctaphid_misuse_over_raw_reports():
    d, cred = solo()
    d.answer("allow")
    with hid.RawCtaphid(d.hid_path) as raw, hid.RawCtaphid(d.hid_path) as other:
        cid = raw.init_channel()
        cid2 = other.init_channel()
        assert cid != cid2 and cid not in (0, hid.BROADCAST), (cid, cid2)
        # A continuation packet out of sequence.
        payload = bytes(range(100))
        raw.send(hid.init_report(cid, hid.PING, len(payload), payload[:57]))
        raw.send(hid.cont_report(cid, 1, payload[57:]))
        r = raw.recv(cid)
        assert r.cmd == hid.ERROR and r.payload[:1] == bytes([hid.ERR_INVALID_SEQ]), r
        # A channel nobody allocated, and channel 0.
        for bogus in (0x0BADCAFE if 0x0BADCAFE not in (cid, cid2) else 0x0BADCAFF, 0):
            raw.send(hid.init_report(bogus, hid.PING, 1, b"x"))
            r = raw.recv(bogus)
            assert r.cmd == hid.ERROR and r.payload[:1] == bytes([hid.ERR_INVALID_CHANNEL]), r
        # A message started and abandoned: busy for others, then timed out.
        raw.send(hid.init_report(cid, hid.PING, len(payload), payload[:57]))
        t0 = time.monotonic()
        other.send(hid.init_report(cid2, hid.PING, 1, b"y"))
        r = other.recv(cid2)
        assert r.cmd == hid.ERROR and r.payload[:1] == bytes([hid.ERR_CHANNEL_BUSY]), r
        r = raw.recv(cid, timeout=5)
        took = time.monotonic() - t0
        assert r.cmd == hid.ERROR and r.payload[:1] == bytes([hid.ERR_MSG_TIMEOUT]), r
        assert 0.3 <= took <= 3, "message timeout after %.2f s" % took
        note("ERR_MSG_TIMEOUT after %.0f ms of silence" % (took * 1000))
        # Both channels work again.
        assert raw.transact(cid, hid.PING, payload).payload == payload
        assert other.transact(cid2, hid.PING, b"z").payload == b"z"

        # A request at the prompt: keepalives say UPNEEDED, another channel
        # is busy, and CANCEL ends it with KEEPALIVE_CANCEL.
        d.answer("hang")
        raw.send_message(cid, hid.CBOR, cbor_make_request())
        statuses = []
        deadline = time.monotonic() + 5
        while hid.STATUS_UPNEEDED not in statuses and time.monotonic() < deadline:
            r = raw.recv(cid, timeout=5, stop_on_keepalive=True)
            assert r.cmd == hid.KEEPALIVE, "answered before the prompt: %r" % r
            statuses.append(r.payload[0])
        assert hid.STATUS_UPNEEDED in statuses, "keepalive statuses %r" % statuses
        note("keepalives while the prompt is open: %d, statuses %s" % (
            len(statuses), sorted(set(statuses))))
        other.send(hid.init_report(cid2, hid.PING, 1, b"y"))
        r = other.recv(cid2)
        assert r.cmd == hid.ERROR and r.payload[:1] == bytes([hid.ERR_CHANNEL_BUSY]), r
        n = len(d.records())
        t0 = time.monotonic()
        raw.send(hid.init_report(cid, hid.CANCEL, 0))
        r = raw.recv(cid, timeout=5)
        assert r.cmd == hid.CBOR and r.payload == bytes([ERR_KEEPALIVE_CANCEL]), r
        note("CANCEL during the prompt: answered 0x2d after %.0f ms"
             % ((time.monotonic() - t0) * 1000))
        assert len(d.records()) == n, "a cancelled makeCredential stored a passkey"
        d.answer("allow")
        r = raw.transact(cid, hid.CBOR, bytes([Ctap2.CMD.GET_INFO]))
        assert r.cmd == hid.CBOR and r.payload[:1] == b"\0", r
    good_request(d, cred)


@tap.case
def keepalive_upneeded_seen_by_fido2():
    d, cred = solo()
    d.answer("allow", delay=0.6)
    seen = []
    try:
        ctap = _solo["ctap"]
        h = cdh()
        r = ctap.get_assertion("example.com", h,
                               [{"type": "public-key", "id": cred.credential_id}],
                               on_keepalive=seen.append)
        r.verify(h, cred.public_key)
    finally:
        d.answer("allow")
    assert STATUS.UPNEEDED in seen, "fido2 saw keepalive statuses %r" % seen


@tap.case
def two_accounts_at_one_rp():
    d, _ = solo()
    d.answer("allow")
    ctap = _solo["ctap"]
    rp = {"id": "two.example", "name": "Two"}
    keys = {}
    for name in ("ann", "ben"):
        _, cd = make(ctap, user_entity(name), rp=rp)
        keys[cd.credential_id] = (name, cd)
    h = cdh()
    first = ctap.get_assertion("two.example", h)
    assert first.number_of_credentials == 2, first
    second = ctap.get_next_assertion()
    got = []
    for r in (first, second):
        name, cd = keys[r.credential["id"]]
        r.verify(h, cd.public_key)
        check_flags(r.auth_data, "assertion for " + name)
        assert r.user["id"] == user_entity(name)["id"], r.user
        got.append(name)
    assert sorted(got) == ["ann", "ben"], got
    expect_ctap_error(ERR_NOT_ALLOWED, ctap.get_next_assertion)
    note("two.example: numberOfCredentials 2, first %s, getNextAssertion %s" % tuple(got))


@tap.case
def prompt_names_rp_and_account():
    d, cred = solo()
    d.answer("allow")
    ctap = _solo["ctap"]
    start = len(d.pinentry_log())
    make(ctap, user_entity("zoe"), rp={"id": "prompt.example", "name": "Prompt"})
    h = cdh()
    ctap.get_assertion("prompt.example", h)
    lines = d.pinentry_log()[start:]
    note("pinentry got: " + " | ".join(l[:100] for l in lines))
    text = "\n".join(l for l in lines if l.split(" ", 1)[0] in ("SETDESC", "SETTITLE",
                                                                "SETPROMPT"))
    assert "prompt.example" in text, "the prompt does not name the rp id"
    assert "zoe" in text or "Zoe" in text, "the prompt does not name the account"
    assert sum(1 for l in lines if l.startswith("CONFIRM")) == 2, lines


@tap.case
def latency_over_the_socket():
    d, cred = solo()
    d.answer("allow")
    ctap = _solo["ctap"]
    allow = [{"type": "public-key", "id": cred.credential_id}]
    figures = {}
    for what, n, fn in (
            ("getAssertion (up, pinentry allow)", 20,
             lambda: ctap.get_assertion("example.com", cdh(), allow)),
            ("getAssertion (up=false, no prompt)", 20,
             lambda: ctap.get_assertion("example.com", cdh(), allow, options={"up": False})),
            ("makeCredential (pinentry allow)", 10,
             lambda: make(ctap, user_entity("lat%d" % time.monotonic_ns()),
                          rp={"id": "latency.example"}))):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        figures[what] = sum(times) / n
        note("latency: %s mean %.1f ms over %d (min %.1f, max %.1f)"
             % (what, figures[what], n, min(times), max(times)))
    note("the prompted figures include starting the fake pinentry (python3) each time")


@tap.case
def reconnect_right_after_a_client_leaves():
    """A browser closes the device as another program opens it: the agent
    must drop the old client and serve the new one."""
    lab = Lab()
    try:
        d = lab.founder("reconnect")
        for i in range(10):
            old = d.device()
            # Right after a makeCredential the agent is busy (store, sync,
            # the pinentry exiting), so the hang-up and the new connection
            # reach it in one loop iteration.
            make(Ctap2(old), user_entity("r%d" % i), rp={"id": "reconnect.example"})
            old.close()
            try:
                new = d.device()  # connects at once, while the old one is being dropped
                assert "FIDO_2_0" in Ctap2(new).get_info().versions
                new.close()
            except OSError as e:
                time.sleep(0.2)
                raise AssertionError("reconnect %d failed (%s); agent alive: %s"
                                     % (i, e, d.alive()))
            assert d.alive(), "the agent died at reconnect %d" % i
        time.sleep(0.2)
        assert d.alive(), "the agent died after the reconnects"
    finally:
        lab.cleanup()


# --- user verification with the vault passphrase ----------------------------

@tap.case
def uv_offered_as_soon_as_the_vault_has_a_passphrase():
    lab = Lab()
    try:
        d = lab.founder("uvinit", passphrase="a passphrase set by init")
        ctap = d.ctap2()
        opts = ctap.get_info().options
        assert opts.get("uv") is True, "getInfo options after init: %r" % opts
    finally:
        lab.cleanup()


@tap.case
def user_verification_with_the_passphrase():
    passphrase = "tr0ub4dor&3 pksync-uv"
    lab = Lab()
    try:
        d = lab.founder("uv", passphrase=passphrase, up_timeout=5)
        ctap = d.ctap2()
        uv_before = ctap.get_info().options.get("uv")
        if uv_before is not True:
            # agent/authn.c decides uv_configured once, when the agent starts.
            note("getInfo right after 'pksync init --passphrase-file' on the running agent: "
                 "uv %r (offered only after a restart)" % uv_before)
        ctap.device.close()
        # The usual life of a passphrase vault: the agent starts locked.
        d.stop()
        d.start()
        assert d.json("status")["locked"] is True
        d.cli("unlock", "--passphrase-file",
              os.path.join(d.root, "pass-" + os.path.basename(d.state_dir)))
        ctap = d.ctap2()
        info = ctap.get_info()
        assert info.options.get("uv") is True, "getInfo options %r" % info.options
        d.answer("allow", pin=passphrase)
        att = ctap.make_credential(cdh(), RP, user_entity("ursula"),
                                   [{"type": "public-key", "alg": ES256}],
                                   options={"rk": True, "uv": True})
        cd = att.auth_data.credential_data
        check_flags(att.auth_data, "uv registration", uv=True)
        log = d.pinentry_log()
        assert any(l.startswith("GETPIN") for l in log), log
        h = cdh()
        r = ctap.get_assertion("example.com", h, options={"uv": True})
        r.verify(h, cd.public_key)
        check_flags(r.auth_data, "uv assertion", uv=True)
        # Without uv the flag stays clear.
        h = cdh()
        r = ctap.get_assertion("example.com", h)
        r.verify(h, cd.public_key)
        check_flags(r.auth_data, "up-only assertion", uv=False)
        # A wrong passphrase is refused.
        d.answer("allow", pin="not the passphrase")
        t0 = time.monotonic()
        try:
            ctap.get_assertion("example.com", cdh(), options={"uv": True})
            raise AssertionError("a wrong passphrase verified the user")
        except CtapError as e:
            # agent/authn.c refuses a wrong passphrase as OPERATION_DENIED.
            assert e.code == ERR_OPERATION_DENIED, \
                "wrong passphrase: CTAP error 0x%02x" % e.code
            note("wrong passphrase: CTAP error 0x%02x after %.0f ms"
                 % (e.code, (time.monotonic() - t0) * 1000))
        # Right after a wrong passphrase, verification is refused without a
        # prompt for a while (1 s after the first, doubling), like unlock.
        prompts = sum(1 for l in d.pinentry_log() if l.startswith("GETPIN"))
        try:
            ctap.get_assertion("example.com", cdh(), options={"uv": True})
            raise AssertionError("verification right after a wrong passphrase")
        except CtapError as e:
            assert e.code == ERR_OPERATION_DENIED, "0x%02x" % e.code
        assert sum(1 for l in d.pinentry_log() if l.startswith("GETPIN")) == prompts, \
            "a prompt was shown while verification is blocked"
        d.answer("allow", pin=passphrase)
        deadline = time.time() + 15
        while True:  # the agent throttles after a wrong passphrase
            try:
                h = cdh()
                r = ctap.get_assertion("example.com", h, options={"uv": True})
                break
            except CtapError as e:
                if time.time() > deadline:
                    raise AssertionError("the right passphrase stays refused (0x%02x)"
                                         % e.code)
                time.sleep(1)
        r.verify(h, cd.public_key)
        check_flags(r.auth_data, "uv assertion after a wrong try", uv=True)
        # The passphrase never reaches the agent's log nor the pinentry log.
        assert passphrase not in d.read_log_full(), "the passphrase is in the agent's log"
        assert not any(passphrase in l for l in d.pinentry_log()), "passphrase in pinentry log"
        assert d.alive()
    finally:
        lab.cleanup()


try:
    rc = tap.run(sys.argv[3:])
finally:
    for holder in (_pair_lab, _solo):
        if "lab" in holder:
            holder["lab"].cleanup()
sys.exit(rc)
