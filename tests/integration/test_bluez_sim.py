#!/usr/bin/python3
"""The simulated bluetoothd and air (tools/bluez-sim) behave like BlueZ 5.66
as shared/notes/ble-lab.md describes it.  TAP, no root: two (or three)
simulated hosts on private buses (simlab.py).  Host 1 plays the pksync
peripheral (advertisement + GATT application with AcquireWrite/AcquireNotify
characteristics), host 2 the central, both driven from this process through
dbus-python on a GLib loop.  Every wait is bounded.

usage: test_bluez_sim.py SOURCE_ROOT
"""

import os
import select
import shutil
import socket
import sys
import time

try:
    import dbus
    import dbus.mainloop.glib
    import dbus.service
    from gi.repository import GLib
except ImportError as e:  # tools/setup-deps installs python3-dbus and python3-gi
    print("1..0 # SKIP %s (run with /usr/bin/python3)" % e)
    sys.exit(77)
if shutil.which("dbus-daemon") is None:
    print("1..0 # SKIP dbus-daemon not installed")
    sys.exit(77)

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(SRC, "tools", "bluez-sim"))
from simlab import SimLab  # noqa: E402

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)

SVC = "7e0c0000-8f1d-4c59-a0e0-8d6c1f0a5b01"
CHR_W = "7e0c0001-8f1d-4c59-a0e0-8d6c1f0a5b01"
CHR_N = "7e0c0002-8f1d-4c59-a0e0-8d6c1f0a5b01"
CHR_V = "7e0c0003-8f1d-4c59-a0e0-8d6c1f0a5b01"
SVC2 = "7e0c0100-8f1d-4c59-a0e0-8d6c1f0a5b01"
CHR_X = "7e0c0101-8f1d-4c59-a0e0-8d6c1f0a5b01"
SD16 = "0000fd50-0000-1000-8000-00805f9b34fb"
SD16B = "0000fd51-0000-1000-8000-00805f9b34fb"
PROPS = "org.freedesktop.DBus.Properties"

# --------------------------------------------------------------------------
# TAP


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, detail=""):
        self.n += 1
        if not cond:
            self.failed += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name), flush=True)
        if not cond and detail:
            self.diag(detail)
        return cond

    def diag(self, text):
        for line in str(text).splitlines():
            print("# " + line, flush=True)

    def done(self):
        print("1..%d" % self.n, flush=True)
        return 1 if self.failed else 0


tap = Tap()

# --------------------------------------------------------------------------
# Loop helpers: the test is both the apps and the clients, so every call to
# bluetoothd is asynchronous (it calls back into us while we wait).

_tick = GLib.timeout_add(20, lambda: True)  # wake the loop regularly


def run_until(cond, timeout):
    """Iterate the loop until cond() is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    ctx = GLib.MainContext.default()
    while not cond():
        if time.monotonic() >= deadline:
            return False
        ctx.iteration(True)
    return True


def pump(seconds):
    run_until(lambda: False, seconds)


def call(bus, path, iface, method, sig="", args=(), timeout=10.0, dest="org.bluez"):
    """Call a method asynchronously; return the reply or raise its error."""
    box = {}
    bus.call_async(dest, path, iface, method, sig, args,
                   lambda *r: box.setdefault("r", r),
                   lambda e: box.setdefault("e", e), timeout=timeout)
    if not run_until(lambda: box, timeout + 1):
        raise TimeoutError(method)
    if "e" in box:
        raise box["e"]
    r = box["r"]
    return r[0] if len(r) == 1 else (r if r else None)


def call_err(*a, **kw):
    """The D-Bus error name a call fails with, or None if it succeeds."""
    try:
        call(*a, **kw)
    except dbus.DBusException as e:
        return e.get_dbus_name()
    return None


def prop(bus, path, iface, name):
    return call(bus, path, PROPS, "Get", "ss", (iface, name))


def wait_readable(fd, timeout):
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r)


def wait_hup(sock, timeout):
    """True when the peer end is closed (POLLHUP), within timeout seconds;
    keeps the GLib loop running meanwhile."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll(0):
            return True
        pump(0.02)
    return False


def drain(sock):
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


