"""The one registry of components: sources, sinks and input formats, each found by its `type:` name.

A component registers itself, with its config class and its implementation, when its module is imported
(`register_source("aws_s3", S3SourceConfig, "adapters.aws.s3:S3Source")`, at the bottom of the module that declares
the options). The core never imports a component: it asks this module, which knows the built-ins only as a table of
type -> module (`SOURCES`, `SINKS`, `FORMATS`) and imports a module the first time its type is looked up. So
`import collector.config` stays cheap, a config without an AWS source never loads aiobotocore, and this is the one
module of `collector/` that reaches `adapters/` (by name, at run time).

A component's implementation may be given as "module:Class" so that reading a config (`flowcollector check`)
imports only the module with the options, not the libraries the component runs on; it is imported when the
component is created.

Third parties add a component without forking: a package declares an entry point in the group
`flowcollector.sources`, `flowcollector.sinks` or `flowcollector.formats`, named by the type (for formats: the
provider) and pointing at the module that registers it. It is imported only when a config names that type.

The models are goflow2's `RegisterFormatDriver` (drivers register by name into one table) and Vector's
per-component config (each component declares and validates its own options).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Built-ins: type -> the module that registers it (imported on first use). Order is the order `known:` lists them.
SOURCES: dict[str, str] = {
    "local": "adapters.local",
    "aws_s3": "adapters.aws.config",
    "aws_cloudwatch": "adapters.aws.config",
    "aws_sqs": "adapters.aws.config",
    "gcp_gcs": "adapters.gcp.config",
    "gcp_pubsub": "adapters.gcp.config",
}
SINKS: dict[str, str] = {
    "file": "collector.sinks.file",
    "stdout": "collector.sinks.stdout",
    "netflow": "collector.sinks.netflow.config",
}
# Input formats by provider: the module registering that provider's parsers (see collector/parsing.py).
FORMATS: dict[str, str] = {
    "aws": "adapters.aws.formats",
    "gcp": "adapters.gcp.formats",
}


@dataclass(frozen=True, slots=True)
class Component:
    """A registered type: its config dataclass and what builds it (a class, a factory, or "module:Name")."""

    kind: str
    type: str
    config: type
    impl: Any

    def factory(self) -> Callable[..., Any]:
        if isinstance(self.impl, str):
            module, _, name = self.impl.partition(":")
            return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
        return self.impl  # type: ignore[no-any-return]


class Kind(Mapping[str, type]):
    """The components of one kind, as a mapping type -> config class (what the config walker reads).

    Membership and iteration never import anything (they use the table and the entry points' names); looking a
    type up imports its module once. An import failure (a missing optional library) is raised as ImportError, which
    the config loader reports at the `type:` key."""

    def __init__(self, kind: str, builtins: Mapping[str, str], group: str) -> None:
        self.kind = kind
        self.builtins = builtins
        self.group = group
        self.registered: dict[str, Component] = {}
        self._entry_points: dict[str, importlib.metadata.EntryPoint] | None = None

    def register(self, type_name: str, config: type, impl: Any) -> None:
        """Add (or, re-imported, replace) a type. A test may register a throwaway component the same way."""
        self.registered[type_name] = Component(self.kind, type_name, config, impl)

    def unregister(self, type_name: str) -> None:
        self.registered.pop(type_name, None)

    def _plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}
        return self._entry_points

    def _names(self) -> list[str]:
        names = dict.fromkeys(self.builtins)
        names.update(dict.fromkeys(self.registered))
        names.update(dict.fromkeys(self._plugins()))
        return list(names)

    def component(self, type_name: str) -> Component:
        if type_name not in self.registered:
            try:
                if type_name in self.builtins:
                    importlib.import_module(self.builtins[type_name])
                elif type_name in self._plugins():
                    self._plugins()[type_name].load()
            except ImportError:
                raise
            except Exception as exc:  # a broken plugin module: reported at its `type:` key, not as a traceback
                raise ImportError(f"{type(exc).__name__}: {exc}") from exc
        try:
            return self.registered[type_name]
        except KeyError:
            if type_name in self:  # its module was imported but did not register it: a packaging bug
                raise ImportError(f"the module for {self.kind} type {type_name!r} did not register it") from None
            raise

    def __getitem__(self, type_name: str) -> type:
        return self.component(type_name).config

    def __contains__(self, type_name: object) -> bool:
        return type_name in self.registered or type_name in self.builtins or type_name in self._plugins()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def create(self, config: Any, *args: Any) -> Any:
        """The component a config section describes (`config.type` names it)."""
        return self.component(config.type).factory()(config, *args)


sources = Kind("source", SOURCES, "flowcollector.sources")
sinks = Kind("sink", SINKS, "flowcollector.sinks")


def register_source(type_name: str, config: type, impl: Any) -> None:
    """`impl(config, store, metrics, executor)` builds a source: `name` and `async run(pipeline, once, stop)`."""
    sources.register(type_name, config, impl)


def register_sink(type_name: str, config: type, impl: Any) -> None:
    """`impl(config)` builds a sink keeping the contract of collector/sinks/__init__.py; its config class extends
    `SinkOptions` (the keys every sink has: the pipeline reads `flush_interval` and `filter` of each)."""
    from collector.sinks import SinkOptions

    if not (isinstance(config, type) and issubclass(config, SinkOptions)):
        raise TypeError(f"sink type {type_name!r}: its config class must extend collector.sinks.SinkOptions")
    sinks.register(type_name, config, impl)


def create_source(config: Any, store: Any, metrics: Any, executor: Any = None) -> Any:
    return sources.create(config, store, metrics, executor)


def create_sink(config: Any) -> Any:
    """The sink of a config section, checked against the contract where a mistake would only show much later (a
    `write` without the batch identity argument would fail every write, retried as if an outage)."""
    sink = sinks.create(config)
    try:
        inspect.signature(sink.write).bind(None, None)
    except TypeError:
        raise TypeError(
            f"sink type {config.type!r}: write must take (batch, ident) (see collector/sinks/__init__.py)"
        ) from None
    return sink


def load_formats(provider: str | None = None) -> None:
    """Import the modules registering input formats: every provider's, or one provider's (`parse --provider`)."""
    key = provider or "*"
    if key in _formats_loaded:
        return
    wanted = [provider] if provider else list(FORMATS)
    for name in wanted:
        if name in FORMATS:
            importlib.import_module(FORMATS[name])
    for ep in importlib.metadata.entry_points(group="flowcollector.formats"):
        if provider is None or ep.name == provider:
            ep.load()
    _formats_loaded.add(key)


_formats_loaded: set[str] = set()
