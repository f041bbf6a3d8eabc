"""The layers are enforced, not just described (SPEC §2)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_importing_stem_core_pulls_in_no_front_end_or_driver() -> None:
    # Given a fresh interpreter
    code = (
        "import sys, stem_core, stem_core.contract, stem_core.adapters;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'typer', 'rich', 'click', 'redis', 'psycopg', 'psycopg_pool', 'aio_pika', 'aiobotocore'));"
        "print(','.join(bad))"
    )
    # When it imports the core
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    # Then no front-end library and no driver was loaded
    assert out.stdout.strip() == ""


def test_import_linter_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports (import-linter) is not installed; it is part of the [test] extra")
    result = subprocess.run([lint_imports], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_sources_never_import_front_ends() -> None:
    # A textual check too, so a lazy import inside a function cannot slip past.
    offenders = []
    for path in (ROOT / "stem_core").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and stripped.split()[1].split(".")[0] in (
                "textual",
                "typer",
                "rich",
                "stem_tui",
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == []
