#!/usr/bin/python3
"""The simulated radio between simulated bluetoothd processes ("the air").

One process, one AF_UNIX stream socket.  Every bluetoothd.py connects, says
hello with its address, and from then on exchanges newline-delimited JSON
messages with the air:

  bluetoothd -> air                      air -> bluetoothd
  {"t":"hello","addr","name"}            {"t":"welcome","profile":{...}}
  {"t":"adv_set","id","adv":{...}}       {"t":"seen","from","adv","rssi"}
  {"t":"adv_del","id"}
  {"t":"scan","on":bool}
  {"t":"db","db":[services]}
  {"t":"connect","req","to"}             {"t":"connected","link","peer","mtu",
                                          "db","initiator","req"?}
                                         {"t":"connect_failed","req","reason"}
  {"t":"disconnect","link"}              {"t":"disconnected","link","reason"}
  {"t":"att","link","op",...}            {"t":"att",...} (the same message,
                                          delivered to the other end)
                                         {"t":"txdone","link","n"}

Control (any client, no hello; also `air.py ctl PATH ...`):
  {"t":"ctl","cmd":"profile","name":P}   change the shaping profile
  {"t":"ctl","cmd":"drop-notify","p":X}  notification drop probability
  {"t":"ctl","cmd":"disconnect-after-bytes","n":N}  (0 = never)
  {"t":"ctl","cmd":"disconnect","a":ADDR,"b":ADDR?}  force link drops
  {"t":"ctl","cmd":"range","addr":ADDR,"in":bool}    out of / back in range
  {"t":"ctl","cmd":"adapter","addr":ADDR,"present":bool}  unplug / replug the
                                         host's controller (hci0 leaves the bus)
  {"t":"ctl","cmd":"status"}
each answered by {"t":"ctl_reply","ok":bool,...}.

Shaping (per link, per direction): an ATT message of n payload bytes is
serialised at the profile's bandwidth after the previous one in the same
direction, then arrives after the one-way latency; arrivals never overtake
each other (delivery in order).  The sender gets "txdone" when serialisation
ends, which the simulated bluetoothd uses as flow control.  Everything random
(latency jitter, advertising intervals, RSSI jitter, notification drops) comes
from generators seeded with --seed, one per link and direction, so a given
seed gives the same drop pattern on the same link whatever else happens.
"""

import argparse
import heapq
import itertools
import json
import os
import random
import selectors
import socket
import sys
import time

# name: (payload bit/s or 0 for unshaped, latency min s, latency max s, ATT MTU)
PROFILES = {
    # Phone-class link: ~240 kbit/s of ATT payload, 20-60 ms one way, MTU 247.
    "phone": (240_000, 0.020, 0.060, 247),
    # A good Linux-to-Linux link with data length extension: 700 kbit/s, ~15 ms.
    "good": (700_000, 0.010, 0.020, 247),
    # Worst case: MTU 23 (20-byte payloads), 50 ms connection interval, so a
    # message waits anywhere up to one interval; ~30 kbit/s.
    "worst": (30_000, 0.005, 0.055, 23),
    # No shaping at all, for fast functional tests.
    "perfect": (0, 0.0, 0.0, 247),
}

# Linux's default LE supervision timeout (0x002a * 10 ms): how long a link
# survives once the peer has gone out of range.
SUPERVISION_TIMEOUT = 0.42


class Host:
    def __init__(self, conn):
        self.conn = conn
        self.addr = None
        self.name = ""
        self.rbuf = b""
        self.wbuf = bytearray()
        self.adverts = {}  # id -> advert dict
        self.adv_gen = {}  # id -> generation (cancels stale timers)
        self.scanning = False
        self.in_range = True
        self.db = []


class Direction:
    def __init__(self, rng):
        self.next_free = 0.0  # when the transmitter is free again
        self.last_arrival = 0.0  # arrivals stay in order
        self.rng = rng


