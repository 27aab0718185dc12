"""`flowcollector` command line: run, check, parse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import orjson
import pyarrow as pa

from collector import __version__

_EPILOG = """\
examples:
  flowcollector run -c config.example.yaml --once    process the bundled samples, print a summary, exit
  flowcollector run -c /etc/flowcollector/config.yaml  run as a daemon (SIGTERM drains and stops, SIGHUP reloads)
  flowcollector check -c config.yaml                 validate a config without starting anything
  flowcollector parse flows.log.gz                   normalized flows as JSON Lines on stdout
  flowcollector parse --aws-format '${version} ${srcaddr} ${dstaddr}' cw-export.txt
  flowcollector parse --projects shop-prod-1 --sampling-rate 2 06:00:00_06:59:59_S0.json

The config file may also be given by $FLOWCOLLECTOR_CONFIG. Every option is documented in config.example.yaml.
"""


# Kept in step with collector/options.py by tests/test_cli.py (importing it here would slow every command down).
_LIMITS = (
    "A config is refused if it is larger than 1 MiB, holds a value of more than 65,536 characters, nests values "
    "more than 64 levels deep or holds more than 100,000 nodes (keys, values and list items, each alias or merge "
    "key counted as a copy of what it names)."
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowcollector",
        description="Collect AWS, GCP and Azure flow logs, normalize them into one schema, and deliver them to "
        "files, ClickHouse, syslog and NetFlow/IPFIX collectors.",
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=f"flowcollector {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def config_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c",
            "--config",
            default=os.environ.get("FLOWCOLLECTOR_CONFIG"),
            help="YAML config file (default: $FLOWCOLLECTOR_CONFIG)",
        )

    run = sub.add_parser(
        "run",
        help="run the collector",
        description="Run the sources and sinks of a config. Without --once, poll until SIGTERM or SIGINT, then "
        "drain (checkpoints move only after every sink has the data). SIGHUP reloads the config's sources "
        "(add an account, a bucket) without a restart.",
        formatter_class=_Formatter,
    )
    config_arg(run)
    run.add_argument("--once", action="store_true", help="process what exists now, print a summary and exit")
    run.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="override log_level from the config: debug, info, warning or error (every logger but the libraries "
        "of --log-level-libraries; credentials are redacted from every line at every level)",
    )
    run.add_argument(
        "--log-level-libraries",
        choices=("debug", "info", "warning", "error"),
        default="warning",
        help="level of the cloud and HTTP libraries' loggers (botocore, aiobotocore, s3transfer, urllib3, aiohttp, "
        "google.*, azure.*), independent of --log-level (default: warning); their debug lines show every request, "
        "with Authorization, tokens, signatures and keys redacted",
    )

    check = sub.add_parser(
        "check",
        help="validate a config and exit",
        description="Validate a config file: "
        "every error is printed with its file, line and key; exit 1 if there is any. The directories the "
        "collector writes in (state_dir, a file sink's path) must be directories, or creatable by this user. "
        f"{_LIMITS}",
    )
    config_arg(check)

    parse = sub.add_parser(
        "parse",
        help="normalize flow log files to JSON Lines on stdout",
        description="Parse flow log files (plain, gzip or Parquet) and print normalized flows as JSON Lines. "
        "Each rejected record goes to stderr as FILE:LINE: reason, then a summary line. Exit 0 unless a file "
        "cannot be read.",
        formatter_class=_Formatter,
    )
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.add_argument(
        "--provider",
        choices=["auto", "aws", "gcp", "azure"],
        default="auto",
        help="format of the files (default: detect from content)",
    )
    parse.add_argument(
        "--aws-format",
        metavar="FIELDS",
        help="AWS field order for lines before any header line, e.g. CloudWatch exports: "
        "'version account-id ...' or the flow log's LogFormat '${version} ${srcaddr} ...' "
        "(default: the v2 default format)",
    )
    parse.add_argument(
        "--projects",
        metavar="IDS",
        help="GCP: keep only the flows of these project ids (comma-separated), by the reporting side's project; "
        "the others are dropped, not counted as errors",
    )
    parse.add_argument(
        "--sampling-rate",
        metavar="N",
        help="GCP: the flow logs' sampling, as a rate (1 in N flows kept; a subnet logged with "
        "--logging-flow-sampling=0.5 is 2), put into every flow's sampling_rate; GCP records do not carry it "
        "(default: null)",
    )
    parse.add_argument(
        "--format",
        dest="output",
        choices=["jsonl", "conformance"],
        default="jsonl",
        help="jsonl: the normalized schema (default); conformance: the key set of the shared "
        "conformance checker (start/end in Unix seconds, errors as objects)",
    )
    parse.add_argument("--source-name", default="cli", help="value of the `source` column (default: cli)")
    return p


def _setup_logging(level: str, libraries: str = "warning", secrets: list[str] | None = None) -> None:
    """Logging to stderr with every line redacted (collector.redact), whatever logger wrote it; the cloud libraries
    at their own level, so `--log-level debug` does not turn on botocore's request dumps unless asked."""
    from collector import redact

    logging.Formatter.converter = time.gmtime
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    redact.install()
    redact.install_excepthooks()
    redact.set_library_level(getattr(logging, libraries.upper(), logging.WARNING))
    redact.remember_environment()
    redact.remember(secrets or ())


