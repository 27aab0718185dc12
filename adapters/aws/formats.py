"""The AWS input formats, registered in the parsing seam (`collector/parsing.py`); `collector.registry.FORMATS`
names this module for provider `aws`.

- `aws-parquet`: VPC flow logs delivered to S3 as Parquet (`PAR1` magic).
- `aws-cloudwatch-subscription`: CloudWatch Logs subscription payloads as Kinesis Data Firehose writes them to S3
  (concatenated gzip members of `{"messageType": "DATA_MESSAGE", "logEvents": [...]}`), adapters/aws/subscription.py.
- `aws-message-lines`: one `{"message": "<flow log record>"}` object per line, as log shippers export CloudWatch
  events.
- `aws-text`: flow log text (S3 objects, CloudWatch exports): the most lenient shape, so it sniffs last.

The two JSON wrappers hold CloudWatch events, whose messages are records without a header: each goes through the
text parser in the `aws_fields` order (default: the v2 default format).

The parser option `aws_fields` is the field order of lines before any header line (CloudWatch events carry none);
`--aws-format` on the command line gives it as text. `aws-text` reads growing objects (the option `complete`,
collector/parsing.py): while one is incomplete, a trailing line without its line end is left for the next read; and
it resumes by seeking (the option `stream_offset`): a resumed plain object is read from its resume point on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

from adapters.aws.fields import parse_field_list
from adapters.aws.parse import header_of, parse_parquet, parse_text
from adapters.aws.subscription import (
    looks_like_message_lines,
    looks_like_subscription,
    parse_message_lines,
    parse_subscription,
)
from collector.parsing import Format, ParseResult, register_format, register_option

PARQUET_MAGIC = b"PAR1"


SNIFF_LINES = 16


def looks_like_aws_text(head: bytes, options: Mapping[str, Any]) -> bool:
    """An AWS header line or a default-format record (its first field, version, is a number) among the first
    SNIFF_LINES non-blank lines; with a configured field order, any text that is not JSON. The first line is not
    trusted alone: a damaged first line must cost that line (an error), not the file. Other text (a README beside
    the logs) is reported once instead of as hundreds of malformed lines."""
    stripped = head.lstrip()
    if options.get("aws_fields"):
        return stripped[:1] not in (b"{", b"[")
    if not stripped:
        return True
    lines = [line for line in stripped.split(b"\n", SNIFF_LINES * 4)[: SNIFF_LINES * 4] if line.strip()]
    for line in lines[:SNIFF_LINES]:
        text = line.decode("ascii", "replace")
        if text.split(None, 1)[0].isdigit() or header_of(text) is not None:
            return True
    return False


def _text(
    chunks: Iterable[bytes], *, unit: str, source: str, options: Mapping[str, Any], resume: dict[str, Any] | None
) -> Iterator[ParseResult]:
    complete = bool(options.get("complete", True))
    return parse_text(
        chunks,
        unit=unit,
        source=source,
        fields=options.get("aws_fields"),
        resume=resume,
        complete=complete,
        stream_offset=int(options.get("stream_offset", 0)),
    )


def _parquet(
    fh: BinaryIO, *, unit: str, source: str, options: Mapping[str, Any], resume: dict[str, Any] | None
) -> Iterator[ParseResult]:
    return parse_parquet(fh, unit=unit, source=source, resume=resume)


def _subscription(
    chunks: Iterable[bytes], *, unit: str, source: str, options: Mapping[str, Any], resume: dict[str, Any] | None
) -> Iterator[ParseResult]:
    return parse_subscription(chunks, unit=unit, source=source, fields=options.get("aws_fields"), resume=resume)


def _message_lines(
    chunks: Iterable[bytes], *, unit: str, source: str, options: Mapping[str, Any], resume: dict[str, Any] | None
) -> Iterator[ParseResult]:
    return parse_message_lines(chunks, unit=unit, source=source, fields=options.get("aws_fields"), resume=resume)


register_format(Format("aws-parquet", "aws", lambda head, _: head[:4] == PARQUET_MAGIC, _parquet, container="file"))
register_format(
    Format("aws-cloudwatch-subscription", "aws", lambda head, _: looks_like_subscription(head), _subscription, order=10)
)
register_format(
    Format("aws-message-lines", "aws", lambda head, _: looks_like_message_lines(head), _message_lines, order=20)
)
register_format(
    Format("aws-text", "aws", looks_like_aws_text, _text, order=1000, default=True, growing=True, seeks=True)
)
register_option("aws_fields", parse_field_list)