class Link:
    def __init__(self, lid, a, b, mtu, seed):
        self.id = lid
        self.a = a
        self.b = b
        self.mtu = mtu
        self.bytes = 0
        self.alive = True
        self.dirs = {
            a.addr: Direction(random.Random("%s/%d/%s/lat" % (seed, lid, a.addr))),
            b.addr: Direction(random.Random("%s/%d/%s/lat" % (seed, lid, b.addr))),
        }
        self.drop_rng = random.Random("%s/%d/drop" % (seed, lid))

    def other(self, h):
        return self.b if h is self.a else self.a


class Air:
    def __init__(self, path, profile, seed, drop_notify, disconnect_after,
                 connect_timeout, verbose):
        self.path = path
        self.profile_name = profile
        self.seed = seed
        self.drop_notify = drop_notify
        self.disconnect_after = disconnect_after
        self.connect_timeout = connect_timeout
        self.verbose = verbose
        self.rng = random.Random("%s/air" % seed)
        self.sel = selectors.DefaultSelector()
        self.hosts = {}  # addr -> Host
        self.clients = set()  # every connected Host (with or without hello)
        self.links = {}  # id -> Link
        self.link_ids = itertools.count(1)
        self.timers = []  # heap of (when, seq, fn, args)
        self.seq = itertools.count()
        self.stats = {"delivered": 0, "dropped_notify": 0, "adverts": 0}

    # ---- helpers -----------------------------------------------------
    def log(self, *a):
        if self.verbose:
            print("air:", *a, file=sys.stderr, flush=True)

    @property
    def profile(self):
        return PROFILES[self.profile_name]

    def later(self, delay, fn, *args):
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self.seq), fn, args))

    def at(self, when, fn, *args):
        heapq.heappush(self.timers, (when, next(self.seq), fn, args))

    def send(self, host, msg):
        if host.conn is None:
            return
        host.wbuf += json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        self.sel.modify(host.conn, selectors.EVENT_READ | selectors.EVENT_WRITE, host)

    def latency(self, rng):
        _, lo, hi, _ = self.profile
        return lo if hi <= lo else rng.uniform(lo, hi)

    def rssi(self, src, dst):
        # A stable per-pair base between -45 and -80 dBm, a little jitter.
        base = -45 - random.Random("%s/%s/%s" % (self.seed, src, dst)).randint(0, 35)
        return base + self.rng.randint(-3, 3)

    def reachable(self, a, b):
        return a.in_range and b.in_range and a.conn is not None and b.conn is not None

    # ---- advertising -------------------------------------------------
    def schedule_advert(self, host, aid, gen):
        # Advertisements repeat every ~100-300 ms while registered.
        self.later(self.rng.uniform(0.1, 0.3), self.emit_advert, host, aid, gen)

    def emit_advert(self, host, aid, gen):
        if host.conn is None or host.adv_gen.get(aid) != gen or aid not in host.adverts:
            return
        adv = host.adverts[aid]
        for other in list(self.hosts.values()):
            if other is host or not other.scanning or not self.reachable(host, other):
                continue
            self.stats["adverts"] += 1
            self.send(other, {"t": "seen", "from": host.addr, "name": host.name,
                              "adv": adv, "rssi": self.rssi(host.addr, other.addr)})
        self.schedule_advert(host, aid, gen)

    # ---- connections -------------------------------------------------
    def link_between(self, a, b):
        for link in self.links.values():
            if {link.a.addr, link.b.addr} == {a.addr, b.addr}:
                return link
        return None

    def try_connect(self, src, to, req, deadline):
        if src.conn is None:
            return
        dst = self.hosts.get(to)
        existing = dst and self.link_between(src, dst)
        if existing:
            self.send(src, {"t": "connected", "link": existing.id, "peer": dst.addr,
                            "mtu": existing.mtu, "db": dst.db, "initiator": True,
                            "req": req})
            return
        connectable = dst is not None and any(
            a.get("connectable") for a in dst.adverts.values())
        if dst is not None and connectable and self.reachable(src, dst):
            link = Link(next(self.link_ids), src, dst, self.profile[3], self.seed)
            self.links[link.id] = link
            self.log("link", link.id, src.addr, "->", dst.addr, "mtu", link.mtu)
            # Connection setup takes about a connection event each way.
            delay = 2 * self.latency(link.dirs[src.addr].rng)
            self.later(delay, self.announce_link, link, req)
            return
        if time.monotonic() >= deadline:
            self.send(src, {"t": "connect_failed", "req": req, "reason": "timeout"})
            return
        # The central keeps listening for a connectable advertisement.
        self.later(0.05, self.try_connect, src, to, req, deadline)

    def announce_link(self, link, req):
        if not link.alive:
            return
        self.send(link.a, {"t": "connected", "link": link.id, "peer": link.b.addr,
                           "mtu": link.mtu, "db": link.b.db, "initiator": True, "req": req})
        self.send(link.b, {"t": "connected", "link": link.id, "peer": link.a.addr,
                           "mtu": link.mtu, "db": link.a.db, "initiator": False})

    def drop_link(self, link, reason):
        if not link.alive:
            return
        link.alive = False
        self.links.pop(link.id, None)
        self.log("drop link", link.id, reason)
        for h in (link.a, link.b):
            self.send(h, {"t": "disconnected", "link": link.id, "reason": reason})

    # ---- data --------------------------------------------------------
    def att(self, src, msg):
        link = self.links.get(msg.get("link"))
        if link is None or src not in (link.a, link.b):
            return
        dst = link.other(src)
        n = len(msg.get("data", "")) // 2
        if self.disconnect_after and link.bytes + n > self.disconnect_after:
            self.drop_link(link, "bytes")
            return
        link.bytes += n
        bps = self.profile[0]
        d = link.dirs[src.addr]
        now = time.monotonic()
        start = max(now, d.next_free)
        done = start + (n * 8.0 / bps if bps else 0.0)
        d.next_free = done
        arrival = max(done + self.latency(d.rng), d.last_arrival)
        d.last_arrival = arrival
        self.at(done, self.txdone, src, link, n)
        if msg.get("op") == "notify" and self.drop_notify > 0 and \
                link.drop_rng.random() < self.drop_notify:
            self.stats["dropped_notify"] += 1
            return
        self.at(arrival, self.deliver, link, dst, msg)

    def txdone(self, src, link, n):
        if link.alive:
            self.send(src, {"t": "txdone", "link": link.id, "n": n})

    def deliver(self, link, dst, msg):
        # Lost if the link died or either end left range in the meantime.
        if not link.alive or not self.reachable(link.a, link.b):
            return
        self.stats["delivered"] += 1
        self.send(dst, msg)

    # ---- range -------------------------------------------------------
    def set_range(self, host, in_range):
        host.in_range = in_range
        if not in_range:
            for link in list(self.links.values()):
                if host in (link.a, link.b):
                    self.later(SUPERVISION_TIMEOUT, self.supervision, link)

    def supervision(self, link):
        if link.alive and not self.reachable(link.a, link.b):
            self.drop_link(link, "timeout")

    # ---- control -----------------------------------------------------
    def ctl(self, cmd):
        c = cmd.get("cmd")
        if c == "profile":
            if cmd.get("name") not in PROFILES:
                return {"ok": False, "error": "unknown profile"}
            self.profile_name = cmd["name"]
        elif c == "drop-notify":
            p = float(cmd.get("p", 0))
            if not 0 <= p <= 1:
                return {"ok": False, "error": "p must be within 0..1"}
            self.drop_notify = p
        elif c == "disconnect-after-bytes":
            self.disconnect_after = int(cmd.get("n", 0))
        elif c == "disconnect":
            a, b = cmd.get("a"), cmd.get("b")
            n = 0
            for link in list(self.links.values()):
                ends = {link.a.addr, link.b.addr}
                if (a is None or a in ends) and (b is None or b in ends):
                    self.drop_link(link, "forced")
                    n += 1
            return {"ok": True, "dropped": n}
        elif c == "range":
            h = self.hosts.get(cmd.get("addr"))
            if h is None:
                return {"ok": False, "error": "unknown host"}
            self.set_range(h, bool(cmd.get("in")))
        elif c == "adapter":
            h = self.hosts.get(cmd.get("addr"))
            if h is None:
                return {"ok": False, "error": "unknown host"}
            self.send(h, {"t": "adapter", "present": bool(cmd.get("present"))})
        elif c == "status":
            pass
        else:
            return {"ok": False, "error": "unknown command"}
        return {"ok": True, "profile": self.profile_name, "drop_notify": self.drop_notify,
                "disconnect_after_bytes": self.disconnect_after,
                "hosts": {a: {"in_range": h.in_range, "scanning": h.scanning,
                              "adverts": len(h.adverts)} for a, h in self.hosts.items()},
                "links": [[l.id, l.a.addr, l.b.addr, l.mtu, l.bytes]
                          for l in self.links.values()],
                "stats": self.stats}

    # ---- messages ----------------------------------------------------
    def handle(self, host, msg):
        t = msg.get("t")
        if t == "ctl":
            r = self.ctl(msg)
            r["t"] = "ctl_reply"
            self.send(host, r)
            return
        if t == "hello":
            addr = msg.get("addr", "").upper()
            if not addr or addr in self.hosts:
                self.send(host, {"t": "error", "error": "address taken"})
                return
            host.addr, host.name = addr, msg.get("name", "")
            self.hosts[addr] = host
            self.send(host, {"t": "welcome", "profile": self.profile_name})
            self.log("hello", addr)
            return
        if host.addr is None:
            return
        if t == "adv_set":
            aid = msg["id"]
            new = aid not in host.adverts
            host.adverts[aid] = msg["adv"]
            if new:
                host.adv_gen[aid] = next(self.seq)
                # First transmission soon after registration.
                self.later(self.rng.uniform(0.0, 0.05), self.emit_advert, host, aid,
                           host.adv_gen[aid])
        elif t == "adv_del":
            host.adverts.pop(msg["id"], None)
            host.adv_gen.pop(msg["id"], None)
        elif t == "scan":
            host.scanning = bool(msg.get("on"))
        elif t == "db":
            host.db = msg.get("db", [])
        elif t == "connect":
            self.try_connect(host, msg.get("to", "").upper(), msg.get("req"),
                             time.monotonic() + self.connect_timeout)
        elif t == "disconnect":
            link = self.links.get(msg.get("link"))
            if link and host in (link.a, link.b):
                self.drop_link(link, "requested")
        elif t == "att":
            self.att(host, msg)

    def close(self, host):
        try:
            self.sel.unregister(host.conn)
        except (KeyError, ValueError):
            pass
        host.conn.close()
        host.conn = None
        self.clients.discard(host)
        if host.addr and self.hosts.get(host.addr) is host:
            del self.hosts[host.addr]
            # The peer's bluetoothd is gone: its links end at once.
            for link in list(self.links.values()):
                if host in (link.a, link.b):
                    self.drop_link(link, "peer-exited")
            self.log("bye", host.addr)

    def on_event(self, host, mask):
        if mask & selectors.EVENT_READ:
            try:
                data = host.conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.close(host)
                return
            if data:
                host.rbuf += data
                while b"\n" in host.rbuf:
                    line, host.rbuf = host.rbuf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        self.log("bad message")
                        continue
                    try:
                        self.handle(host, msg)
                    except (KeyError, TypeError, ValueError, AttributeError) as e:
                        # A malformed message must not take the radio down.
                        self.log("bad %s message: %r" % (msg.get("t") if isinstance(
                            msg, dict) else "?", e))
                        if isinstance(msg, dict) and msg.get("t") == "ctl":
                            self.send(host, {"t": "ctl_reply", "ok": False,
                                             "error": "bad arguments"})
                    if host.conn is None:
                        return
        if mask & selectors.EVENT_WRITE and host.wbuf:
            try:
                n = host.conn.send(host.wbuf)
                del host.wbuf[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close(host)
                return
            if not host.wbuf:
                self.sel.modify(host.conn, selectors.EVENT_READ, host)

    def run(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.path)
        srv.listen(64)
        srv.setblocking(False)
        self.sel.register(srv, selectors.EVENT_READ, None)
        print("air: listening on %s profile %s seed %s" % (self.path, self.profile_name,
                                                           self.seed), flush=True)
        while True:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, mask in self.sel.select(timeout):
                if key.data is None:
                    try:
                        c, _ = srv.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    h = Host(c)
                    self.clients.add(h)
                    self.sel.register(c, selectors.EVENT_READ, h)
                else:
                    if key.data.conn is not None:
                        self.on_event(key.data, mask)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, fn, args = heapq.heappop(self.timers)
                fn(*args)


def ctl_main(argv):
    """air.py ctl PATH CMD [ARGS]: one control command, prints the JSON reply."""
    p = argparse.ArgumentParser(prog="air.py ctl")
    p.add_argument("path")
    p.add_argument("cmd", choices=["profile", "drop-notify", "disconnect-after-bytes",
                                   "disconnect", "out-of-range", "in-range", "adapter-off",
                                   "adapter-on", "status"])
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    msg = {"t": "ctl", "cmd": a.cmd}
    try:
        if a.cmd == "profile":
            msg["name"] = a.args[0]
        elif a.cmd == "drop-notify":
            msg["p"] = float(a.args[0])
        elif a.cmd == "disconnect-after-bytes":
            msg["n"] = int(a.args[0])
        elif a.cmd == "disconnect":
            if a.args:
                msg["a"] = a.args[0].upper()
            if len(a.args) > 1:
                msg["b"] = a.args[1].upper()
        elif a.cmd in ("adapter-off", "adapter-on"):
            msg = {"t": "ctl", "cmd": "adapter", "addr": a.args[0].upper(),
                   "present": a.cmd == "adapter-on"}
        elif a.cmd in ("out-of-range", "in-range"):
            msg = {"t": "ctl", "cmd": "range", "addr": a.args[0].upper(),
                   "in": a.cmd == "in-range"}
    except (IndexError, ValueError):
        p.error("missing or bad argument for " + a.cmd)
    print(json.dumps(ctl(a.path, msg)))
    return 0


def ctl(path, msg, timeout=5.0):
    """Send one control message to the air at PATH and return its reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(json.dumps(msg).encode() + b"\n")
    buf = b""
    while b"\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise OSError("air closed the control connection")
        buf += d
    s.close()
    return json.loads(buf.split(b"\n", 1)[0])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "ctl":
        return ctl_main(sys.argv[2:])
    p = argparse.ArgumentParser(description="simulated BLE radio between bluetoothd.py's")
    p.add_argument("--socket", required=True)
    p.add_argument("--profile", default="perfect", choices=sorted(PROFILES))
    p.add_argument("--seed", default="0")
    p.add_argument("--drop-notify", type=float, default=0.0, metavar="P")
    p.add_argument("--disconnect-after-bytes", type=int, default=0, metavar="N")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="give up a Connect() after S seconds without a connectable "
                        "advertisement (real controllers: tens of seconds)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args()
    air = Air(a.socket, a.profile, a.seed, a.drop_notify, a.disconnect_after_bytes,
              a.connect_timeout, a.verbose)
    try:
        air.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