def _load(path: str | None) -> object:
    from collector.config import ConfigError, load_config

    if not path:
        print("flowcollector: no config given: use -c FILE or set FLOWCOLLECTOR_CONFIG", file=sys.stderr)
        raise SystemExit(2)
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"flowcollector: invalid config {path}:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_run(args: argparse.Namespace) -> int:
    from collector.daemon import run, summary_table
    from collector.options import secret_values
    from collector.redact import redact

    config = _load(args.config)
    _setup_logging(args.log_level or config.log_level, args.log_level_libraries, secret_values(config))  # type: ignore[attr-defined]
    started = time.monotonic()
    try:
        metrics = asyncio.run(run(config, once=args.once))
    except OSError as exc:  # the state directory or a sink's directory cannot be used
        print(redact(f"flowcollector: cannot start: {exc}"), file=sys.stderr)
        return 1
    if args.once:
        print(redact(summary_table(metrics, time.monotonic() - started)), file=sys.stderr)
    if metrics.failed:
        print(redact(f"flowcollector: stopped early: {metrics.failed}"), file=sys.stderr)
        return 1
    failed = sum(c.units_failed for c in metrics.sources.values())
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(f"{config.path}: OK")  # type: ignore[attr-defined]
    for s in config.sources:  # type: ignore[attr-defined]
        print(f"  source {s.name} ({s.type})")
    for s in config.sinks:  # type: ignore[attr-defined]
        print(f"  sink   {s.name} ({s.type})")
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    from collector import conformance
    from collector.jsonl import dumps_batch
    from collector.parsing import convert_option, open_unit

    options = {}
    given = (("aws_fields", "--aws-format", args.aws_format), ("projects", "--projects", args.projects),
             ("sampling_rate", "--sampling-rate", args.sampling_rate))  # fmt: skip
    for name, flag, text in given:
        if text is None:
            continue
        try:
            options[name] = convert_option(name, text)
        except ValueError as exc:
            print(f"flowcollector: {flag}: {exc}", file=sys.stderr)
            return 2
    out = sys.stdout.buffer
    files = records = errors = unreadable = 0
    for name in args.files:
        try:
            for result in open_unit(
                Path(name), unit=name, source=args.source_name, provider=args.provider, options=options
            ):
                records += result.batch.num_rows
                if args.output == "conformance":
                    for rec in conformance.records(result.batch):
                        out.write(orjson.dumps(rec) + b"\n")
                    for err in result.errors:
                        # A file no format claims is reported as AWS's, as before formats registered (the
                        # conformance schema knows only aws, gcp and azure).
                        provider = result.provider or (args.provider if args.provider != "auto" else "aws")
                        out.write(orjson.dumps(conformance.error_record(err, provider)) + b"\n")
                elif result.batch.num_rows:
                    out.write(dumps_batch(result.batch))
                for err in result.errors:
                    print(err, file=sys.stderr)
                errors += len(result.errors)
            files += 1
        except OSError as exc:
            unreadable += 1
            print(f"{name}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        except pa.ArrowException as exc:  # a container too damaged to read at all (a Parquet file without footer)
            unreadable += 1
            print(f"{name}: cannot read: {exc}", file=sys.stderr)
    out.flush()
    msg = f"flowcollector parse: {files} files, {records} records, {errors} errors"
    if unreadable:
        msg += f", {unreadable} unreadable"
    print(msg, file=sys.stderr)
    return 1 if unreadable else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"run": cmd_run, "check": cmd_check, "parse": cmd_parse}[args.command](args)
    except BrokenPipeError:
        # `flowcollector parse big.log.gz | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
