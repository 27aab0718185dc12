"""collector.config: typed values from YAML, and errors an operator can act on (file, line, column, key path)."""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest

from adapters.aws.fields import TGW_DEFAULT_FIELDS, V2_FIELDS
from adapters.local import LocalSourceConfig
from collector.config import (
    Config,
    ConfigError,
    PipelineConfig,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from collector.sinks.file import FileSinkConfig
from collector.sinks.stdout import StdoutSinkConfig

FIXTURES = Path(__file__).parent / "fixtures" / "config"
REPO = Path(__file__).parent.parent

MINIMAL = """\
sources:
  - name: in
    type: local
sinks:
  - name: out
    type: stdout
"""


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), Path("/etc/fc/cfg.yaml"))


def errors(text: str) -> list[str]:
    """The errors of config text read as `cfg.yaml` (a relative name, so messages are short and exact)."""
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), Path("cfg.yaml"))
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# --- valid configs ------------------------------------------------------------------------------------------------


def test_full_config_every_field_converted_and_resolved():
    config = load_config(FIXTURES / "full.yaml")
    assert config == Config(
        path=FIXTURES / "full.yaml",
        state_dir=FIXTURES / "state",
        log_level="debug",
        progress_interval=90.0,
        pipeline=PipelineConfig(queue_batches=4, workers=3),
        sources=(
            LocalSourceConfig(
                name="vpc",
                type="local",
                path=FIXTURES / "data/vpc",
                glob="*.log.gz",
                recursive=False,
                provider="aws",
                aws_fields=("version", "account-id", "interface-id", "srcaddr", "dstaddr"),
                poll_interval=0.5,
                settle=0.0,
            ),
            LocalSourceConfig(
                name="tgw",
                path=Path("/srv/flows/tgw.log"),
                aws_fields=("version", "resource-type", "account-id"),
            ),
        ),
        sinks=(
            FileSinkConfig(
                name="archive",
                type="file",
                path=FIXTURES / "out/jsonl",
                format="jsonl",
                rotate_bytes=64 * 1024,
                rotate_interval=7200.0,
                compression="gzip",
                fsync=False,
                flush_interval=0.25,
            ),
            FileSinkConfig(
                name="lake",
                path=FIXTURES / "out/parquet",
                format="parquet",
                rotate_bytes=10_000_000,
                compression="snappy",
            ),
            StdoutSinkConfig(name="console"),
        ),
    )
    # Defaults of the second source and sink are the documented ones, paths not given resolve to the config dir.
    tgw = config.sources[1]
    assert (tgw.glob, tgw.recursive, tgw.provider, tgw.poll_interval, tgw.settle) == ("*", True, "auto", 10.0, 2.0)
    lake = config.sinks[1]
    assert (lake.rotate_interval, lake.fsync, lake.flush_interval) == (300.0, True, 1.0)
    assert all(type(s.poll_interval) is float for s in config.sources)
    assert type(config.sinks[0].rotate_bytes) is int


def test_defaults_and_relative_default_paths_resolve_against_config_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the current directory must not matter
    config = load_config(FIXTURES / "minimal.yaml")
    assert config.path == FIXTURES / "minimal.yaml"
    assert config.state_dir == FIXTURES / "var/state"
    assert (config.log_level, config.progress_interval) == ("info", 10.0)
    assert config.pipeline == PipelineConfig(queue_batches=8, workers=0)
    assert config.sources == (LocalSourceConfig(name="in", path=FIXTURES),)
    assert config.sinks == (
        FileSinkConfig(
            name="out",
            path=FIXTURES / "var/flows",
            format="jsonl",
            rotate_bytes=128 * 2**20,
            rotate_interval=300.0,
            compression="none",
            fsync=True,
            flush_interval=1.0,
        ),
    )
    assert config.sources[0].aws_fields is None


def test_relative_config_path_is_made_absolute(monkeypatch):
    monkeypatch.chdir(FIXTURES)
    config = load_config("minimal.yaml")
    assert config.path == FIXTURES / "minimal.yaml"
    assert config.state_dir == FIXTURES / "var/state"


def test_compression_default_follows_format():
    config = parse(
        MINIMAL
        + """\
  - name: p
    type: file
    format: parquet
    path: out/p
  - name: j
    type: file
    format: jsonl
    path: out/j
"""
    )
    assert [(s.name, getattr(s, "compression", None)) for s in config.sinks] == [
        ("out", None),
        ("p", "zstd"),
        ("j", "none"),
    ]


