#!/usr/bin/python3
"""BLE transport over the simulated bluetoothd (tools/bluez-sim), TAP.

Two or three simulated hosts, each with its own private D-Bus "system" bus
and bluetoothd, share one shaped air. tools/ble-probe runs on them: one
serves (advertises, accepts links, echoes frames), others scan and echo.

Checks: the advertisement is found with its hint and pairing flag; 64 KiB
frames echo intact both ways on each profile (good, phone, worst), with the
throughput printed against the profile's raw rate; the link survives
dropped notifications; a forced disconnect is followed by a reconnect that
finishes the transfer; two centrals share one peripheral at once; the
adapter going away and coming back (bluetoothd restart) is followed and
serving resumes.

Usage: test_ble.py BUILD_ROOT SOURCE_ROOT. Skips (77) without dbus-daemon
or the simulator's Python modules.
"""

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

BUILD, SRC = sys.argv[1], sys.argv[2]
PROBE = os.path.join(BUILD, "tools", "ble-probe")
sys.path.insert(0, os.path.join(SRC, "tools", "bluez-sim"))

# Raw ATT payload rates of the simulated profiles (tools/bluez-sim/README.md).
RAW_KBPS = {"good": 700.0, "phone": 240.0, "worst": 30.0}


def skip(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


if shutil.which("dbus-daemon") is None:
    skip("dbus-daemon missing")
try:
    import dbus  # noqa: F401
    from gi.repository import GLib  # noqa: F401
    from simlab import SimLab
except ImportError as e:
    skip("simulator needs python3-dbus and python3-gi (%s)" % e)
if not os.access(PROBE, os.X_OK):
    print("1..1\nnot ok 1 ble-probe not built at %s" % PROBE)
    sys.exit(1)

results = []
PROBES = []


def check(ok, name, detail=""):
    results.append(ok)
    print("%s %d %s" % ("ok" if ok else "not ok", len(results), name))
    if detail and not ok:
        for line in detail.splitlines()[-25:]:
            print("#   " + line)
    sys.stdout.flush()


def comment(text):
    print("# " + text)
    sys.stdout.flush()


class Probe:
    """A ble-probe process whose stdout lines are collected by a thread."""

    def __init__(self, bus, *args):
        self.lines = queue.Queue()
        self.all = []
        self.p = subprocess.Popen([PROBE, "--bus", bus, "-v"] + list(args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err = []
        PROBES.append(self)
        threading.Thread(target=self._read, args=(self.p.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stderr, False), daemon=True).start()

    def _read(self, f, out):
        for line in f:
            line = line.rstrip("\n")
            if out:
                self.all.append(line)
                self.lines.put(line)
            else:
                self.err.append(line)

    def wait_for(self, pattern, timeout):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            m = rx.search(line)
            if m:
                return m
        return None

    def finish(self, timeout):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        time.sleep(0.1)
        return rc

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        return self.finish(10)

    def log(self):
        return "\n".join(self.all[-15:] + ["-- stderr --"] + self.err[-15:])


def kv(line):
    return dict(x.split("=", 1) for x in line.split() if "=" in x)


def echo(lab, host, size, count, timeout, retries=0, disconnect_at=None):
    """Runs an echo client; returns (rc, the done line's fields or None, probe)."""
    pr = Probe(lab.bus(host), "echo", "any", "--size", str(size), "--count", str(count),
               "--retries", str(retries), "--for", str(timeout))
    if disconnect_at is not None:
        if pr.wait_for(r"event=connected", 30):
            time.sleep(disconnect_at)
            lab.ctl("disconnect")
    rc = pr.finish(timeout + 20)
    done = None
    for line in pr.all:
        if line.startswith("event=done"):
            done = kv(line)
    return rc, done, pr


def main():
    with SimLab(3, profile="good", seed="7") as lab:
        server = Probe(lab.bus(1), "serve", "--hint", "a1b2c3d4", "--pairing", "--for", "900")
        ok = server.wait_for(r"event=adapter present=1", 15) is not None
        check(ok, "serving probe sees its adapter", server.log())

        # Discovery: the hint and the pairing flag come through.
        sc = Probe(lab.bus(2), "scan", "--for", "4")
        m = sc.wait_for(r"event=peer address=(\S+) rssi=(-?\d+) hint=(\w*) pairing=(\d)", 10)
        sc.finish(15)
        check(m is not None and m.group(1) == lab.addr(1) and m.group(3) == "a1b2c3d4" and
              m.group(4) == "1", "scan finds the peer's pksync advertisement", sc.log())

        # 64 KiB frames both ways on each profile, with throughput.
        plans = [("good", 6, 120), ("phone", 4, 150), ("worst", 1, 240)]
        for prof, count, limit in plans:
            lab.ctl("profile", name=prof)
            rc, done, pr = echo(lab, 2, 65535, count, limit)
            ok = rc == 0 and done is not None and int(done["frames"]) == count
            check(ok, "%s: %d x 64 KiB frames echoed intact" % (prof, count), pr.log())
            if done:
                kbps = float(done["kbit_per_s"])
                # One direction's payload over the whole run; the last echo
                # only starts once its frame is in, so the ideal is
                # count/(count+1) of the raw rate.
                ideal = RAW_KBPS[prof] * count / (count + 1)
                comment("%s: %.1f kbit/s of frames each way in %ss; raw ATT rate %.0f kbit/s, "
                        "pipelined ideal %.0f kbit/s (%.0f%%); %s bytes on the fds out"
                        % (prof, kbps, done["seconds"], RAW_KBPS[prof], ideal,
                           100.0 * kbps / ideal, done["out"]))

        # Dropped notifications: the link retransmits. The peripheral's
        # notify fd is one per characteristic, shared by its centrals (as in
        # BlueZ). A central's OPEN can reach the peripheral before the new
        # notify fd does, and such a link was accepted with the previous
        # epoch's MTU (the worst profile's 23) and kept it: 11 against 93
        # kbit/s, and "two centrals" below then timed out. transport/ble now
        # moves accepted links to the new fd's MTU; the comment still shows
        # the MTU at acceptance, and the case keeps 240 s.
        lab.ctl("profile", name="phone")
        lab.ctl("drop-notify", p=0.1)
        seen = len(server.all)
        rc, done, pr = echo(lab, 2, 65535, 3, 240)
        lab.ctl("drop-notify", p=0.0)
        check(rc == 0 and done is not None, "phone with 10% of notifications dropped", pr.log())
        if done:
            mtus = [ln.split("mtu=")[1] for ln in server.all[seen:]
                    if ln.startswith("event=accepted") and "mtu=" in ln]
            comment("phone, 10%% drops: %s kbit/s (link accepted at peripheral MTU %s)"
                    % (done["kbit_per_s"], ",".join(mtus) or "?"))

        # A forced disconnect mid-transfer: reconnect and finish.
        lab.ctl("profile", name="good")
        rc, done, pr = echo(lab, 2, 65535, 12, 150, retries=3, disconnect_at=2.0)
        check(rc == 0 and done is not None and int(done["reconnects"]) >= 1,
              "forced disconnect: reconnects and finishes", pr.log())
        closed = [line for line in server.all if line.startswith("event=closed")]
        check(len(closed) >= 1 and any("err=-18" in c for c in closed),
              "the peripheral sees its links end", server.log())

        # Two centrals on one peripheral at once (one shared fd each way).
        a = Probe(lab.bus(2), "echo", "any", "--size", "20000", "--count", "10", "--for", "120")
        b = Probe(lab.bus(3), "echo", "any", "--size", "30000", "--count", "8", "--for", "120")
        ra, rb = a.finish(140), b.finish(140)
        check(ra == 0 and rb == 0, "two centrals echo through one peripheral at once",
              a.log() + "\n" + b.log())

        # The adapter is unplugged and plugged back in.
        lab.ctl("adapter", addr=lab.addr(1), present=False)
        gone = server.wait_for(r"event=adapter present=0", 15) is not None
        lab.ctl("adapter", addr=lab.addr(1), present=True)
        back = server.wait_for(r"event=adapter present=1", 15) is not None
        check(gone and back, "adapter unplug and replug are followed", server.log())
        rc, done, pr = echo(lab, 2, 4096, 4, 60, retries=2)
        check(rc == 0 and done is not None, "serving resumes on the replugged adapter",
              pr.log() + "\n" + server.log())

        # bluetoothd restarts: the adapter goes, comes back, serving resumes.
        lab.stop_bluetoothd(1)
        gone = server.wait_for(r"event=adapter present=0", 15) is not None
        lab.start_bluetoothd(1)
        back = server.wait_for(r"event=adapter present=1", 15) is not None
        check(gone and back, "adapter loss and return are followed", server.log())
        rc, done, pr = echo(lab, 2, 4096, 4, 60, retries=2)
        check(rc == 0 and done is not None, "serving resumes after bluetoothd restarts",
              pr.log() + "\n" + server.log())

        rc = server.stop()
        check(rc == 0, "serving probe exits cleanly", server.log())
    bad = [line for pr in PROBES for line in pr.err
           if "runtime error" in line or "AddressSanitizer" in line or "LeakSanitizer" in line]
    check(not bad, "no sanitizer reports from any probe", "\n".join(bad))
    print("1..%d" % len(results))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
