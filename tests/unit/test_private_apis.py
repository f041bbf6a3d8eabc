"""No private API of a third-party library is reached into outside its fence module.

Each fence names what it uses and has a test that fails when an upgrade moves it:

* ``stem_tui/cli/internals.py``: Typer's vendored Click exceptions
  (``tests/cli/test_typer_internals.py``);
* ``stem_tui/widgets/internals.py``: Textual's ``DataTable`` state
  (``tests/tui/test_datatable_internals.py``);
* ``stem_core/adapters/redis/internals.py``: redis-py's connection internals
  (``tests/integration/test_redis_internals.py``);
* ``stem_core/adapters/rabbitmq/wire.py``: aiormq's channel internals
  (``tests/integration/test_rabbitmq_wire.py``).

Two checks: the source (an import of an ``_``-module or ``_``-name from a library; an
``x._name`` attribute that no Stem code defines), and the classes (a Stem subclass of a
library class using or overriding an ``_``-name that the library class defines).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import stem_core
import stem_tui

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = {"typer", "click", "textual", "rich", "redis", "aiormq", "aio_pika", "pamqp", "psycopg", "psycopg_pool",
             "aiobotocore", "botocore"}
FENCES = {
    "stem_tui/cli/internals.py",
    "stem_tui/widgets/internals.py",
    "stem_core/adapters/redis/internals.py",
    "stem_core/adapters/rabbitmq/wire.py",
}


def sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(), str(p))
            for package in ("stem_core", "stem_tui") for p in sorted((ROOT / package).rglob("*.py"))}


def names_stem_defines(trees: dict[str, ast.Module]) -> set[str]:
    """Every name Stem's own code (the fences excluded) binds: functions, classes,
    attributes assigned, variables, arguments, imports, ``__slots__`` entries."""
    out: set[str] = set()
    for path, tree in trees.items():
        if path in FENCES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                out.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                out.add(node.id)
            elif isinstance(node, ast.arg):
                out.add(node.arg)
            elif isinstance(node, ast.alias):
                out.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                      for t in node.targets):
                out.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                           and isinstance(c.value, str))
    return out


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_fences_exist() -> None:
    for path in FENCES:
        assert (ROOT / path).is_file(), path


def test_no_private_import_or_attribute_outside_the_fences() -> None:
    trees = sources()
    ours = names_stem_defines(trees)
    found: list[str] = []
    for path, tree in trees.items():
        if path in FENCES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
                if any(private(part) for part in node.module.split(".")) or any(private(a.name) for a in node.names):
                    found.append(f"{path}:{node.lineno} from {node.module} import ...")
            elif isinstance(node, ast.Import):
                found += [f"{path}:{node.lineno} import {a.name}" for a in node.names
                          if a.name.split(".")[0] in LIBRARIES and any(private(p) for p in a.name.split("."))]
            elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in ours:
                found.append(f"{path}:{node.lineno} .{node.attr}")
    assert found == [], "private library API outside the fences (move it into one, with a test): " + ", ".join(found)


@functools.cache
def base_source(base: type) -> str:
    try:
        return inspect.getsource(base)
    except (OSError, TypeError):  # compiled or generated: only its namespace is looked at
        return ""


def library_classes(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in LIBRARIES]


def test_no_subclass_touches_a_private_name_of_its_library_base() -> None:
    found: list[str] = []
    for package in (stem_tui, stem_core):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            path = str(Path(inspect.getfile(module)).relative_to(ROOT))
            if path in FENCES:
                continue
            for cls in vars(module).values():
                if not inspect.isclass(cls) or cls.__module__ != module.__name__ or not library_classes(cls):
                    continue
                text = inspect.getsource(cls)
                used = set(re.findall(r"(?:self|cls|super\(\))\.(_[A-Za-z]\w*)", text))
                used |= set(re.findall(r"def (_[A-Za-z]\w*)", text))
                for name in sorted(n for n in used if private(n)):
                    for base in library_classes(cls):
                        if name in vars(base) or re.search(rf"self\.{name}\b", base_source(base)):
                            found.append(f"{module.__name__}.{cls.__name__}.{name} (of {base.__module__}.{base.__name__})")
                            break
    assert found == [], "private library state used by a subclass outside the fences: " + ", ".join(found)
