"""The component model: one registry, options beside their code, no provider in the core, batch identity.

The house rule (issue #9): `collector/` reaches `adapters/` only through `collector/registry.py`, and no module
imports another that imports it back. A new sink is one module with its config class and its class, registered by
`type:` name: proved here with a sink that exists only in this file.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest

from collector import registry
from collector.config import ConfigError, parse_config
from collector.daemon import run
from collector.options import Choice, Min
from collector.parsing import open_unit
from collector.schema import FlowBatch
from collector.sinks import BatchId, SinkOptions
from tests.flowdata import HEADER, varied_records

REPO = Path(__file__).resolve().parent.parent


# --- the import rules -------------------------------------------------------------------------------------------


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (module level and inside functions alike: a lazy import is still
    a dependency, and a cycle through one is still a cycle)."""
    modules: dict[str, Path] = {}
    for top in ("collector", "adapters"):
        for path in (REPO / top).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                targets = [node.args[0].value]
            for target in targets:
                found = resolve(target)
                if found and found != module:
                    graph[module].add(found)
    return graph


def test_the_core_reaches_adapters_only_through_the_registry() -> None:
    graph = _module_graph()
    offenders = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("collector") and m != "collector.registry"
        for d in deps
        if d.startswith("adapters")
    )
    assert offenders == []


def test_there_is_no_import_cycle() -> None:
    graph = _module_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    return set(out)


def test_importing_the_core_config_imports_no_adapter() -> None:
    loaded = _modules_after("import collector.config")
    assert sorted(m for m in loaded if m.split(".")[0] == "adapters") == []


