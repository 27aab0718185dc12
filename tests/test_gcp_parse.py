"""GCP VPC Flow Logs parser (adapters/gcp/parse.py): the conformance case, hand-checked fields, the general path,
batch boundaries and resume, errors by line.

Where the cases come from: the conformance samples are obsrvbl-oss/gcp-flowlogs-reader's SAMPLE_PAYLOADS (see
tests/fixtures/conformance/SOURCES.md); the other records are written from Google's record format page
(https://cloud.google.com/vpc/docs/about-flow-logs-records: connection, reporter SRC/DEST/SRC_GATEWAY/DEST_GATEWAY,
InstanceDetails, VpcDetails, GatewayDetails, GeographicDetails, disposition) and Cloud Logging's LogEntry
(insertId, resource.labels of gce_subnetwork: project_id, subnetwork_id, subnetwork_name, location), with the
int64 fields as JSON strings as Cloud Logging writes them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from test_aws_parse import CONF, MANIFEST, _match, check

from adapters.gcp.parse import looks_like_gcp, parse_entries, parse_lines
from collector.conformance import error_record, records
from collector.parsing import MAX_BATCH_ROWS, ParseResult, open_stream
from collector.schema import address_bytes

CASES = [c for c in MANIFEST["cases"] if c["provider"] == "gcp"]


def ts(*args: int, ms: int = 0) -> datetime:
    return datetime(*args, microsecond=ms * 1000, tzinfo=UTC)


def parse_all(data: bytes | Iterable[bytes], **kw) -> tuple[list[ParseResult], pa.RecordBatch, list]:
    chunks = [data] if isinstance(data, bytes) else data
    kw.setdefault("unit", "obj.json")
    kw.setdefault("source", "src")
    results = list(parse_lines(chunks, **kw))
    batches = [r.batch for r in results if r.batch.num_rows]
    batch = pa.concat_batches(batches) if batches else results[-1].batch
    return results, batch, [e for r in results for e in r.errors]


def rows(data: bytes, **kw) -> list[dict]:
    _, batch, errors = parse_all(data, **kw)
    assert errors == []
    return batch.to_pylist()


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


VM_ENTRY = {
    "insertId": "1x2y3z",
    "jsonPayload": {
        "bytes_sent": "1020",
        "connection": {
            "dest_ip": "203.0.113.9",
            "dest_port": 443,
            "protocol": 6,
            "src_ip": "10.128.0.7",
            "src_port": 51234,
        },
        "dest_location": {
            "asn": 15169,
            "city": "Mountain View",
            "continent": "America",
            "country": "usa",
            "region": "California",
        },
        "end_time": "2024-06-01T12:00:05.123456789Z",
        "packets_sent": "20",
        "reporter": "SRC",
        "rtt_msec": "61",
        "src_instance": {
            "project_id": "web-prod",
            "region": "us-central1",
            "vm_name": "web-1",
            "zone": "us-central1-a",
        },
        "src_vpc": {"project_id": "web-prod", "subnetwork_name": "web-subnet", "vpc_name": "prod-vpc"},
        "start_time": "2024-06-01T12:00:00.000999999Z",
    },
    "logName": "projects/web-prod/logs/compute.googleapis.com%2Fvpc_flows",
    "receiveTimestamp": "2024-06-01T12:00:31.123456789Z",
    "resource": {
        "labels": {
            "location": "us-central1-a",
            "project_id": "web-prod",
            "subnetwork_id": "4455",
            "subnetwork_name": "web-subnet",
        },
        "type": "gce_subnetwork",
    },
    "timestamp": "2024-06-01T12:00:31.1Z",
}


# -- conformance ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance_case(case, tmp_path, monkeypatch, capsys):
    raw = (CONF / case["input"]).read_bytes()
    _, batch, errors = parse_all(raw, unit=case["input"], source="conformance")
    actual = list(records(batch))
    expected = [json.loads(x) for x in (CONF / case["expected"]).read_text().splitlines() if x.strip()]
    missing, extra = _match(expected, actual)
    assert missing == [] and extra == [], f"missing={missing}\nunexpected={extra}"
    assert errors == []
    out = tmp_path / "actual.jsonl"
    out.write_text("".join(json.dumps(o) + "\n" for o in actual + [error_record(e, "gcp") for e in errors]))
    monkeypatch.setattr(sys, "argv", ["check.py", case["id"], str(out)])
    with pytest.raises(SystemExit) as exc:
        check.main()
    assert exc.value.code == 0, capsys.readouterr().out


def test_conformance_payload_four_is_icmp_without_start():
    # Payload 4 of SAMPLE_PAYLOADS: protocol 1.0 (a float), no ports, no start_time.
    raw = (CONF / "raw/gcp/gcp-flowlogs-reader-x__SAMPLE_PAYLOADS.logentries.jsonl").read_bytes()
    row = rows(raw)[3]
    assert (row["protocol"], row["src_port"], row["dst_port"], row["time_start"]) == (1, None, None, None)
    assert row["time_end"] == ts(2018, 4, 3, 13, 48, 33, ms=937)
    assert row["extra"] == [
        ("dest_instance.project_id", "yoyodyne-102010"),
        ("dest_instance.vm_name", "vm-instance-02"),
        ("dest_instance.region", "us-west1"),
        ("dest_instance.zone", "us-west1-a"),
        ("dest_vpc.project_id", "yoyodyne-102010"),
        ("dest_vpc.vpc_name", "yoyo-vpc-1"),
        ("dest_vpc.subnetwork_name", "yoyo-vpc-1"),
    ]


# -- fields -----------------------------------------------------------------------------------------------------------


def test_vm_entry_every_field():
    (row,) = rows(line(VM_ENTRY), options={"sampling_rate": 30})
    assert row == {
        "time_start": ts(2024, 6, 1, 12, 0, 0, ms=0),  # .000999999 floors to .000
        "time_end": ts(2024, 6, 1, 12, 0, 5, ms=123),
        "provider": "gcp",
        "source": "src",
        "account": "web-prod",
        "region": "us-central1",
        "zone": "us-central1-a",
        "vpc": "prod-vpc",
        "subnet": "web-subnet",
        "interface": "web-1",
        "instance": "web-1",
        "src_addr": address_bytes("10.128.0.7"),
        "dst_addr": address_bytes("203.0.113.9"),
        "src_port": 51234,
        "dst_port": 443,
        "protocol": 6,
        "packets": 20,
        "bytes": 1020,
        "action": None,
        "direction": "egress",
        "tcp_flags": None,
        "log_status": None,
        "sampling_rate": 30,
        "flow_state": None,
        "reporter": "SRC",
        "pkt_src_addr": None,
        "pkt_dst_addr": None,
        "traffic_path": None,
        "reject_reason": None,
        "extra": [
            ("insertId", "1x2y3z"),
            ("resource.labels.subnetwork_id", "4455"),
            ("resource.labels.location", "us-central1-a"),
            ("dest_location.continent", "America"),
            ("dest_location.country", "usa"),
            ("dest_location.region", "California"),
            ("dest_location.city", "Mountain View"),
            ("dest_location.asn", "15169"),
            ("rtt_msec", "61"),
        ],
    }


def test_bare_record_lines_map_like_entries():
    entry = rows(line(VM_ENTRY))[0]
    bare = rows(line(VM_ENTRY["jsonPayload"]))[0]
    # The envelope's insertId and labels are all that differ.
    assert {k: v for k, v in bare.items() if k != "extra"} == {k: v for k, v in entry.items() if k != "extra"}
    assert [p for p in entry["extra"] if not p[0].startswith(("insertId", "resource."))] == bare["extra"]


def test_dest_reporter_and_fallbacks_from_resource_labels():
    # A DEST report with no dest_instance (the VM's metadata omitted): account and subnet from resource.labels.
    rec = {
        "connection": {
            "src_ip": "198.51.100.1",
            "src_port": 1234,
            "dest_ip": "10.0.0.5",
            "dest_port": 22,
            "protocol": 6,
        },
        "reporter": "DEST",
        "bytes_sent": "64",
        "packets_sent": "1",
        "disposition": "ALLOWED",
    }
    entry = {"jsonPayload": rec, "resource": {"labels": {"project_id": "host-proj", "subnetwork_name": "sn-1"}}}
    (row,) = rows(line(entry))
    assert (row["direction"], row["account"], row["subnet"], row["interface"], row["action"]) == (
        "ingress", "host-proj", "sn-1", None, "accept",
    )  # fmt: skip
    assert row["extra"] == []


def test_gateway_reporter():
    # A Cloud VPN tunnel reporting the flow it sent into the VPC (reporter SRC_GATEWAY, GatewayDetails).
    rec = {
        "connection": {
            "src_ip": "192.168.1.10",
            "src_port": 5000,
            "dest_ip": "10.0.0.5",
            "dest_port": 80,
            "protocol": 17,
        },
        "reporter": "SRC_GATEWAY",
        "bytes_sent": "100",
        "packets_sent": "2",
        "src_gateway": {
            "type": "VPN_TUNNEL",
            "project_id": "net-hub",
            "location": "europe-west1",
            "name": "tunnel-a",
            "vpc": {"project_id": "net-hub", "vpc_name": "hub-vpc"},
        },
        "dest_instance": {"project_id": "app", "vm_name": "app-1", "region": "europe-west1", "zone": "europe-west1-b"},
    }
    (row,) = rows(line(rec))
    assert (row["direction"], row["account"], row["interface"], row["instance"], row["region"], row["vpc"]) == (
        "egress", "net-hub", "tunnel-a", None, "europe-west1", "hub-vpc",
    )  # fmt: skip
    assert row["extra"] == [
        ("src_gateway.type", "VPN_TUNNEL"),
        ("dest_instance.project_id", "app"),
        ("dest_instance.vm_name", "app-1"),
        ("dest_instance.region", "europe-west1"),
        ("dest_instance.zone", "europe-west1-b"),
    ]


def test_unknown_keys_take_the_general_path_and_are_kept_as_written():
    rec = json.loads(json.dumps(VM_ENTRY["jsonPayload"]))
    rec["src_instance"]["managed_instance_group"] = {"name": "web-mig", "region": "us-central1"}
    rec["src_gke_details"] = {"cluster": {"cluster_name": "gke-1"}, "pod": {"pod_name": "p-1", "ports": [80, 443]}}
    rec["dest_location"]["asn"] = 15169.0  # not an integer literal: kept as written
    rec["new_metric"] = 1.50
    rec["flag"] = True
    rec["nothing"] = None
    rec["empty"] = {}
    rec["connection"]["src_nat_ip"] = "35.1.2.3"
    text = line({"jsonPayload": rec}).replace(b'"new_metric":1.5', b'"new_metric":1.50')
    (row,) = rows(text)
    assert row["account"] == "web-prod" and row["bytes"] == 1020
    assert len(row["extra"]) == len(dict(row["extra"]))  # no key twice; order is not part of the contract
    assert dict(row["extra"]) == dict(
        [
            ("src_instance.managed_instance_group.name", "web-mig"),
            ("src_instance.managed_instance_group.region", "us-central1"),
            ("dest_location.continent", "America"),
            ("dest_location.country", "usa"),
            ("dest_location.region", "California"),
            ("dest_location.city", "Mountain View"),
            ("dest_location.asn", "15169.0"),
            ("rtt_msec", "61"),
            ("connection.src_nat_ip", "35.1.2.3"),
            ("src_gke_details.cluster.cluster_name", "gke-1"),
            ("src_gke_details.pod.pod_name", "p-1"),
            ("src_gke_details.pod.ports", "[80,443]"),
            ("new_metric", "1.50"),
            ("flag", "true"),
        ]
    )


def test_numbers_and_times_in_every_accepted_form():
    rec = {
        "connection": {
            "src_ip": "10.0.0.1",
            "src_port": "443",
            "dest_ip": "2001:db8::1",
            "dest_port": 5.0,
            "protocol": "6.00",
        },
        "reporter": "SRC",
        "bytes_sent": 1e3,
        "packets_sent": "007",
        "start_time": "2024-06-01T12:00:00.9999999Z",
        "end_time": "2024-06-01T14:00:00+02:00",
    }
    (row,) = rows(line(rec))
    assert (row["src_port"], row["dst_port"], row["protocol"], row["bytes"], row["packets"]) == (443, 5, 6, 1000, 7)
    assert row["dst_addr"] == address_bytes("2001:db8::1")
    assert row["time_start"] == ts(2024, 6, 1, 12, 0, 0, ms=999)
    assert row["time_end"] == ts(2024, 6, 1, 12, 0, 0)


BAD_LINES = [
    # (line, error) -- one error per line, naming the field's path
    (b'{"jsonPayload":{"connection":{"src_ip":"10.0.0.1","src_port":70000},"reporter":"SRC"}}',
     "connection.src_port: expected a number from 0 to 65535, got 70000"),
    (b'{"jsonPayload":{"connection":{"src_ip":"10.0.0.1"},"bytes_sent":"abc"}}',
     'bytes_sent: expected a number from 0 to 9223372036854775807, got "abc"'),
    (b'{"jsonPayload":{"connection":{"src_ip":"10.0.0.1"},"bytes_sent":"9223372036854775808"}}',
     'bytes_sent: expected a number from 0 to 9223372036854775807, got "9223372036854775808"'),
    (b'{"jsonPayload":{"connection":{"src_ip":"10.0.0.1"},"packets_sent":-1}}',
     "packets_sent: expected a number from 0 to 9223372036854775807, got -1"),
    (b'{"jsonPayload":{"connection":{"protocol":true}}}', "connection.protocol: expected a number, got a boolean"),
    (b'{"jsonPayload":{"connection":{"src_port":3389.5}}}',
     "connection.src_port: expected a number from 0 to 65535, got 3389.5"),
    (b'{"jsonPayload":{"connection":"x"}}', "connection: expected an object, got a string"),
    (b'{"jsonPayload":[1]}', "jsonPayload: expected an object, got an array"),
    (b"not json", "not JSON: JSON is malformed: invalid character (byte 4)"),
    (b"[1,2]", "not a JSON object: an array"),
    (b'{"jsonPayload":{"connection":{},"reporter":5}}', "reporter: expected a string, got a number"),
    (b'{"jsonPayload":{"connection":{"src_ip":"300.0.0.1"}}}', 'connection.src_ip: expected an IP address, got "300.0.0.1"'),
    (b'{"jsonPayload":{"connection":{},"start_time":"2024-02-30T00:00:00Z"}}',
     'start_time: expected an RFC 3339 time such as 2024-06-01T12:00:00.123456789Z, got "2024-02-30T00:00:00Z"'),
    (b'{"jsonPayload":{"connection":{},"end_time":"2024-02-03 00:00:00Z"}}',
     'end_time: expected an RFC 3339 time such as 2024-06-01T12:00:00.123456789Z, got "2024-02-03 00:00:00Z"'),
    (b'{"jsonPayload":{"connection":{},"reporter":"SRC","src_instance":{"vm_name":7}}}',
     "src_instance.vm_name: expected a string, got a number"),
    (b'{"jsonPayload":{"connection":{},"dest_vpc":"v"}}', "dest_vpc: expected an object, got a string"),
    (b'{"jsonPayload":{"connection":{}},"resource":{"labels":{"project_id":1}}}',
     "resource.labels.project_id: expected a string, got a number"),
    (b'{"textPayload":"hello"}', "not a VPC flow log record: no jsonPayload (LogEntry) and no connection (record)"),
    (b'{"jsonPayload":{"connection":{"src_ip":"\xff"}}}', "not UTF-8 at byte 40 of the line"),
    (b'{"jsonPayload":{"connection":{"src_ip":"\\ud800"}}}', None),  # a lone surrogate: not JSON (message varies)
]  # fmt: skip


def test_bad_lines_are_one_error_each_and_the_rest_is_delivered():
    good = line(VM_ENTRY)
    data = good + b"\n".join(text for text, _ in BAD_LINES) + b"\n" + good
    results, batch, errors = parse_all(data)
    assert batch.num_rows == 2
    assert [e.line for e in errors] == list(range(2, 2 + len(BAD_LINES)))
    for err, (_, reason) in zip(errors, BAD_LINES, strict=True):
        assert err.unit == "obj.json"
        if reason is not None:
            assert err.reason == reason
        else:
            assert err.reason.startswith("not JSON")
    assert results[-1].position == {"offset": len(data), "line": len(BAD_LINES) + 2}


def test_projects_keeps_only_those_accounts():
    other = json.loads(json.dumps(VM_ENTRY))
    other["jsonPayload"]["src_instance"]["project_id"] = "other-proj"
    other["jsonPayload"]["src_vpc"]["project_id"] = "other-proj"
    data = line(VM_ENTRY) + line(other) + line(VM_ENTRY)
    kept = rows(data, options={"projects": frozenset({"web-prod"})})
    assert [r["account"] for r in kept] == ["web-prod", "web-prod"]
    assert len(rows(data)) == 3


# -- batches, resume, limits ------------------------------------------------------------------------------------------


def _varied(n: int) -> bytes:
    out = []
    for i in range(n):
        entry = json.loads(json.dumps(VM_ENTRY))
        entry["jsonPayload"]["bytes_sent"] = str(i)
        out.append(line(entry) if i % 7 else b"  \r\n")
    return b"".join(out)


def test_batches_are_cut_by_content_and_resume_reproduces_them():
    data = _varied(200)
    whole = list(parse_lines([data], unit="u", source="s", block_size=4096))
    assert len(whole) > 10
    for size in (1, 7, 1000, len(data)):
        again = list(parse_lines(chunked(data, size), unit="u", source="s", block_size=4096))
        assert [r.position for r in again] == [r.position for r in whole]
        assert [r.batch.column("bytes").to_pylist() for r in again] == [
            r.batch.column("bytes").to_pylist() for r in whole
        ]
    for k, r in enumerate(whole[:-1]):
        resumed = list(parse_lines([data], unit="u", source="s", resume=r.position, block_size=4096))
        assert [x.position for x in resumed] == [x.position for x in whole[k + 1 :]]
    total = sum(r.batch.num_rows for r in whole)
    assert total == sum(1 for i in range(200) if i % 7)


def test_overlong_line_is_skipped_without_holding_it(monkeypatch):
    import adapters.gcp.parse as P

    monkeypatch.setattr(P, "MAX_LINE", 1000)
    data = line(VM_ENTRY) + b'{"x":"' + b"a" * 5000 + b'"}\n' + line(VM_ENTRY)
    for block in (100, 1 << 20):
        _, batch, errors = parse_all(data, block_size=block)
        assert batch.num_rows == 2
        assert [(e.line, e.reason) for e in errors] == [(2, "line longer than 1000 bytes: skipped")]


def test_rows_per_batch_are_bounded():
    tiny = b'{"connection":{},"reporter":"SRC"}\n'
    results, batch, _ = parse_all(tiny * (MAX_BATCH_ROWS + 5))
    assert [r.batch.num_rows for r in results] == [MAX_BATCH_ROWS, 5, 0]
    assert results[0].position == {"offset": len(tiny) * MAX_BATCH_ROWS, "line": MAX_BATCH_ROWS}


def test_entries_of_messages_one_batch_and_the_bad_ones():
    bodies = [
        line(VM_ENTRY),
        b'{"jsonPayload": 5}',
        line(VM_ENTRY["jsonPayload"]),
        b"",
        b'{"jsonPayload":{"connection":{"src_port":-1}}}',
    ]
    result, bad = parse_entries(bodies, unit="sub", source="ps", names=["m1", "m2", "m3", "m4", "m5"])
    assert result.batch.num_rows == 2
    assert bad == [1, 3, 4]
    assert [(e.unit, e.reason) for e in result.errors] == [
        ("m2", "jsonPayload: expected an object, got a number"),
        ("m4", "empty message"),
        ("m5", "connection.src_port: expected a number from 0 to 65535, got -1"),
    ]


def test_sniff_and_the_seam():
    assert looks_like_gcp(line(VM_ENTRY))
    assert looks_like_gcp(line(VM_ENTRY["jsonPayload"]))
    assert looks_like_gcp(b"garbage\n" + line(VM_ENTRY))
    assert not looks_like_gcp(b'{"message": "2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK"}\n')
    assert not looks_like_gcp(b'{"records": [{"time": "x"}]}\n')
    assert not looks_like_gcp(b"2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK\n")
    import io

    results = list(open_stream(io.BufferedReader(io.BytesIO(line(VM_ENTRY))), unit="u", source="s"))
    assert results[0].provider == "gcp" and results[0].batch.num_rows == 1


def test_fixtures_copied(tmp_path):
    # The conformance inputs the tests read are the repository's copies (never ../shared at run time).
    assert Path(CONF / CASES[0]["input"]).exists()


GKE_ENTRY = json.loads(json.dumps(VM_ENTRY))
GKE_ENTRY["jsonPayload"]["src_gke_details"] = {
    # GkeDetails of the record format page: cluster, pod (with its workload) and the services, a list.
    "cluster": {"cluster_location": "us-central1", "cluster_name": "shop"},
    "pod": {
        "pod_name": "cart-7d9f",
        "pod_namespace": "default",
        "pod_workload": {"workload_name": "cart", "workload_type": "DEPLOYMENT"},
    },
    "service": [{"service_name": "cart", "service_namespace": "default"}],
}


def test_gke_details_are_flattened_and_their_service_list_kept_as_written():
    import adapters.gcp.parse as P

    text = line(GKE_ENTRY)
    P._ENTRY.decode(text.strip())  # the typed decoder takes it: GKE lines are on the fast path
    (row,) = rows(text)
    extra = dict(row["extra"])
    assert {k: v for k, v in extra.items() if k.startswith("src_gke_details")} == {
        "src_gke_details.cluster.cluster_location": "us-central1",
        "src_gke_details.cluster.cluster_name": "shop",
        "src_gke_details.pod.pod_name": "cart-7d9f",
        "src_gke_details.pod.pod_namespace": "default",
        "src_gke_details.pod.pod_workload.workload_name": "cart",
        "src_gke_details.pod.pod_workload.workload_type": "DEPLOYMENT",
        "src_gke_details.service": '[{"service_name":"cart","service_namespace":"default"}]',
    }


def _gateway_record() -> dict:
    return {
        "connection": {
            "src_ip": "192.168.1.10",
            "src_port": 5000,
            "dest_ip": "10.0.0.5",
            "dest_port": 80,
            "protocol": 17,
        },
        "reporter": "DEST_GATEWAY",
        "dest_gateway": {
            "type": "INTERCONNECT_ATTACHMENT",
            "project_id": "p",
            "location": "l",
            "name": "n",
            "vpc": {"vpc_name": "v", "project_id": "q"},
        },
        "src_instance": {"project_id": "a", "vm_name": "b", "managed_instance_group": {"name": "g", "zone": "z"}},
        "dest_vpc": {"project_id": "r", "vpc_name": "w", "subnetwork_name": "s", "subnetwork_region": "t"},
        "disposition": "NEW_VALUE",
    }


def test_fast_and_general_paths_give_the_same_rows(monkeypatch):
    """The typed decoders are an accelerator: every line they take must come out of the general path (which they
    fall back to) the same, extra compared as a mapping."""
    import adapters.gcp.parse as P

    raw = (CONF / "raw/gcp/gcp-flowlogs-reader-x__SAMPLE_PAYLOADS.logentries.jsonl").read_bytes()
    data = line(VM_ENTRY) + line(GKE_ENTRY) + line(VM_ENTRY["jsonPayload"]) + line(_gateway_record()) + raw
    fast = rows(data)

    class Refuse:
        def decode(self, _data: bytes) -> None:
            raise P.msgspec.ValidationError("forced")

    monkeypatch.setattr(P, "_ENTRY", Refuse())
    monkeypatch.setattr(P, "_BARE", Refuse())
    general = rows(data)
    assert len(fast) == len(general) == 8
    for a, b in zip(fast, general, strict=True):
        assert dict(a.pop("extra")) == dict(b.pop("extra"))
        assert a == b


# -- found by the fuzz (tests/test_fuzz_gcp.py) -----------------------------------------------------------------------

FUZZ_FOUND_ERRORS = [
    # a crash each before: msgspec's ValidationError or int()'s ValueError escaped the general path
    b'{"jsonPayload":{"connection":{"src_port":1e400},"x":1}}',
    b'{"jsonPayload":{"connection":{},"bytes_sent":' + b"1" * 5000 + b',"x":1}}',
    b'{"jsonPayload":{"connection":{},"reporter":1e400}}',
    # nesting: msgspec's limit depends on the call stack (RecursionError escaped at about 1,000 levels)
    b'{"jsonPayload":{"connection":{},"x":' + b"[" * 63 + b"]" * 63 + b"}}",
    b'{"jsonPayload":{"connection":{}},"labels":' + b"[" * 5000 + b"]" * 5000 + b"}",
    # times whose instant is not one a timestamp column gives as a datetime (to_pylist raised), year 0000
    b'{"jsonPayload":{"connection":{},"start_time":"0001-01-01T00:00:00+00:01"}}',
    b'{"jsonPayload":{"connection":{},"end_time":"9999-12-31T23:59:59-00:01"}}',
    b'{"jsonPayload":{"connection":{},"end_time":"0000-06-01T00:00:00Z"}}',
    # two extra keys of one name (a map holds one)
    b'{"jsonPayload":{"connection":{},"src_location":{"city":"a"},"src_location.city":"b"}}',
    b'{"jsonPayload":{"connection":{},"insertId":"b"},"insertId":"a"}',
]  # fmt: skip


def test_fuzz_found_lines_are_errors_not_crashes():
    data = b"\n".join(FUZZ_FOUND_ERRORS) + b"\n" + line(VM_ENTRY)
    _, batch, errors = parse_all(data)
    assert [e.line for e in errors] == list(range(1, len(FUZZ_FOUND_ERRORS) + 1))
    assert batch.num_rows == 1


def test_fuzz_found_values_that_are_valid():
    deep = b"[" * 62 + b"1" + b"]" * 62  # 64 levels with the line's object and jsonPayload
    data = (
        b'{"jsonPayload":{"connection":{"src_port":"' + b"0" * 5000 + b'7","dest_port":7},"x":' + deep + b"},"
        b'"logName":"l","severity":"DEFAULT"}\n'
        b'{"jsonPayload":{"connection":{},"rtt_msec":-0,"y":{"n":-0}}}\n'
    )
    first, second = rows(data)
    assert (first["src_port"], dict(first["extra"])) == (7, {"x": deep.decode()})
    assert dict(second["extra"]) == {"rtt_msec": "0", "y.n": "0"}
    assert looks_like_gcp(b'{"jsonPayload":{"connection":{}},"x":' + b"[" * 5000 + b"]" * 5000 + b"}\n") is False


def test_fuzz_found_fallbacks_keep_what_differs():
    # A gateway reporting with a VPC beside it: its location is the region (rule 3: the VPC's subnetwork_region is
    # the fallback), and the VPC's project and the gateway VPC's, which differ from the account, stay in extra.
    rec = {
        "connection": {},
        "reporter": "SRC_GATEWAY",
        "src_gateway": {"project_id": "hub", "name": "t", "location": "eu", "vpc": {"project_id": "gv"}},
        "src_vpc": {"project_id": "v", "subnetwork_region": "us", "vpc_name": "n"},
    }
    (row,) = rows(line(rec))
    assert (row["account"], row["region"], row["vpc"], row["interface"]) == ("hub", "eu", "n", "t")
    assert dict(row["extra"]) == {
        "src_vpc.project_id": "v",
        "src_vpc.subnetwork_region": "us",
        "src_gateway.vpc.project_id": "gv",
    }


def test_a_time_next_to_a_missing_one_keeps_its_milliseconds():
    # Found by the long fuzz (seed 1160): with a null in the column, nanoseconds went through float64 and
    # 13:47:37.521Z came out as .520.
    a = {"connection": {}, "reporter": "SRC", "end_time": "2024-02-28T13:47:37.521Z"}
    b = {"connection": {}, "reporter": "SRC"}
    got = [r["time_end"] for r in rows(line(a) + line(b) + line(a))]
    assert got == [ts(2024, 2, 28, 13, 47, 37, ms=521), None, ts(2024, 2, 28, 13, 47, 37, ms=521)]
