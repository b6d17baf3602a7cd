"""The project's own configuration: one pytest configuration, the declared dependency ranges, and what the installed
package needs at import time."""

import configparser
import sys
import warnings
from pathlib import Path

import pytest


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- one pytest configuration -----------------------------------------------------------------------------------


def test_pytest_reads_its_configuration_from_pyproject(pytestconfig):
    assert Path(pytestconfig.inipath) == ROOT / "pyproject.toml"
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(ROOT / "setup.cfg")
    assert "tool:pytest" not in setup_cfg.sections()  # pytest would ignore it, with a warning
    assert pytestconfig.getini("testpaths") == ["tests"]
    assert "--strict-markers" in pytestconfig.getini("addopts") and "-ra" in pytestconfig.getini("addopts")
    markers = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"slow", "real_assets"} <= markers


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_a_deprecation_from_our_own_code_fails_the_test_run(category):
    with pytest.raises(category, match="deprecated"):
        warnings.warn_explicit("x is deprecated", category, "cli.py", 1, module="kron_transformers.cli")
    # The same warning from a dependency is only recorded.
    with warnings.catch_warnings(record=True):
        warnings.warn_explicit("y is deprecated", category, "x.py", 1, module="some_dependency.x")
