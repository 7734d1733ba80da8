"""Every source package is listed for installation (a plain `pip install .` ships it)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {config["package-dir"][p] for p in config["packages"]}
    folders = {str(d.parent.relative_to(ROOT)) for d in ROOT.glob("*/**/__init__.py")
               if not d.parts[len(ROOT.parts)] in ("tests", "bench", "build")}
    folders |= {str(d.parent.relative_to(ROOT)) for d in ROOT.glob("*/__init__.py")
                if d.parent.name not in ("tests", "bench", "build")}
    assert folders <= listed, f"not installed: {sorted(folders - listed)}"


def test_package_data_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "*.lark" in config["package-data"]["cnnc.dsl"]
    assert "datasets/*.npz" in config["package-data"]["cnnc.runtime"]
