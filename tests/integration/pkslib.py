"""Test helpers: run real pksync-agent processes and the pksync CLI.

Every agent gets its own state dir under a temporary directory; nothing is
left behind. Tests print TAP through the small Tap class.
"""
import base64
import hashlib
import json
import os
import socket
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tap:
    """Minimal TAP producer: each case is a function; an exception fails it."""

    def __init__(self):
        self.cases = []

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def run(self, argv):
        only = argv[1] if len(argv) > 1 else None
        cases = [c for c in self.cases if only is None or only in c.__name__]
        print("1..%d" % len(cases), flush=True)
        failed = 0
        for i, fn in enumerate(cases, 1):
            try:
                fn()
                print("ok %d %s" % (i, fn.__name__), flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure as TAP
                failed += 1
                import traceback

                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                print("not ok %d %s: %s" % (i, fn.__name__, str(e)[:200]), flush=True)
        return 1 if failed else 0


def free_port():
    """A TCP port on loopback that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CliError(Exception):
    def __init__(self, rc, stderr, stdout):
        super().__init__("pksync exited %d: %s" % (rc, stderr.strip() or stdout.strip()))
        self.rc = rc
        self.stderr = stderr
        self.stdout = stdout


class Agent:
    """One pksync-agent on its own state dir."""

    def __init__(self, build_dir, root=None, name="dev"):
        self.build_dir = build_dir
        self.agent_bin = os.path.join(build_dir, "agent", "pksync-agent")
        self.cli_bin = os.path.join(build_dir, "tools", "pksync")
        self.owns_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="pks-it-")
        self.state_dir = os.path.join(self.root, name)
        self.proc = None
        self.log_path = os.path.join(self.root, name + ".log")
        self.env = dict(os.environ)
        self.env["PKSYNC_TEST_FAST_KDF"] = "1"
        self.env.pop("PKSYNC_STATE_DIR", None)

    # Tests on loopback must not announce anything on the machine's networks:
    # mDNS discovery stays off unless a test (in its own network namespaces)
    # turns it on.
    discovery = False

    # Seconds for the control socket to answer after start().
    start_timeout = 10

    def command(self, extra=()):
        """The agent's command line; subclasses run it elsewhere (a lab host)."""
        quiet = [] if self.discovery else ["--no-mdns", "--no-ble"]
        return [self.agent_bin, "--state-dir", self.state_dir, *quiet, *extra]

    def start(self, extra=()):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(extra), stdout=self.log, stderr=self.log,
                                     env=self.env)
        sock = os.path.join(self.state_dir, "control.sock")
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited early: " + self.read_log())
            if os.path.exists(sock):
                try:
                    self.cli("status", "--json")
                    return self
                except CliError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("agent did not start: " + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def cleanup(self):
        self.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def cli(self, *args, input=None, check=True, timeout=120):
        p = subprocess.run([self.cli_bin, "--state-dir", self.state_dir, *args],
                           input=input, capture_output=True, env=self.env,
                           timeout=timeout)
        out = p.stdout.decode(errors="replace")
        err = p.stderr.decode(errors="replace")
        if check and p.returncode != 0:
            raise CliError(p.returncode, err, out)
        return p.returncode, out, err

    def json(self, *args):
        _, out, _ = self.cli(*args, "--json")
        return json.loads(out)

    def init(self, name="test device", passphrase=None):
        if passphrase is None:
            return self.json("init", "--name", name, "--no-passphrase")
        pf = os.path.join(self.root, "pass-" + os.path.basename(self.state_dir))
        with open(pf, "w") as f:
            f.write(passphrase + "\n")
        os.chmod(pf, 0o600)
        return self.json("init", "--name", name, "--passphrase-file", pf)

    def state_files(self):
        """Every regular file in the state dir (WAL and SHM included)."""
        for dirpath, _, files in os.walk(self.state_dir):
            for f in files:
                path = os.path.join(dirpath, f)
                if os.path.isfile(path) and not path.endswith(".sock"):
                    yield path


def sha256(data):
    return hashlib.sha256(data).digest()
