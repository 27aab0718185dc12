"""Config sections of the AWS sources (`aws_s3`, `aws_cloudwatch`, `aws_sqs`), registered in `collector.registry`.

Declared in the config language of `collector/options.py`: the dataclass is the schema, `Annotated` markers carry
durations, bounds, choices and every check of a single value (they run while the file is read, so each is reported
even when another key is wrong), and `__post_init__` raises `InvalidField` only for what spans fields, so the loader
points at the key. Credentials are the same few keys on every AWS source (`AwsAuth`), and each entry of `accounts` may
override them: the usual multi-account setup is one role name in every account, written once as
`role_arn: "arn:aws:iam::{account}:role/FlowLogsReader"`.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from yaml.nodes import MappingNode, Node, SequenceNode

from adapters.aws.fields import KNOWN_FIELDS, parse_field_list
from collector.options import (
    INVALID,
    Choice,
    Duration,
    InvalidField,
    Min,
    NonEmpty,
    Parse,
    Positive,
    Secret,
    Walker,
    describe,
    did_you_mean,
    parse_duration,
)
from collector.registry import register_source

_ACCOUNT_ID = re.compile(r"\d{12}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}|\{account\}):role/[\w+=,.@/-]+")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
SERVICES = ("vpcflowlogs", "transitgatewayflowlogs")


def parse_start_from(value: object) -> str:
    """`now`, an RFC 3339 / ISO 8601 time (`2026-11-01`, `2026-11-01T06:00:00Z`), or a duration before the first
    run (`24h`, `7d`): normalized to `now`, `ago:SECONDS` or an ISO time in UTC."""
    if isinstance(value, str) and value.strip().lower() == "now":
        return "now"
    if isinstance(value, datetime):  # YAML's own timestamp type
        value = value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.astimezone(UTC).isoformat()
        try:
            return f"ago:{parse_duration(text):g}"
        except ValueError:
            pass
    raise ValueError(
        f"invalid start_from {value!r}: expected 'now', a time such as '2026-11-01T06:00:00Z', or a duration "
        "before the first run such as '24h' or '7d'"
    )


class _AwsFields:
    """Marker: an AWS field order, as a string (names, a LogFormat, `default`, `tgw-default`) or a list of names.

    Unknown names are allowed (the parser keeps them in `extra`, and AWS adds fields), but a name one typo away
    from a known field is an error: it would silently leave a schema column empty.
    """

    def convert(self, walker: Walker, node: Node, key: str) -> Any:
        if isinstance(node, SequenceNode):
            items = [walker.value(item, str, f"{key}[{i}]") for i, item in enumerate(node.value)]
            if any(item is INVALID for item in items):
                return INVALID
            spec = " ".join(items)
        else:
            spec = walker.value(node, str, key)
            if spec is INVALID:
                return INVALID
        try:
            names = parse_field_list(spec)
        except ValueError:
            return walker.error(node, key, "empty field list")
        problems = []
        for name in names:
            if name not in KNOWN_FIELDS:
                hint = difflib.get_close_matches(name, KNOWN_FIELDS, n=1, cutoff=0.85)
                if hint:
                    problems.append(f"unknown AWS field {name!r}{did_you_mean(hint)}")
        if problems:
            return walker.error(node, key, "; ".join(problems))
        return names


AwsFields = _AwsFields()


StartFrom = Parse("'now', a time or a duration", parse_start_from)


def _role_arn(value: str | None) -> str | None:
    if value is not None and not _ROLE_ARN.fullmatch(value):
        raise ValueError(
            f"invalid role_arn {value!r}: expected arn:aws:iam::ACCOUNT:role/NAME (ACCOUNT may be '{{account}}')"
        )
    return value


class _RoleArn:
    def check(self, value: Any) -> str | None:
        try:
            _role_arn(value)
        except ValueError as exc:
            return str(exc)
        return None


class _Region:
    def check(self, value: Any) -> str | None:
        if value is None or _REGION.fullmatch(value):
            return None
        return f"invalid AWS region {value!r} (expected a name such as 'eu-west-1')"


class _Matches:
    """Marker: a string must match `pattern` from its start (None passes); `message` is formatted with the value."""

    def __init__(self, pattern: str, message: str) -> None:
        self.pattern = re.compile(pattern)
        self.message = message

    def check(self, value: Any) -> str | None:
        return None if value is None or self.pattern.match(value) else self.message.format(value=value)


class _BucketName:
    """Marker: a bucket name alone; an `s3://` URL or a path is the commonest slip, and would list nothing."""

    def check(self, value: Any) -> str | None:
        if "/" in value or "s3://" in value:
            return f"a bucket name, not a path: {value!r} (put the path in 'prefix')"
        return None


class _AtMost:
    def __init__(self, bound: float) -> None:
        self.bound = bound

    def check(self, value: Any) -> str | None:
        return f"must be at most {self.bound:g}, got {value!r}" if value > self.bound else None


RoleArn = _RoleArn()
Region = _Region()
AccountId = _Matches(r"\d{12}\Z", "invalid AWS account id {value!r}: expected 12 digits (quote it in YAML)")
HttpUrl = _Matches(r"https?://", "expected an http:// or https:// URL, got {value!r}")
QueueUrl = _Matches(r"https?://", "expected the queue's https:// URL, got {value!r}")
BucketName = _BucketName()


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One AWS account: its id, and optionally its own credentials (else the source's) and regions."""

    id: Annotated[str, AccountId]
    role_arn: Annotated[str | None, RoleArn] = None
    external_id: Annotated[str | None, Secret] = field(default=None, repr=False)
    profile: str | None = None
    regions: tuple[Annotated[str, Region], ...] = ()


