#!/usr/bin/python3
"""Writes the seed corpus of tests/fuzz/fuzz-ctap2.c into corpus/ctap2/.

Run with the system python3 (python3-fido2 provides the canonical CBOR
encoder): /usr/bin/python3 tests/fuzz/make-ctap2-corpus.py. The harness's
fake backend holds credentials 16 x 0x11 and 16 x 0x22 for "example.com".
"""
import os
import sys

from fido2 import cbor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "ctap2")
CDH = bytes(range(32))
ID1 = b"\x11" * 16
ID2 = b"\x22" * 16
PK = "public-key"


def desc(i, t=PK):
    return {"id": i, "type": t}


def mc(over=None):
    m = {
        1: CDH,
        2: {"id": "example.com", "name": "Example"},
        3: {"id": b"\xa1\x1c\xe0", "name": "alice@example.com", "displayName": "Alice"},
        4: [{"alg": -7, "type": PK}],
    }
    m.update(over or {})
    return b"\x01" + cbor.encode({k: v for k, v in m.items() if v is not None})


def ga(over=None):
    m = {1: "example.com", 2: CDH}
    m.update(over or {})
    return b"\x02" + cbor.encode({k: v for k, v in m.items() if v is not None})


seeds = {
    # valid requests of each command
    "make-es256": mc(),
    "make-eddsa-first": mc({4: [{"alg": -8, "type": PK}, {"alg": -7, "type": PK}]}),
    "make-rs256-then-es256": mc({4: [{"alg": -257, "type": PK}, {"alg": -7, "type": PK}]}),
    "make-exclude-hit": mc({5: [desc(ID1)]}),
    "make-exclude-miss": mc({5: [desc(b"\x99" * 20), desc(ID1, "other")]}),
    "make-options": mc({7: {"rk": True, "uv": True, "up": True}}),
    "make-extensions": mc({6: {"credProtect": 2, "hmac-secret": True}}),
    "get-allow": ga({3: [desc(ID1)]}),
    "get-allow-both": ga({3: [desc(ID1), desc(ID2)]}),
    "get-discoverable": ga(),
    "get-up-false": ga({5: {"up": False}}),
    "get-uv": ga({5: {"uv": True}}),
    "get-locked": ga({1: "locked.example"}),
    "get-info": b"\x04",
    "get-next": b"\x08",
    "reset": b"\x07",
    "selection": b"\x0b",
    "client-pin": b"\x06" + cbor.encode({1: 1, 2: 1}),
    "unknown-command": b"\x42",
    # broken ones
    "empty": b"",
    "make-no-params": b"\x01",
    "make-truncated": mc()[:40],
    "make-trailing": mc() + b"\x00",
    "make-unsupported-alg": mc({4: [{"alg": -257, "type": PK}]}),
    "make-up-false": mc({7: {"up": False}}),
    "make-pin-param": mc({8: b"", 9: 1}),
    "make-rp-id-254": mc({2: {"id": "a" * 254}}),
    "make-user-id-65": mc({3: {"id": b"\x00" * 65}}),
    "make-name-long": mc({3: {"id": b"\x01", "name": "\u00e9" * 300}}),
    "make-cdh-text": mc({1: "not bytes"}),
    "make-missing-user": mc({3: None}),
    "get-rk": ga({5: {"rk": True}}),
    "get-allow-65": ga({3: [desc(ID1)] * 65}),
    "get-cred-id-1024": ga({3: [desc(b"\x11" * 1024)]}),
    "get-indefinite-map": b"\x02\xbf\x01\x6bexample.com\x02\x58\x20" + CDH + b"\xff",
    "get-duplicate-key": b"\x02\xa3\x01\x61a\x02\x58\x20" + CDH + b"\x01\x61b",
    "get-bad-utf8": b"\x02\xa2\x01\x62\xc3\x28\x02\x58\x20" + CDH,
    "get-deep-extensions": b"\x02\xa3\x01\x6bexample.com\x02\x58\x20" + CDH
    + b"\x04\xa1\x61x" + b"\x81" * 12 + b"\x00",
    "get-tag": b"\x02\xa2\x01\xc0\x6bexample.com\x02\x58\x20" + CDH,
    "get-huge-count": b"\x02\xbb\xff\xff\xff\xff\xff\xff\xff\xff",
    "garbage": bytes([0x01, 0xff, 0x1c, 0x5f, 0x00, 0xf8]),
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}", file=sys.stderr)