def test_hand_built_file_sink_resolves_and_checks_compression():
    assert FileSinkConfig(name="p", format="parquet").compression == "zstd"
    assert FileSinkConfig(name="j").compression == "none"
    with pytest.raises(ValueError, match="'zstd' is not supported with format jsonl"):
        FileSinkConfig(name="j", compression="zstd")


def test_merge_keys_and_anchors():
    config = load_config(FIXTURES / "merge.yaml")
    assert [(s.name, s.format, s.compression, s.rotate_interval) for s in config.sinks] == [
        ("hourly", "parquet", "zstd", 3600.0),
        ("daily", "parquet", "zstd", 86400.0),
    ]


def test_aws_fields_forms():
    def fields(spec: str) -> tuple[str, ...] | None:
        return (
            parse(f"sources:\n  - {{name: s, type: local, aws_fields: {spec}}}\nsinks: [{{name: o, type: stdout}}]\n")
            .sources[0]
            .aws_fields
        )

    assert fields("default") == V2_FIELDS
    assert fields("tgw-default") == TGW_DEFAULT_FIELDS
    assert fields('"version account-id srcaddr"') == ("version", "account-id", "srcaddr")
    assert fields("[version, srcaddr]") == ("version", "srcaddr")
    assert fields("null") is None
    assert fields('"${version} ${my-custom-field}"') == ("version", "my-custom-field")  # unknown, not a typo: kept


def test_example_config_is_valid():
    config = load_config(REPO / "config.example.yaml")
    assert [s.name for s in config.sources] == ["samples"]
    assert config.sources[0].path == REPO / "examples/data"
    assert [(s.name, s.compression) for s in config.sinks] == [("archive-jsonl", "none"), ("archive-parquet", "zstd")]


def commented_sections(text: str) -> dict[str, str]:
    """The commented-out `- name:` sections of config.example.yaml, uncommented (nested `# ...` lines included,
    so every documented option is checked too)."""
    out: dict[str, str] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("  # - name:"):
            current = [line.replace("  # ", "  ", 1)]
            out[line.split("name:", 1)[1].split("#")[0].strip()] = current  # type: ignore[assignment]
        elif current is not None and line.startswith("  #   "):
            body = line[len("  #   ") :]
            if re.match(r"# [a-z_]+:( |$)", body):
                body = body[2:]  # a nested commented option: check it as well
            current.append("    " + body)
        else:
            current = None
    return {name: "\n".join(lines) for name, lines in out.items()}  # type: ignore[arg-type]


def test_example_config_commented_sections_are_valid(monkeypatch, tmp_path):
    """Every commented source and sink of the example, uncommented with its documented options, is a valid config."""
    for var in ("FLOWLOGS_KEY_ID", "FLOWLOGS_SECRET", "FLOWLOGS_EXTERNAL_ID"):
        monkeypatch.setenv(var, "x")
    text = (REPO / "config.example.yaml").read_text()
    sections = commented_sections(text)
    assert {"vpc-flows", "vpc-flows-queue", "vpc-cwl", "gcp-flows", "gcp-flows-pubsub", "to-nfcapd"} <= set(sections)
    for name, body in sections.items():
        kind = "sources" if any(f"type: {p}" in body for p in ("aws", "gcp", "local")) else "sinks"
        other = "sinks:\n  - {name: o, type: stdout}" if kind == "sources" else "sources:\n  - {name: l, type: local}"
        doc = f"{kind}:\n{body}\n{other}\n"
        try:
            parse_config(doc, tmp_path / f"{name}.yaml")
        except ConfigError as exc:
            raise AssertionError(f"commented section {name!r} of config.example.yaml:\n{doc}\n{exc}") from None


# --- environment interpolation -----------------------------------------------------------------------------------


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("FLOW_DIR", "/data/flows")
    monkeypatch.setenv("WORKERS", "6")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.delenv("UNSET_LEVEL", raising=False)
    config = parse(
        """\
        state_dir: ${FLOW_DIR}/state
        log_level: ${UNSET_LEVEL:-warning}
        progress_interval: ${EMPTY:-30s}
        pipeline:
          workers: ${WORKERS}
          queue_batches: "${WORKERS}"
        sources:
          - name: src-${EMPTY}x
            type: local
            path: ${FLOW_DIR}
            glob: "$${NOT_A_VAR}*"
            aws_fields: "${version} ${srcaddr} ${account-id}"
        sinks:
          - name: out
            type: stdout
        """
    )
    assert config.state_dir == Path("/data/flows/state")
    assert config.log_level == "warning"
    assert config.progress_interval == 30.0
    assert config.pipeline == PipelineConfig(queue_batches=6, workers=6)  # interpolated values are re-typed
    src = config.sources[0]
    assert (src.name, src.path, src.glob) == ("src-x", Path("/data/flows"), "${NOT_A_VAR}*")
    assert src.aws_fields == ("version", "srcaddr", "account-id")  # lower-case LogFormat names are not variables


