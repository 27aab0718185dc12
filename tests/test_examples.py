"""The bundled samples (examples/): `scripts/make_examples.py --check` parses every committed file back (the GCP
objects through the parsing seam's detection, as the `local` source reads them), compares the counts with what the
script writes, and checks that the committed text files and examples/README.md are exactly what it writes now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_examples_match_the_script_and_their_readme() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_examples.py"), "--check"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "ok: 6 objects parsed back with the expected counts" in res.stdout
    assert "is not written by this script" not in res.stdout
    # The GCP objects are among them, with their damaged lines found where the README says.
    assert (
        "gcp/compute.googleapis.com/vpc_flows/2026/11/22/06:00:00_06:59:59_S0.json\n    records: 60 flows" in res.stdout
    )
    assert (
        "gcp/compute.googleapis.com/vpc_flows/2026/11/22/07:00:00_07:59:59_S0.json\n    records: 24 flows" in res.stdout
    )
    assert "malformed lines: 3 (line 9: " in res.stdout
