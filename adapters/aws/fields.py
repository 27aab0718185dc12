"""AWS VPC / Transit Gateway flow log field names (FORMATS.md, "AWS VPC flow logs") and where each one lands."""

from __future__ import annotations

V2_FIELDS: tuple[str, ...] = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport", "protocol",
    "packets", "bytes", "start", "end", "action", "log-status",
)  # fmt: skip
V3_FIELDS = ("vpc-id", "subnet-id", "instance-id", "tcp-flags", "type", "pkt-srcaddr", "pkt-dstaddr")
V4_FIELDS = ("region", "az-id", "sublocation-type", "sublocation-id")
V5_FIELDS = ("pkt-src-aws-service", "pkt-dst-aws-service", "flow-direction", "traffic-path")
TGW_FIELDS = (
    "resource-type", "tgw-id", "tgw-attachment-id", "tgw-src-vpc-account-id", "tgw-dst-vpc-account-id",
    "tgw-src-vpc-id", "tgw-dst-vpc-id", "tgw-src-subnet-id", "tgw-dst-subnet-id", "tgw-src-eni", "tgw-dst-eni",
    "tgw-src-az-id", "tgw-dst-az-id", "tgw-pair-attachment-id", "packets-lost-no-route", "packets-lost-blackhole",
    "packets-lost-mtu-exceeded", "packets-lost-ttl-expired",
)  # fmt: skip
V7_FIELDS = (
    "ecs-cluster-arn", "ecs-cluster-name", "ecs-container-instance-arn", "ecs-container-instance-id",
    "ecs-container-id", "ecs-second-container-id", "ecs-service-name", "ecs-task-definition-arn", "ecs-task-arn",
    "ecs-task-id",
)  # fmt: skip
V8_FIELDS = ("reject-reason",)

KNOWN_FIELDS: frozenset[str] = frozenset(
    V2_FIELDS + V3_FIELDS + V4_FIELDS + V5_FIELDS + TGW_FIELDS + V7_FIELDS + V8_FIELDS
)

# The Transit Gateway default format (FORMATS.md): used when a user says `fields: tgw-default`.
TGW_DEFAULT_FIELDS: tuple[str, ...] = (
    "version", "resource-type", "account-id", "tgw-id", "tgw-attachment-id", "tgw-src-vpc-account-id",
    "tgw-dst-vpc-account-id", "tgw-src-vpc-id", "tgw-dst-vpc-id", "tgw-src-subnet-id", "tgw-dst-subnet-id",
    "tgw-src-eni", "tgw-dst-eni", "tgw-src-az-id", "tgw-dst-az-id", "tgw-pair-attachment-id", "srcaddr", "dstaddr",
    "srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "log-status", "type",
    "packets-lost-no-route", "packets-lost-blackhole", "packets-lost-mtu-exceeded", "packets-lost-ttl-expired",
    "tcp-flags", "region", "flow-direction", "pkt-src-aws-service", "pkt-dst-aws-service",
)  # fmt: skip

# Integer fields and the largest value their schema column holds (None: kept as text in `extra`, but still must
# be an integer for the record to be valid, as AWS documents them as numbers).
INT_FIELDS: dict[str, int | None] = {
    "srcport": 0xFFFF,
    "dstport": 0xFFFF,
    "protocol": 0xFF,
    "packets": 2**63 - 1,
    "bytes": 2**63 - 1,
    "start": 2**63 - 1,
    "end": 2**63 - 1,
    "tcp-flags": 0xFF,
    "traffic-path": 8,  # an enumeration: 1-8 are documented (FORMATS.md); INT_MIN holds the lower end
    "version": None,
    "packets-lost-no-route": None,
    "packets-lost-blackhole": None,
    "packets-lost-mtu-exceeded": None,
    "packets-lost-ttl-expired": None,
}

# Smallest valid value where it is not 0.
INT_MIN: dict[str, int] = {"traffic-path": 1}

# field -> schema column, for fields copied as text.
STRING_COLUMNS: dict[str, str] = {
    "account-id": "account",
    "region": "region",
    "az-id": "zone",
    "vpc-id": "vpc",
    "subnet-id": "subnet",
    "interface-id": "interface",
    "instance-id": "instance",
    "reject-reason": "reject_reason",
}
ADDRESS_COLUMNS: dict[str, str] = {
    "srcaddr": "src_addr",
    "dstaddr": "dst_addr",
    "pkt-srcaddr": "pkt_src_addr",
    "pkt-dstaddr": "pkt_dst_addr",
}
NUMBER_COLUMNS: dict[str, str] = {
    "srcport": "src_port",
    "dstport": "dst_port",
    "protocol": "protocol",
    "packets": "packets",
    "bytes": "bytes",
    "tcp-flags": "tcp_flags",
    "traffic-path": "traffic_path",
}
# Lower-cased into dictionary columns: ACCEPT -> accept, NODATA -> nodata, ingress stays ingress.
ENUM_COLUMNS: dict[str, str] = {"action": "action", "log-status": "log_status", "flow-direction": "direction"}
TIME_FIELDS: dict[str, str] = {"start": "time_start", "end": "time_end"}

# The documented values of enumerated fields (FORMATS.md), spelled as AWS writes them; `-` (null) is allowed too. Any
# other word is an error with its record: lower-casing an unknown word into `action` would pass off damage as data.
# Shared by the text and Parquet paths (parse.normalize checks them).
ENUM_VALUES: dict[str, frozenset[str]] = {
    "action": frozenset({"ACCEPT", "REJECT"}),
    "log-status": frozenset({"OK", "NODATA", "SKIPDATA"}),
    "flow-direction": frozenset({"ingress", "egress"}),
    "type": frozenset({"IPv4", "IPv6", "EFA"}),
}

MAPPED_FIELDS = (
    frozenset(STRING_COLUMNS)
    | frozenset(ADDRESS_COLUMNS)
    | frozenset(NUMBER_COLUMNS)
    | frozenset(ENUM_COLUMNS)
    | frozenset(TIME_FIELDS)
)


def parse_field_list(spec: str) -> tuple[str, ...]:
    """A field order as users copy it: `version account-id ...` or the flow log's LogFormat `${version} ${...}`."""
    if spec.strip() in ("default", "v2"):
        return V2_FIELDS
    if spec.strip() == "tgw-default":
        return TGW_DEFAULT_FIELDS
    names = [tok.strip().removeprefix("${").removesuffix("}") for tok in spec.replace(",", " ").split()]
    if not names:
        raise ValueError("empty field list")
    return tuple(names)