def test_interpolated_string_field_stays_a_string(monkeypatch):
    monkeypatch.setenv("NAME", "123")
    assert parse(MINIMAL.replace("name: in", "name: ${NAME}")).sources[0].name == "123"


# --- durations and sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(10, 10.0), (2.5, 2.5), (0, 0.0), ("10", 10.0), ("10s", 10.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0)]
    + [("1d", 86400.0), ("1h30m", 5400.0), ("1.5s", 1.5), (" 2s ", 2.0)],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "10 sec", "s", "-1s", -1, "1.5.2s", "10S", True, None, [1], float("inf")])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("512B", 512), ("64KiB", 65536), ("128MiB", 128 * 2**20), ("1GiB", 2**30), ("10MB", 10**7)]
    + [("1kb", 1000), ("1.5KiB", 1536), ("2 TiB", 2 * 2**40), ("100", 100), (0, 0)],
)
def test_parse_size(value, size):
    assert parse_size(value) == size
    assert type(parse_size(value)) is int


@pytest.mark.parametrize("value", ["", "12 parsecs", "KiB", "-1", -5, "0.5B", True, None, 1.5, "1e3"])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


# --- errors -------------------------------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  - name: a\n   type: local\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"{path}:3:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection at line 2, column 3)"
    ]


def test_yaml_scanner_error():
    assert errors("sources: [a\nsinks: b\n") == [
        "cfg.yaml:2:6: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at line 1, column 10)"
    ]


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.errors == [f"{tmp_path}/missing.yaml: cannot read config: No such file or directory"]
    assert errors("") == ["cfg.yaml:1:1: empty config"]
    assert errors("# only comments\n") == ["cfg.yaml:1:1: empty config"]
    assert errors("just text\n") == ["cfg.yaml:1:1: expected a mapping, got a string ('just text')"]


def test_unknown_key_with_and_without_suggestion():
    assert errors(
        MINIMAL
        + """\
  - name: f
    type: file
    formt: parquet
pipeline:
  queue: 3
  workrs: 2
"""
    ) == [
        "cfg.yaml:9:5: sinks[1].formt: unknown key (did you mean 'format'?)",
        "cfg.yaml:11:3: pipeline.queue: unknown key (known keys: give_up_after, queue_batches, workers)",
        "cfg.yaml:12:3: pipeline.workrs: unknown key (did you mean 'workers'?)",
    ]
    assert errors(MINIMAL + "colour: blue\n") == [
        "cfg.yaml:7:1: colour: unknown key (known keys: log_level, metrics_listen, pipeline, progress_interval, "
        "sinks, sources, state_dir)"
    ]


def test_wrong_types():
    assert errors(
        """\
        log_level: 3
        pipeline:
          workers: true
          queue_batches: 2.0
        sources:
          - name: in
            type: local
            path: [a, b]
            recursive: "no"
        sinks: {name: out, type: stdout}
        """
    ) == [
        "cfg.yaml:1:12: log_level: expected a string, got an integer ('3')",
        "cfg.yaml:3:12: pipeline.workers: expected an integer, got a boolean ('true')",
        "cfg.yaml:4:18: pipeline.queue_batches: expected an integer, got a number ('2.0')",
        "cfg.yaml:8:11: sources[0].path: expected a string, got a list",
        "cfg.yaml:9:16: sources[0].recursive: expected a boolean, got a string ('no')",
        "cfg.yaml:10:8: sinks: expected a list of sinks, got a mapping",
    ]


def test_bad_duration_and_size_and_bounds():
    assert errors(
        MINIMAL.replace("type: local", "type: local\n    poll_interval: 10 sec\n    settle: -1")
        + """\
  - name: f
    type: file
    rotate_bytes: 0
    rotate_interval: 0s
pipeline: {queue_batches: 0, workers: -1}
"""
    ) == [
        "cfg.yaml:4:20: sources[0].poll_interval: invalid duration '10 sec': expected seconds or a number with a "
        "unit ms, s, m, h, d (e.g. '500ms', '10s', '5m', '1h')",
        "cfg.yaml:5:13: sources[0].settle: invalid duration -1: must be a finite number of seconds >= 0",
        "cfg.yaml:11:19: sinks[1].rotate_bytes: must be at least 1, got 0",
        "cfg.yaml:12:22: sinks[1].rotate_interval: must be greater than 0, got 0.0",
        "cfg.yaml:13:27: pipeline.queue_batches: must be at least 1, got 0",
        "cfg.yaml:13:39: pipeline.workers: must be at least 0, got -1",
    ]


