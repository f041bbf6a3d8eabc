"""The package as a user installs it: a wheel built from this tree (hatchling, as
``pip install`` would) installed with a plain ``pip install stem-queue`` (no extras) into a
fresh virtual environment that has neither Typer nor Rich.

There ``stem`` must print one line naming the extra, not a ``ModuleNotFoundError``
traceback; ``stem --version`` and ``python -m stem_tui --version`` answer from the
installed metadata; the library imports. The wheel ships ``py.typed`` and the metadata
(classifiers, project URLs, the one version from ``pyproject.toml``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from stem_tui.cli.entry import EXIT_MISSING_EXTRA, MISSING_EXTRA

# A wheel build, a virtual environment and an install: seconds, not milliseconds.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120


def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def stem(self) -> str:
        return str(self.venv / "bin" / "stem")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        # Nothing of this tree or of the test venv on the path: only what the wheel installed.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "STEM_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=self.venv, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(dist)], cwd=ROOT, check=True,
                   capture_output=True, timeout=TIMEOUT_S)
    (wheel,) = dist.glob("stem_queue-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(env_dir)  # no pip: ours installs into it
    # A plain install, as from the index: no extras, and nothing else may come along.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-index",
                    "--no-cache-dir", "--disable-pip-version-check", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=TIMEOUT_S)
    return Installed(wheel=wheel, venv=env_dir)


# -- the wheel ------------------------------------------------------------------------


def test_the_wheel_ships_py_typed_and_the_shim_entry_point(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        assert {"stem_core/py.typed", "stem_tui/py.typed", "stem_tui/__main__.py", "stem_tui/cli/entry.py"} <= names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "stem = stem_tui.cli.entry:main" in wheel.read(entry_points).decode()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = wheel.read(metadata_name).decode()
    project = pyproject()["project"]
    assert f"\nVersion: {project['version']}\n" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    for classifier in project["classifiers"]:
        assert f"Classifier: {classifier}\n" in metadata
    for label in project["urls"]:
        assert f"Project-URL: {label}, " in metadata
    # A plain install needs nothing else: every third-party requirement is behind an extra.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires and all("extra ==" in line for line in requires), requires


def test_the_plain_install_has_no_cli_dependencies(installed: Installed) -> None:
    done = installed.run(installed.python, "-c", "import importlib.util as u; print([m for m in ('typer', 'rich', "
                         "'click', 'textual', 'redis') if u.find_spec(m)])")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done


# -- stem without the cli extra -------------------------------------------------------


@pytest.mark.parametrize("argv", [[], ["inspect", "queues"], ["--help"], ["worker", "--app", "x:app"]],
                         ids=["bare", "command", "help", "worker"])
def test_stem_without_the_extra_names_it_in_one_line(installed: Installed, argv: list[str]) -> None:
    done = installed.run(installed.stem, *argv)
    assert done.returncode == EXIT_MISSING_EXTRA, done
    assert done.stderr == MISSING_EXTRA + "\n" and done.stdout == ""
    assert "pip install 'stem-queue[cli]'" in done.stderr and "Traceback" not in done.stderr


def test_python_m_stem_tui_is_the_same_command(installed: Installed) -> None:
    done = installed.run(installed.python, "-m", "stem_tui", "inspect", "queues")
    assert (done.returncode, done.stderr, done.stdout) == (EXIT_MISSING_EXTRA, MISSING_EXTRA + "\n", "")


def test_the_version_answers_without_the_extra_from_the_metadata(installed: Installed) -> None:
    expected = f"stem {pyproject()['project']['version']}\n"
    for argv in ([installed.stem, "--version"], [installed.python, "-m", "stem_tui", "--version"]):
        done = installed.run(*argv)
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, ""), argv


def test_the_library_imports_and_reports_the_installed_version(installed: Installed) -> None:
    code = ("import stem_core, sys; from stem_core import Stem; "
            "print(stem_core.__version__, stem_core.__file__.startswith(sys.prefix))")
    done = installed.run(installed.python, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [pyproject()["project"]["version"], "True"]
