"""CTAPHID over pksync-agent's --ctaphid-socket (a Unix SOCK_SEQPACKET socket).

Each datagram written is one 64-byte HID output report (no report id byte),
each datagram read one 64-byte input report, as on an open hidraw node. Input
reports go to every connected client, like hidraw; CTAPHID channels keep them
apart.

Two clients:
- SocketCtapHidConnection, a python3-fido2 (0.9.1) CtapHidConnection, so
  fido2.hid.CtapHidDevice(descriptor, connection) and everything above it
  (Ctap2, Fido2Client) talk to the agent as to a USB security key.
  open_device(path) does both steps.
- RawCtaphid, a tiny client that writes whatever reports it is given, for
  malformed sequences fido2 would never send.

Reads are bounded: every read has a timeout and raises on expiry.
"""
import os
import socket
import struct
import time

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

REPORT_LEN = 64
BROADCAST = 0xFFFFFFFF
TYPE_INIT = 0x80

PING = 0x81
MSG = 0x83
LOCK = 0x84
INIT = 0x86
WINK = 0x88
CBOR = 0x90
CANCEL = 0x91
KEEPALIVE = 0xBB
ERROR = 0xBF

ERR_INVALID_CMD = 0x01
ERR_INVALID_PAR = 0x02
ERR_INVALID_LEN = 0x03
ERR_INVALID_SEQ = 0x04
ERR_MSG_TIMEOUT = 0x05
ERR_CHANNEL_BUSY = 0x06
ERR_INVALID_CHANNEL = 0x0B

STATUS_PROCESSING = 1
STATUS_UPNEEDED = 2