def test_bad_choice_and_compression_for_format():
    assert errors(
        "log_level: INFO\n"
        + MINIMAL.replace("type: local", "type: local\n    provider: gpc")
        + """\
  - name: f
    type: file
    format: csv
  - name: g
    type: file
    compression: zstd
"""
    ) == [
        "cfg.yaml:1:12: log_level: expected one of debug, info, warning, error, got 'INFO' (did you mean 'info'?)",
        "cfg.yaml:5:15: sources[0].provider: expected one of auto, aws, gcp, azure, got 'gpc' (did you mean 'gcp'?)",
        "cfg.yaml:11:13: sinks[1].format: expected one of jsonl, parquet, got 'csv'",
        "cfg.yaml:14:18: sinks[2].compression: 'zstd' is not supported with format jsonl (expected one of none, gzip)",
    ]


def test_duplicate_names_name_both_lines():
    assert errors(
        """\
        sources:
          - {name: a, type: local}
          - {name: a, type: local, path: other}
        sinks:
          - name: out
            type: stdout
          - name: out
            type: file
        """
    ) == [
        "cfg.yaml:3:12: sources[1].name: duplicate source name 'a' (first at line 2)",
        "cfg.yaml:7:11: sinks[1].name: duplicate sink name 'out' (first at line 5)",
    ]


def test_unknown_type_and_missing_name_or_type():
    assert errors(
        """\
        sources:
          - name: s3
            type: s3
            bucket: x
          - type: local
        sinks:
          - name: k
            type: kafak
          - name: nameless
          - name: ""
            type: stdout
        """
    ) == [
        "cfg.yaml:3:11: sources[0].type: unknown source type 's3' (known: local, aws_s3, aws_cloudwatch, aws_sqs, gcp_gcs, gcp_pubsub)",
        "cfg.yaml:5:5: sources[1]: missing required key 'name'",
        "cfg.yaml:8:11: sinks[0].type: unknown sink type 'kafak' (known: file, stdout, netflow)",
        "cfg.yaml:9:5: sinks[1]: missing required key 'type' (one of: file, stdout, netflow)",
        "cfg.yaml:10:11: sinks[2].name: must not be empty",
    ]
    assert errors(MINIMAL.replace("type: stdout", "type: stdot")) == [
        "cfg.yaml:6:11: sinks[0].type: unknown sink type 'stdot' (known: file, stdout, netflow; did you mean 'stdout'?)"
    ]


def test_missing_env_var(monkeypatch):
    monkeypatch.delenv("FLOW_DIR", raising=False)
    monkeypatch.delenv("STATE_ROOT", raising=False)
    assert errors(
        "state_dir: ${STATE_ROOT}/x\n" + MINIMAL.replace("type: local", "type: local\n    path: ${FLOW_DIR}")
    ) == [
        "cfg.yaml:1:12: state_dir: environment variable STATE_ROOT is not set",
        "cfg.yaml:5:11: sources[0].path: environment variable FLOW_DIR is not set",
    ]


def test_missing_sources_and_sinks():
    assert errors("log_level: info\n") == [
        "cfg.yaml:1:1: sources: at least one source is required",
        "cfg.yaml:1:1: sinks: at least one sink is required",
    ]
    assert errors("sources: []\nsinks:\n  - {name: o, type: stdout}\n") == [
        "cfg.yaml:1:10: sources: at least one source is required"
    ]


def test_duplicate_keys_and_aws_field_typo():
    assert errors(
        """\
        log_level: info
        log_level: debug
        sources:
          - name: in
            type: local
            aws_fields: "${version} ${srcadr}"
        sinks: [{name: o, type: stdout}]
        """
    ) == [
        "cfg.yaml:2:1: log_level: duplicate key (first at line 1)",
        "cfg.yaml:6:17: sources[0].aws_fields: unknown AWS field 'srcadr' (did you mean 'srcaddr'?)",
    ]


