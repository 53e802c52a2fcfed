"""The layer contract holds, it can fail, and the wheel's package list is complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests import check_layers


def test_the_tree_keeps_the_layer_contract() -> None:
    violations = check_layers.check_tree()
    assert violations == [], "\n".join(str(v) for v in violations)


def _plant(tmp_path: Path, folder: str, name: str, source: str) -> Path:
    for sub in check_layers.PACKAGE_DIRS:
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / "__init__.py").touch()
    path = tmp_path / folder / name
    path.write_text(source)
    return path


def test_each_forbidden_import_is_reported(tmp_path: Path) -> None:
    _plant(tmp_path, "shared", "a.py", "def f():\n    from earwitness.edge import agent\n")
    _plant(tmp_path, "edge", "b.py", "import earwitness.cloud.db\n")
    _plant(tmp_path, "cloud", "c.py", "from earwitness import edge\n")
    _plant(tmp_path, "cloud", "d.py", "from ..edge import outbox\n")
    _plant(tmp_path, "shared", "e.py", "from earwitness.cli import main\n")
    _plant(tmp_path, "edge", "f.py", "from shared.topics import Kind\n")
    _plant(tmp_path, "earwitness", "cli.py", "import earwitness.edge, earwitness.cloud\n")
    _plant(tmp_path, "cloud", "g.py", "from sqlalchemy import Engine, select\n")
    (tmp_path / "cloud" / "db").mkdir()
    _plant(tmp_path, "cloud", "db/h.py", "from sqlalchemy import select\n")  # allowed here
    found = {(v.path.name, v.line) for v in check_layers.check_tree(tmp_path)}
    assert found == {
        ("a.py", 2),
        ("b.py", 1),
        ("c.py", 1),
        ("d.py", 1),
        ("e.py", 1),
        ("f.py", 1),
        ("g.py", 1),
    }


def test_pyproject_lists_every_package_folder() -> None:
    config = tomllib.loads((check_layers.ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = set()
    for folder, package in check_layers.PACKAGE_DIRS.items():
        for init in (check_layers.ROOT / folder).rglob("__init__.py"):
            on_disk.add(check_layers.module_name(init, check_layers.ROOT / folder, package))
    assert listed == on_disk
