#!/usr/bin/python3
"""A simulated bluetoothd speaking a subset of the BlueZ 5.66 D-Bus API.

It owns org.bluez on a private bus and talks to the other simulated hosts
through the air (air.py).  See README.md for what is covered and what only
real radios show.  Objects:

  /                        org.freedesktop.DBus.ObjectManager
  /org/bluez               org.bluez.AgentManager1 (accepted, never used)
  /org/bluez/hci0          org.bluez.Adapter1, org.bluez.LEAdvertisingManager1,
                           org.bluez.GattManager1
  /org/bluez/hci0/dev_XX   org.bluez.Device1 (remote hosts seen or connected)
  .../dev_XX/serviceNNNN   org.bluez.GattService1      (the peer's GATT
  .../serviceNNNN/charNNNN org.bluez.GattCharacteristic1  database, while
  .../charNNNN/descNNNN    org.bluez.GattDescriptor1     connected)

Errors use BlueZ's names and messages (src/error.c) where a case exists.
"""

import argparse
import itertools
import json
import os
import socket
import sys
import time

import dbus
import dbus.mainloop.glib
import dbus.service
from gi.repository import GLib

BLUEZ = "org.bluez"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
ADV_MGR_IFACE = "org.bluez.LEAdvertisingManager1"
ADV_IFACE = "org.bluez.LEAdvertisement1"
GATT_MGR_IFACE = "org.bluez.GattManager1"
AGENT_MGR_IFACE = "org.bluez.AgentManager1"
SERVICE_IFACE = "org.bluez.GattService1"
CHRC_IFACE = "org.bluez.GattCharacteristic1"
DESC_IFACE = "org.bluez.GattDescriptor1"

BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
CCC_UUID = "00002902" + BASE_UUID_TAIL

# Legacy advertising: 31 bytes of advertising data, 31 of scan response.
MAX_ADV_LEN = 31
MAX_SCAN_RSP_LEN = 31
# Instances a typical controller offers through the kernel's software
# rotation (HCI_MAX_ADV_INSTANCES).
MAX_ADV_INSTANCES = 5
# Bytes handed to the air and not yet sent on a link before the simulator
# stops reading the apps' sockets for it (back-pressure, see README).
LINK_BACKLOG = 2048
# BlueZ's TemporaryTimeout default: unconnected devices no longer seen are
# removed this long after discovery stops.
TEMPORARY_TIMEOUT = 30


def log(*a):
    # One write per line, so several daemons sharing a stderr do not interleave.
    sys.stderr.write("bluetoothd[%s]: %s\n" % (ARGS.address, " ".join(str(x) for x in a)))
    sys.stderr.flush()


def err(name, message):
    """An org.bluez.Error.<name> reply, like src/error.c builds them."""
    return dbus.DBusException(message, name="org.bluez.Error." + name)


def invalid_args():
    return err("InvalidArguments", "Invalid arguments in method call")


# ---------------------------------------------------------------------------
# UUIDs


def uuid128(s):
    """Normalise a UUID string ("fd50", "0xfd50", 32-bit, 128-bit) to 128 bits."""
    s = str(s).lower()
    if s.startswith("0x"):
        s = s[2:]
    if len(s) == 4 and all(c in "0123456789abcdef" for c in s):
        return "0000" + s + BASE_UUID_TAIL
    if len(s) == 8 and all(c in "0123456789abcdef" for c in s):
        return s + BASE_UUID_TAIL
    parts = s.split("-")
    if len(s) == 36 and [len(p) for p in parts] == [8, 4, 4, 4, 12] and \
            all(c in "0123456789abcdef" for c in s.replace("-", "")):
        return s
    raise ValueError("bad UUID " + s)


def uuid_size(s):
    """Bytes the UUID takes in an advertisement, by the form it was written
    in, as lib/uuid.c's bt_string_to_uuid() reads it: 4 hex digits (or 0x +
    4) are 16-bit, 8 (or 0x + 8) 32-bit, the 36-character form 128-bit even
    on the Bluetooth base UUID."""
    uuid128(s)  # validates
    n = len(str(s))
    return 2 if n in (4, 6) else 4 if n in (8, 10) else 16


# ---------------------------------------------------------------------------
# Objects with properties


class StrictObject(dbus.service.Object):
    """Answers a call whose argument signature does not match the method's
    with org.freedesktop.DBus.Error.UnknownMethod, as gdbus (BlueZ's D-Bus
    helper) leaves such calls unhandled; dbus-python would call the method
    anyway and fail with a Python error."""

    def _message_cb(self, connection, message):
        if isinstance(message, dbus.lowlevel.MethodCallMessage):
            try:
                _, parent = dbus.service._method_lookup(self, message.get_member(),
                                                        message.get_interface())
            except Exception:
                parent = None  # unknown method: dbus-python says UnknownMethod
            if parent is not None:
                want = parent._dbus_in_signature or ""
                got = message.get_signature() or ""
                if want != got:
                    connection.send_message(dbus.lowlevel.ErrorMessage(
                        message, "org.freedesktop.DBus.Error.UnknownMethod",
                        "Method \"%s\" with signature \"%s\" on interface \"%s\" "
                        "doesn't exist" % (message.get_member(), got,
                                            message.get_interface())))
                    return
        return dbus.service.Object._message_cb(self, connection, message)