def _connect(path, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(timeout)
    s.connect(path)
    return s


class SocketCtapHidConnection(CtapHidConnection):
    """fido2's CtapHidConnection over the agent's socket.

    fido2 0.9.1 raises "Wrong channel" on a report of another channel; a
    real hidraw node shared with other programs carries such reports too, so
    this connection keeps only the reports meant for the channel of the last
    report written (and, for INIT on the broadcast channel, only the INIT
    answer that echoes our nonce). Counts what it dropped and every
    KEEPALIVE status it passed on, for the tests to look at.
    """

    def __init__(self, path, read_timeout=10.0, call_timeout=45.0):
        self.path = path
        self.sock = _connect(path, read_timeout)
        # fido2 reads for ever while keepalives come; a test must not, so a
        # whole request/answer gets call_timeout seconds from its first report.
        self.call_timeout = call_timeout
        self.deadline = None
        self.cid = BROADCAST
        self.nonce = None
        self.dropped = 0
        self.keepalives = []
        self.written = 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def write_packet(self, data):
        data = bytes(data)
        if len(data) != REPORT_LEN:
            raise ValueError("report of %d bytes" % len(data))
        cid = struct.unpack_from(">I", data)[0]
        self.cid = cid
        if data[4] & TYPE_INIT and data[4] != CANCEL:
            self.deadline = time.monotonic() + self.call_timeout
        if cid == BROADCAST and data[4] == INIT:
            self.nonce = data[7:15]
        n = self.sock.send(data)
        if n != len(data):
            raise OSError("short write")
        self.written += 1

    def read_packet(self):
        while True:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TimeoutError("no CTAPHID answer within %.1f s" % self.call_timeout)
            try:
                data = self.sock.recv(REPORT_LEN + 1)
            except socket.timeout:
                raise TimeoutError("no CTAPHID report within %.1f s" % self.sock.gettimeout())
            if not data:
                raise EOFError("agent closed the CTAPHID socket")
            if len(data) != REPORT_LEN:
                raise ValueError("input report of %d bytes, not 64" % len(data))
            cid = struct.unpack_from(">I", data)[0]
            if cid != self.cid:
                self.dropped += 1
                continue
            if cid == BROADCAST and (data[4] != INIT or data[7:15] != self.nonce):
                self.dropped += 1
                continue
            if data[4] == KEEPALIVE:
                self.keepalives.append(data[7])
            return data


def descriptor(path):
    return HidDescriptor(path, 0, 0, REPORT_LEN, REPORT_LEN)


def open_device(path, read_timeout=10.0, call_timeout=45.0):
    """A fido2.hid.CtapHidDevice on the agent's socket (INIT done)."""
    conn = SocketCtapHidConnection(path, read_timeout, call_timeout)
    try:
        return CtapHidDevice(descriptor(path), conn)
    except Exception:
        conn.close()
        raise


def init_report(cid, cmd, total_len, data=b""):
    """An initialisation packet: cid, cmd (high bit set), BCNT, first bytes."""
    rep = struct.pack(">IBH", cid, cmd, total_len) + bytes(data)
    if len(rep) > REPORT_LEN:
        raise ValueError("init packet payload too long")
    return rep.ljust(REPORT_LEN, b"\0")


def cont_report(cid, seq, data=b""):
    rep = struct.pack(">IB", cid, seq) + bytes(data)
    if len(rep) > REPORT_LEN:
        raise ValueError("continuation payload too long")
    return rep.ljust(REPORT_LEN, b"\0")


def fragment(cid, cmd, payload):
    """The reports of one whole message."""
    reps = [init_report(cid, cmd, len(payload), payload[:57])]
    rest = payload[57:]
    seq = 0
    while rest:
        reps.append(cont_report(cid, seq, rest[:59]))
        rest = rest[59:]
        seq += 1
    return reps


class Response:
    def __init__(self, cid, cmd, payload, keepalives):
        self.cid = cid
        self.cmd = cmd
        self.payload = payload
        self.keepalives = keepalives  # statuses seen before the answer

    def __repr__(self):
        return "Response(cid=%08x cmd=%02x len=%d payload=%s keepalives=%d)" % (
            self.cid, self.cmd, len(self.payload), self.payload[:16].hex(),
            len(self.keepalives))


class RawCtaphid:
    """Writes raw reports and reads whole answers; for malformed sequences."""

    def __init__(self, path, timeout=5.0):
        self.sock = _connect(path, timeout)
        self.timeout = timeout

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, report):
        report = bytes(report)
        assert len(report) == REPORT_LEN, len(report)
        self.sock.send(report)

    def send_message(self, cid, cmd, payload):
        for rep in fragment(cid, cmd, payload):
            self.send(rep)

    def recv_report(self, timeout=None):
        """One input report, or None when none comes within timeout."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(REPORT_LEN + 1)
        except socket.timeout:
            return None
        if not data:
            raise EOFError("agent closed the CTAPHID socket")
        if len(data) != REPORT_LEN:
            raise ValueError("input report of %d bytes, not 64" % len(data))
        return data

    def recv(self, cids, timeout=None, nonce=None, stop_on_keepalive=False):
        """The next whole answer on one of cids (keepalives collected on the
        way, other channels' reports skipped). Raises TimeoutError when no
        complete answer arrives within timeout seconds overall."""
        if isinstance(cids, int):
            cids = {cids}
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        keepalives = []
        cur = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no whole CTAPHID answer within %.1f s (keepalives %r)"
                                   % (timeout, keepalives))
            rep = self.recv_report(left)
            if rep is None:
                continue
            cid = struct.unpack_from(">I", rep)[0]
            if cid not in cids:
                continue
            if cur is None:
                if not rep[4] & TYPE_INIT:
                    continue  # a stray continuation
                cmd = rep[4]
                if cmd == KEEPALIVE:
                    keepalives.append(rep[7])
                    if stop_on_keepalive:
                        return Response(cid, cmd, rep[7:8], keepalives)
                    continue
                if nonce is not None and cid == BROADCAST and rep[7:15] != nonce:
                    continue
                bcnt = struct.unpack_from(">H", rep, 5)[0]
                cur = [cid, cmd, bcnt, bytearray(rep[7:7 + bcnt]), 0]
            else:
                if cid != cur[0] or rep[4] & TYPE_INIT:
                    raise AssertionError("interleaved answer: %s" % rep.hex())
                if rep[4] != cur[4]:
                    raise AssertionError("answer continuation seq %d, expected %d"
                                         % (rep[4], cur[4]))
                cur[4] += 1
                cur[3] += rep[5:5 + cur[2] - len(cur[3])]
            if len(cur[3]) >= cur[2]:
                return Response(cur[0], cur[1], bytes(cur[3]), keepalives)

    def init_channel(self, nonce=None):
        """CTAPHID_INIT on the broadcast channel; returns the new channel id."""
        nonce = nonce or os.urandom(8)
        self.send(init_report(BROADCAST, INIT, 8, nonce))
        r = self.recv(BROADCAST, nonce=nonce)
        if r.cmd != INIT or r.payload[:8] != nonce or len(r.payload) < 17:
            raise AssertionError("bad INIT answer %r" % r)
        return struct.unpack_from(">I", r.payload, 8)[0]

    def transact(self, cid, cmd, payload, timeout=None):
        self.send_message(cid, cmd, payload)
        return self.recv(cid, timeout)
