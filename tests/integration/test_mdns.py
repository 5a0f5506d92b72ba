#!/usr/bin/python3
"""mDNS discovery between lab hosts (tools/lab, network namespaces, root).

Real avahi-daemons in a lab of three hosts, driven through tools/mdns-probe
(transport/mdns): a publisher on h1 is found by browsers on h2 and h3 with the
right address, port and TXT; unpublish -> lost; rename -> old lost, new
found; with h3's avahi-daemon stopped the embedded avahi-core backend still
finds and is found, and returns to the daemon once it is back; a cut link ->
lost, healed -> found again; then IPv6 link-local addresses with the scope id
set. Every wait is bounded. Prints TAP; without root or network namespaces
it prints "1..0 # SKIP reason" and exits 77 (0 under meson, see skip()).

usage: test_mdns.py BUILD_ROOT SOURCE_ROOT
"""
import json
import os
import queue
import subprocess
import sys
import threading
import time

BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build"
SOURCE = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "."
PROBE = os.path.join(BUILD, "tools", "mdns-probe")
LAB = os.path.join(SOURCE, "tools", "lab")
# A lab of our own: its namespaces are named after this directory, so the
# test never touches a lab someone else has up.
LAB_DIR = "/run/pksync-lab-test-mdns-%d" % os.getpid()
ENV = dict(os.environ, PKSYNC_LAB=LAB_DIR)

results = []


def tap(ok, name, diag=None):
    results.append(ok)
    print("%s %d - %s" % ("ok" if ok else "not ok", len(results), name))
    if diag and not ok:
        for line in str(diag).splitlines():
            print("#   " + line)
    sys.stdout.flush()
    return ok


def comment(text):
    print("# " + text)
    sys.stdout.flush()


