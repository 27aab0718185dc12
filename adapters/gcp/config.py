"""Config sections of the GCP sources (`gcp_gcs`, `gcp_pubsub`), registered in `collector.registry`.

Declared in the config language of `collector/options.py` (see adapters/aws/config.py for how). Credentials are a
service-account key file (`credentials_file`) or, without one, Application Default Credentials
(`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials, the metadata server); `endpoint` points a source at an
emulator (fake-gcs-server, the Pub/Sub emulator), which takes no credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from adapters.aws.config import HttpUrl, StartFrom, _AtMost, _Matches
from collector.options import Duration, InvalidField, Min, NonEmpty, Positive
from collector.registry import register_source

DEFAULT_PREFIX = "compute.googleapis.com/vpc_flows/"
# Project ids: 6-30 characters, lower-case letters, digits and hyphens, starting with a letter (domain-scoped
# legacy ids `example.com:proj` exist too).
ProjectId = _Matches(
    r"[a-z][-a-z0-9.:]{4,61}[a-z0-9]$", "expected a GCP project id such as 'my-project-123', got {value!r}"
)
SubscriptionPath = _Matches(
    r"projects/[^/]+/subscriptions/[^/]{3,255}$",
    "expected the subscription's full name 'projects/PROJECT/subscriptions/NAME', got {value!r}",
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
GcsBucket = _Matches(
    _BUCKET.pattern + "$", "expected a Cloud Storage bucket name (no gs:// and no slash), got {value!r}"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpAuth:
    """Credentials and endpoint shared by the GCP sources (README "GCP credentials")."""

    credentials_file: Path | None = None
    endpoint: Annotated[str | None, HttpUrl] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GcsSourceConfig(GcpAuth):
    """`type: gcp_gcs`: VPC flow logs exported by a log sink to a Cloud Storage bucket, found by polling it."""

    name: Annotated[str, NonEmpty]
    type: str = "gcp_gcs"
    bucket: Annotated[str, NonEmpty, GcsBucket]
    prefix: str = DEFAULT_PREFIX
    projects: tuple[Annotated[str, ProjectId], ...] = ()
    start_from: Annotated[str | None, StartFrom] = None
    lookback: Annotated[float, Duration] = 10800.0
    poll_interval: Annotated[float, Duration, Positive] = 60.0
    max_concurrency: Annotated[int, Min(1)] = 4
    sampling_rate: Annotated[int | None, Min(1)] = None

    def __post_init__(self) -> None:
        if self.prefix and not self.prefix.endswith("/"):
            raise InvalidField("prefix", f"expected a folder ending in '/', got {self.prefix!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PubSubSourceConfig(GcpAuth):
    """`type: gcp_pubsub`: LogEntry messages of a log sink's topic, or Cloud Storage notifications naming objects
    (README "gcp_pubsub"). `endpoint` is Pub/Sub's (an emulator: `http://HOST:PORT`, or PUBSUB_EMULATOR_HOST);
    `storage_endpoint` is where the objects notifications name are read (fake-gcs-server, or STORAGE_EMULATOR_HOST)."""

    name: Annotated[str, NonEmpty]
    type: str = "gcp_pubsub"
    subscription: Annotated[str, NonEmpty, SubscriptionPath]
    projects: tuple[Annotated[str, ProjectId], ...] = ()
    # Objects a notification names outside this prefix are not flow logs: counted as ignored and acked.
    prefix: str = DEFAULT_PREFIX
    storage_endpoint: Annotated[str | None, HttpUrl] = None
    # Pub/Sub takes 10 s to 600 s.
    ack_deadline: Annotated[float, Duration, Min(10), _AtMost(600)] = 60.0
    # How long a message that cannot be parsed, or whose object cannot be read, stays away before Pub/Sub hands it
    # out again (its ack deadline is set to this: Pub/Sub has no per-message delay). 600 s is Pub/Sub's maximum.
    retry_after: Annotated[float, Duration, Min(1), _AtMost(600)] = 300.0
    # A pull waits this long for messages (a --once run ends at the first pull that finds nothing).
    wait_time: Annotated[float, Duration, Min(1), _AtMost(600)] = 20.0
    max_messages: Annotated[int, Min(1)] = 1000
    max_outstanding_messages: Annotated[int, Min(1)] = 100_000
    max_concurrency: Annotated[int, Min(1)] = 4
    sampling_rate: Annotated[int | None, Min(1)] = None


# The sources themselves load the Google client libraries: imported only when a configured source is created.
register_source("gcp_gcs", GcsSourceConfig, "adapters.gcp.gcs:GcsSource")
register_source("gcp_pubsub", PubSubSourceConfig, "adapters.gcp.pubsub:PubSubSource")