def test_all_errors_collected_in_file_order(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("sinks:\n  - {name: o, type: stdout, extra: 1}\nlog_level: loud\nprogress_interval: soon\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"{path}:1:1: sources: at least one source is required",
        f"{path}:2:29: sinks[0].extra: unknown key (known keys: filter, flush_interval, name, type)",
        f"{path}:3:12: log_level: expected one of debug, info, warning, error, got 'loud'",
        f"{path}:4:20: progress_interval: invalid duration 'soon': expected seconds or a number with a unit ms, s, m, "
        "h, d (e.g. '500ms', '10s', '5m', '1h')",
    ]
    assert str(info.value) == "\n".join(info.value.errors)


def test_aws_fields_errors():
    assert errors(
        """\
        sources:
          - {name: a, type: local, aws_fields: ""}
          - {name: b, type: local, aws_fields: [version, 2]}
          - {name: c, type: local, aws_fields: {version: 1}}
        sinks: [{name: o, type: stdout}]
        """
    ) == [
        "cfg.yaml:2:40: sources[0].aws_fields: empty field list",
        "cfg.yaml:3:50: sources[1].aws_fields[1]: expected a string, got an integer ('2')",
        "cfg.yaml:4:40: sources[2].aws_fields: expected a string, got a mapping",
    ]


def test_a_flush_interval_of_zero_is_refused():
    """Issue #8: `flush_interval: 0` passed validation and hung the pipeline (the worker only flushed)."""
    assert errors(
        MINIMAL
        + """\
  - {name: f, type: file, path: out, flush_interval: 0}
  - {name: n, type: netflow, address: "127.0.0.1:2055", flush_interval: 0s}
pipeline:
  give_up_after: 0
"""
    ) == [
        "cfg.yaml:7:54: sinks[1].flush_interval: must be greater than 0, got 0.0",
        "cfg.yaml:8:73: sinks[2].flush_interval: must be greater than 0, got 0.0",
        "cfg.yaml:10:18: pipeline.give_up_after: must be greater than 0, got 0.0",
    ]


def test_two_file_sinks_in_one_directory_are_refused(tmp_path: Path):
    """Issue #8: after a kill, one file sink's recovery deleted the other's acked part file. Paths are compared
    resolved (a symlink to the same directory counts); two sinks left at the default path collide too."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    text = f"""\
sources:
  - {{name: in, type: local, path: {tmp_path}}}
sinks:
  - name: a
    type: file
    path: {tmp_path}/real
  - name: b
    type: file
    format: parquet
    path: {tmp_path}/link
  - {{name: c, type: file}}
  - {{name: d, type: file}}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "cfg.yaml")
    default = os.path.realpath(tmp_path / "var" / "flows")
    assert [e.split(": ", 1)[1] for e in info.value.errors] == [
        f"sinks[1].path: directory {tmp_path}/real is already used by sink 'a' (line 6): each needs its own",
        f"sinks[3].path: directory {default} is already used by sink 'c' (line 11): each needs its own",
    ]
    assert info.value.errors[0].startswith(f"{tmp_path}/cfg.yaml:10:11: ")


def test_every_error_of_every_section_in_one_pass():
    """Checks of a single value run while the file is read, so one `check` shows them all: a bad bucket used to
    appear only once the source's other keys were fixed."""
    assert errors(
        """\
        sources:
          - name: s3
            type: aws_s3
            bucket: s3://flow-logs/AWSLogs
            endpoint_url: localhost:9000
            accounts: ["12345", {id: "1234567890123", regions: [mars]}]
            max_concurrency: 0
          - name: q
            type: aws_sqs
            queue_url: sqs.eu-west-1.amazonaws.com/1/q
            wait_time: 30s
        sinks:
          - name: nf
            type: netflow
            address: "::1:2055"
            addresses: ["a:1", "b"]
            mtu: 100
          - name: f
            type: file
            flush_interval: 0
            rotate_bytes: lots
        """
    ) == [
        "cfg.yaml:4:13: sources[0].bucket: a bucket name, not a path: 's3://flow-logs/AWSLogs' (put the path in 'prefix')",
        "cfg.yaml:5:19: sources[0].endpoint_url: expected an http:// or https:// URL, got 'localhost:9000'",
        "cfg.yaml:6:16: sources[0].accounts[0]: invalid AWS account id '12345': expected 12 digits",
        "cfg.yaml:6:30: sources[0].accounts[1].id: invalid AWS account id '1234567890123': expected 12 digits "
        "(quote it in YAML)",
        "cfg.yaml:6:57: sources[0].accounts[1].regions[0]: invalid AWS region 'mars' (expected a name such as 'eu-west-1')",
        "cfg.yaml:7:22: sources[0].max_concurrency: must be at least 1, got 0",
        "cfg.yaml:10:16: sources[1].queue_url: expected the queue's https:// URL, got 'sqs.eu-west-1.amazonaws.com/1/q'",
        "cfg.yaml:11:16: sources[1].wait_time: must be at most 20, got 30.0",
        "cfg.yaml:15:14: sinks[0].address: invalid address '::1:2055': write an IPv6 address in brackets, e.g. [::1]:2055",
        "cfg.yaml:16:16: sinks[0].addresses: invalid address 'b': expected host:port, e.g. 127.0.0.1:2055",
        "cfg.yaml:17:10: sinks[0].mtu: must be at least 256, got 100",
        "cfg.yaml:20:21: sinks[1].flush_interval: must be greater than 0, got 0.0",
        "cfg.yaml:21:19: sinks[1].rotate_bytes: invalid size 'lots': expected bytes or a number with a unit B, KB, MB, "
        "GB, TB, KiB, MiB, GiB, TiB (e.g. '64KiB', '128MiB')",
    ]


