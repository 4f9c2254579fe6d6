"""The engine is its own lean process: importing it must not pull in Django (or the control plane)."""

from __future__ import annotations

import subprocess
import sys

from serving.engine.launcher import REPO_ROOT

CHECK = """
import sys
import serving.engine.__main__, serving.engine.app, serving.engine.embeddings, serving.engine.launcher
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"django", "controlplane", "rest_framework"})
print(",".join(loaded))
"""


def test_engine_modules_do_not_import_django() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""
