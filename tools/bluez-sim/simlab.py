#!/usr/bin/python3
"""N simulated BLE hosts without root: N private dbus-daemons, one air, N
simulated bluetoothd's.  Host K has adapter address AA:BB:CC:DD:EE:0K (hex)
and its bus at DIR/hK/bus.

As a program:
    simlab.py N [--dir DIR] [--profile P] [--seed S] [--drop-notify P]
prints, once everything is up,
    AIR=DIR/air.sock
    BUS1=unix:path=DIR/h1/bus
    ADDR1=AA:BB:CC:DD:EE:01
    ...
    READY
then runs until SIGINT/SIGTERM (or stdin closing with --stdin-lifetime) and
tears everything down.  Run a client on host K with
DBUS_SYSTEM_BUS_ADDRESS=$BUSK.

As a module:
    with SimLab(2, profile="phone", seed=1) as lab:
        lab.bus(1), lab.addr(2), lab.ctl("range", addr=lab.addr(2), **{"in": False})
"""

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import air as air_mod  # noqa: E402  (for ctl())

PYTHON = "/usr/bin/python3"  # where python3-dbus and python3-gi live


def host_addr(k):
    return "AA:BB:CC:DD:EE:%02X" % k


class SimLab:
    def __init__(self, n, directory=None, profile="perfect", seed="0", drop_notify=0.0,
                 disconnect_after_bytes=0, connect_timeout=5.0, verbose=False,
                 bus_config=None):
        self.n = n
        # The buses' configuration: bus.conf unless told otherwise (also by
        # $BLUEZ_SIM_BUS_CONF, e.g. a system.conf-like policy including
        # bluetooth.conf, to check that fragment).
        self.bus_config = bus_config or os.environ.get("BLUEZ_SIM_BUS_CONF") or \
            os.path.join(HERE, "bus.conf")
        self.own_dir = directory is None
        self.dir = directory or tempfile.mkdtemp(prefix="bluez-sim.")
        self.air_args = ["--profile", profile, "--seed", str(seed),
                         "--drop-notify", str(drop_notify),
                         "--disconnect-after-bytes", str(disconnect_after_bytes),
                         "--connect-timeout", str(connect_timeout)]
        if verbose:
            self.air_args.append("-v")
        self.procs = []  # (name, Popen) in start order
        self.bluetoothd = {}  # k -> Popen
        self.daemons = {}  # k -> Popen (dbus-daemon)

    @property
    def air_path(self):
        return os.path.join(self.dir, "air.sock")

    def bus(self, k):
        return "unix:path=" + os.path.join(self.dir, "h%d" % k, "bus")

    def addr(self, k):
        return host_addr(k)

    def ctl(self, cmd, **kw):
        msg = {"t": "ctl", "cmd": cmd}
        msg.update(kw)
        return air_mod.ctl(self.air_path, msg)

    def _wait_line(self, name, proc, want, timeout=10.0):
        """Wait (bounded) for a line starting with `want` on proc's stdout."""
        deadline = time.monotonic() + timeout
        buf = b""
        fd = proc.stdout.fileno()
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n"):
                if line.startswith(want):
                    return line.decode()
        raise RuntimeError("%s did not start (got %r)" % (name, buf[-300:]))

    def start(self):
        try:
            self._start()
        except Exception:
            self.stop()
            raise
        return self

    def _start(self):
        a = subprocess.Popen([PYTHON, os.path.join(HERE, "air.py"), "--socket", self.air_path]
                             + self.air_args, stdout=subprocess.PIPE)
        self.procs.append(("air", a))
        self._wait_line("air", a, b"air: listening")
        for k in range(1, self.n + 1):
            hdir = os.path.join(self.dir, "h%d" % k)
            os.makedirs(hdir, exist_ok=True)
            d = subprocess.Popen(["dbus-daemon", "--config-file=" + self.bus_config,
                                  "--address=" + self.bus(k), "--nofork", "--print-address"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self.procs.append(("dbus-daemon h%d" % k, d))
            self.daemons[k] = d
            self._wait_line("dbus-daemon h%d" % k, d, b"unix:")
            self.start_bluetoothd(k)

    def start_bluetoothd(self, k):
        b = subprocess.Popen([PYTHON, os.path.join(HERE, "bluetoothd.py"), "--bus", self.bus(k),
                              "--air", self.air_path, "--address", self.addr(k),
                              "--name", "h%d" % k], stdout=subprocess.PIPE)
        self.procs.append(("bluetoothd h%d" % k, b))
        self.bluetoothd[k] = b
        self._wait_line("bluetoothd h%d" % k, b, b"ready")
        return b

    def stop_bluetoothd(self, k):
        """Stop host K's bluetoothd (the peers see their links drop)."""
        b = self.bluetoothd.pop(k, None)
        if b is not None:
            self._end(b)

    @staticmethod
    def _end(p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self):
        for _, p in reversed(self.procs):
            self._end(p)
        self.procs = []
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", type=int)
    p.add_argument("--dir")
    p.add_argument("--profile", default="perfect", choices=sorted(air_mod.PROFILES))
    p.add_argument("--seed", default="0")
    p.add_argument("--drop-notify", type=float, default=0.0)
    p.add_argument("--disconnect-after-bytes", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    if a.dir:
        os.makedirs(a.dir, exist_ok=True)
    lab = SimLab(a.n, a.dir, a.profile, a.seed, a.drop_notify, a.disconnect_after_bytes,
                 verbose=a.verbose).start()
    print("AIR=" + lab.air_path)
    for k in range(1, a.n + 1):
        print("BUS%d=%s" % (k, lab.bus(k)))
        print("ADDR%d=%s" % (k, lab.addr(k)))
    print("READY", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *x: stop.append(1))
    signal.signal(signal.SIGINT, lambda *x: stop.append(1))
    try:
        while not stop:
            signal.pause()
    finally:
        lab.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