def test_checks_that_span_keys_point_at_the_key():
    assert errors(
        """\
        sources:
          - {name: a, type: aws_s3, bucket: b, access_key_id: AKIA}
          - {name: b, type: aws_s3, bucket: b, role_arn: "arn:aws:iam::{account}:role/R"}
          - {name: c, type: aws_cloudwatch, region: eu-west-1}
          - {name: d, type: aws_sqs, queue_url: "https://q", session_token: t}
        sinks:
          - {name: f, type: file, path: a, compression: zstd}
          - {name: n, type: netflow}
        """
    ) == [
        "cfg.yaml:2:5: sources[0].secret_access_key: access_key_id and secret_access_key go together",
        "cfg.yaml:3:50: sources[1].role_arn: '{account}' needs a list of accounts",
        "cfg.yaml:4:5: sources[2].log_groups: give log_groups (a list of names) or log_group_prefix",
        "cfg.yaml:5:69: sources[3].session_token: needs access_key_id and secret_access_key",
        "cfg.yaml:7:49: sinks[0].compression: 'zstd' is not supported with format jsonl (expected one of none, gzip)",
        "cfg.yaml:8:5: sinks[1].address: a collector is required: set address (host:port) or addresses",
    ]


# --- hostile configs (issue #10, class 8): bounds on reading, each refused with file:line and the bound named -----

HEAD = "sources: [{name: in, type: local}]\nsinks: [{name: out, type: stdout}]\n"  # 35 + 35 bytes, 14 nodes + root


def merge_bomb(levels: int) -> str:
    """The issue's 621-byte merge-key bomb (ten levels of `<<: [*x8, ...]`, nine aliases each), rebuilt: walking
    it followed every alias, 9**9 paths; nine levels took 25 s, ten hung `check`."""
    lines = ["x0: &x0 {a: 1}"]
    lines += [f"x{i}: &x{i} {{<<: [{', '.join([f'*x{i - 1}'] * 9)}]}}" for i in range(1, levels)]
    return HEAD + "\n".join(lines) + f"\npipeline: {{<<: *x{levels - 1}}}\n"


def test_merge_key_bomb_is_refused_at_the_alias_that_crosses_the_bound():
    # Expanded sizes by hand: x0 {a: 1} is 3 nodes (mapping, key, value); x_i is a mapping, the key `<<`, a list and
    # nine copies of x_(i-1): 3 + 9 * size(x_(i-1)) = 30, 273, 2460, 22143. Counted in document order: the root and
    # the two head lines (15), x0's key and value (19), x1..x4 each a key and the value (50, 324, 2785, 24929), x5's
    # key, mapping, `<<` and list (24933), then each *x4 adds 22143: 47076, 69219, 91362, and the fourth (line 8,
    # column 15 + 3 * 5 = 30) makes 113505 > 100000.
    expected = [
        "cfg.yaml:8:30: alias *x4 expands the config to more than 100000 nodes "
        "(the limit; keys, values and list items, counted with every alias expanded)"
    ]
    assert errors(merge_bomb(10)) == expected
    assert len(merge_bomb(10).encode()) == 645  # the file was 621 bytes (its head lines were shorter)
    assert errors(merge_bomb(9)) == expected  # the nine-level file that took 25 s
    # Below the bound the same construction is just a config with merge keys: x3 merges to {a: 1}, whose key `a`
    # (line 3, column 10) is unknown in pipeline.
    known = "(known keys: log_level, metrics_listen, pipeline, progress_interval, sinks, sources, state_dir)"
    assert errors(merge_bomb(4)) == [
        f"cfg.yaml:3:1: x0: unknown key {known}",
        "cfg.yaml:3:10: pipeline.a: unknown key (known keys: give_up_after, queue_batches, workers)",
        f"cfg.yaml:4:1: x1: unknown key {known}",
        f"cfg.yaml:5:1: x2: unknown key {known}",
        f"cfg.yaml:6:1: x3: unknown key {known}",
    ]


