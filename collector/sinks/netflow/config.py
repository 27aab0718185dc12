"""`type: netflow` sink configuration, in the config language of `collector/options.py`, registered in
`collector.registry` (the sink itself, with numpy and sockets, is imported only when one is configured): the
dataclass is the schema, `Annotated` markers carry durations, bounds and the syntax of each address (checked while
the file is read, so every one is reported with the other errors), and `__post_init__` checks what spans fields
(and, with the markers' own checks, what a hand-built config could get wrong), raising `InvalidField` so the loader
points at the offending key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from collector.options import Duration, InvalidField, Min, Parse, Positive, parse_host_port
from collector.registry import register_sink
from collector.sinks import SinkOptions

VERSIONS = (5, 9, 10)
DOMAIN_MODES = ("source", "account")
MIN_MTU = 256  # the IPFIX template message is 192 octets, an IPv6 data record 85
MAX_MTU = 65507  # the largest UDP payload over IPv4


@dataclass(frozen=True)
class _OneOf:
    """Marker: an integer that must be one of `values` (config.Choice is for strings)."""

    values: tuple[int, ...]

    def check(self, value: Any) -> str | None:
        if value in self.values:
            return None
        return f"expected one of {', '.join(map(str, self.values))}, got {value!r}"


@dataclass(frozen=True)
class _AtMost:
    bound: int

    def check(self, value: Any) -> str | None:
        return f"must be at most {self.bound}, got {value!r}" if value > self.bound else None


def parse_observation_domain(value: object) -> str:
    """'source', 'account', or an integer domain id (YAML `7` or `"7"`), normalized to its decimal string."""
    if isinstance(value, str) and value.strip() in DOMAIN_MODES:
        return value.strip()
    if isinstance(value, bool):
        value = None
    try:
        number = int(value) if isinstance(value, int | str) else None
    except ValueError:
        number = None
    if number is None or not 0 <= number < 2**32:
        raise ValueError(
            f"invalid observation domain {value!r}: expected 'source', 'account' or an integer 0..4294967295"
        )
    return str(number)


ObservationDomain = Parse("an observation domain", parse_observation_domain)


class _Address:
    """Marker: a collector's `host:port` (None passes: `address` is optional beside `addresses`)."""

    def check(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            parse_host_port(value)
        except ValueError as exc:
            return str(exc)
        return None


class _Addresses:
    """Marker: a list of `host:port`; the first bad one is reported at the list, as the loader always has."""

    def check(self, value: Any) -> str | None:
        return next(filter(None, map(Address.check, value)), None)


Address = _Address()
Addresses = _Addresses()


@dataclass(frozen=True, slots=True, kw_only=True)
class NetflowSinkConfig(SinkOptions):
    """`type: netflow`: NetFlow v9 / IPFIX (or v5) over UDP to one or more collectors, each receiving everything.

    - `version`: 10 (IPFIX, default), 9 or 5. nfdump 1.7.1 shows ACCEPT/REJECT (forwardingStatus, firewallEvent)
      only from v9; v5 loses IPv6, action and direction (see encode.py).
    - `address` and/or `addresses`: `host:port`, IPv6 as `[::1]:2055`; after construction `addresses` holds all
      of them (`address` first), deduplicated.
    - `mtu`: largest UDP payload in octets (1400 leaves room for tunnels on a 1500 path).
    - `template_refresh` / `template_refresh_packets`: templates are re-sent per observation domain after this
      long or this many data packets, whichever comes first (RFC 7011 sec. 8.4: UDP collectors that start late
      or restart learn them again).
    - `max_packets_per_second`: datagrams per second to each collector, 0 = unlimited.
    - `observation_domain`: `source` (one domain per configured source, id = CRC-32 of its name), `account`
      (per account / project / subscription), or a fixed integer for everything.
    """

    type: str = "netflow"
    version: Annotated[int, _OneOf(VERSIONS)] = 10
    address: Annotated[str | None, Address] = None
    addresses: Annotated[tuple[str, ...], Addresses] = ()
    mtu: Annotated[int, Min(MIN_MTU), _AtMost(MAX_MTU)] = 1400
    template_refresh: Annotated[float, Duration, Positive] = 60.0
    template_refresh_packets: Annotated[int, Min(1)] = 1000
    max_packets_per_second: Annotated[int, Min(0)] = 50_000
    observation_domain: Annotated[str, ObservationDomain] = "source"

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise InvalidField("version", _OneOf(VERSIONS).check(self.version) or "")
        try:
            object.__setattr__(self, "observation_domain", parse_observation_domain(self.observation_domain))
        except ValueError as exc:
            raise InvalidField("observation_domain", str(exc)) from None
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise InvalidField("mtu", f"must be {MIN_MTU}..{MAX_MTU}, got {self.mtu!r}")
        given = ((self.address,) if self.address is not None else ()) + tuple(self.addresses)
        if not given:
            raise InvalidField("address", "a collector is required: set address (host:port) or addresses")
        for key, problem in (("address", Address.check(self.address)), ("addresses", Addresses.check(self.addresses))):
            if problem:  # a config built in code: a loaded one had these checked as it was read
                raise InvalidField(key, problem)
        object.__setattr__(self, "addresses", tuple(dict.fromkeys(a.strip() for a in given)))

    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every collector, in configuration order."""
        return tuple(parse_host_port(a) for a in self.addresses)

    def fixed_domain(self) -> int | None:
        """The configured integer observation domain, or None for `source` / `account`."""
        return None if self.observation_domain in DOMAIN_MODES else int(self.observation_domain)


register_sink("netflow", NetflowSinkConfig, "collector.sinks.netflow.sink:NetflowSink")
