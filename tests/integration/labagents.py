"""Real agents on simulated hosts, shared by the tests and tools/bench-lab.

Two kinds of host: a simulated Bluetooth LE host (tools/bluez-sim, no root),
where the agent's system bus is the host's private bus, and a host of the
network-namespace lab (tools/lab, root), where the agent runs inside the
host's namespace beside a real avahi-daemon. Pairing, convergence and the
traffic counters are the same for both.
"""
import json
import os
import shutil
import subprocess
import time

from pkslib import Agent, free_port

# ATT payload rates of the simulated profiles, per direction (bluez-sim
# README); "perfect" is unshaped and has no raw rate.
RAW_KBPS = {"good": 700.0, "phone": 240.0, "worst": 30.0}


def wait_for(what, fn, timeout, devs=(), interval=0.2):
    """fn() until it is true (returned), or AssertionError with the agents' logs."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last %r)\n%s" % (
        what, last, "\n".join("-- %s --\n%s" % (d.name, d.read_log()[-2500:]) for d in devs)))


def converge(devs, timeout, interval=0.2):
    """The common digest once every agent reports the same one."""
    def same():
        ds = [d.digest() for d in devs]
        return ds[0] if len(set(ds)) == 1 else None
    return wait_for("convergence", same, timeout, devs, interval)


def start_pair(sponsor, timeout=120):
    """`pksync pair --json` on the sponsor: (process, its first line: the code)."""
    p = subprocess.Popen([sponsor.cli_bin, "--state-dir", sponsor.state_dir, "pair", "--json",
                          "--timeout", str(timeout)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sponsor.env)
    line = p.stdout.readline()
    if not line:
        raise RuntimeError("pair printed nothing: " + p.stderr.read().decode())
    return p, json.loads(line)


def join(sponsor, d, peer=None):
    """d joins through sponsor (found by discovery when no peer); seconds the join took."""
    p, first = start_pair(sponsor)
    args = ["join", first["code"], "--name", d.name, "--no-passphrase"]
    if peer:
        args += ["--peer", peer]
    t0 = time.monotonic()
    res = d.json(*args)
    took = time.monotonic() - t0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode()
    added = json.loads(out.decode().strip().splitlines()[-1])
    assert added["device_id"] == res["device_id"], (added, res)
    return took


def make_vault(a, n, root, bench_bin):
    """n fresh passkeys (pksync-bench --make-cxf) imported into a's vault."""
    cxf = os.path.join(root, "records-%d.json" % n)
    subprocess.run([bench_bin, "--make-cxf", str(n), cxf], check=True,
                   stdout=subprocess.DEVNULL)
    a.json("import", cxf)
    assert len(a.ids()) == n


class LabAgentMixin:
    """Status helpers common to both kinds of host."""

    def status(self):
        return self.json("status")

    def digest(self):
        return self.status()["digest"]

    def ids(self):
        return sorted(r["id"] for r in self.json("list"))

    def has(self, record_id):
        """Whether the record is in this vault (cheaper than listing them all)."""
        rc, _, _ = self.cli("show", record_id, "--json", check=False)
        return rc == 0

    def peers(self):
        return [p for p in self.status()["peers"] if p["connected"]]

    def transports(self):
        return sorted(p["transport"] for p in self.peers())

    def traffic(self):
        """(bytes_in, bytes_out) on member links since the agent started."""
        t = self.status()["traffic"]
        return t["bytes_in"], t["bytes_out"]


class BleDev(LabAgentMixin, Agent):
    """An agent on simulated BLE host k of a SimLab; BLE on, mDNS off."""

    discovery = True  # pkslib adds neither --no-mdns nor --no-ble

    def __init__(self, build, root, name, lab, k, rotate_ms=None):
        super().__init__(build, root=root, name=name)
        self.name = name
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = lab.bus(k)
        if rotate_ms is not None:
            self.env["PKSYNC_TEST_ROTATE_MS"] = str(rotate_ms)
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.extra = []

    def start(self, extra=("--listen",)):
        extra = list(extra)
        # "--listen" alone: on this device's loopback port.
        if extra and extra[-1] == "--listen":
            extra.append(self.addr)
        self.extra = extra
        return super().start(["--no-mdns", *extra])


def ble_sim_missing():
    """Why the BLE simulator cannot run here, or None when it can."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon missing"
    try:
        import dbus  # noqa: F401
        from gi.repository import GLib  # noqa: F401
    except ImportError as e:
        return "the simulator needs python3-dbus and python3-gi (%s)" % e
    return None


class NetnsLab:
    """tools/lab on its own directory (so it never meets another lab)."""

    def __init__(self, source_root, lab_dir):
        self.tool = os.path.join(source_root, "tools", "lab")
        self.dir = lab_dir

    def env(self):
        return dict(os.environ, PKSYNC_LAB=self.dir)

    def run(self, *args, check=True, timeout=120):
        r = subprocess.run([self.tool, *map(str, args)], capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("tools/lab %s: %d: %s" % (args, r.returncode, r.stderr[-2000:]))
        return r


class HostAgent(LabAgentMixin, Agent):
    """An agent inside lab host k, mDNS on, BLE off, listening on the default port."""

    discovery = True

    def __init__(self, build, lab, root, k, rotate_ms=None):
        super().__init__(build, root=root, name="h%d" % k)
        self.name = "h%d" % k
        self.k = k
        self.lab = lab
        self.env["PKSYNC_LAB"] = lab.dir
        if rotate_ms:
            self.env["PKSYNC_TEST_ROTATE_MS"] = str(rotate_ms)

    start_timeout = 15

    def command(self, extra=()):
        # tools/lab exec ends in `exec ip netns exec`, so the pid is the agent's.
        return [self.lab.tool, "exec", str(self.k), self.agent_bin, "--state-dir",
                self.state_dir, "--no-ble", *extra]