def test_a_list_of_aliases_counts_each_copy():
    """Aliases in a list expand like merge keys: 1000 copies of a 101-node list are 101,000 nodes."""
    text = HEAD + "x: &x [" + ", ".join(["0"] * 100) + "]\ny: [" + ", ".join(["*x"] * 1000) + "]\n"
    # Root and head 15, `x` 16, its list 117, `y` 118, y's list 119; the 989th *x makes 119 + 989 * 101 = 100008.
    column = len("y: [") + 988 * len("*x, ") + 1
    assert errors(text) == [
        f"cfg.yaml:4:{column}: alias *x expands the config to more than 100000 nodes "
        "(the limit; keys, values and list items, counted with every alias expanded)"
    ]


def test_500_levels_of_nesting_are_refused_not_a_recursion_error():
    """Issue #10: 500 nested `[` gave a RecursionError traceback. The 64th `[` of pipeline's value is level 65
    (the root mapping is level 1), column 11 + 63."""
    assert errors(HEAD + "pipeline: " + "[" * 500 + "]" * 500 + "\n") == [
        "cfg.yaml:3:74: values nested more than 64 levels deep (the limit)"
    ]
    # In mappings the keys are a level too: the key `a` of the 63rd mapping (column 11 + 62 * 4 + 1) is level 65.
    assert errors(HEAD + "pipeline: " + "{a: " * 500 + "1" + "}" * 500 + "\n") == [
        "cfg.yaml:3:260: values nested more than 64 levels deep (the limit)"
    ]
    # 63 levels inside pipeline (64 in all) are read: the walker reports the value, it does not recurse into it.
    assert errors(HEAD + "pipeline: " + "[" * 63 + "]" * 63 + "\n") == [
        "cfg.yaml:3:11: pipeline: expected a mapping, got a list"
    ]


def test_nesting_through_aliases_counts_the_expanded_depth():
    """Each anchor one level deeper than the last, each defined two levels down: only the expansion is deep (a
    chain of 1000 merge keys like this gave a RecursionError in the walker)."""
    lines = ["a0: &a0 []"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 100)]
    # a_i is a list of height i + 1; the alias in a_i sits at level 3 and reaches 3 + i - 1: over 64 at i = 63.
    assert errors(HEAD + "\n".join(lines) + "\n") == [
        "cfg.yaml:66:12: alias *a62 nests values more than 64 levels deep (the limit)"
    ]
    # m0 has height 2 (a mapping, its scalars), m_i height i + 2; the alias in m_i sits at level 3 (under the key
    # `<<`) and reaches 3 + (i + 1) - 1: over 64 at i = 62, line 65, column len("m62: &m62 {<<: ") + 1.
    merges = ["m0: &m0 {workers: 1}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}}}" for i in range(1, 1000)]
    assert errors(HEAD + "\n".join(merges) + "\n") == [
        "cfg.yaml:65:16: alias *m61 nests values more than 64 levels deep (the limit)"
    ]


def test_an_alias_inside_the_node_it_names_is_refused():
    """Found while writing the bound: `&p {<<: *p}` made the walker recurse until RecursionError."""
    assert errors(HEAD + "pipeline: &p {<<: *p}\n") == ["cfg.yaml:3:19: alias *p is inside the node it names (a cycle)"]
    assert errors(HEAD + "x: &l [1, [2, *l]]\n") == ["cfg.yaml:3:15: alias *l is inside the node it names (a cycle)"]


def test_a_20_mb_value_is_refused_without_reading_the_file(tmp_path):
    """Issue #10: a 20 MB value took 13.5 s and 970 MB and was echoed whole in the error. The file is refused by its
    size; the location is where its 1,048,576th byte ends: line 3 starts at byte 70, so column 1048576 - 70 + 1."""
    text = HEAD + "log_level: " + "x" * 20_000_000 + "\n"
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}:3:1048507: the config file is larger than 1048576 bytes (1 MiB, the limit)"]
    assert errors(text) == ["cfg.yaml:3:1048507: the config file is larger than 1048576 bytes (1 MiB, the limit)"]
    # At the limit exactly the file is read (the value is then too long, and quoted by its start only).
    exact = HEAD + "log_level: " + "x" * (2**20 - 70 - len("log_level: \n")) + "\n"
    assert len(exact.encode()) == 2**20
    assert errors(exact) == [
        f"cfg.yaml:3:12: a value of {2**20 - 82} characters, more than 65536 (the limit): "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'..."
    ]


