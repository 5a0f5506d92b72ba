#!/usr/bin/python3
"""Agents pair and sync over Bluetooth LE: real agents on the simulated
bluetoothd (tools/bluez-sim), no root.

Each agent runs on its own simulated host (DBUS_SYSTEM_BUS_ADDRESS of the
host's private bus), with --no-mdns; TCP listeners are on loopback where a
LAN is wanted. Cases: pairing (join CODE with no address) and the first sync
of 1,000 passkeys over BLE alone, one change propagating, figures per
profile; TCP preferred when both exist, failover to BLE when the LAN goes
(a TCP proxy that is stopped) and back to TCP when it returns, with the BLE
session closed; every advertisement registered within the 31-byte budget;
a non-member host's scan sees the hints change at each rotation.

usage: test_sync_ble.py BUILD_DIR SOURCE_ROOT [case-filter]
Skips (77) without dbus-daemon or the simulator's Python modules.
"""
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labagents  # noqa: E402
from labagents import RAW_KBPS, converge, free_port, join, wait_for  # noqa: E402
from pkslib import Tap  # noqa: E402

BUILD, SRC = sys.argv[1], sys.argv[2]
BENCH = os.path.join(BUILD, "tools", "pksync-bench")
PROBE = os.path.join(BUILD, "tools", "ble-probe")
sys.path.insert(0, os.path.join(SRC, "tools", "bluez-sim"))

if labagents.ble_sim_missing():
    print("1..0 # SKIP " + labagents.ble_sim_missing())
    sys.exit(77)
from simlab import SimLab  # noqa: E402

tap = Tap()


def comment(text):
    print("# " + text, flush=True)


def Dev(root, name, lab, k, rotate_ms=None):
    """An agent on simulated BLE host k (labagents.BleDev on this build)."""
    return labagents.BleDev(BUILD, root, name, lab, k, rotate_ms)


def _env_records():
    return int(os.environ.get("PKSYNC_BLE_TEST_RECORDS", "1000"))


def make_vault(a, n, root):
    labagents.make_vault(a, n, root, BENCH)


def adv_instances(lab, k):
    out = subprocess.run(
        ["dbus-send", "--bus=" + lab.bus(k), "--print-reply", "--dest=org.bluez",
         "/org/bluez/hci0", "org.freedesktop.DBus.Properties.Get",
         "string:org.bluez.LEAdvertisingManager1", "string:ActiveInstances"],
        capture_output=True, text=True, timeout=10)
    m = re.search(r"byte (\d+)", out.stdout)
    return int(m.group(1)) if m else -1


def no_adv_failure(d):
    log = d.read_log()
    assert not re.search(r"(?i)advertis\w* (failed|refused)|cannot advertise|Failed to parse",
                         log), log[-2000:]


def first_sync(lab, a, d, profile, n):
    """d joins a over BLE alone; returns (seconds, bytes_in) of its first sync."""
    lab.ctl("profile", name=profile)
    d.start(["--no-listen"])
    join(a, d)
    t0 = time.monotonic()
    converge([a, d], timeout=int(os.environ.get("PKSYNC_BLE_TEST_SYNC_S", "600")))
    secs = time.monotonic() - t0
    assert len(d.ids()) == n
    assert set(d.transports()) == {"ble"}, d.peers()
    traffic = d.status()["traffic"]
    rate = RAW_KBPS[profile] * 1000 / 8
    comment("first sync of %d passkeys over BLE (%s, %.0f kbit/s): %.1f s, %d bytes in, "
            "efficiency %.2f" % (n, profile, RAW_KBPS[profile], secs, traffic["bytes_in"],
                                 traffic["bytes_in"] / (secs * rate)))
    return secs


def change_latency(src, dst):
    rec = src.json("new", "--rp", "latency.example", "--user", "u%d" % time.time_ns())
    t0 = time.monotonic()
    wait_for("the change on %s" % dst.name, lambda: rec["id"] in dst.ids(), 60, [src, dst])
    return time.monotonic() - t0