class PropObject(StrictObject):
    """An exported object holding its properties per interface.

    Subclasses declare their methods; properties live in self.props and are
    changed through set_prop(), which emits PropertiesChanged like BlueZ.
    """

    def __init__(self, sim, path):
        self.sim = sim
        self.path = path
        self.props = {}
        self.writable = set()
        StrictObject.__init__(self, sim.bus, path)

    def managed(self):
        ifaces = {"org.freedesktop.DBus.Introspectable": {}, PROPS_IFACE: {}}
        for iface, props in self.props.items():
            ifaces[iface] = dbus.Dictionary(props, signature="sv")
        return dbus.Dictionary(ifaces, signature="sa{sv}")

    def set_prop(self, iface, name, value):
        old = self.props[iface].get(name)
        if old is not None and old == value and type(old) is type(value):
            return
        self.props[iface][name] = value
        self.PropertiesChanged(iface, {name: value}, [])

    def del_prop(self, iface, name):
        if self.props[iface].pop(name, None) is not None:
            self.PropertiesChanged(iface, {}, [name])

    def on_set(self, iface, name, value):
        self.set_prop(iface, name, value)

    @dbus.service.method(PROPS_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, name):
        if iface not in self.props:
            raise dbus.DBusException("No such interface '%s'" % iface,
                                     name="org.freedesktop.DBus.Error.InvalidArgs")
        if name not in self.props[iface]:
            raise dbus.DBusException("No such property '%s'" % name,
                                     name="org.freedesktop.DBus.Error.InvalidArgs")
        return self.props[iface][name]

    @dbus.service.method(PROPS_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        if iface not in self.props:
            raise dbus.DBusException("No such interface '%s'" % iface,
                                     name="org.freedesktop.DBus.Error.InvalidArgs")
        return dbus.Dictionary(self.props[iface], signature="sv")

    @dbus.service.method(PROPS_IFACE, in_signature="ssv")
    def Set(self, iface, name, value):
        if iface not in self.props or name not in self.props[iface]:
            raise dbus.DBusException("No such property '%s'" % name,
                                     name="org.freedesktop.DBus.Error.InvalidArgs")
        if (iface, name) not in self.writable:
            raise dbus.DBusException("Property '%s' is not writable" % name,
                                     name="org.freedesktop.DBus.Error.PropertyReadOnly")
        self.on_set(iface, name, value)

    @dbus.service.signal(PROPS_IFACE, signature="sa{sv}as")
    def PropertiesChanged(self, iface, changed, invalidated):
        pass


class Root(StrictObject):
    """ObjectManager at "/" (where BlueZ has it)."""

    def __init__(self, sim):
        self.sim = sim
        StrictObject.__init__(self, sim.bus, "/")

    @dbus.service.method(OM_IFACE, out_signature="a{oa{sa{sv}}}")
    def GetManagedObjects(self):
        return dbus.Dictionary({dbus.ObjectPath(p): o.managed()
                                for p, o in self.sim.objects.items()},
                               signature="oa{sa{sv}}")

    @dbus.service.signal(OM_IFACE, signature="oa{sa{sv}}")
    def InterfacesAdded(self, path, ifaces):
        pass

    @dbus.service.signal(OM_IFACE, signature="oas")
    def InterfacesRemoved(self, path, ifaces):
        pass


class BluezObject(PropObject):
    """/org/bluez: AgentManager1.  Agents are accepted and never called: the
    simulator does no pairing."""

    def __init__(self, sim):
        PropObject.__init__(self, sim, "/org/bluez")
        self.props = {AGENT_MGR_IFACE: {}}
        self.agents = {}

    @dbus.service.method(AGENT_MGR_IFACE, in_signature="os", sender_keyword="sender")
    def RegisterAgent(self, path, capability, sender=None):
        if capability not in ("", "DisplayOnly", "DisplayYesNo", "KeyboardOnly",
                              "NoInputNoOutput", "KeyboardDisplay"):
            raise invalid_args()
        if sender in self.agents:
            raise err("AlreadyExists", "Already Exists")
        self.agents[sender] = path

    @dbus.service.method(AGENT_MGR_IFACE, in_signature="o", sender_keyword="sender")
    def UnregisterAgent(self, path, sender=None):
        if self.agents.get(sender) != path:
            raise err("DoesNotExist", "Does Not Exist")
        del self.agents[sender]

    @dbus.service.method(AGENT_MGR_IFACE, in_signature="o", sender_keyword="sender")
    def RequestDefaultAgent(self, path, sender=None):
        if self.agents.get(sender) != path:
            raise err("DoesNotExist", "Does Not Exist")


# ---------------------------------------------------------------------------
# Advertising


def parse_advertisement(props):
    """Turn LEAdvertisement1 properties (read once) into what goes on air.

    Returns (advert dict, adv data length, error or None).  The length is
    counted the way BlueZ's src/shared/ad.c lays the AD structures out."""
    a = {"connectable": False, "uuids": [], "service_data": {}, "mfg": {},
         "name": None, "discoverable": False}
    length = 0
    try:
        t = str(props.get("Type", "broadcast"))
        if t not in ("broadcast", "peripheral"):
            return None, 0, "Type"
        a["connectable"] = t == "peripheral"
        # Flags AD (3 bytes): peripherals are general discoverable.
        flags = a["connectable"] or bool(props.get("Discoverable", False))
        if bool(props.get("Discoverable", False)) and t == "broadcast":
            return None, 0, "Broadcast cannot set flags"
        if flags:
            length += 3
            a["discoverable"] = True
        for key in ("ServiceUUIDs", "SolicitUUIDs"):
            sizes = {2: 0, 4: 0, 16: 0}
            for u in props.get(key, []):
                sizes[uuid_size(u)] += 1
                if key == "ServiceUUIDs":
                    a["uuids"].append(uuid128(u))
            for size, count in sizes.items():
                if count:
                    length += 2 + size * count
        for u, v in props.get("ServiceData", {}).items():
            data = bytes(v)
            length += 2 + uuid_size(u) + len(data)
            a["service_data"][uuid128(u)] = data.hex()
        for cid, v in props.get("ManufacturerData", {}).items():
            data = bytes(v)
            length += 2 + 2 + len(data)
            a["mfg"][str(int(cid))] = data.hex()
        for typ, v in props.get("Data", {}).items():
            length += 2 + len(bytes(v))
        includes = [str(i) for i in props.get("Includes", [])]
        if "tx-power" in includes:
            length += 3
        if "appearance" in includes or "Appearance" in props:
            length += 4
        name = props.get("LocalName")
        if name is not None or "local-name" in includes:
            # The local name goes in the scan response, cut to fit it.
            name = str(name if name is not None else ARGS.name)
            a["name"] = name.encode()[:MAX_SCAN_RSP_LEN - 2].decode("utf-8", "ignore")
        a["timeout"] = int(props.get("Timeout", 0))
    except (ValueError, TypeError) as e:
        return None, 0, str(e)
    return a, length, None


class Advertisement:
    def __init__(self, owner, path, adv, aid):
        self.owner = owner
        self.path = path
        self.adv = adv
        self.id = aid
        self.timeout_id = None


# ---------------------------------------------------------------------------
# Local GATT database (applications registered on this host)


class LocalChar:
    def __init__(self, app, path, props, handle):
        self.app = app
        self.path = path
        self.uuid = uuid128(props["UUID"])
        self.flags = [str(f) for f in props.get("Flags", [])]
        self.write_acquired = "WriteAcquired" in props
        self.notify_acquired = "NotifyAcquired" in props
        self.handle = handle  # declaration; value is handle + 1, CCC + 2
        self.write_fd = None  # shared by every central (AcquireWrite)
        self.write_pending = None  # datagrams waiting for AcquireWrite's reply
        self.notify_sock = None  # shared by every central (AcquireNotify)
        self.notify_watch = None
        self.notify_acquiring = False
        self.subscribers = set()  # link ids with notifications enabled
        self.signal_match = None

    @property
    def value_handle(self):
        return self.handle + 1

    def can_notify(self):
        return "notify" in self.flags or "indicate" in self.flags


class App:
    def __init__(self, owner, path):
        self.owner = owner
        self.path = path
        self.services = []  # (uuid, handle, end, primary, [LocalChar])
        self.chars = []


# ---------------------------------------------------------------------------
# Links and remote GATT objects


class Link:
    def __init__(self, lid, peer, mtu, initiator):
        self.id = lid
        self.peer = peer
        self.mtu = mtu
        self.initiator = initiator
        self.inflight = 0
        self.waiters = []  # callables to run when the backlog drains
        self.remote_objects = []  # paths, in creation order
        self.pending = {}  # request id -> (ok, err) for write/read requests

    def busy(self):
        return self.inflight >= LINK_BACKLOG


class Device(PropObject):
    def __init__(self, sim, addr):
        self.addr = addr
        path = sim.adapter.path + "/dev_" + addr.replace(":", "_")
        PropObject.__init__(self, sim, path)
        self.props = {DEVICE_IFACE: {
            "Address": dbus.String(addr),
            "AddressType": dbus.String("random"),
            "Alias": dbus.String(addr.replace(":", "-")),
            "Paired": dbus.Boolean(False),
            "Bonded": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "ServicesResolved": dbus.Boolean(False),
            "UUIDs": dbus.Array([], signature="s"),
            "Adapter": dbus.ObjectPath(sim.adapter.path),
        }}
        self.writable = {(DEVICE_IFACE, "Trusted"), (DEVICE_IFACE, "Blocked"),
                         (DEVICE_IFACE, "Alias")}
        self.link = None
        self.connect_calls = []  # (ok, err) waiting for ServicesResolved
        self.connecting = False
        self.last_seen = time.monotonic()

    @property
    def connected(self):
        return self.link is not None

    @dbus.service.method(DEVICE_IFACE, async_callbacks=("ok", "fail"))
    def Connect(self, ok, fail):
        if self.connected and self.props[DEVICE_IFACE]["ServicesResolved"]:
            ok()
            return
        self.connect_calls.append((ok, fail))
        if self.connecting or self.connected:
            return
        self.connecting = True
        self.sim.air_send({"t": "connect", "req": self.addr, "to": self.addr})

    @dbus.service.method(DEVICE_IFACE, async_callbacks=("ok", "fail"))
    def Disconnect(self, ok, fail):
        for _, f in self.connect_calls:
            f(err("Failed", "Cancelled"))
        self.connect_calls = []
        self.connecting = False
        if not self.connected:
            ok()
            return
        self.sim.air_send({"t": "disconnect", "link": self.link.id})
        self.sim.disconnect_waiters.setdefault(self.link.id, []).append(ok)

    @dbus.service.method(DEVICE_IFACE, in_signature="s")
    def ConnectProfile(self, uuid):
        raise err("NotSupported", "Operation is not supported")

    @dbus.service.method(DEVICE_IFACE, in_signature="s")
    def DisconnectProfile(self, uuid):
        raise err("NotSupported", "Operation is not supported")

    @dbus.service.method(DEVICE_IFACE)
    def Pair(self):
        # No SMP in the simulation.
        raise err("NotSupported", "Operation is not supported")

    @dbus.service.method(DEVICE_IFACE)
    def CancelPairing(self):
        raise err("DoesNotExist", "Does Not Exist")


class RemoteService(PropObject):
    def __init__(self, sim, dev, svc):
        PropObject.__init__(self, sim, "%s/service%04x" % (dev.path, svc["handle"]))
        self.props = {SERVICE_IFACE: {
            "UUID": dbus.String(svc["uuid"]),
            "Device": dbus.ObjectPath(dev.path),
            "Primary": dbus.Boolean(svc.get("primary", True)),
            "Includes": dbus.Array([], signature="o"),
            "Handle": dbus.UInt16(svc["handle"]),
        }}


class RemoteChar(PropObject):
    """A characteristic of the connected peer, as BlueZ's gatt-client shows it."""

    def __init__(self, sim, dev, svc_obj, chrc):
        PropObject.__init__(self, sim, "%s/char%04x" % (svc_obj.path, chrc["handle"]))
        self.dev = dev
        self.link = dev.link
        self.uuid = chrc["uuid"]
        self.flags = chrc["flags"]
        self.value_handle = chrc["handle"] + 1
        self.props = {CHRC_IFACE: {
            "UUID": dbus.String(self.uuid),
            "Service": dbus.ObjectPath(svc_obj.path),
            "Value": dbus.Array([], signature="y"),
            "Notifying": dbus.Boolean(False),
            "Flags": dbus.Array(self.flags, signature="s"),
            "Handle": dbus.UInt16(chrc["handle"]),
            "MTU": dbus.UInt16(self.link.mtu),
        }}
        if "write-without-response" in self.flags:
            self.props[CHRC_IFACE]["WriteAcquired"] = dbus.Boolean(False)
        if "notify" in self.flags or "indicate" in self.flags:
            self.props[CHRC_IFACE]["NotifyAcquired"] = dbus.Boolean(False)
        self.write_sock = None  # our end of the AcquireWrite socketpair
        self.write_watch = None
        self.notify_sock = None  # our end of the AcquireNotify socketpair
        self.notify_watch = None
        self.notifying = False  # through StartNotify
        self.dropped = 0

    def check_link(self):
        if self.link is None or self.dev.link is not self.link:
            raise err("NotConnected", "Not Connected")

    # -- fd based I/O --------------------------------------------------
    @dbus.service.method(CHRC_IFACE, in_signature="a{sv}", out_signature="hq")
    def AcquireWrite(self, options):
        self.check_link()
        if "write-without-response" not in self.flags:
            raise err("NotSupported", "Operation is not supported")
        if self.write_sock is not None:
            raise err("NotPermitted", "Write acquired")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        self.write_sock = ours
        self.write_watch = GLib.io_add_watch(
            ours.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, self.on_write_sock)
        self.set_prop(CHRC_IFACE, "WriteAcquired", dbus.Boolean(True))
        fd = dbus.types.UnixFd(theirs.fileno())  # dup'ed into the message
        theirs.close()
        return fd, dbus.UInt16(self.link.mtu)

    def on_write_sock(self, fd, cond):
        """Datagrams written by the app: one ATT Write Command each."""
        if self.write_sock is None:
            return False
        while True:
            if self.link.busy():
                # Stop reading until the air has sent the backlog.
                self.write_watch = None
                self.link.waiters.append(self.resume_write)
                return False
            try:
                data = self.write_sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.release_write()
                return False
            if len(data) > self.link.mtu - 3:
                # bt_att refuses a PDU longer than the MTU: BlueZ drops it.
                log("write of %d bytes > MTU-3 (%d) dropped" % (len(data), self.link.mtu - 3))
                continue
            self.sim.att(self.link, {"op": "write_cmd", "handle": self.value_handle,
                                     "data": data.hex()})
        if cond & (GLib.IO_HUP | GLib.IO_ERR):
            self.release_write()
            return False
        return True

    def resume_write(self):
        if self.write_sock is not None and self.write_watch is None:
            self.write_watch = GLib.io_add_watch(
                self.write_sock.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                self.on_write_sock)

    def release_write(self):
        if self.write_sock is None:
            return
        if self.write_watch is not None:
            GLib.source_remove(self.write_watch)
            self.write_watch = None
        self.write_sock.close()
        self.write_sock = None
        if CHRC_IFACE in self.props and "WriteAcquired" in self.props[CHRC_IFACE]:
            self.set_prop(CHRC_IFACE, "WriteAcquired", dbus.Boolean(False))

    @dbus.service.method(CHRC_IFACE, in_signature="a{sv}", out_signature="hq")
    def AcquireNotify(self, options):
        self.check_link()
        if "notify" not in self.flags and "indicate" not in self.flags:
            raise err("NotSupported", "Operation is not supported")
        if self.notify_sock is not None:
            raise err("NotPermitted", "Notify acquired")
        if self.notifying:
            raise err("InProgress", "Notify already enabled")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        theirs.setblocking(False)
        self.notify_sock = ours
        # Only HUP matters: the app closing its end unsubscribes.
        self.notify_watch = GLib.io_add_watch(ours.fileno(), GLib.IO_HUP | GLib.IO_ERR,
                                              self.on_notify_hup)
        self.sim.att(self.link, {"op": "sub", "handle": self.value_handle})
        self.set_prop(CHRC_IFACE, "NotifyAcquired", dbus.Boolean(True))
        self.set_prop(CHRC_IFACE, "Notifying", dbus.Boolean(True))
        fd = dbus.types.UnixFd(theirs.fileno())
        theirs.close()
        return fd, dbus.UInt16(self.link.mtu)

    def on_notify_hup(self, fd, cond):
        self.notify_watch = None
        self.release_notify(unsubscribe=True)
        return False

    def release_notify(self, unsubscribe):
        if self.notify_sock is None:
            return
        if self.notify_watch is not None:
            GLib.source_remove(self.notify_watch)
            self.notify_watch = None
        self.notify_sock.close()
        self.notify_sock = None
        if unsubscribe and self.link is not None and self.dev.link is self.link:
            self.sim.att(self.link, {"op": "unsub", "handle": self.value_handle})
        if CHRC_IFACE in self.props:
            self.set_prop(CHRC_IFACE, "NotifyAcquired", dbus.Boolean(False))
            self.set_prop(CHRC_IFACE, "Notifying", dbus.Boolean(False))

    def on_notification(self, data):
        if self.notify_sock is not None:
            try:
                self.notify_sock.send(data)
            except (BlockingIOError, OSError):
                # The app's socket is full: dropped silently, like BlueZ.
                self.dropped += 1
                self.sim.notify_dropped += 1
        elif self.notifying:
            self.set_prop(CHRC_IFACE, "Value", dbus.Array(data, signature="y"))

    # -- D-Bus value methods -------------------------------------------
    @dbus.service.method(CHRC_IFACE, in_signature="a{sv}", out_signature="ay",
                         async_callbacks=("ok", "fail"))
    def ReadValue(self, options, ok, fail):
        self.check_link()
        if "read" not in self.flags:
            raise err("NotPermitted", "Read not permitted")
        offset = int(options.get("offset", 0))

        def done(rsp):
            if rsp.get("error"):
                fail(err("Failed", rsp["error"]))
                return
            data = bytes.fromhex(rsp.get("data", ""))
            self.set_prop(CHRC_IFACE, "Value", dbus.Array(data, signature="y"))
            ok(dbus.Array(data, signature="y"))

        self.sim.request(self.link, {"op": "read_req", "handle": self.value_handle,
                                     "offset": offset}, done, fail)

    @dbus.service.method(CHRC_IFACE, in_signature="aya{sv}",
                         async_callbacks=("ok", "fail"))
    def WriteValue(self, value, options, ok, fail):
        self.check_link()
        data = bytes(value)
        kind = str(options.get("type", ""))
        if kind not in ("", "command", "request", "reliable"):
            raise invalid_args()
        if len(data) > 512:
            raise err("InvalidValueLength", "Invalid Length")
        wwr = "write-without-response" in self.flags
        if kind == "command" or (kind == "" and wwr and "write" not in self.flags):
            if not wwr:
                raise err("NotSupported", "Operation is not supported")
            if len(data) <= self.link.mtu - 3:
                self.sim.att(self.link, {"op": "write_cmd", "handle": self.value_handle,
                                         "data": data.hex()})
                ok()
                return
        if "write" not in self.flags and "reliable-write" not in self.flags:
            raise err("NotPermitted", "Write not permitted")

        def done(rsp):
            if rsp.get("error"):
                fail(err("Failed", rsp["error"]))
            else:
                ok()

        self.sim.request(self.link, {"op": "write_req", "handle": self.value_handle,
                                     "data": data.hex(),
                                     "offset": int(options.get("offset", 0))}, done, fail)

    @dbus.service.method(CHRC_IFACE)
    def StartNotify(self):
        self.check_link()
        if "notify" not in self.flags and "indicate" not in self.flags:
            raise err("NotSupported", "Operation is not supported")
        if self.notify_sock is not None:
            raise err("NotPermitted", "Notify acquired")
        if self.notifying:
            return
        self.notifying = True
        self.sim.att(self.link, {"op": "sub", "handle": self.value_handle})
        self.set_prop(CHRC_IFACE, "Notifying", dbus.Boolean(True))

    @dbus.service.method(CHRC_IFACE)
    def StopNotify(self):
        if not self.notifying:
            raise err("Failed", "No notify session started")
        self.notifying = False
        if self.link is not None and self.dev.link is self.link:
            self.sim.att(self.link, {"op": "unsub", "handle": self.value_handle})
        self.set_prop(CHRC_IFACE, "Notifying", dbus.Boolean(False))

    def teardown(self):
        """The link is gone: HUP on both fds (closing our ends does it)."""
        self.release_write()
        self.release_notify(unsubscribe=False)
        self.notifying = False


class RemoteDesc(PropObject):
    def __init__(self, sim, chrc_obj, handle, uuid):
        PropObject.__init__(self, sim, "%s/desc%04x" % (chrc_obj.path, handle))
        self.props = {DESC_IFACE: {
            "UUID": dbus.String(uuid),
            "Characteristic": dbus.ObjectPath(chrc_obj.path),
            "Value": dbus.Array([], signature="y"),
            "Handle": dbus.UInt16(handle),
        }}

    @dbus.service.method(DESC_IFACE, in_signature="a{sv}", out_signature="ay")
    def ReadValue(self, options):
        raise err("NotPermitted", "Read not permitted")

    @dbus.service.method(DESC_IFACE, in_signature="aya{sv}")
    def WriteValue(self, value, options):
        # BlueZ refuses CCC writes through D-Bus: use StartNotify.
        raise err("NotPermitted", "Write not permitted")


# ---------------------------------------------------------------------------
# The adapter


DISCOVERY_FILTER_KEYS = ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData",
                         "Discoverable", "Pattern"]