def test_reading_an_aws_config_loads_no_aws_library(tmp_path: Path) -> None:
    """`flowcollector check` on an S3 source imports its options, not aiobotocore (that waits for a run)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sources:\n  - {name: s3, type: aws_s3, bucket: my-flow-logs, accounts: ['111111111111']}\n"
        "sinks:\n  - {name: o, type: stdout}\n"
    )
    loaded = _modules_after(f"from collector.config import load_config; load_config({str(cfg)!r})")
    assert "adapters.aws.config" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in ("aiobotocore", "botocore", "adapters.aws.s3")) == []
    assert "adapters.aws.s3" not in loaded


# --- a sink defined only here -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureSinkConfig(SinkOptions):
    """`type: capture`: keeps every batch in memory (a test's sink)."""

    type: str = "capture"
    mode: Annotated[str, Choice("all", "count")] = "all"
    limit: Annotated[int, Min(1)] = 1000


CAPTURED: dict[str, list[tuple[BatchId | None, FlowBatch]]] = {}


class CaptureSink:
    def __init__(self, config: CaptureSinkConfig) -> None:
        self.name = config.name
        self.written = 0
        CAPTURED[self.name] = []

    async def open(self) -> None:
        return None

    async def write(self, batch: FlowBatch, ident: BatchId | None = None) -> None:
        CAPTURED[self.name].append((ident, batch))
        self.written += 1

    async def flush(self, force: bool = False) -> int:
        return self.written

    async def close(self) -> int:
        return self.written


@pytest.fixture
def capture_sink() -> Any:
    registry.register_sink("capture", CaptureSinkConfig, CaptureSink)
    yield
    registry.sinks.unregister("capture")
    CAPTURED.clear()


def _flows(path: Path, first: int, n: int) -> Path:
    path.write_bytes(gzip.compress((HEADER + "\n" + "\n".join(varied_records(first, n)) + "\n").encode(), 1))
    return path


def _config(tmp_path: Path, sink: str) -> str:
    return textwrap.dedent(
        f"""\
        state_dir: {tmp_path / "state"}
        sources:
          - {{name: in, type: local, path: {tmp_path / "in"}}}
        sinks:
        {textwrap.indent(sink, "  ")}
        """
    )


def test_a_sink_type_registered_by_a_test_is_configured_validated_and_fed(tmp_path: Path, capture_sink: Any) -> None:
    (tmp_path / "in").mkdir()
    _flows(tmp_path / "in" / "a.log.gz", 0, 300)
    _flows(tmp_path / "in" / "b.log.gz", 1000, 200)
    bad = _config(tmp_path, "- {name: c, type: capture, mode: some, limit: 0}")
    with pytest.raises(ConfigError) as info:
        parse_config(bad, tmp_path / "c.yaml")
    assert info.value.errors == [
        f"{tmp_path / 'c.yaml'}:5:36: sinks[0].mode: expected one of all, count, got 'some'",
        f"{tmp_path / 'c.yaml'}:5:49: sinks[0].limit: must be at least 1, got 0",
    ]
    config = parse_config(_config(tmp_path, "- {name: c, type: capture, flush_interval: 50ms}"), tmp_path / "c.yaml")
    assert config.sinks == (CaptureSinkConfig(name="c", flush_interval=0.05),)
    metrics = asyncio.run(run(config, once=True))
    assert metrics.sources["in"].records == 500
    got = CAPTURED["c"]
    assert sorted(v for _, b in got for v in b.column("bytes").to_pylist()) == [*range(300), *range(1000, 1200)]
    # Each batch came with its identity: the unit it belongs to and where in it (decompressed bytes).
    idents = [i for i, b in got if b.num_rows]
    assert {(i.source, i.unit) for i in idents if i} == {("in", "a.log.gz"), ("in", "b.log.gz")}
    a_size = len(gzip.decompress((tmp_path / "in" / "a.log.gz").read_bytes()))
    a = [i for i in idents if i and i.unit == "a.log.gz"]
    assert [(i.start, i.end) for i in a] == [(0, a_size)]
    st = (tmp_path / "in" / "a.log.gz").stat()
    assert a[0].version == f"{st.st_size}:{st.st_mtime_ns}"


def test_an_unknown_type_lists_the_registered_ones(tmp_path: Path, capture_sink: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(tmp_path, "- {name: c, type: captur}"), tmp_path / "c.yaml")
    assert info.value.errors == [
        f"{tmp_path / 'c.yaml'}:5:21: sinks[0].type: unknown sink type 'captur' "
        "(known: file, stdout, netflow, capture; did you mean 'capture'?)"
    ]


def test_a_third_party_sink_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: Any) -> None:
    """A package adds a sink without forking: an entry point in `flowcollector.sinks` names its module, which is
    imported only when a config uses the type."""
    site = tmp_path / "site"
    (site / "acme_sink-1.0.dist-info").mkdir(parents=True)
    (site / "acme_sink-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sink\nVersion: 1.0\n")
    (site / "acme_sink-1.0.dist-info" / "entry_points.txt").write_text("[flowcollector.sinks]\nacme = acme_sink\n")
    (site / "acme_sink.py").write_text(
        textwrap.dedent(
            """\
            from dataclasses import dataclass
            from collector.registry import register_sink
            from collector.sinks import SinkOptions

            @dataclass(frozen=True, slots=True, kw_only=True)
            class AcmeConfig(SinkOptions):
                type: str = "acme"
                url: str = "acme://"

            register_sink("acme", AcmeConfig, "tests.test_components:CaptureSink")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry.sinks, "_entry_points", None)  # found again, with the new package on the path
    try:
        assert "acme" in registry.sinks and "acme_sink" not in sys.modules  # known by name, not imported yet
        config = parse_config(_config(tmp_path, "- {name: x, type: acme, url: 'acme://q'}"), tmp_path / "c.yaml")
        assert config.sinks[0].url == "acme://q"
        assert type(registry.create_sink(config.sinks[0])).__name__ == "CaptureSink"
    finally:
        registry.sinks.unregister("acme")
        registry.sinks._entry_points = None
        sys.modules.pop("acme_sink", None)


# --- batch identity ---------------------------------------------------------------------------------------------


def test_batch_boundaries_depend_only_on_unit_version_and_resume_point(tmp_path: Path) -> None:
    """The rule of collector/parsing.py that exactly-once skipping and insert tokens rely on: resuming at any batch's
    position yields exactly the batches a whole read yields after it, with the same positions."""
    path = _flows(tmp_path / "big.log.gz", 0, 150_000)  # several 4 MiB text blocks
    whole = [(r.position, r.batch.column("bytes").to_pylist()) for r in open_unit(path, unit="u", source="s")]
    assert len(whole) >= 3
    for k, (position, _) in enumerate(whole[:-1]):
        again = [
            (r.position, r.batch.column("bytes").to_pylist())
            for r in open_unit(path, unit="u", source="s", resume=position)
        ]
        assert again == whole[k + 1 :]


def test_parquet_batch_boundaries_do_not_move_on_resume(tmp_path: Path) -> None:
    """Batches never span row groups: resumed at any batch end, a read cuts where the whole read did (a read across
    groups counted its cuts from the first group it read, so a resumed one cut elsewhere: a sink that had the old
    batch was sent the straddling new one whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adapters.aws.parse import parse_parquet

    n = 12
    table = pa.table(
        {
            "version": pa.array([2] * n, pa.int32()),
            "srcaddr": ["10.0.0.1"] * n,
            "dstaddr": ["10.0.0.2"] * n,
            "bytes": pa.array(range(n), pa.int64()),
        }
    )
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=5)  # groups of 5, 5, 2; batches of 3 rows
    whole = [
        (r.position["rows"], r.batch.column("bytes").to_pylist())
        for r in parse_parquet(str(path), unit="u", source="s", batch_rows=3)
    ]
    assert [end for end, _ in whole] == [3, 5, 8, 10, 12, 12]
    for k, (end, _) in enumerate(whole[:-1]):
        again = parse_parquet(str(path), unit="u", source="s", resume={"rows": end}, batch_rows=3)
        assert [(r.position["rows"], r.batch.column("bytes").to_pylist()) for r in again] == whole[k + 1 :]


def test_a_batch_token_is_stable_and_distinct() -> None:
    a = BatchId("s", "u", "v1", 0, 100)
    assert a.token("ch") == BatchId("s", "u", "v1", 0, 100).token("ch")
    others = [BatchId("s", "u", "v2", 0, 100), BatchId("s", "u", "v1", 100, 200), BatchId("t", "u", "v1", 0, 100)]
    assert len({a.token("ch"), a.token("other"), *(o.token("ch") for o in others)}) == 5
    assert len(a.token()) == 64


def test_a_sniff_looks_past_leading_blank_lines(tmp_path: Path) -> None:
    """Formats are judged by the first bytes that are not whitespace, however many blank lines come first."""
    readme = tmp_path / "README"
    readme.write_bytes(b"\n" * 70_000 + b"These are our flow logs.\n" * 10)
    [result] = list(open_unit(readme, unit="README", source="s"))
    assert [(e.line, e.reason) for e in result.errors] == [
        (1, "not a recognized flow log format (no AWS header line, not a v2 record); skipped")
    ]
    flows = tmp_path / "f.log"
    flows.write_bytes(b" \n" * 40_000 + (HEADER + "\n" + "\n".join(varied_records(7, 3)) + "\n").encode())
    got = [v for r in open_unit(flows, unit="f", source="s") for v in r.batch.column("bytes").to_pylist()]
    assert got == [7, 8, 9]
