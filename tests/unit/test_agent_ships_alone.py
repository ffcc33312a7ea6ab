"""The agent ships to the NVA alone: besides `nva_agent/` it needs only the reconciler's
stdlib-only files (`asn`, the ASN rules, and `report_signature`, the change reports' signing rule),
so both sides keep one copy of each rule without the NVA carrying the reconciler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = {"reconciler", "reconciler.asn", "reconciler.report_signature"}
PROBE = """
import json, sys
import nva_agent.__main__, nva_agent.app, nva_agent.change_reports
print(json.dumps(sorted(m for m in sys.modules if m == "reconciler" or m.startswith(("reconciler.", "emulator", "localenv")))))
"""


def test_the_agent_imports_only_the_shared_stdlib_files_of_the_reconciler() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) == SHARED


def test_the_shared_files_import_nothing_but_the_standard_library() -> None:
    probe = "import json, sys; b = set(sys.modules); import reconciler.asn, reconciler.report_signature; " \
        "print(json.dumps(sorted(m.split('.')[0] for m in set(sys.modules) - b)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(json.loads(out.stdout)) <= {"reconciler", *sys.stdlib_module_names}