def test_values_are_bounded_and_long_values_are_not_echoed_whole():
    assert errors(HEAD + "log_level: " + "y" * 65537 + "\n") == [
        "cfg.yaml:3:12: a value of 65537 characters, more than 65536 (the limit): 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy'..."
    ]
    assert errors(HEAD + "? " + "k" * 65537 + "\n: 1\n") == [  # a key (explicit: a simple key has 1024 at most)
        "cfg.yaml:3:3: a value of 65537 characters, more than 65536 (the limit): 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'..."
    ]
    # 65536 characters are a value like any other; the error quoting it is cut at 1000 characters.
    (error,) = errors(HEAD + "log_level: " + "y" * 65536 + "\n")
    start = "cfg.yaml:3:12: log_level: expected one of debug, info, warning, error, got 'yyy"
    assert error.startswith(start) and error.endswith(f"y... ({len(start) - 3 + 65536 + 1} characters)")
    assert len(error) == 1000 + len(f"... ({len(start) - 3 + 65536 + 1} characters)")


# --- directories: what must be a directory is checked when the file is read ---------------------------------------


def test_a_state_dir_or_sink_path_that_is_a_regular_file_is_refused(tmp_path: Path):
    """Issue #10: these passed `check`, then `run` failed with `[Errno 17] File exists` and no file, line or key."""
    (tmp_path / "state").write_text("")
    (tmp_path / "out").write_text("")
    (tmp_path / "var").write_text("")  # blocks the file sink's default path, var/flows
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    text = """\
state_dir: state
sources: [{name: in, type: local}]
sinks:
  - {name: a, type: file, path: out}
  - {name: b, type: file, path: out/sub/dir}
  - {name: c, type: file}
  - {name: d, type: file, path: gone}
  - {name: e, type: file, path: new/sub}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "cfg.yaml")
    cfg = tmp_path / "cfg.yaml"
    assert info.value.errors == [
        f"{cfg}:1:12: state_dir: {tmp_path}/state is a regular file, not a directory",
        f"{cfg}:4:33: sinks[0].path: {tmp_path}/out is a regular file, not a directory",
        f"{cfg}:5:33: sinks[1].path: {tmp_path}/out/sub/dir cannot be created: {tmp_path}/out is a regular file, "
        "not a directory",
        f"{cfg}:6:5: sinks[2].path: {tmp_path}/var/flows cannot be created: {tmp_path}/var is a regular file, "
        "not a directory",
        f"{cfg}:7:33: sinks[3].path: {tmp_path}/gone is a symbolic link to nothing, not a directory",
    ]
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_a_directory_that_cannot_be_created_is_refused(tmp_path: Path, monkeypatch):
    """As root every directory is writable, so the refusal of os.access is simulated for `ro`. An existing directory
    that cannot be written to is accepted: that is an outage, retried (tests/test_sink_outage.py)."""
    (tmp_path / "ro").mkdir()
    real_access = os.access

    def access(path: str, mode: int, **kw: bool) -> bool:
        return path != str(tmp_path / "ro") and real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "supports_effective_ids", {access} if os.access in os.supports_effective_ids else set())
    text = "state_dir: ro\nsources: [{name: in, type: local}]\nsinks: [{name: a, type: file, path: ro/flows}]\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path / "cfg.yaml")
    assert info.value.errors == [
        f"{tmp_path}/cfg.yaml:3:37: sinks[0].path: {tmp_path}/ro/flows cannot be created: {tmp_path}/ro is a "
        "directory this user cannot write to",
    ]


def test_accounts_listed_twice_are_named_once_each():
    """The duplicate check counts ids once (it was a list.count per id: 65,000 ids, a 1 MB file, took 165 s)."""
    ids = '["111111111111", "222222222222", "111111111111", "333333333333", "222222222222", "111111111111"]'
    assert errors(
        f"sources:\n  - {{name: s, type: aws_s3, bucket: b, accounts: {ids}}}\nsinks: [{{name: o, type: stdout}}]\n"
    ) == ["cfg.yaml:2:50: sources[0].accounts: account listed twice: 111111111111, 222222222222"]
