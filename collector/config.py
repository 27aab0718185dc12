"""The config file -> a validated, typed, frozen `Config`, checked completely before anything starts.

The language (markers, the walker, located errors) is `collector/options.py`; each source and sink declares its own
section beside its code and registers it (`collector/registry.py`): this module holds only what belongs to the
whole file (the state directory, logging, metrics, the pipeline) and the two lists of components.

- Relative paths (`state_dir`, a source's or a sink's `path`, and their defaults) are resolved against the directory
  of the config file, not the current directory, so the same file works from systemd, cron or `-c /etc/...` in a
  shell anywhere. The directory is taken as written (made absolute, not symlink-resolved), so a config mounted
  through a symlink (Kubernetes ConfigMaps) resolves against the directory it appears in.
- Errors are `FILE:LINE:COL: key.path: message`, every one in one pass (see collector/options.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from collector import registry
from collector.options import (  # noqa: F401 (re-exported: the config language, for callers of the core config)
    INVALID,
    MAX_CONFIG_BYTES,
    Choice,
    ComponentList,
    ConfigError,
    Directory,
    Duration,
    InvalidField,
    Min,
    Name,
    NonEmpty,
    Parse,
    Positive,
    Size,
    Walker,
    parse_document,
    parse_duration,
    parse_host_port,
    parse_size,
    too_large,
)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """`queue_batches`: batches queued per sink before sources wait (bounds memory); `workers`: parse threads,
    0 = one per CPU. `give_up_after`: with `run --once`, a sink (or the checkpoint store) failing this long ends
    the run with an error (a daemon retries forever: an outage must not stop it)."""

    queue_batches: Annotated[int, Min(1)] = 8
    workers: Annotated[int, Min(0)] = 0
    give_up_after: Annotated[float, Duration, Positive] = 300.0


def split_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to listen on -> (host, port); port 0 means any free port."""
    host, sep, port = text.strip().rpartition(":")
    if sep and port == "0":
        return parse_host_port(f"{host}:1")[0], 0
    return parse_host_port(text)


def parse_listen(value: object) -> str:
    """`host:port` for a server to listen on, normalized; a bare port listens on localhost only."""
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    host, port = split_listen(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


Listen = Parse("a host:port to listen on", parse_listen)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole config file. `path` is the file it came from (absolute); every relative path in it, `state_dir`
    included, has been resolved against `path.parent`. `progress_interval` 0 disables progress log lines.
    `metrics_listen` ("host:port") serves Prometheus metrics at /metrics; None: no endpoint."""

    path: Path
    state_dir: Annotated[Path, Directory] = Path("./var/state")
    log_level: Annotated[str, Choice("debug", "info", "warning", "error")] = "info"
    progress_interval: Annotated[float, Duration] = 10.0
    metrics_listen: Annotated[str | None, Listen] = None
    pipeline: PipelineConfig = PipelineConfig()
    sources: Annotated[tuple[Any, ...], ComponentList("source", registry.sources)] = ()
    sinks: Annotated[tuple[Any, ...], ComponentList("sink", registry.sinks)] = ()


# --- loading ------------------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; ConfigError lists every problem (unreadable file and YAML syntax included).

    Errors name the file as given here, so they match what the operator typed.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # no more: a 20 MB file is refused without reading it whole
        error = too_large(str(path), data)
        if error:
            raise ConfigError([error])
        # Line ends as text mode reads them (what the loader saw before it read bytes).
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: cannot read config: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, Path(path))


def parse_config(text: str, path: Path) -> Config:
    """Validate config text as if read from `path` (which need not exist): relative paths resolve against its dir.

    The directories it names (`state_dir`, file sinks) are checked against the file system as it is now."""
    return parse_document(text, path, Config, preset={"path": Path(os.path.abspath(path))})  # type: ignore[no-any-return]
