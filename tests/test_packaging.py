"""What C{pip install .} ships: every package of the source tree (a missing one installs fine
and fails at import)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "twistreg").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
    assert "twisted.plugins" in listed
