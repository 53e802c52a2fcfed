"""The layer contract: which part of `earwitness` may import which.

shared/ is the bottom layer and imports neither edge/ nor cloud/; edge/ and cloud/ never
import each other; only the command line and the demo (`earwitness.cli`,
`earwitness.demo`) sit above both. Every import counts, including the lazy ones inside
functions, because a lazy import is still a dependency. Run by `make lint` and by
tests/test_layers.py; exits 1 and names file, line and rule on a violation.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Folder on disk -> the package it installs as (pyproject.toml [tool.setuptools.package-dir]).
PACKAGE_DIRS = {
    "earwitness": "earwitness",
    "shared": "earwitness.shared",
    "edge": "earwitness.edge",
    "cloud": "earwitness.cloud",
}
TOP = ("earwitness.cli", "earwitness.demo", "earwitness.__main__")
# What each layer must not import.
FORBIDDEN = {
    "earwitness.shared": ("earwitness.edge", "earwitness.cloud", *TOP),
    "earwitness.edge": ("earwitness.cloud", *TOP),
    "earwitness.cloud": ("earwitness.edge", *TOP),
}
# Outside the data-access layer code may name these SQLAlchemy things (engines, sessions,
# errors, URL parsing) but builds no statements: SQL lives in earwitness.cloud.db.
DATA_LAYER = "earwitness.cloud.db"
SQLALCHEMY_OUTSIDE_DATA_LAYER = {"Engine", "Session", "exc", "SQLAlchemyError", "make_url"}
# The names the packages had before they moved under `earwitness`.
OLD_TOP_LEVEL = ("shared", "edge", "cloud")


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        rel = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{rel}:{self.line}: {self.importer} imports {self.imported} ({self.rule})"


def module_name(path: Path, folder: Path, package: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imports_of(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from earwitness import edge` imports earwitness.edge
                yield node.lineno, f"{target}.{alias.name}"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _sql_outside_data_layer(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            for alias in node.names:
                if alias.name not in SQLALCHEMY_OUTSIDE_DATA_LAYER:
                    yield node.lineno, f"{node.module}.{alias.name}"


def check_file(path: Path, module: str) -> list[Violation]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    layer = next((lay for lay in FORBIDDEN if _within(module, lay)), None)
    found: list[Violation] = []
    if not _within(module, DATA_LAYER):
        for line, name in _sql_outside_data_layer(tree):
            rule = f"SQL belongs in {DATA_LAYER}"
            found.append(Violation(path, line, module, name, rule))
    for line, imported in imports_of(tree, module, path.name == "__init__.py"):
        if imported.split(".")[0] in OLD_TOP_LEVEL:
            found.append(Violation(path, line, module, imported, "use the earwitness.* name"))
            continue
        if layer is None:
            continue
        for banned in FORBIDDEN[layer]:
            if _within(imported, banned):
                rule = f"{layer} must not import {banned}"
                found.append(Violation(path, line, module, imported, rule))
    return found


def check_tree(root: Path = ROOT) -> list[Violation]:
    violations: list[Violation] = []
    for folder_name, package in PACKAGE_DIRS.items():
        folder = root / folder_name
        for path in sorted(folder.rglob("*.py")):
            violations.extend(check_file(path, module_name(path, folder, package)))
    return violations


def main() -> int:
    violations = check_tree()
    for v in violations:
        print(v)
    if violations:
        print(f"layer contract: {len(violations)} violation(s)", file=sys.stderr)
        return 1
    print("layer contract: ok (shared <- edge | cloud <- cli, demo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
