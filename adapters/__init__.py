"""Provider adapters: discovery, fetching, checkpoints and parsers per cloud store, registered by `type:` name."""

from __future__ import annotations

import importlib
from concurrent.futures import Executor
from typing import Any

# type -> "module:Class"; imported only when configured, so `import adapters` stays cheap.
SOURCES = {
    "local": "adapters.local:LocalSource",
    "aws_s3": "adapters.aws.s3:S3Source",
    "aws_cloudwatch": "adapters.aws.cloudwatch:CloudWatchSource",
    "aws_sqs": "adapters.aws.sqs:SqsSource",
}


def create_source(config: Any, store: Any, metrics: Any, executor: Executor | None = None) -> Any:
    """A source object with `name` and `async run(pipeline, once, stop)`; it releases what it holds when run ends."""
    target = SOURCES.get(config.type)
    if target is None:
        raise ValueError(f"unknown source type {config.type!r}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(config, store, metrics, executor)
