"""Independent verification of pksync assertions.

Two verifiers that share no code with pksync: python3-fido2's Fido2Server
(authenticate_complete) and libfido2's fido2-assert -V.
"""
import json
import os
import struct
import subprocess
import tempfile

from cryptography.hazmat.primitives import serialization
from fido2.client import ClientData
from fido2.cose import CoseKey
from fido2.ctap2 import AttestedCredentialData, AuthenticatorData
from fido2.server import Fido2Server
from fido2.webauthn import PublicKeyCredentialRpEntity

from pkslib import b64u_decode

FLAG_UP, FLAG_UV, FLAG_BE, FLAG_BS = 0x01, 0x04, 0x08, 0x10


def cbor_bytes(data):
    """A CBOR byte string (major type 2) wrapping data, as fido2-assert expects."""
    n = len(data)
    if n < 24:
        head = bytes([0x40 | n])
    elif n < 256:
        head = bytes([0x58, n])
    else:
        head = bytes([0x59]) + struct.pack(">H", n)
    return head + data


def assert_and_verify(agent, record):
    """Asks the agent for an assertion over a fresh challenge and checks it twice.

    Returns the parsed authenticator data so callers can check flags.
    """
    rp = record["rp_id"]
    server = Fido2Server(PublicKeyCredentialRpEntity(rp, "test"),
                         verify_origin=lambda origin: origin == "https://" + rp)
    spki = b64u_decode(record["public_key"])
    pub = serialization.load_der_public_key(spki)
    cose = CoseKey.for_alg(record["alg"]).from_cryptography_key(pub)
    cred_id = b64u_decode(record["credential_id"])
    cred = AttestedCredentialData.create(b"\0" * 16, cred_id, cose)
    _, state = server.authenticate_begin([cred], user_verification="discouraged")
    client_data = ClientData.build(type="webauthn.get", challenge=state["challenge"],
                                   origin="https://" + rp, crossOrigin=False)
    res = agent.json("assert", "--rp", rp, "--client-data-hash", client_data.hash.hex(),
                     "--credential", record["id"])
    if b64u_decode(res["credential_id"]) != cred_id:
        raise AssertionError("assertion names another credential")
    auth_data = AuthenticatorData(b64u_decode(res["authenticator_data"]))
    signature = b64u_decode(res["signature"])
    server.authenticate_complete(state, [cred], cred_id, client_data, auth_data, signature)
    if b64u_decode(res["user_handle"]) != b64u_decode(record["user_handle"]):
        raise AssertionError("user handle differs from the record's")

    # libfido2 needs the key as PEM and the authenticator data CBOR-wrapped.
    with tempfile.TemporaryDirectory() as d:
        pem = os.path.join(d, "key.pem")
        with open(pem, "wb") as f:
            f.write(pub.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
        import base64
        lines = [base64.b64encode(client_data.hash).decode(), rp,
                 base64.b64encode(cbor_bytes(bytes(auth_data))).decode(),
                 base64.b64encode(signature).decode()]
        kind = "es256" if record["alg"] == -7 else "eddsa"
        p = subprocess.run(["fido2-assert", "-V", "-p", pem, kind],
                           input=("\n".join(lines) + "\n").encode(), capture_output=True)
        if p.returncode != 0:
            raise AssertionError("fido2-assert -V refused: " + p.stderr.decode())
    if auth_data.counter != 0:
        raise AssertionError("signCount is %d, not 0" % auth_data.counter)
    be = bool(auth_data.flags & FLAG_BE)
    bs = bool(auth_data.flags & FLAG_BS)
    if be != record["backup_eligible"] or bs != record["backup_state"]:
        raise AssertionError("BE/BS flags %s/%s differ from the record's %s/%s" %
                             (be, bs, record["backup_eligible"], record["backup_state"]))
    if not auth_data.flags & FLAG_UP:
        raise AssertionError("UP flag not set")
    return auth_data
