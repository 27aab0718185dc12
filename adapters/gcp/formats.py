"""The GCP input format, registered in the parsing seam (`collector/parsing.py`); `collector.registry.FORMATS` names
this module for provider `gcp`.

- `gcp-logentry`: Cloud Logging LogEntry JSON of VPC Flow Logs, one per line (a log sink's Cloud Storage export),
  or one bare `jsonPayload` record per line (adapters/gcp/parse.py). Parser options: `projects` (keep only these
  project ids) and `sampling_rate` (GCP records do not carry it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from adapters.gcp.parse import looks_like_gcp, parse_lines
from collector.parsing import Format, ParseResult, register_format, register_option


def _lines(
    chunks: Iterable[bytes], *, unit: str, source: str, options: Mapping[str, Any], resume: dict[str, Any] | None
) -> Iterator[ParseResult]:
    return parse_lines(chunks, unit=unit, source=source, options=options, resume=resume)


def _projects(text: str) -> frozenset[str]:
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError("expected project ids separated by commas")
    return names


def _rate(text: str) -> int:
    digits = text.strip()
    value = int(digits) if digits.isascii() and digits.isdigit() else 0
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {text!r}")
    return value


register_format(
    Format("gcp-logentry", "gcp", lambda head, _: looks_like_gcp(head), _lines, order=30, default=True, seeks=True)
)
register_option("projects", _projects)
register_option("sampling_rate", _rate)