class Adapter(PropObject):
    def __init__(self, sim):
        PropObject.__init__(self, sim, "/org/bluez/hci0")
        self.props = {
            ADAPTER_IFACE: {
                "Address": dbus.String(ARGS.address),
                "AddressType": dbus.String("public"),
                "Name": dbus.String(ARGS.name),
                "Alias": dbus.String(ARGS.name),
                "Class": dbus.UInt32(0),
                "Powered": dbus.Boolean(True),
                "PowerState": dbus.String("on"),
                "Discoverable": dbus.Boolean(False),
                "DiscoverableTimeout": dbus.UInt32(180),
                "Pairable": dbus.Boolean(True),
                "PairableTimeout": dbus.UInt32(0),
                "Discovering": dbus.Boolean(False),
                "UUIDs": dbus.Array([], signature="s"),
                "Modalias": dbus.String("usb:v1D6Bp0246d0542"),
                "Roles": dbus.Array(["central", "peripheral"], signature="s"),
            },
            ADV_MGR_IFACE: {
                "ActiveInstances": dbus.Byte(0),
                "SupportedInstances": dbus.Byte(MAX_ADV_INSTANCES),
                "SupportedIncludes": dbus.Array(["tx-power", "appearance", "local-name"],
                                                signature="s"),
            },
            GATT_MGR_IFACE: {},
        }
        self.writable = {(ADAPTER_IFACE, n) for n in (
            "Powered", "Discoverable", "DiscoverableTimeout", "Pairable",
            "PairableTimeout", "Alias")}
        self.filters = {}  # sender -> filter (SetDiscoveryFilter)
        self.sessions = {}  # sender -> filter, for senders discovering
        self.adverts = {}  # (sender, path) -> Advertisement
        self.adv_ids = itertools.count(1)
        self.apps = {}  # (sender, path) -> App
        self.watches = {}  # sender -> name owner watch

    def on_set(self, iface, name, value):
        if name == "Powered":
            value = dbus.Boolean(bool(value))
            self.set_prop(iface, "PowerState", dbus.String("on" if value else "off"))
            if not value:
                for s in list(self.sessions):
                    self.end_session(s)
                for dev in list(self.sim.devices.values()):
                    if dev.link is not None:
                        self.sim.air_send({"t": "disconnect", "link": dev.link.id})
            self.set_prop(iface, name, value)
            self.sim.publish_adverts()
            return
        self.set_prop(iface, name, value)

    @property
    def powered(self):
        return bool(self.props[ADAPTER_IFACE]["Powered"])

    def watch_owner(self, sender):
        """Forget a client's sessions, adverts and apps when it leaves the bus."""
        if sender in self.watches:
            return

        def changed(new_owner):
            if new_owner:
                return
            self.watches.pop(sender).cancel()
            self.filters.pop(sender, None)
            self.end_session(sender)
            for key in [k for k in self.adverts if k[0] == sender]:
                self.remove_advert(key, release=False)
            for key in [k for k in self.apps if k[0] == sender]:
                self.sim.remove_app(self.apps.pop(key))

        self.watches[sender] = self.sim.bus.watch_name_owner(sender, changed)

    # -- discovery -----------------------------------------------------
    @dbus.service.method(ADAPTER_IFACE, in_signature="a{sv}", sender_keyword="sender")
    def SetDiscoveryFilter(self, f, sender=None):
        parsed = {"uuids": [], "rssi": None, "duplicate": True, "transport": "auto",
                  "discoverable": False, "pattern": ""}
        try:
            for k, v in f.items():
                if k == "UUIDs":
                    parsed["uuids"] = [uuid128(u) for u in v]
                elif k == "RSSI":
                    parsed["rssi"] = int(v)
                    if not -127 <= parsed["rssi"] <= 20:
                        raise ValueError
                elif k == "Pathloss":
                    int(v)
                elif k == "Transport":
                    if str(v) not in ("auto", "bredr", "le"):
                        raise ValueError
                    parsed["transport"] = str(v)
                elif k == "DuplicateData":
                    parsed["duplicate"] = bool(v)
                elif k == "Discoverable":
                    parsed["discoverable"] = bool(v)
                elif k == "Pattern":
                    parsed["pattern"] = str(v)
                else:
                    raise ValueError
        except (ValueError, TypeError):
            raise invalid_args()
        if "RSSI" in f and "Pathloss" in f:
            raise invalid_args()
        if f:
            self.filters[sender] = parsed
            self.watch_owner(sender)
        else:
            self.filters.pop(sender, None)
        if sender in self.sessions:
            self.sessions[sender] = self.filters.get(sender)

    @dbus.service.method(ADAPTER_IFACE, out_signature="as")
    def GetDiscoveryFilters(self):
        return dbus.Array(DISCOVERY_FILTER_KEYS, signature="s")

    @dbus.service.method(ADAPTER_IFACE, sender_keyword="sender")
    def StartDiscovery(self, sender=None):
        if not self.powered:
            raise err("NotReady", "Resource Not Ready")
        if sender in self.sessions:
            raise err("InProgress", "Operation already in progress")
        self.sessions[sender] = self.filters.get(sender)
        self.watch_owner(sender)
        self.update_discovering()

    @dbus.service.method(ADAPTER_IFACE, sender_keyword="sender")
    def StopDiscovery(self, sender=None):
        if sender not in self.sessions:
            raise err("Failed", "No discovery started")
        self.end_session(sender)

    def end_session(self, sender):
        if self.sessions.pop(sender, "none") != "none":
            self.update_discovering()

    def update_discovering(self):
        on = bool(self.sessions)
        self.set_prop(ADAPTER_IFACE, "Discovering", dbus.Boolean(on))
        self.sim.air_send({"t": "scan", "on": on})
        if not on:
            self.sim.discovery_stopped = time.monotonic()

    @dbus.service.method(ADAPTER_IFACE, in_signature="o")
    def RemoveDevice(self, path):
        dev = next((d for d in self.sim.devices.values() if d.path == path), None)
        if dev is None:
            raise err("DoesNotExist", "Does Not Exist")
        if dev.link is not None:
            self.sim.air_send({"t": "disconnect", "link": dev.link.id})
            self.sim.link_down(dev.link.id, "removed")
        self.sim.remove_device(dev)

    # -- advertising ---------------------------------------------------
    @dbus.service.method(ADV_MGR_IFACE, in_signature="oa{sv}", sender_keyword="sender",
                         async_callbacks=("ok", "fail"))
    def RegisterAdvertisement(self, path, options, sender=None, ok=None, fail=None):
        key = (sender, str(path))
        if key in self.adverts or key in self.sim.adv_pending:
            raise err("AlreadyExists", "Already Exists")
        if len(self.adverts) + len(self.sim.adv_pending) >= MAX_ADV_INSTANCES:
            raise err("NotPermitted", "Maximum advertisements reached")
        self.sim.adv_pending.add(key)
        self.watch_owner(sender)

        def got(props):
            self.sim.adv_pending.discard(key)
            adv, length, problem = parse_advertisement(props)
            if problem is None and length > MAX_ADV_LEN:
                problem = "Advertising data too long or couldn't be generated."
            if problem is not None:
                log("advertisement %s refused: %s (%d bytes)" % (path, problem, length))
                fail(err("Failed", "Failed to parse advertisement."))
                return
            a = Advertisement(sender, str(path), adv, "%s%s" % (sender, path))
            self.adverts[key] = a
            if adv["timeout"]:
                def expired():
                    a.timeout_id = None  # this source ends by returning False
                    self.remove_advert(key, release=True)
                    return False
                a.timeout_id = GLib.timeout_add_seconds(adv["timeout"], expired)
            self.update_instances()
            self.sim.publish_adverts()
            log("advertisement %s registered (%d bytes)" % (path, length))
            ok()

        def failed(e):
            self.sim.adv_pending.discard(key)
            fail(err("Failed", "Failed to parse advertisement."))

        # Properties are read once, now; later changes need a re-registration.
        self.sim.bus.call_async(sender, str(path), PROPS_IFACE, "GetAll", "s", (ADV_IFACE,),
                                got, failed, timeout=25)

    @dbus.service.method(ADV_MGR_IFACE, in_signature="o", sender_keyword="sender")
    def UnregisterAdvertisement(self, path, sender=None):
        key = (sender, str(path))
        if key not in self.adverts:
            raise err("DoesNotExist", "Does Not Exist")
        self.remove_advert(key, release=True)

    def remove_advert(self, key, release):
        a = self.adverts.pop(key, None)
        if a is None:
            return False
        if a.timeout_id is not None:
            GLib.source_remove(a.timeout_id)
        if release:
            self.sim.bus.call_async(a.owner, a.path, ADV_IFACE, "Release", "", (),
                                    lambda *x: None, lambda e: None)
        self.update_instances()
        self.sim.publish_adverts()
        return True

    def update_instances(self):
        n = len(self.adverts)
        self.set_prop(ADV_MGR_IFACE, "ActiveInstances", dbus.Byte(n))
        self.set_prop(ADV_MGR_IFACE, "SupportedInstances", dbus.Byte(MAX_ADV_INSTANCES - n))

    # -- GATT server ---------------------------------------------------
    @dbus.service.method(GATT_MGR_IFACE, in_signature="oa{sv}", sender_keyword="sender",
                         async_callbacks=("ok", "fail"))
    def RegisterApplication(self, path, options, sender=None, ok=None, fail=None):
        key = (sender, str(path))
        if key in self.apps:
            raise err("AlreadyExists", "Already Exists")
        self.watch_owner(sender)

        def got(objects):
            if key in self.apps:
                fail(err("AlreadyExists", "Already Exists"))
                return
            app, problem = self.sim.build_app(sender, str(path), objects)
            if problem:
                log("application %s refused: %s" % (path, problem))
                fail(err("Failed", problem))
                return
            self.apps[key] = app
            self.sim.publish_db()
            log("application %s registered (%d services)" % (path, len(app.services)))
            ok()

        def failed(e):
            fail(err("Failed", "Failed to read application objects"))

        self.sim.bus.call_async(sender, str(path), OM_IFACE, "GetManagedObjects", "", (),
                                got, failed, timeout=25)

    @dbus.service.method(GATT_MGR_IFACE, in_signature="o", sender_keyword="sender")
    def UnregisterApplication(self, path, sender=None):
        app = self.apps.pop((sender, str(path)), None)
        if app is None:
            raise err("DoesNotExist", "Does Not Exist")
        self.sim.remove_app(app)


