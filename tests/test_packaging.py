"""The built wheel holds the whole tree, and the installed code imports only what it declares.

Round 1's wheel silently lacked three subpackages (a hand-written package list) and every model
load failed on a Pi; these tests read the wheel a user gets, not the checkout.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.packaging

# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "ai_edge_litert": "ai-edge-litert", "multipart": "python-multipart",
                "prometheus_client": "prometheus-client", "google": "protobuf", "grpc": "grpcio"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """tests/run_installed.sh passes the wheel it built; otherwise build one here."""
    if os.environ.get("EDGEKIT_WHEEL"):
        return Path(os.environ["EDGEKIT_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], check=True)
    return next(out.glob("edgekit-*.whl"))


@pytest.fixture(scope="module")
def wheel_files(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def _tree_packages() -> dict[str, Path]:
    """Every folder of Python code in the tree, under the name it must have once installed."""
    found = {}
    for top, installed_as in (("edgekit", "edgekit"), ("converters", "edgekit/converters")):
        for init in (ROOT / top).rglob("*.py"):
            rel = init.parent.relative_to(ROOT / top)
            if "__pycache__" not in rel.parts:
                found[str(Path(installed_as) / rel) if str(rel) != "." else installed_as] = init.parent
    return found


def test_every_package_and_module_of_the_tree_is_in_the_wheel(wheel_files):
    packages = _tree_packages()
    assert "edgekit/coreml" in packages and "edgekit/converters" in packages  # the walk itself works
    for name, folder in packages.items():
        assert f"{name}/__init__.py" in wheel_files, f"package {name} ({folder}) is missing from the wheel"
        for module in folder.glob("*.py"):
            assert f"{name}/{module.name}" in wheel_files, f"{name}/{module.name} is missing from the wheel"


def test_package_data_is_in_the_wheel(wheel_files):
    for data in [p for ext in ("json", "fbs", "proto", "html", "js", "css") for p in (ROOT / "edgekit").rglob(f"*.{ext}")]:
        rel = f"edgekit/{data.relative_to(ROOT / 'edgekit')}"
        assert rel in wheel_files, f"{rel} is missing from the wheel"
    assert any(f.startswith("edgekit/devices/") for f in wheel_files)


def test_sdist_builds_the_same_packages(wheel_files):
    sdist = os.environ.get("EDGEKIT_SDIST")
    if not sdist:
        pytest.skip("EDGEKIT_SDIST not set: tests/run_installed.sh builds the sdist and runs this check")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for name, folder in _tree_packages().items():
        source = folder.relative_to(ROOT)
        assert f"{source}/__init__.py" in names, f"{source} is missing from the sdist"
    assert "setup.py" in names and "pyproject.toml" in names


def _declared() -> dict[str, set[str]]:
    """pyproject's dependencies: {"": base, "serve": ..., ...} as lower-case distribution names."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {k: {re.split(r"[<>=!\[; ]", d, maxsplit=1)[0].lower() for d in v} for k, v in groups.items()}


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module is imported (not the lazy ones inside functions)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"edgekit", "__future__"}


def test_device_side_imports_only_declared_packages():
    """What `import edgekit.<module>` pulls in must be in the base install, or in the extra of the
    subpackage it belongs to (edgekit/serve -> [serve])."""
    declared = _declared()
    for path in (ROOT / "edgekit").rglob("*.py"):
        if "__pycache__" in path.parts or path.name.endswith("_generated.py"):
            continue
        group = "serve" if "serve" in path.relative_to(ROOT / "edgekit").parts[:1] else ""
        allowed = declared[""] | declared.get(group, set())
        for name in _module_level_imports(path):
            dist = DISTRIBUTION.get(name, name).lower()
            assert dist in allowed, (f"{path.relative_to(ROOT)} imports {name} at module level, but {dist} is not "
                                     f"declared in {'the base install' if not group else f'[{group}]'}")


def test_generated_metadata_code_needs_only_flatbuffers():
    generated = ROOT / "edgekit" / "tflite_metadata" / "metadata_schema_generated.py"
    assert _module_level_imports(generated) <= {"flatbuffers"}
    assert "flatbuffers" in _declared()[""]


def test_palettization_dependency_is_in_the_convert_extra():
    """coremltools' k-means palettization imports scikit-learn lazily: `[convert]` must carry it or
    README's Core ML command fails in a plain convert install."""
    assert "scikit-learn" in _declared()["convert"]