# --------------------------------------------------------------------------
# The peripheral's application objects (what pksync-agent exports)


class Advertisement(dbus.service.Object):
    def __init__(self, bus, path, props):
        self.props = props
        self.released = 0
        dbus.service.Object.__init__(self, bus, path)

    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return self.props

    @dbus.service.method("org.bluez.LEAdvertisement1")
    def Release(self):
        self.released += 1


class Characteristic(dbus.service.Object):
    def __init__(self, bus, path, props):
        self.props = props
        self.acquire_opts = []
        self.app_socks = []  # our (the app's) ends of the fds we gave out
        self.writes = []  # WriteValue calls: (bytes, options)
        dbus.service.Object.__init__(self, bus, path)

    def _pair(self, options):
        self.acquire_opts.append(dict(options))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.app_socks.append(ours)
        fd = dbus.types.UnixFd(theirs.fileno())
        theirs.close()
        return fd, dbus.UInt16(int(options.get("mtu", 23)))

    @dbus.service.method("org.bluez.GattCharacteristic1", in_signature="a{sv}",
                         out_signature="hq")
    def AcquireWrite(self, options):
        return self._pair(options)

    @dbus.service.method("org.bluez.GattCharacteristic1", in_signature="a{sv}",
                         out_signature="hq")
    def AcquireNotify(self, options):
        return self._pair(options)

    @dbus.service.method("org.bluez.GattCharacteristic1", in_signature="aya{sv}")
    def WriteValue(self, value, options):
        self.writes.append((bytes(value), dict(options)))

    @dbus.service.method("org.bluez.GattCharacteristic1")
    def StartNotify(self):
        self.notifying = True

    @dbus.service.method("org.bluez.GattCharacteristic1")
    def StopNotify(self):
        self.notifying = False

    @dbus.service.signal(PROPS, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass


class Application(dbus.service.Object):
    def __init__(self, bus, path, objects):
        self.objects = objects
        dbus.service.Object.__init__(self, bus, path)

    @dbus.service.method("org.freedesktop.DBus.ObjectManager", out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return self.objects


def adv_props(service_data_len, uuids=("fd50",), sd_uuid="fd50", fill=0x41):
    p = {"Type": dbus.String("peripheral"),
         "ServiceUUIDs": dbus.Array(list(uuids), signature="s"),
         "ServiceData": dbus.Dictionary(
             {sd_uuid: dbus.Array(bytes([fill] * service_data_len), signature="y")},
             signature="sv")}
    return dbus.Dictionary(p, signature="sv")


def dev_path(k):
    return "/org/bluez/hci0/dev_AA_BB_CC_DD_EE_%02X" % k


def managed(bus):
    return call(bus, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")


def find_char(bus, uuid, under):
    for path, ifaces in managed(bus).items():
        c = ifaces.get("org.bluez.GattCharacteristic1")
        if c and str(c["UUID"]) == uuid and str(path).startswith(under):
            return str(path)
    return None


def connect(b2, timeout=10.0):
    call(b2, dev_path(1), "org.bluez.Device1", "Connect", timeout=timeout)
    w = find_char(b2, CHR_W, dev_path(1))
    n = find_char(b2, CHR_N, dev_path(1))
    return w, n


def acquire(b2, path, method):
    fd, mtu = call(b2, path, "org.bluez.GattCharacteristic1", method, "a{sv}",
                   (dbus.Dictionary({}, signature="sv"),))
    s = socket.socket(fileno=fd.take())
    s.setblocking(False)
    return s, int(mtu)


def sock_type(s):
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)


def main():
    lab = SimLab(3, profile="perfect", seed="7", connect_timeout=2.0)
    try:
        lab.start()
    except Exception as e:
        tap.ok(False, "simulated lab starts", e)
        return tap.done()
    try:
        run(lab)
    except Exception:
        import traceback
        tap.ok(False, "no unexpected exception", traceback.format_exc())
    finally:
        lab.stop()
    return tap.done()


def run(lab):
    b1 = dbus.bus.BusConnection(lab.bus(1))
    b2 = dbus.bus.BusConnection(lab.bus(2))
    b3 = dbus.bus.BusConnection(lab.bus(3))

    # ---- adapter ---------------------------------------------------------
    objs = managed(b1)
    tap.ok("/org/bluez/hci0" in objs and "org.bluez.Adapter1" in objs["/org/bluez/hci0"]
           and "org.bluez.LEAdvertisingManager1" in objs["/org/bluez/hci0"]
           and "org.bluez.GattManager1" in objs["/org/bluez/hci0"],
           "ObjectManager at / lists hci0 with Adapter1, LEAdvertisingManager1, GattManager1")
    tap.ok(str(prop(b1, "/org/bluez/hci0", "org.bluez.Adapter1", "Address")) == lab.addr(1),
           "Adapter1.Address is the host's address")
    tap.ok(call_err(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StopDiscovery")
           == "org.bluez.Error.Failed", "StopDiscovery without a session: Error.Failed")
    tap.ok(call_err(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery", "s",
                    ("x",)) == "org.freedesktop.DBus.Error.UnknownMethod" and
           call_err(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "Frobnicate")
           == "org.freedesktop.DBus.Error.UnknownMethod",
           "wrong signature or unknown method: UnknownMethod, as gdbus answers")
    tap.ok(call_err(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "SetDiscoveryFilter",
                    "a{sv}", ({"Bogus": dbus.Boolean(True)},))
           == "org.bluez.Error.InvalidArguments", "unknown discovery filter key: InvalidArguments")

    # ---- advertising: the 31-byte budget -----------------------------------
    # flags 3 + 16-bit UUID list 4 + 16-bit service data (2+2+20) = 31: fits.
    adv = Advertisement(b1, "/pks/adv0", adv_props(20))
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                    "RegisterAdvertisement", "oa{sv}", ("/pks/adv0", {})) is None,
           "31-byte advertisement registers")
    big = Advertisement(b1, "/pks/adv1", adv_props(21, fill=0x42))
    e = call_err(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                 "RegisterAdvertisement", "oa{sv}", ("/pks/adv1", {}))
    tap.ok(e == "org.bluez.Error.Failed", "32-byte advertisement refused with Error.Failed",
           "got %s" % e)
    b128 = Advertisement(b1, "/pks/adv2", adv_props(
        1, uuids=[SVC], sd_uuid=SVC))  # 3 + 18 + (2+16+1) = 40
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                    "RegisterAdvertisement", "oa{sv}", ("/pks/adv2", {}))
           == "org.bluez.Error.Failed",
           "128-bit UUID list leaves no room for 128-bit service data")
    # The same 16-bit UUID written in its 128-bit form counts 16 bytes, as
    # in lib/uuid.c: 3 + 18 + (2+16+1) = 40.
    Advertisement(b1, "/pks/adv4", adv_props(1, uuids=[SD16], sd_uuid=SD16))
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                    "RegisterAdvertisement", "oa{sv}", ("/pks/adv4", {}))
           == "org.bluez.Error.Failed", "a UUID counts by its written form (128-bit text)")
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                    "RegisterAdvertisement", "oa{sv}", ("/pks/adv0", {}))
           == "org.bluez.Error.AlreadyExists", "registering the same object twice: AlreadyExists")
    tap.ok(int(prop(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1",
                    "ActiveInstances")) == 1, "ActiveInstances counts the one advertisement")

    # ---- scanning ----------------------------------------------------------
    added = []
    changed = []
    b2.add_signal_receiver(lambda p, i: added.append((str(p), i)), "InterfacesAdded",
                           "org.freedesktop.DBus.ObjectManager", "org.bluez", "/")
    b2.add_signal_receiver(lambda i, c, inv, path=None: changed.append((path, str(i), c)),
                           "PropertiesChanged", PROPS, "org.bluez", path_keyword="path")
    # A second advert carries service data under fd51 but does not list fd51:
    # a filter on fd51 must not match it.
    only_sd = Advertisement(b1, "/pks/adv3", dbus.Dictionary({
        "Type": dbus.String("broadcast"),
        "ServiceData": dbus.Dictionary({"fd51": dbus.Array(b"\x01\x02", signature="y")},
                                       signature="sv")}, signature="sv"))
    call(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement",
         "oa{sv}", ("/pks/adv3", {}))
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "SetDiscoveryFilter", "a{sv}",
         ({"UUIDs": dbus.Array(["fd51"], signature="s"), "Transport": "le"},))
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")
    tap.ok(bool(prop(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "Discovering")),
           "StartDiscovery sets Discovering")
    pump(1.0)
    tap.ok(not [a for a in added if a[0] == dev_path(1)],
           "UUID filter does not match service-data keys")
    call(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1", "UnregisterAdvertisement",
         "o", ("/pks/adv3",))
    pump(0.1)
    tap.ok(only_sd.released == 1, "UnregisterAdvertisement calls Release")
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StopDiscovery")
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "SetDiscoveryFilter", "a{sv}",
         ({"UUIDs": dbus.Array(["fd50"], signature="s"), "Transport": "le",
           "DuplicateData": dbus.Boolean(True)},))
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")
    got = run_until(lambda: [a for a in added if a[0] == dev_path(1)], 3.0)
    dev = [a for a in added if a[0] == dev_path(1)]
    if tap.ok(got, "host 2 sees host 1 as Device1 (InterfacesAdded)"):
        d = dev[0][1]["org.bluez.Device1"]
        sd = d.get("ServiceData", {})
        tap.ok(str(d["Address"]) == lab.addr(1) and str(d["AddressType"]) == "random",
               "Device1 Address and AddressType random")
        tap.ok(SD16 in sd and bytes(sd[SD16]) == b"\x41" * 20,
               "ServiceData keyed by the 128-bit UUID string carries the 20-byte payload",
               repr(sd))
        tap.ok(SD16 in [str(u) for u in d.get("UUIDs", [])], "UUIDs lists the service UUID")
        tap.ok("RSSI" in d, "RSSI present")
    n0 = len(changed)
    run_until(lambda: len([c for c in changed[n0:] if c[0] == dev_path(1)]) >= 3, 2.0)
    upd = [c for c in changed[n0:] if c[0] == dev_path(1)]
    tap.ok(len(upd) >= 3 and any("ServiceData" in c[2] for c in upd),
           "repeated advertisements arrive as PropertiesChanged (DuplicateData)",
           "%d updates" % len(upd))

    # Properties are read once: a change needs re-registration.
    adv.props = adv_props(20, fill=0x43)
    pump(0.8)
    sd = prop(b2, dev_path(1), "org.bluez.Device1", "ServiceData")
    tap.ok(bytes(sd[SD16]) == b"\x41" * 20, "advertisement properties are read once")
    call(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1", "UnregisterAdvertisement",
         "o", ("/pks/adv0",))
    call(b1, "/org/bluez/hci0", "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement",
         "oa{sv}", ("/pks/adv0", {}))
    run_until(lambda: bytes(prop(b2, dev_path(1), "org.bluez.Device1", "ServiceData")
                            .get(SD16, b"")) == b"\x43" * 20, 2.0)
    sd = prop(b2, dev_path(1), "org.bluez.Device1", "ServiceData")
    tap.ok(bytes(sd[SD16]) == b"\x43" * 20, "re-registration publishes the new data")

    # ---- GATT application on host 1 ------------------------------------------
    wchr = Characteristic(b1, "/pks/app/service0/char0", None)
    nchr = Characteristic(b1, "/pks/app/service0/char1", None)
    vchr = Characteristic(b1, "/pks/app/service0/char2", None)
    app = Application(b1, "/pks/app", {
        dbus.ObjectPath("/pks/app/service0"): {"org.bluez.GattService1": {
            "UUID": dbus.String(SVC), "Primary": dbus.Boolean(True)}},
        dbus.ObjectPath("/pks/app/service0/char0"): {"org.bluez.GattCharacteristic1": {
            "UUID": dbus.String(CHR_W),
            "Service": dbus.ObjectPath("/pks/app/service0"),
            "Flags": dbus.Array(["write-without-response"], signature="s"),
            "WriteAcquired": dbus.Boolean(False)}},
        dbus.ObjectPath("/pks/app/service0/char1"): {"org.bluez.GattCharacteristic1": {
            "UUID": dbus.String(CHR_N),
            "Service": dbus.ObjectPath("/pks/app/service0"),
            "Flags": dbus.Array(["notify"], signature="s"),
            "NotifyAcquired": dbus.Boolean(False)}},
        dbus.ObjectPath("/pks/app/service0/char2"): {"org.bluez.GattCharacteristic1": {
            "UUID": dbus.String(CHR_V),
            "Service": dbus.ObjectPath("/pks/app/service0"),
            "Flags": dbus.Array(["write", "notify"], signature="s")}},
    })
    empty = Application(b1, "/pks/empty", dbus.Dictionary({}, signature="oa{sa{sv}}"))
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.GattManager1", "RegisterApplication",
                    "oa{sv}", ("/pks/empty", {})) == "org.bluez.Error.Failed",
           "an application without services is refused")
    tap.ok(call_err(b1, "/org/bluez/hci0", "org.bluez.GattManager1", "RegisterApplication",
                    "oa{sv}", ("/pks/app", {})) is None, "GATT application registers")

    # ---- connect, acquire, datagrams both ways ---------------------------
    call(b2, "/org/bluez/hci0", "org.bluez.Adapter1", "StopDiscovery")
    w, n = connect(b2)
    tap.ok(bool(prop(b2, dev_path(1), "org.bluez.Device1", "Connected")) and
           bool(prop(b2, dev_path(1), "org.bluez.Device1", "ServicesResolved")),
           "Connect: Connected and ServicesResolved")
    tap.ok(w is not None and n is not None, "remote characteristics exported under the device")
    if w is None or n is None:
        return
    flags = [str(f) for f in prop(b2, w, "org.bluez.GattCharacteristic1", "Flags")]
    tap.ok(flags == ["write-without-response"], "remote Flags copied", repr(flags))
    ws, mtu = acquire(b2, w, "AcquireWrite")
    ns, nmtu = acquire(b2, n, "AcquireNotify")
    tap.ok(mtu == 247 and nmtu == 247, "AcquireWrite/AcquireNotify return MTU 247 (perfect)")
    tap.ok(sock_type(ws) == socket.SOCK_SEQPACKET and sock_type(ns) == socket.SOCK_SEQPACKET,
           "fds are SOCK_SEQPACKET")
    tap.ok(call_err(b2, w, "org.bluez.GattCharacteristic1", "AcquireWrite", "a{sv}", ({},))
           == "org.bluez.Error.NotPermitted", "second AcquireWrite: NotPermitted")
    tap.ok(bool(prop(b2, w, "org.bluez.GattCharacteristic1", "WriteAcquired")),
           "WriteAcquired true while acquired")

    ws.send(b"hello")
    run_until(lambda: wchr.app_socks, 3.0)
    got = None
    if wchr.app_socks:
        run_until(lambda: wait_readable(wchr.app_socks[0], 0), 3.0)
        got = drain(wchr.app_socks[0])
    tap.ok(got == [b"hello"], "a datagram written by the central arrives at the app", repr(got))
    o = wchr.acquire_opts[0] if wchr.acquire_opts else {}
    tap.ok(str(o.get("device")) == dev_path(2) and int(o.get("mtu", 0)) == 247 and
           "link" in o, "peripheral AcquireWrite options carry device, mtu, link", repr(o))
    run_until(lambda: nchr.app_socks, 3.0)
    tap.ok(len(nchr.app_socks) == 1, "enabling notifications calls the app's AcquireNotify")
    if not nchr.app_socks:
        return
    wsock, nsock = wchr.app_socks[0], nchr.app_socks[0]
    nsock.send(b"world")
    run_until(lambda: wait_readable(ns, 0), 3.0)
    got = drain(ns)
    tap.ok(got == [b"world"], "a notification written by the app arrives at the central",
           repr(got))

    # Without WriteAcquired/NotifyAcquired: WriteValue names the device,
    # StartNotify plus the app's Value changes make notifications.
    v = find_char(b2, CHR_V, dev_path(1))
    e = call_err(b2, v, "org.bluez.GattCharacteristic1", "WriteValue", "aya{sv}",
                 (dbus.Array(b"who", signature="y"), {"type": dbus.String("request")}))
    wv = vchr.writes[-1] if vchr.writes else (b"", {})
    tap.ok(e is None and wv[0] == b"who" and str(wv[1].get("device")) == dev_path(2),
           "WriteValue reaches the app with the writer's device in its options", repr((e, wv)))
    vals = []
    b2.add_signal_receiver(lambda i, c, inv: vals.append(bytes(c["Value"])) if "Value" in c
                           else None, "PropertiesChanged", PROPS, "org.bluez", v)
    call(b2, v, "org.bluez.GattCharacteristic1", "StartNotify")
    run_until(lambda: getattr(vchr, "notifying", False), 2.0)
    vchr.PropertiesChanged("org.bluez.GattCharacteristic1",
                           {"Value": dbus.Array(b"val", signature="y")}, [])
    run_until(lambda: vals, 2.0)
    tap.ok(getattr(vchr, "notifying", False) and vals == [b"val"],
           "StartNotify: the app's Value change arrives as PropertiesChanged(Value)",
           repr(vals))
    call(b2, v, "org.bluez.GattCharacteristic1", "StopNotify")

    # Service Changed: a second application appears at the central and goes
    # again; the acquired fds of the first stay up.
    Application(b1, "/pks/app2", {
        dbus.ObjectPath("/pks/app2/s"): {"org.bluez.GattService1": {
            "UUID": dbus.String(SVC2), "Primary": dbus.Boolean(True)}},
        dbus.ObjectPath("/pks/app2/s/c"): {"org.bluez.GattCharacteristic1": {
            "UUID": dbus.String(CHR_X), "Service": dbus.ObjectPath("/pks/app2/s"),
            "Flags": dbus.Array(["read"], signature="s")}}})
    call(b1, "/org/bluez/hci0", "org.bluez.GattManager1", "RegisterApplication", "oa{sv}",
         ("/pks/app2", {}))
    appeared = run_until(lambda: find_char(b2, CHR_X, dev_path(1)), 3.0)
    call(b1, "/org/bluez/hci0", "org.bluez.GattManager1", "UnregisterApplication", "o",
         ("/pks/app2",))
    gone = run_until(lambda: not find_char(b2, CHR_X, dev_path(1)), 3.0)
    ws.send(b"still")
    got = []
    run_until(lambda: got.extend(drain(wsock)) or got, 3.0)
    tap.ok(appeared and gone and got == [b"still"],
           "Service Changed: another application's service appears and goes, fds stay up",
           repr((appeared, gone, got)))

    # MTU-3 is the limit for one datagram; a longer write is dropped by BlueZ.
    ws.send(b"A" * 244)
    ws.send(b"B" * 245)
    ws.send(b"C")
    got = []
    run_until(lambda: got.extend(drain(wsock)) or (got and got[-1] == b"C"), 3.0)
    tap.ok([len(x) for x in got] == [244, 1], "244-byte write passes, 245-byte write is dropped",
           repr([len(x) for x in got]))
    nsock.send(b"N" * 300)
    got = []
    run_until(lambda: got.extend(drain(ns)) or got, 3.0)
    tap.ok([len(x) for x in got] == [244], "a notification is cut to MTU-3 bytes",
           repr([len(x) for x in got]))

    # ---- shaping on "phone" and "good" ---------------------------------------
    for profile, kbps in (("phone", 240), ("good", 700)):
        lab.ctl("profile", name=profile)
        count, size = 100, 244
        t0 = time.monotonic()
        sent = 0
        got = []
        deadline = t0 + 10
        while (sent < count or len(got) < count) and time.monotonic() < deadline:
            while sent < count:
                try:
                    nsock.send(sent.to_bytes(2, "big") + b"p" * (size - 2))
                    sent += 1
                except BlockingIOError:
                    break
            pump(0.005)
            got.extend(drain(ns))
        elapsed = time.monotonic() - t0
        expect = count * size * 8 / (kbps * 1000)
        rate = len(got) * size * 8 / elapsed / 1000
        tap.diag("%s: %d x %d bytes in %.3f s (%.0f kbit/s; profile %d kbit/s, "
                 "serialisation alone %.3f s)" % (profile, len(got), size, elapsed, rate,
                                                  kbps, expect))
        seqs = [int.from_bytes(x[:2], "big") for x in got]
        tap.ok(seqs == list(range(count)), "%s: every notification arrives, in order" % profile)
        # The lower bound is the shaping; the upper one leaves room for a loaded box.
        tap.ok(expect * 0.9 <= elapsed <= expect * 2 + 0.5,
               "%s: time for %d bytes within bounds of %d kbit/s" % (profile, count * size, kbps),
               "%.3f s, expected about %.3f s" % (elapsed, expect))
    lab.ctl("profile", name="phone")
    # One small round trip shows the 20-60 ms one-way latency.
    t0 = time.monotonic()
    ws.send(b"ping")
    run_until(lambda: wait_readable(wsock, 0), 2.0)
    one_way = time.monotonic() - t0
    drain(wsock)
    tap.diag("phone: one-way latency measured %.1f ms" % (one_way * 1000))
    tap.ok(0.018 <= one_way <= 0.5, "phone: one-way latency at least 20 ms (20-60 ms + scheduling)")
    lab.ctl("profile", name="perfect")

    # ---- notifications dropped when the reader stalls ----------------------
    burst = 3000
    sent = 0
    deadline = time.monotonic() + 10
    while sent < burst and time.monotonic() < deadline:
        try:
            nsock.send(sent.to_bytes(2, "big") + b"s" * 242)
            sent += 1
        except BlockingIOError:
            pump(0.005)  # bluetoothd is draining the app's socket
    pump(0.5)
    got = drain(ns)
    seqs = [int.from_bytes(x[:2], "big") for x in got]
    tap.diag("stalled reader: %d of %d notifications kept" % (len(got), sent))
    tap.ok(sent == burst and 0 < len(got) < burst and seqs == sorted(seqs),
           "stalled reader: notifications beyond the socket buffer dropped silently, "
           "the rest in order")
    nsock.send(b"after")
    got = []
    run_until(lambda: got.extend(drain(ns)) or got, 2.0)
    tap.ok(got == [b"after"], "the link still works after drops")

    # ---- air drops notifications with a seeded probability -----------------
    lab.ctl("drop-notify", p=0.5)
    got = []
    for i in range(200):
        nsock.send(i.to_bytes(2, "big"))
        if i % 20 == 0:
            pump(0.01)
            got.extend(drain(ns))
    pump(0.3)
    got.extend(drain(ns))
    lab.ctl("drop-notify", p=0.0)
    seqs = [int.from_bytes(x[:2], "big") for x in got]
    tap.diag("drop-notify 0.5: %d of 200 notifications arrived" % len(got))
    tap.ok(40 <= len(got) <= 160 and seqs == sorted(seqs),
           "drop-notify 0.5 drops about half, order kept")

    # ---- forced disconnect: HUP, Connected false ---------------------------
    lab.ctl("disconnect", a=lab.addr(1), b=lab.addr(2))
    tap.ok(wait_hup(ws, 2.0) and wait_hup(ns, 2.0), "forced disconnect: HUP on both fds")
    tap.ok(run_until(lambda: not prop(b2, dev_path(1), "org.bluez.Device1", "Connected"), 2.0)
           and not prop(b2, dev_path(1), "org.bluez.Device1", "ServicesResolved"),
           "forced disconnect: Connected and ServicesResolved false")
    tap.ok(wait_hup(nsock, 2.0), "peripheral: shared notify fd closed with no subscriber left")
    tap.ok(find_char(b2, CHR_W, dev_path(1)) is None, "remote GATT objects removed")
    ws.close()
    ns.close()

    # ---- one shared fd for every central; worst-profile MTU ----------------
    lab.ctl("profile", name="worst")
    call(b3, "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")
    pump(0.8)
    w, n = connect(b2)
    w3, n3 = connect(b3)
    ok3 = w is not None and w3 is not None
    tap.ok(ok3, "two centrals connect to one peripheral")
    if ok3:
        ws2, mtu2 = acquire(b2, w, "AcquireWrite")
        ws3, _ = acquire(b3, w3, "AcquireWrite")
        ns2, _ = acquire(b2, n, "AcquireNotify")
        ns3, _ = acquire(b3, n3, "AcquireNotify")
        tap.ok(mtu2 == 23, "worst profile: MTU 23", "mtu %d" % mtu2)
        ws2.send(b"x" * 20)
        ws2.send(b"y" * 21)
        ws3.send(b"from3")
        got = []
        run_until(lambda: got.extend(drain(wsock)) or len(got) >= 2, 3.0)
        pump(0.3)
        got.extend(drain(wsock))
        tap.ok(sorted(got) == sorted([b"x" * 20, b"from3"]),
               "both centrals' writes arrive on the one shared fd, 21 bytes dropped at MTU 23",
               repr(got))
        tap.ok(len(wchr.app_socks) == 1, "AcquireWrite called once for all centrals")
        run_until(lambda: len(nchr.app_socks) == 2, 2.0)
        nsock = nchr.app_socks[-1]
        nsock.send(b"to-all")
        g2, g3 = [], []
        run_until(lambda: g2.extend(drain(ns2)) or g3.extend(drain(ns3)) or (g2 and g3), 3.0)
        tap.ok(g2 == [b"to-all"] and g3 == [b"to-all"],
               "a notification on the shared fd reaches every subscribed central")

        # ---- out of range: HUP after the supervision timeout ---------------
        lab.ctl("range", addr=lab.addr(1), **{"in": False})
        t0 = time.monotonic()
        hup = wait_hup(ws2, 3.0) and wait_hup(ns3, 3.0)
        tap.diag("out of range: HUP after %.2f s" % (time.monotonic() - t0))
        tap.ok(hup, "out of range: HUP on the centrals' fds")
        e = call_err(b2, dev_path(1), "org.bluez.Device1", "Connect", timeout=10)
        tap.ok(e == "org.bluez.Error.Failed", "Connect to a host out of range fails", e)
        lab.ctl("range", addr=lab.addr(1), **{"in": True})
        lab.ctl("profile", name="perfect")
        w, n = connect(b2)
        tap.ok(w is not None, "back in range: Connect works again")
        for s in (ws2, ws3, ns2, ns3):
            s.close()

        # ---- the controller is unplugged and comes back -----------------------
        gone3, back3 = [], []
        b3.add_signal_receiver(lambda p, i: gone3.append(str(p)), "InterfacesRemoved",
                               "org.freedesktop.DBus.ObjectManager", "org.bluez", "/")
        b3.add_signal_receiver(lambda p, i: back3.append(str(p)), "InterfacesAdded",
                               "org.freedesktop.DBus.ObjectManager", "org.bluez", "/")
        lab.ctl("adapter", addr=lab.addr(3), present=False)
        run_until(lambda: "/org/bluez/hci0" in gone3, 2.0)
        tap.ok("/org/bluez/hci0" in gone3 and dev_path(1) in gone3 and
               "/org/bluez/hci0" not in managed(b3),
               "adapter unplugged: InterfacesRemoved for hci0 and its devices")
        lab.ctl("adapter", addr=lab.addr(3), present=True)
        run_until(lambda: "/org/bluez/hci0" in back3, 2.0)
        tap.ok("/org/bluez/hci0" in managed(b3) and not prop(
            b3, "/org/bluez/hci0", "org.bluez.Adapter1", "Discovering"),
            "adapter back: InterfacesAdded for hci0, no discovery running")

        # ---- the link drops after N bytes -----------------------------------
        ws2, _ = acquire(b2, w, "AcquireWrite")
        lab.ctl("disconnect-after-bytes", n=1000)
        for i in range(5):
            ws2.send(b"d" * 244)
        tap.ok(wait_hup(ws2, 3.0), "disconnect-after-bytes 1000: HUP after about 1000 bytes")
        lab.ctl("disconnect-after-bytes", n=0)
        ws2.close()
        w, n = connect(b2)

        # ---- the peer's bluetoothd exits -----------------------------------
        ws2, _ = acquire(b2, w, "AcquireWrite")
        lab.stop_bluetoothd(1)
        tap.ok(wait_hup(ws2, 3.0), "peer bluetoothd exiting: HUP")
        tap.ok(run_until(lambda: not prop(b2, dev_path(1), "org.bluez.Device1", "Connected"),
                         2.0), "peer bluetoothd exiting: Connected false")


if __name__ == "__main__":
    sys.exit(main())