class _Accounts:
    """Marker: a list whose items are an account id (`"123456789012"`) or a mapping (`{id: ..., role_arn: ...}`).

    An unquoted id is a YAML integer: taken only when it has 12 digits, since a leading zero is lost on the way."""

    def convert(self, walker: Walker, node: Any, key: str) -> Any:
        if not isinstance(node, SequenceNode):
            return walker.error(node, key, f"expected a list of account ids or mappings, got {describe(node)}")
        out = []
        for i, item in enumerate(node.value):
            ikey = f"{key}[{i}]"
            if isinstance(item, MappingNode):
                out.append(walker.dataclass(item, AccountConfig, ikey))
                continue
            value = walker.scalar(item, ikey, ("str", "int"), "an account id or a mapping", retype=True)
            if value is INVALID:
                out.append(INVALID)
                continue
            text = str(value).strip()
            if isinstance(value, int) and len(text) != 12:
                out.append(walker.error(item, ikey, f"account id {value} is not 12 digits: quote it ('0...') in YAML"))
                continue
            if not _ACCOUNT_ID.fullmatch(text):
                out.append(walker.error(item, ikey, f"invalid AWS account id {text!r}: expected 12 digits"))
                continue
            out.append(AccountConfig(id=text))
        if any(item is INVALID for item in out):
            return INVALID
        counts = Counter(a.id for a in out)  # (list.count per id was quadratic: 65,000 ids took 165 s)
        dup = sorted(a for a, n in counts.items() if n > 1)
        if dup:
            return walker.error(node, key, f"account listed twice: {', '.join(dup)}")
        return tuple(out)


Accounts = _Accounts()


@dataclass(frozen=True, slots=True)
class AwsAuth:
    """Credentials and endpoint shared by every AWS source (see README "AWS credentials").

    Order: static keys (`access_key_id` + `secret_access_key`, usually `${ENV}`), else `profile` (from
    `credentials_file` when given), else the default chain (env, ~/.aws, instance or task role). With `role_arn`
    that identity assumes the role (per account when it holds `{account}`), refreshed before it expires.
    """

    region: Annotated[str | None, Region] = None
    endpoint_url: Annotated[str | None, HttpUrl] = None
    profile: str | None = None
    credentials_file: Path | None = None
    # Secret: never echoed in a config error, redacted from every log line, and left out of repr().
    access_key_id: Annotated[str | None, Secret] = field(default=None, repr=False)
    secret_access_key: Annotated[str | None, Secret] = field(default=None, repr=False)
    session_token: Annotated[str | None, Secret] = field(default=None, repr=False)
    role_arn: Annotated[str | None, RoleArn] = None
    external_id: Annotated[str | None, Secret] = field(default=None, repr=False)
    role_session_name: Annotated[str, NonEmpty] = "flowcollector"
    # At least 30 minutes: botocore renews a role 15 minutes before it expires, so a 15-minute role (the AWS
    # minimum) would be assumed again on every call.
    role_duration: Annotated[float, Duration, Min(1800), _AtMost(43200)] = 3600.0