def lab(*args, check=True):
    r = subprocess.run([LAB] + [str(a) for a in args], env=ENV, capture_output=True, text=True,
                       timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError("tools/lab %s: rc %d: %s" % (" ".join(map(str, args)), r.returncode,
                                                      r.stderr.strip()))
    return r


class Probe:
    """One mdns-probe process inside a lab host; its JSON lines are queued."""

    def __init__(self, host, *args):
        self.host = host
        self.args = args
        self.events = []
        self.lock = threading.Condition()
        self.started = time.monotonic()
        self.proc = subprocess.Popen([LAB, "exec", str(host), PROBE] + list(args), env=ENV,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["_at"] = time.monotonic()
            with self.lock:
                self.events.append(ev)
                self.lock.notify_all()

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def wait(self, pred, timeout, since=0):
        """The first event from index since on matching pred, or None."""
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                for ev in self.events[since:]:
                    if pred(ev):
                        return ev
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)

    def mark(self):
        with self.lock:
            return len(self.events)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        return "\n".join(["host h%d: %s" % (self.host, " ".join(self.args))] +
                         [json.dumps({k: v for k, v in e.items() if k != "_at"})
                          for e in self.events] + self.stderr[-15:])


def found(name, addr=None):
    return lambda e: (e.get("event") == "found" and e.get("instance") == name and
                      (addr is None or e.get("addr") == addr))


def lost(name):
    return lambda e: e.get("event") == "lost" and e.get("instance") == name


def backend(name):
    return lambda e: e.get("event") == "backend" and e.get("backend") == name


def txt_hex(*pairs):
    out = b""
    for p in pairs:
        out += bytes([len(p)]) + p.encode()
    return out.hex()


def skip(reason):
    print("1..0 # SKIP " + reason)
    # meson's TAP reader takes the plan's SKIP but calls any non-zero exit an
    # error, so meson sets PKSYNC_TAP_SKIP_EXIT=0; run by hand it is 77.
    sys.exit(int(os.environ.get("PKSYNC_TAP_SKIP_EXIT", "77")))


def ipv4_suite(probes):
    hint1 = "h=0123abcd"
    b2 = Probe(2, "browse", "300")
    b3 = Probe(3, "browse", "300")
    probes += [b2, b3]
    tap(b2.wait(backend("avahi-client"), 10) is not None, "h2 browses through its avahi-daemon",
        b2.log())
    tap(b3.wait(backend("avahi-client"), 10) is not None, "h3 browses through its avahi-daemon",
        b3.log())

    pub = Probe(1, "publish", "pks-a1", "7393", "v=1", hint1)
    probes.append(pub)
    t0 = pub.started
    for b in (b2, b3):
        ev = b.wait(found("pks-a1"), 15)
        ok = tap(ev is not None and ev["addr"] == "10.77.0.1" and ev["port"] == 7393 and
                 ev["txt_hex"] == txt_hex("v=1", hint1) and ev["txt"] == {"v": "1", "h": "0123abcd"},
                 "h%d finds h1's instance with address, port and TXT" % b.host,
                 b.log() + "\n" + pub.log())
        if ok:
            comment("publish->found on h%d (browser waiting, avahi-client): %.2f s" %
                    (b.host, ev["_at"] - t0))
    ev = pub.wait(lambda e: e.get("event") == "published", 10)
    tap(ev is not None and ev["instance"] == "pks-a1", "the publisher sees its name established",
        pub.log())
    tap(pub.wait(found("pks-a1"), 0) is None, "the publisher does not report itself", pub.log())

    # Withdraw -> lost everywhere.
    m2, m3 = b2.mark(), b3.mark()
    pub.send("unpublish")
    for b, m in ((b2, m2), (b3, m3)):
        tap(b.wait(lost("pks-a1"), 10, m) is not None,
            "h%d reports the withdrawn instance lost" % b.host, b.log())

    # Rotation: a new name and TXT replace the old one.
    pub.send("rename pks-a2 v=1 h=1111")
    for b in (b2, b3):
        tap(b.wait(found("pks-a2"), 15) is not None, "h%d finds the republished instance" % b.host,
            b.log())
    m2, m3 = b2.mark(), b3.mark()
    t_rot = time.monotonic()
    pub.send("rename pks-a3 v=1 h=2222")
    for b, m in ((b2, m2), (b3, m3)):
        ev_new = b.wait(found("pks-a3"), 15, m)
        ev_old = b.wait(lost("pks-a2"), 15, m)
        tap(ev_new is not None and ev_old is not None and ev_new["txt"].get("h") == "2222",
            "h%d: rotation loses the old name and finds the new one" % b.host, b.log())
        if ev_new is not None:
            comment("rotation->found on h%d: %.2f s" % (b.host, ev_new["_at"] - t_rot))

    # h3's daemon goes away: its browser falls back to avahi-core and still
    # finds h1; a core publisher on h3 is found by h2.
    m3 = b3.mark()
    t_stop = time.monotonic()
    lab("avahi-stop", 3)
    ev = b3.wait(backend("avahi-core"), 15, m3)
    tap(ev is not None, "h3 falls back to avahi-core when its daemon is gone", b3.log())
    if ev is not None:
        comment("daemon gone->avahi-core: %.2f s" % (ev["_at"] - t_stop))
    ev = b3.wait(found("pks-a3", "10.77.0.1"), 15, m3)
    tap(ev is not None and ev["port"] == 7393, "h3 (avahi-core) finds h1's instance", b3.log())
    # A process publishing (and browsing, as the agent does) on h3 without
    # daemon: avahi-core with its own host name. (Two embedded stacks on one
    # host would both claim the host's reverse address records, so the
    # browser above steps aside first.)
    b3.stop()
    pub3 = Probe(3, "--browse", "publish", "pks-c3", "7394", "v=1", "h=3333")
    probes.append(pub3)
    ev = pub3.wait(lambda e: e.get("event") == "backend", 10)
    tap(ev is not None and ev["backend"] == "avahi-core",
        "a publisher on h3 without daemon uses avahi-core", pub3.log())
    ev = b2.wait(found("pks-c3"), 15)
    tap(ev is not None and ev["addr"] == "10.77.0.3" and ev["port"] == 7394 and
        ev["txt"].get("h") == "3333", "h2 finds the avahi-core publisher on h3", b2.log())
    if ev is not None:
        comment("publish->found (avahi-core publisher, own host name): %.2f s" %
                (ev["_at"] - pub3.started))
    tap(pub3.wait(found("pks-a3", "10.77.0.1"), 15) is not None,
        "the avahi-core publisher on h3 finds h1's instance", pub3.log())
    tap(pub3.wait(found("pks-c3"), 0) is None, "the avahi-core publisher does not report itself",
        pub3.log())

    # The daemon returns: the h3 process moves back to it.
    m2, mp3 = b2.mark(), pub3.mark()
    t_start = time.monotonic()
    lab("avahi-start", 3)
    ev = pub3.wait(backend("avahi-client"), 25, mp3)
    tap(ev is not None, "h3's process returns to the restarted avahi-daemon", pub3.log())
    if ev is not None:
        mp3 = pub3.events.index(ev)
        comment("daemon restarted->avahi-client: %.2f s (retried every 10 s)" %
                (ev["_at"] - t_start))
    tap(pub3.wait(found("pks-a3", "10.77.0.1"), 15, mp3) is not None,
        "h3 finds h1's instance again through its daemon", pub3.log())
    # When pub3 moved, its instance was withdrawn from the embedded stack and
    # published by the daemon: h2 may see it lost and found again, or nothing
    # at all. Only a lost without a found afterwards is a failure.
    b2.wait(found("pks-c3", "10.77.0.3"), 20, m2)
    last = [e for e in b2.events[m2:] if e.get("instance") == "pks-c3"]
    tap(not last or last[-1]["event"] == "found",
        "h2 still knows h3's publisher after it moved to the daemon", b2.log())
    m2 = b2.mark()
    pub3.stop()
    tap(b2.wait(lost("pks-c3"), 10, m2) is not None,
        "h2 reports h3's publisher lost when it exits", b2.log())

    # Link cut on h2: its daemon drops the interface and the instance.
    m2 = b2.mark()
    t_cut = time.monotonic()
    lab("cut", 2)
    ev = b2.wait(lost("pks-a3"), 15, m2)
    tap(ev is not None, "cut link: h2 reports h1's instance lost", b2.log())
    if ev is not None:
        comment("cut->lost: %.2f s" % (ev["_at"] - t_cut))
    m2 = b2.mark()
    t_heal = time.monotonic()
    lab("heal", 2)
    ev = b2.wait(found("pks-a3", "10.77.0.1"), 20, m2)
    tap(ev is not None, "healed link: h2 finds h1's instance again", b2.log())
    if ev is not None:
        comment("heal->found: %.2f s" % (ev["_at"] - t_heal))
    # Daemon restarts: the browser's (h2) and the publisher's (h1). Both
    # processes reconnect to the new daemon (no detour through avahi-core);
    # the instance comes back.
    m2, mp = b2.mark(), pub.mark()
    lab("avahi-start", 2)
    ev = b2.wait(backend("avahi-client"), 20, m2 + 1)
    tap(ev is not None and b2.wait(backend("avahi-core"), 0, m2) is None,
        "h2's browser reconnects to its restarted daemon", b2.log())
    tap(b2.wait(found("pks-a3", "10.77.0.1"), 15, m2) is not None,
        "h2 finds h1's instance after its daemon restarted", b2.log())
    m2 = b2.mark()
    lab("avahi-start", 1)
    ev = pub.wait(lambda e: e.get("event") == "published" and e.get("instance") == "pks-a3", 20,
                  mp)
    tap(ev is not None and pub.wait(backend("avahi-core"), 0, mp) is None,
        "h1's publisher republishes through its restarted daemon", pub.log())
    ev = b2.wait(found("pks-a3", "10.77.0.1"), 20, m2)
    tap(ev is not None, "h2 finds h1's instance after h1's daemon restarted", b2.log())

    pub.stop()
    for b in (b2,):
        tap(b.wait(lost("pks-a3"), 10) is not None,
            "h%d reports h1's instance lost when the publisher exits" % b.host, b.log())
        b.stop()


def ipv6_suite(probes):
    b2 = Probe(2, "browse", "120")
    probes.append(b2)
    b2.wait(backend("avahi-client"), 10)
    pub = Probe(1, "publish", "pks-v6", "7393", "v=1")
    probes.append(pub)
    ev6 = b2.wait(lambda e: found("pks-v6")(e) and ":" in e.get("addr", ""), 15)
    ok = ev6 is not None and ev6["addr"].startswith("fe80:") and ev6["port"] == 7393 and \
        ev6["scope_id"] != 0 and ev6["scope_id"] == ev6["ifindex"]
    tap(ok, "IPv6: h2 finds h1's link-local address with the scope id set", b2.log())
    ev4 = b2.wait(found("pks-v6", "10.77.0.1"), 10)
    tap(ev4 is not None, "IPv6 lab: the IPv4 address is found too", b2.log())
    if ev6 is not None:
        # The address must be h1's own link-local address.
        out = lab("exec", 1, "ip", "-6", "-o", "addr", "show", "dev", "eth0").stdout
        tap(ev6["addr"] in out, "IPv6: the address is h1's eth0 address", out)
        # And it must be reachable with that scope id from h2.
        r = subprocess.run([LAB, "exec", "2", "/usr/bin/python3", "-c",
                            "import socket,sys; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM);"
                            "s.connect((sys.argv[1], 7393, 0, int(sys.argv[2]))); print('ok')",
                            ev6["addr"], str(ev6["scope_id"])], env=ENV, capture_output=True,
                           text=True, timeout=20)
        tap(r.stdout.strip() == "ok", "IPv6: h2 can route to it with that scope id", r.stderr)
    b3 = Probe(2, "--backend", "core", "browse", "60")
    probes.append(b3)
    ev = b3.wait(lambda e: found("pks-v6")(e) and ":" in e.get("addr", ""), 15)
    tap(ev is not None and ev["scope_id"] != 0, "IPv6: avahi-core also resolves link-local",
        b3.log())
    pub.stop()
    b2.stop()
    b3.stop()


def clean_stale_labs():
    """Labs left by runs that were killed (a timeout): their pid is gone."""
    prefix = "pksync-lab-test-mdns-"
    for name in os.listdir("/run"):
        if not name.startswith(prefix):
            continue
        try:
            pid = int(name[len(prefix):])
            os.kill(pid, 0)
            continue  # that run is still going
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        subprocess.run([LAB, "down"], env=dict(os.environ, PKSYNC_LAB="/run/" + name),
                       capture_output=True, timeout=120)


def main():
    if os.geteuid() != 0:
        skip("needs root for network namespaces")
    if not os.access(PROBE, os.X_OK):
        skip("no %s" % PROBE)
    clean_stale_labs()
    r = lab("up", 3, check=False)
    if r.returncode == 77:
        skip(r.stderr.strip().replace("\n", " "))
    if r.returncode != 0:
        print("1..1")
        tap(False, "lab up 3", r.stderr)
        lab("down", check=False)
        return 1
    probes = []
    try:
        ipv4_suite(probes)
        for p in probes:
            p.stop()
        probes = []
        lab("up", 2, "--ipv6")
        ipv6_suite(probes)
    except Exception as e:  # a broken helper is a failure, not a crash
        tap(False, "test ran to the end", repr(e))
    finally:
        for p in probes:
            p.stop()
        lab("down", check=False)
    print("1..%d" % len(results))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