@tap.case
def pair_and_first_sync_over_ble_alone():
    root = tempfile.mkdtemp(prefix="pks-ble-")
    devs = []
    try:
        with SimLab(3, profile="good", seed="7") as lab:
            a = Dev(root, "alpha", lab, 1)
            devs.append(a)
            # alpha listens on loopback (pksync pair needs a listener), but
            # nobody is told its address: no --peer, no mDNS.
            a.start()
            a.init(name="alpha")
            make_vault(a, _env_records(), root)
            assert wait_for("alpha advertising", lambda: adv_instances(lab, 1) == 1, 10, devs)
            b = Dev(root, "beta", lab, 2)
            devs.append(b)
            secs = first_sync(lab, a, b, "good", _env_records())
            assert a.transports() == ["ble"], a.peers()
            lat = change_latency(a, b)
            comment("one change alpha -> beta over BLE (good): %.2f s" % lat)
            lat = change_latency(b, a)
            comment("one change beta -> alpha over BLE (good): %.2f s" % lat)
            converge([a, b], 30)
            # phone: a third device joins over BLE while beta stays connected.
            # beta stops so gamma's figure is one link's worth.
            b.stop()
            c = Dev(root, "gamma", lab, 3)
            devs.append(c)
            first_sync(lab, a, c, "phone", len(a.ids()))
            b.start(b.extra)
            lat = change_latency(c, b)
            comment("one change gamma -> beta over BLE (phone): %.2f s" % lat)
            converge([a, b, c], 60)
            for d in (a, b, c):
                no_adv_failure(d)
                assert all(p["transport"] == "ble" for p in d.peers()), d.peers()
                assert len(d.peers()) >= 1
            for k in (1, 2, 3):
                assert adv_instances(lab, k) == 1, k
            del secs
    finally:
        for d in devs:
            d.stop()
        if not os.environ.get("PKSYNC_BLE_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


class Proxy:
    """A TCP forwarder that can be cut (listener and connections) and restored."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.socks = []
        self.lock = threading.Lock()
        self.ls = None
        self.up()

    def up(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(8)
        self.ls = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            if ls is not self.ls or ls.fileno() < 0:
                c.close()
                return
            try:
                t = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks += [c, t]
            threading.Thread(target=self._pump, args=(c, t), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 1.0)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("eof")
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def down(self):
        # shutdown() wakes the thread blocked in accept(); close() alone
        # leaves the port listening until it returns.
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.socks = []


@tap.case
def tcp_preferred_failover_to_ble_and_back():
    root = tempfile.mkdtemp(prefix="pks-ble-")
    devs = []
    proxy = None
    try:
        with SimLab(2, profile="good", seed="3") as lab:
            a = Dev(root, "alpha", lab, 1)
            b = Dev(root, "beta", lab, 2)
            devs += [a, b]
            a.start()
            a.init(name="alpha")
            make_vault(a, 50, root)
            proxy = Proxy(a.port)
            # beta reaches alpha's LAN address only through the proxy.
            b.start(["--listen"])
            join(a, b, peer=proxy.addr)
            b.stop()
            b.start(["--listen", b.addr, "--peer", proxy.addr])
            converge([a, b], 30)
            wait_for("a TCP session", lambda: a.transports() == ["tcp"] and
                     b.transports() == ["tcp"], 20, devs)
            # Both see each other over BLE, but the LAN stays preferred.
            wait_for("BLE sightings", lambda: "in BLE range" in a.read_log() and
                     "in BLE range" in b.read_log(), 20, devs)
            time.sleep(5)
            assert a.transports() == ["tcp"] and b.transports() == ["tcp"], (a.peers(),
                                                                               b.peers())
            assert "connecting over BLE" not in a.read_log() + b.read_log()
            # The LAN goes: sync goes on over BLE within a few seconds.
            proxy.down()
            t0 = time.monotonic()
            wait_for("failover to BLE", lambda: a.transports() == ["ble"] and
                     b.transports() == ["ble"], 30, devs)
            comment("failover to BLE after the LAN went: %.1f s" % (time.monotonic() - t0))
            lat = change_latency(a, b)
            comment("one change over BLE after failover: %.2f s" % lat)
            converge([a, b], 30)
            # The LAN comes back: TCP again, the BLE session closed.
            proxy.up()
            t0 = time.monotonic()
            wait_for("TCP again", lambda: a.transports() == ["tcp"] and
                     b.transports() == ["tcp"], 90, devs)
            comment("back to TCP after the LAN returned: %.1f s (dialer backoff)" %
                    (time.monotonic() - t0))
            assert "LAN preferred: closing the BLE session" in a.read_log() + b.read_log()
            time.sleep(5)
            assert a.transports() == ["tcp"] and b.transports() == ["tcp"], (a.peers(),
                                                                               b.peers())
            lat = change_latency(b, a)
            comment("one change over TCP again: %.2f s" % lat)
            for d in (a, b):
                no_adv_failure(d)
    finally:
        if proxy:
            proxy.down()
        for d in devs:
            d.stop()
        if not os.environ.get("PKSYNC_BLE_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


@tap.case
def non_member_sees_only_rotating_hints():
    root = tempfile.mkdtemp(prefix="pks-ble-")
    devs = []
    probe = None
    try:
        with SimLab(2, profile="good", seed="5") as lab:
            a = Dev(root, "alpha", lab, 1, rotate_ms=1500)
            devs.append(a)
            a.start()
            a.init(name="alpha")
            probe = subprocess.Popen([PROBE, "--bus", lab.bus(2), "scan", "--for", "12"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
            out, _ = probe.communicate(timeout=30)
            hints = []
            for m in re.finditer(r"event=peer address=(\S+) rssi=\S+ hint=(\S*) pairing=(\d)",
                                 out):
                assert m.group(1) == lab.addr(1), m.group(0)
                assert len(m.group(2)) == 32 and m.group(3) == "0", m.group(0)
                if not hints or hints[-1] != m.group(2):
                    hints.append(m.group(2))
            comment("distinct hints seen in 12 s at a 1.5 s rotation: %d" % len(set(hints)))
            assert len(set(hints)) >= 4, out[-2000:]
            assert len(set(hints)) == len(hints), hints  # never one seen again
            # Every registration fit the 31-byte legacy budget (the sim
            # refuses longer ones): one active instance, no failure logged.
            assert adv_instances(lab, 1) == 1
            no_adv_failure(a)
    finally:
        if probe and probe.poll() is None:
            probe.kill()
        for d in devs:
            d.stop()
        if not os.environ.get("PKSYNC_BLE_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


sys.exit(tap.run(sys.argv[2:]))
