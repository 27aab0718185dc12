"""GCP VPC Flow Logs: Cloud Logging `LogEntry` JSON (`compute.googleapis.com/vpc_flows`) to normalized batches.

Pure: bytes in, `ParseResult`s out (collector/parsing.py). Two entry points:
- `parse_lines`: newline-delimited JSON, as a log sink writes it to Cloud Storage (one LogEntry per line), or one
  bare `jsonPayload` object per line. Position `{"offset": bytes consumed, "line": lines consumed}`.
- `parse_entries`: a list of message bodies (Pub/Sub: one LogEntry per message), one batch for all of them; the
  indexes of the bodies that gave no flow because they are bad come back too (the source leaves those unacked).

The rules (README "GCP VPC flow logs" says the same to users; tests/oracle_gcp.py checks them independently):
1. A line is split at LF; a CR before it is JSON whitespace. Blank lines are passed over. A line longer than
   MAX_LINE is one error and is skipped without being held in memory.
2. Each other line is one JSON value (RFC 8259; a lone surrogate escape is invalid). An object with the key
   `jsonPayload` is a LogEntry: its `jsonPayload` is the record and its `resource.labels` the fallback for the
   project and subnet. An object without it that has `connection` is a bare record. Anything else is an error.
3. The record maps to one row. Reporter `SRC` / `SRC_GATEWAY` -> direction egress, `DEST` / `DEST_GATEWAY` ->
   ingress (relative to the reporting side); another reporter string is kept in `reporter` with direction null.
   The reporting side is `src_*` for SRC*, `dest_*` for DEST*: its instance `project_id` / `vm_name` / `region` /
   `zone` and its VPC `vpc_name` / `subnetwork_name` give `account` / `interface` and `instance` (both the VM name)
   / `region` / `zone` / `vpc` / `subnet`. For a gateway reporter, the gateway's `project_id`, `name`, `location`
   and `vpc.vpc_name`. Fallbacks: account <- the VPC's project_id <- resource.labels.project_id; subnet <-
   resource.labels.subnetwork_name; region <- the VPC's subnetwork_region.
4. `connection.src_ip` / `dest_ip` -> src_addr / dst_addr (IPv4 or IPv6 text, else an error); `src_port`,
   `dest_port` (0-65535), `protocol` (0-255), `packets_sent`, `bytes_sent` (0 to 2^63-1) are numbers: a JSON
   integer, a JSON number with an integral value (`3389.0`, `1e3`), or a string of decimal digits optionally
   followed by `.` and zeros (`"491"`, `"3389.0"`). Missing or null -> null (ICMP has no ports).
5. `start_time` / `end_time`: RFC 3339 `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (upper-case T and Z, as
   Cloud Logging writes), floored to milliseconds UTC; missing or null -> null.
6. `disposition` ALLOWED -> action accept, DROPPED -> reject; action is null without it (older records).
   `log_status` is null (GCP has none), `sampling_rate` is the source's `sampling_rate` option when given.
7. A field of the wrong type or out of range in rules 3-6 (a string where an object or a number belongs, a port of
   70000, `"abc"` bytes) makes the line one error naming the field's JSON path; no row.
8. `extra` keeps every other leaf of the record, flattened to dotted paths (`rtt_msec`, `src_location.country`,
   `dest_instance.vm_name`, `src_gke_details.pod.pod_name`): strings as they are, numbers and booleans as JSON
   text, arrays as compact JSON; nulls and empty objects are left out. The reporting side's leaves that went
   into a column are not repeated there. Of the LogEntry around the record, `insertId` is kept (as `insertId`)
   and `resource.labels` leaves not used (`resource.labels.subnetwork_id`, `resource.labels.location`).
9. With the option `projects` (a set of project ids), rows whose `account` is not among them are dropped (an
   organisation-level sink writes every project of the organisation into one bucket); they are not errors.

Batches end at the first line end at or after BLOCK_SIZE bytes of input from the batch's start, or after
MAX_BATCH_ROWS lines, whichever comes first: boundaries depend only on the content from the resume point.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from collector.parsing import ParseResult

BLOCK_SIZE = 4 << 20
MAX_LINE = 1 << 20


def parse_lines(
    chunks: Iterable[bytes],
    *,
    unit: str,
    source: str,
    options: Mapping[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    block_size: int = BLOCK_SIZE,
) -> Iterator[ParseResult]:
    """Newline-delimited LogEntry (or bare record) JSON, decompressed, in batches (rules in the module docstring)."""
    raise NotImplementedError


def parse_entries(
    bodies: Sequence[bytes],
    *,
    unit: str,
    source: str,
    names: Sequence[str],
    options: Mapping[str, Any] | None = None,
) -> tuple[ParseResult, list[int]]:
    """Message bodies, each one LogEntry (or bare record), as one batch; errors name `names[i]` (a message id) as
    their unit. Also returns the indexes of the bodies that are bad (no flow and an error)."""
    raise NotImplementedError


def looks_like_gcp(head: bytes) -> bool:
    """Whether the first decompressed bytes are GCP flow log JSON lines (LogEntry or bare record)."""
    raise NotImplementedError