def _check_auth(cfg: Any) -> None:
    if (cfg.access_key_id is None) != (cfg.secret_access_key is None):
        missing = "secret_access_key" if cfg.secret_access_key is None else "access_key_id"
        raise InvalidField(missing, "access_key_id and secret_access_key go together")
    if cfg.session_token is not None and cfg.access_key_id is None:
        raise InvalidField("session_token", "needs access_key_id and secret_access_key")
    if cfg.access_key_id is not None and cfg.profile is not None:
        raise InvalidField("profile", "give either static keys or a profile, not both")
    if cfg.role_arn and "{account}" in cfg.role_arn and not getattr(cfg, "accounts", ()):
        raise InvalidField("role_arn", "'{account}' needs a list of accounts")


def auth_of(cfg: Any) -> AwsAuth:
    """The AwsAuth part of any AWS source config."""
    return AwsAuth(**{f.name: getattr(cfg, f.name) for f in fields(AwsAuth)})


@dataclass(frozen=True, slots=True, kw_only=True)
class S3SourceConfig(AwsAuth):
    """`type: aws_s3`: VPC and Transit Gateway flow logs delivered to S3, found by polling the bucket."""

    name: Annotated[str, NonEmpty]
    type: str = "aws_s3"
    bucket: Annotated[str, NonEmpty, BucketName]
    prefix: str = ""
    accounts: Annotated[tuple[AccountConfig, ...], Accounts] = ()
    regions: tuple[Annotated[str, Region], ...] = ()
    services: tuple[Annotated[str, Choice(*SERVICES)], ...] = SERVICES
    start_from: Annotated[str | None, StartFrom] = None
    lookback: Annotated[float, Duration] = 7200.0
    poll_interval: Annotated[float, Duration, Positive] = 60.0
    discover_interval: Annotated[float, Duration, Positive] = 3600.0
    max_concurrency: Annotated[int, Min(1)] = 4

    def __post_init__(self) -> None:
        _check_auth(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudWatchSourceConfig(AwsAuth):
    """`type: aws_cloudwatch`: flow log events in CloudWatch Logs log groups (one stream per interface)."""

    name: Annotated[str, NonEmpty]
    type: str = "aws_cloudwatch"
    log_groups: tuple[Annotated[str, NonEmpty], ...] = ()
    log_group_prefix: str | None = None
    fields: Annotated[tuple[str, ...] | None, AwsFields] = None
    accounts: Annotated[tuple[AccountConfig, ...], Accounts] = ()
    regions: tuple[Annotated[str, Region], ...] = ()
    start_from: Annotated[str | None, StartFrom] = None
    lookback: Annotated[float, Duration] = 600.0
    poll_interval: Annotated[float, Duration, Positive] = 30.0
    discover_interval: Annotated[float, Duration, Positive] = 300.0
    max_concurrency: Annotated[int, Min(1)] = 4

    def __post_init__(self) -> None:
        if not self.log_groups and self.log_group_prefix is None:
            raise InvalidField("log_groups", "give log_groups (a list of names) or log_group_prefix")
        _check_auth(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SqsSourceConfig(AwsAuth):
    """`type: aws_sqs`: S3 ObjectCreated notifications (direct, through SNS, or from EventBridge) on a queue.

    The bounds are SQS's own: a long poll waits at most 20 s, a message stays invisible at most 12 hours, so a value
    past them is refused here rather than by every ReceiveMessage call. `key_filter` is an fnmatch pattern on the
    whole object key (`*` also matches `/`; empty: every object); see adapters/aws/sqs.py for the rest.
    """

    name: Annotated[str, NonEmpty]
    type: str = "aws_sqs"
    queue_url: Annotated[str, NonEmpty, QueueUrl]
    # At least 1 s: 0 is SQS short polling, which answers at once, so an idle daemon would send receives back to back.
    wait_time: Annotated[float, Duration, Min(1), _AtMost(20)] = 20.0
    visibility_timeout: Annotated[float, Duration, Min(1), _AtMost(43200)] = 300.0
    max_receive_count: Annotated[int, Min(1)] = 5
    max_concurrency: Annotated[int, Min(1)] = 4
    key_filter: str = ""

    def __post_init__(self) -> None:
        _check_auth(self)


# The sources themselves load aiobotocore: named here, imported only when a configured source is created.
register_source("aws_s3", S3SourceConfig, "adapters.aws.s3:S3Source")
register_source("aws_cloudwatch", CloudWatchSourceConfig, "adapters.aws.cloudwatch:CloudWatchSource")
register_source("aws_sqs", SqsSourceConfig, "adapters.aws.sqs:SqsSource")
