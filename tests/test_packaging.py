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


def test_the_torch_extra_admits_only_torch_that_loads_weights_only_by_default():
    """torch.load unpickles (runs code) unless weights_only=True, its default from torch 2.6 on: the
    extra admits no older torch, and the test extra's pin lies inside the extra's range."""
    from packaging.requirements import Requirement
    from packaging.version import Version
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    torch = Requirement(next(r for r in extras["torch"] if r.startswith("torch")))
    pinned = Requirement(next(r for r in extras["test"] if r.startswith("torch")))
    assert not torch.specifier.contains(Version("2.5.1")) and torch.specifier.contains(Version("2.6.0"))
    (pin,) = pinned.specifier
    assert pin.operator == "==" and torch.specifier.contains(Version(pin.version))
