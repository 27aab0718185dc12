"""Provider adapters: discovery, fetching, checkpoints and parsers per cloud store, registered by `type:` name."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any


def create_source(config: Any, store: Any, metrics: Any, executor: Executor | None = None) -> Any:
    # Imported here so that `import adapters` stays cheap and adapters load only when configured.
    if config.type == "local":
        from adapters.local import LocalSource

        return LocalSource(config, store, metrics, executor)
    raise ValueError(f"unknown source type {config.type!r}")
