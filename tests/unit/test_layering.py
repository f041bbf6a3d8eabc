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


def test_the_layers_and_adapter_independence_are_import_linter_contracts() -> None:
    # The contracts test_import_linter_contracts_hold runs must include these, not only exist
    # as prose: the core's layers and the adapters' independence.
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = [c for c in contracts if c["type"] == "layers"]
    assert layers and layers[0]["layers"][-1].split(" | ")[0] == "stem_core.errors"
    independent = {m for c in contracts if c["type"] == "independence" for m in c["modules"]}
    adapters = {f"stem_core.adapters.{p.name}" for p in (ROOT / "stem_core" / "adapters").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    assert adapters <= independent, f"adapters missing from the independence contract: {adapters - independent}"