# ---------------------------------------------------------------------------
# The daemon


class Sim:
    def __init__(self, bus):
        self.bus = bus
        self.objects = {}  # path -> PropObject (everything in GetManagedObjects)
        self.devices = {}  # addr -> Device
        self.links = {}  # id -> Link
        self.disconnect_waiters = {}
        self.adv_pending = set()
        self.notify_dropped = 0
        self.req_ids = itertools.count(1)
        self.discovery_stopped = time.monotonic()
        self.next_handle = 1
        self.root = Root(self)
        self.bluez = BluezObject(self)
        self.add_object(self.bluez)
        self.adapter = Adapter(self)
        self.add_object(self.adapter)
        self.present = True
        self.air = None
        self.rbuf = b""

    # -- object bookkeeping --------------------------------------------
    def add_object(self, obj):
        self.objects[obj.path] = obj
        self.root.InterfacesAdded(dbus.ObjectPath(obj.path), obj.managed())

    def remove_object(self, obj):
        if self.objects.pop(obj.path, None) is None:
            return
        ifaces = list(obj.props.keys()) + ["org.freedesktop.DBus.Introspectable",
                                           PROPS_IFACE]
        self.root.InterfacesRemoved(dbus.ObjectPath(obj.path),
                                    dbus.Array(ifaces, signature="s"))
        obj.remove_from_connection()

    def device(self, addr):
        dev = self.devices.get(addr)
        if dev is None:
            dev = Device(self, addr)
            self.devices[addr] = dev
            self.add_object(dev)
        return dev

    def remove_device(self, dev):
        self.devices.pop(dev.addr, None)
        self.remove_object(dev)

    # -- air -----------------------------------------------------------
    def connect_air(self, path):
        self.air = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.air.connect(path)
        GLib.io_add_watch(self.air.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                          self.on_air)
        self.air_send({"t": "hello", "addr": ARGS.address, "name": ARGS.name})

    def air_send(self, msg):
        self.air.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    def on_air(self, fd, cond):
        try:
            data = self.air.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            log("the air is gone; exiting")
            LOOP.quit()
            return False
        self.rbuf += data
        while b"\n" in self.rbuf:
            line, self.rbuf = self.rbuf.split(b"\n", 1)
            msg = json.loads(line)
            try:
                self.on_air_msg(msg)
            except Exception as e:  # keep the daemon up, say what went wrong
                log("error handling %s: %r" % (msg.get("t"), e))
                import traceback
                traceback.print_exc()
        return True

    def on_air_msg(self, msg):
        t = msg["t"]
        if t == "adapter":
            self.set_adapter_present(bool(msg["present"]))
            return
        if not self.present:
            # No adapter: nothing is heard; a connection still being set up
            # when it went is dropped.
            if t == "connected":
                self.air_send({"t": "disconnect", "link": msg["link"]})
            return
        if t == "seen":
            self.on_seen(msg)
        elif t == "att":
            link = self.links.get(msg["link"])
            if link is not None:
                self.on_att(link, msg)
        elif t == "txdone":
            link = self.links.get(msg["link"])
            if link is not None:
                link.inflight -= msg["n"]
                if not link.busy():
                    waiters, link.waiters = link.waiters, []
                    for w in waiters:
                        w()
        elif t == "connected":
            self.on_connected(msg)
        elif t == "connect_failed":
            dev = self.devices.get(msg["req"])
            if dev is not None:
                dev.connecting = False
                calls, dev.connect_calls = dev.connect_calls, []
                for _, f in calls:
                    f(err("Failed", "le-connection-abort-by-local"))
        elif t == "disconnected":
            self.link_down(msg["link"], msg.get("reason", ""))
        elif t == "welcome":
            log("on air, profile", msg.get("profile"))
        elif t == "error":
            log("air refused us:", msg.get("error"))
            LOOP.quit()

    def att(self, link, msg):
        """Send an ATT message on a link, counting it against the backlog."""
        msg["t"] = "att"
        msg["link"] = link.id
        link.inflight += len(msg.get("data", "")) // 2
        self.air_send(msg)

    def request(self, link, msg, done, fail):
        rid = next(self.req_ids)
        msg["id"] = rid
        link.pending[rid] = (done, fail)
        self.att(link, msg)

    def set_adapter_present(self, present):
        """The controller goes away (unplugged) or comes back: hci0 and every
        device object under it leave the bus; registrations are forgotten,
        as when BlueZ loses an adapter."""
        if present == self.present:
            return
        if present:
            self.adapter = Adapter(self)
            self.add_object(self.adapter)
            self.present = True
            log("adapter back")
            return
        ad = self.adapter
        for lid in list(self.links):
            self.air_send({"t": "disconnect", "link": lid})
            self.link_down(lid, "adapter removed")
        for dev in list(self.devices.values()):
            for _, f in dev.connect_calls:
                f(err("Failed", "Adapter removed"))
            self.remove_device(dev)
        for key in list(ad.adverts):
            ad.remove_advert(key, release=False)
        for app in ad.apps.values():
            self.remove_app(app)
        ad.apps.clear()
        for sender in list(ad.sessions):
            ad.end_session(sender)
        for w in ad.watches.values():
            w.cancel()
        ad.watches.clear()
        self.publish_db()
        self.present = False
        self.remove_object(ad)
        log("adapter removed")

    # -- scanning ------------------------------------------------------
    def matches(self, f, addr, name, adv, rssi):
        if f is None:
            return True
        if f["transport"] == "bredr":
            return False
        if f["uuids"] and not set(f["uuids"]) & set(adv.get("uuids", [])):
            return False  # service-data keys do not count
        if f["rssi"] is not None and rssi < f["rssi"]:
            return False
        if f["discoverable"] and not adv.get("discoverable"):
            return False
        if f["pattern"] and not (addr.startswith(f["pattern"]) or
                                 (name or "").startswith(f["pattern"])):
            return False
        return True

    def on_seen(self, msg):
        ad = self.adapter
        if not ad.sessions or not ad.powered:
            return
        addr, adv, rssi = msg["from"], msg["adv"], msg["rssi"]
        filters = [f for f in ad.sessions.values()
                   if self.matches(f, addr, adv.get("name"), adv, rssi)]
        if not filters:
            return
        duplicate = any(f is None or f["duplicate"] for f in filters)
        new = addr not in self.devices
        dev = self.device(addr) if not new else None
        props = {
            "RSSI": dbus.Int16(rssi),
            "UUIDs": dbus.Array(sorted(set(adv.get("uuids", []))), signature="s"),
            "ServiceData": dbus.Dictionary(
                {u: dbus.Array(bytes.fromhex(v), signature="y", variant_level=1)
                 for u, v in adv.get("service_data", {}).items()}, signature="sv"),
            "ManufacturerData": dbus.Dictionary(
                {dbus.UInt16(int(k)): dbus.Array(bytes.fromhex(v), signature="y",
                                                  variant_level=1)
                 for k, v in adv.get("mfg", {}).items()}, signature="qv"),
        }
        if adv.get("name"):
            props["Name"] = dbus.String(adv["name"])
            props["Alias"] = dbus.String(adv["name"])
        if new:
            # InterfacesAdded carries everything at once.
            dev = Device(self, addr)
            dev.props[DEVICE_IFACE].update(props)
            if not props["ServiceData"]:
                del dev.props[DEVICE_IFACE]["ServiceData"]
            if not props["ManufacturerData"]:
                del dev.props[DEVICE_IFACE]["ManufacturerData"]
            self.devices[addr] = dev
            self.add_object(dev)
        else:
            cur = dev.props[DEVICE_IFACE]
            changed = {}
            for k, v in props.items():
                if k in ("ServiceData", "ManufacturerData") and not v and k not in cur:
                    continue
                same = k in cur and cur[k] == v
                if k in ("ServiceData", "ManufacturerData") and same and duplicate:
                    same = False  # DuplicateData: report every advertisement
                if not same:
                    cur[k] = v
                    changed[k] = v
            if changed:
                dev.PropertiesChanged(DEVICE_IFACE, changed, [])
        dev.last_seen = time.monotonic()

    def expire_devices(self):
        if self.adapter.sessions:
            return True
        now = time.monotonic()
        for dev in list(self.devices.values()):
            if dev.link is None and not dev.connecting and \
                    now - max(dev.last_seen, self.discovery_stopped) > TEMPORARY_TIMEOUT:
                self.remove_device(dev)
        return True

    # -- advertising ---------------------------------------------------
    def publish_adverts(self):
        """Tell the air which advertisements this host transmits."""
        current = {a.id: a for a in self.adapter.adverts.values()} \
            if self.adapter.powered else {}
        sent = getattr(self, "_sent_adverts", set())
        for aid in sent - set(current):
            self.air_send({"t": "adv_del", "id": aid})
        for aid, a in current.items():
            if aid not in sent:
                self.air_send({"t": "adv_set", "id": aid, "adv": a.adv})
        self._sent_adverts = set(current)

    # -- GATT server ---------------------------------------------------
    def build_app(self, owner, root, objects):
        """Read an application's objects (GetManagedObjects reply)."""
        app = App(owner, root)
        services = {}
        chars = []
        try:
            for path, ifaces in objects.items():
                path = str(path)
                if not (path == root or path.startswith(root.rstrip("/") + "/")):
                    continue
                if SERVICE_IFACE in ifaces:
                    p = ifaces[SERVICE_IFACE]
                    services[path] = {"uuid": uuid128(p["UUID"]),
                                      "primary": bool(p.get("Primary", True)), "chars": []}
                if CHRC_IFACE in ifaces:
                    p = ifaces[CHRC_IFACE]
                    if "UUID" not in p or "Service" not in p or "Flags" not in p:
                        return None, "Failed to create entry in database"
                    chars.append((path, p))
        except (ValueError, KeyError, TypeError):
            return None, "Failed to create entry in database"
        if not services:
            return None, "No valid service object found"
        for path, p in sorted(chars):
            svc = services.get(str(p["Service"]))
            if svc is None:
                return None, "Failed to create entry in database"
            svc["chars"].append((path, p))
        for spath in sorted(services):
            svc = services[spath]
            shandle = self.next_handle
            self.next_handle += 1
            lchars = []
            for cpath, p in svc["chars"]:
                c = LocalChar(app, cpath, p, self.next_handle)
                self.next_handle += 3 if c.can_notify() else 2
                lchars.append(c)
            app.services.append((svc["uuid"], shandle, self.next_handle - 1,
                                 svc["primary"], lchars))
            app.chars.extend(lchars)
            self.next_handle += 1  # a gap between services
        return app, None

    def local_chars(self):
        for app in self.adapter.apps.values():
            for c in app.chars:
                yield c

    def publish_db(self):
        db = []
        for app in self.adapter.apps.values():
            for uuid, handle, end, primary, chars in app.services:
                db.append({"uuid": uuid, "handle": handle, "end": end, "primary": primary,
                           "chars": [{"uuid": c.uuid, "handle": c.handle, "flags": c.flags}
                                     for c in chars]})
        self.air_send({"t": "db", "db": db})
        # Service Changed: connected peers discover the database again.
        for link in list(self.links.values()):
            self.att(link, {"op": "db", "db": db})

    def remove_app(self, app):
        for c in app.chars:
            self.close_local_notify(c)
            if c.write_fd is not None:
                c.write_fd.close()
                c.write_fd = None
            if c.signal_match is not None:
                c.signal_match.remove()
                c.signal_match = None
        self.publish_db()

    def find_local(self, handle):
        for c in self.local_chars():
            if c.value_handle == handle:
                return c
        return None

    def options_for(self, link, extra=None):
        dev = self.device(link.peer)
        o = {"device": dbus.ObjectPath(dev.path), "link": dbus.String("LE"),
             "mtu": dbus.UInt16(link.mtu)}
        if extra:
            o.update(extra)
        return dbus.Dictionary(o, signature="sv")

    def on_att(self, link, msg):
        op = msg["op"]
        if op == "db":
            dev = self.devices.get(link.peer)
            if dev is not None and dev.link is link:
                self.remote_db(link, dev, msg["db"])
            return
        if op == "notify":
            dev = self.device(link.peer)
            for obj in list(self.objects.values()):
                if isinstance(obj, RemoteChar) and obj.dev is dev and \
                        obj.value_handle == msg["handle"]:
                    obj.on_notification(bytes.fromhex(msg["data"]))
            return
        if op == "rsp":
            done = link.pending.pop(msg["id"], None)
            if done:
                done[0](msg)
            return
        c = self.find_local(msg.get("handle"))
        if c is None:
            if op in ("read_req", "write_req"):
                self.att(link, {"op": "rsp", "id": msg["id"], "error": "Invalid handle"})
            return
        if op == "write_cmd":
            self.local_write_cmd(c, link, bytes.fromhex(msg["data"]))
        elif op == "write_req" and c.write_acquired:
            # BlueZ sends any write of a WriteAcquired characteristic down
            # the acquired fd and answers success at once.
            self.local_write_cmd(c, link, bytes.fromhex(msg["data"]))
            self.att(link, {"op": "rsp", "id": msg["id"]})
        elif op == "write_req":
            self.call_app(c, "WriteValue", "aya{sv}",
                          (dbus.Array(bytes.fromhex(msg["data"]), signature="y"),
                           self.options_for(link, {"type": dbus.String("request"),
                                                   "offset": dbus.UInt16(msg["offset"])})),
                          lambda *r: self.att(link, {"op": "rsp", "id": msg["id"]}),
                          lambda e: self.att(link, {"op": "rsp", "id": msg["id"],
                                                    "error": e.get_dbus_name()}))
        elif op == "read_req":
            self.call_app(c, "ReadValue", "a{sv}",
                          (self.options_for(link, {"offset": dbus.UInt16(msg["offset"])}),),
                          lambda v: self.att(link, {"op": "rsp", "id": msg["id"],
                                                    "data": bytes(v).hex()}),
                          lambda e: self.att(link, {"op": "rsp", "id": msg["id"],
                                                    "error": e.get_dbus_name()}))
        elif op == "sub":
            self.local_subscribe(c, link)
        elif op == "unsub":
            self.local_unsubscribe(c, link.id)

    def call_app(self, c, method, sig, args, ok, fail):
        self.bus.call_async(c.app.owner, c.path, CHRC_IFACE, method, sig, args,
                            ok, fail, timeout=25)

    # Writes from centrals on one of our characteristics.
    def local_write_cmd(self, c, link, data):
        if not c.write_acquired:
            self.call_app(c, "WriteValue", "aya{sv}",
                          (dbus.Array(data, signature="y"),
                           self.options_for(link, {"type": dbus.String("command"),
                                                   "offset": dbus.UInt16(0)})),
                          lambda *r: None, lambda e: None)
            return
        if c.write_fd is not None:
            self.send_local(c, data)
            return
        if c.write_pending is not None:
            c.write_pending.append(data)
            return
        # First write: ask the app for its fd.  One fd for every central, and
        # a datagram on it does not say which central wrote it.
        c.write_pending = [data]

        def got(fd, mtu):
            c.write_fd = socket.socket(fileno=fd.take())
            c.write_fd.setblocking(False)
            pending, c.write_pending = c.write_pending, None
            for d in pending:
                self.send_local(c, d)
            GLib.io_add_watch(c.write_fd.fileno(), GLib.IO_HUP | GLib.IO_ERR,
                              lambda *x: self.local_write_hup(c))

        def failed(e):
            pending, c.write_pending = c.write_pending, None
            c.write_acquired = False  # fall back to WriteValue, as BlueZ does
            for d in pending:
                self.local_write_cmd(c, link, d)

        self.call_app(c, "AcquireWrite", "a{sv}", (self.options_for(link),), got, failed)

    def send_local(self, c, data):
        try:
            c.write_fd.send(data)
        except (BlockingIOError, OSError):
            log("app write socket full, write dropped")

    def local_write_hup(self, c):
        if c.write_fd is not None:
            c.write_fd.close()
            c.write_fd = None
        return False

    # Notifications from our app to the centrals that enabled them.
    def local_subscribe(self, c, link):
        first = not c.subscribers
        c.subscribers.add(link.id)
        if c.notify_acquired:
            if c.notify_sock is None and not c.notify_acquiring:
                c.notify_acquiring = True

                def got(fd, mtu):
                    c.notify_acquiring = False
                    if not c.subscribers:  # everyone left meanwhile
                        os.close(fd.take())
                        return
                    c.notify_sock = socket.socket(fileno=fd.take())
                    c.notify_sock.setblocking(False)
                    self.resume_local_notify(c)

                def failed(e):
                    # Like BlueZ: fall back to StartNotify and Value changes.
                    c.notify_acquiring = False
                    c.notify_acquired = False
                    log("AcquireNotify failed (%s); using StartNotify" % e.get_dbus_name())
                    if c.subscribers:
                        self.start_app_notify(c)

                self.call_app(c, "AcquireNotify", "a{sv}", (self.options_for(link),),
                              got, failed)
            return
        if first:
            self.start_app_notify(c)

    def start_app_notify(self, c):
        """Notifications through StartNotify and the app's Value changes."""
        if c.signal_match is None:
            c.signal_match = self.bus.add_signal_receiver(
                lambda iface, changed, inval: self.local_value_changed(c, iface, changed),
                signal_name="PropertiesChanged", dbus_interface=PROPS_IFACE,
                bus_name=c.app.owner, path=c.path)
        self.call_app(c, "StartNotify", "", (), lambda *r: None, lambda e: None)

    def local_value_changed(self, c, iface, changed):
        if iface == CHRC_IFACE and "Value" in changed and c.subscribers:
            self.notify_all(c, bytes(changed["Value"]))

    def notify_all(self, c, data):
        for lid in list(c.subscribers):
            link = self.links.get(lid)
            if link is not None:
                # BlueZ cuts a notification to MTU-3 for each central.
                self.att(link, {"op": "notify", "handle": c.value_handle,
                                "data": data[:link.mtu - 3].hex()})

    def resume_local_notify(self, c):
        if c.notify_sock is not None and c.notify_watch is None:
            c.notify_watch = GLib.io_add_watch(
                c.notify_sock.fileno(), GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                lambda fd, cond: self.on_local_notify(c, cond))

    def on_local_notify(self, c, cond):
        while c.notify_sock is not None:
            busy = [self.links[l] for l in c.subscribers
                    if l in self.links and self.links[l].busy()]
            if busy:
                c.notify_watch = None
                busy[0].waiters.append(lambda: self.resume_local_notify(c))
                return False
            try:
                data = c.notify_sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                c.notify_watch = None
                self.close_local_notify(c)
                return False
            self.notify_all(c, data)
        return False

    def close_local_notify(self, c):
        if c.notify_watch is not None:
            GLib.source_remove(c.notify_watch)
            c.notify_watch = None
        if c.notify_sock is not None:
            c.notify_sock.close()  # the app sees HUP
            c.notify_sock = None

    def local_unsubscribe(self, c, lid):
        if lid not in c.subscribers:
            return
        c.subscribers.discard(lid)
        if c.subscribers:
            return
        if c.notify_acquired:
            self.close_local_notify(c)
        else:
            self.call_app(c, "StopNotify", "", (), lambda *r: None, lambda e: None)

    # -- links ---------------------------------------------------------
    def on_connected(self, msg):
        lid = msg["link"]
        dev = self.device(msg["peer"])
        if lid in self.links:
            # Connect() to a peer already connected: nothing new.
            self.resolve_connect(dev)
            return
        link = Link(lid, msg["peer"], msg["mtu"], msg["initiator"])
        self.links[lid] = link
        dev.link = link
        dev.connecting = False
        dev.set_prop(DEVICE_IFACE, "Connected", dbus.Boolean(True))
        self.remote_db(link, dev, msg.get("db", []))
        dev.set_prop(DEVICE_IFACE, "ServicesResolved", dbus.Boolean(True))
        self.resolve_connect(dev)

    def remote_db(self, link, dev, db):
        """Export the peer's GATT database as BlueZ's gatt-client does.  On a
        Service Changed, objects whose handle and UUID stay are kept; the
        others go (their fds get HUP) and new ones appear."""
        want = {}
        for svc in db:
            want["%s/service%04x" % (dev.path, svc["handle"])] = svc["uuid"]
            for ch in svc["chars"]:
                cpath = "%s/service%04x/char%04x" % (dev.path, svc["handle"], ch["handle"])
                want[cpath] = (ch["uuid"], tuple(ch["flags"]))
        keep = []
        for obj in reversed(link.remote_objects):
            key = obj.path if not isinstance(obj, RemoteDesc) else obj.path.rsplit("/", 1)[0]
            have = obj.props.get(SERVICE_IFACE, {}).get("UUID") if isinstance(
                obj, RemoteService) else (obj.uuid, tuple(obj.flags)) if isinstance(
                obj, RemoteChar) else None
            if key in want and (have is None or want[key] == have):
                keep.append(obj)
                continue
            if isinstance(obj, RemoteChar):
                obj.teardown()
                obj.link = None
            self.remove_object(obj)
        link.remote_objects = list(reversed(keep))
        for svc in db:
            spath = "%s/service%04x" % (dev.path, svc["handle"])
            sobj = self.objects.get(spath)
            if sobj is None:
                sobj = RemoteService(self, dev, svc)
                self.add_object(sobj)
                link.remote_objects.append(sobj)
            for ch in svc["chars"]:
                if "%s/char%04x" % (spath, ch["handle"]) in self.objects:
                    continue
                cobj = RemoteChar(self, dev, sobj, ch)
                self.add_object(cobj)
                link.remote_objects.append(cobj)
                if "notify" in ch["flags"] or "indicate" in ch["flags"]:
                    dobj = RemoteDesc(self, cobj, ch["handle"] + 2, CCC_UUID)
                    self.add_object(dobj)
                    link.remote_objects.append(dobj)

    def resolve_connect(self, dev):
        calls, dev.connect_calls = dev.connect_calls, []
        for ok, _ in calls:
            ok()

    def link_down(self, lid, reason):
        link = self.links.pop(lid, None)
        if link is None:
            return
        log("link %d to %s down (%s)" % (lid, link.peer, reason))
        dev = self.devices.get(link.peer)
        for obj in reversed(link.remote_objects):
            if isinstance(obj, RemoteChar):
                obj.teardown()
                obj.link = None
            self.remove_object(obj)
        for c in self.local_chars():
            self.local_unsubscribe(c, lid)
        for done, fail in link.pending.values():
            fail(err("Failed", "Not connected"))
        link.pending.clear()
        link.waiters = []
        if dev is not None:
            dev.link = None
            dev.set_prop(DEVICE_IFACE, "ServicesResolved", dbus.Boolean(False))
            dev.set_prop(DEVICE_IFACE, "Connected", dbus.Boolean(False))
            calls, dev.connect_calls = dev.connect_calls, []
            for _, f in calls:
                f(err("Failed", "Disconnected early"))
            dev.last_seen = time.monotonic()
        for ok in self.disconnect_waiters.pop(lid, []):
            ok()


def main():
    global ARGS, LOOP
    p = argparse.ArgumentParser(description="simulated bluetoothd (BlueZ 5.66 D-Bus API)")
    p.add_argument("--bus", required=True, help="D-Bus address, e.g. unix:path=/x/bus")
    p.add_argument("--air", required=True, help="the air's socket path")
    p.add_argument("--address", required=True, help="AA:BB:CC:DD:EE:0K")
    p.add_argument("--name", default=None)
    ARGS = p.parse_args()
    ARGS.address = ARGS.address.upper()
    if ARGS.name is None:
        ARGS.name = "h%d" % int(ARGS.address.split(":")[-1], 16)
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(ARGS.bus)
    bus.set_exit_on_disconnect(False)
    LOOP = GLib.MainLoop()
    sim = Sim(bus)
    # Own the name only once the objects exist, so a client that waits for
    # org.bluez finds the adapter at once.
    name = dbus.service.BusName(BLUEZ, bus, do_not_queue=True)
    sim.connect_air(ARGS.air)
    GLib.timeout_add_seconds(1, sim.expire_devices)
    for sig in (2, 15):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: LOOP.quit() or False)
    log("ready on", ARGS.bus)
    print("ready", flush=True)
    LOOP.run()
    del name
    return 0


ARGS = None
LOOP = None

if __name__ == "__main__":
    sys.exit(main())
