"""The built distribution: sdist and wheel (``make dist``), what the wheel holds, and that an
installed wheel registers the provider with Airflow.

The wheel is built from the sdist (``python -m build``), so a file missing from the sdist fails
here too. It is then installed, without dependencies, into a fresh virtualenv that borrows the
dev venv's packages (Airflow and the rest) through a ``.pth`` line: the ``airflow_hoop`` Airflow
imports there is the wheel's, not the source tree's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

import airflow_hoop

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_hoop"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes from the dev venv (no index needed); make dist isolates.
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    yield out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("airflow_hoop-*-py3-none-any.whl")
    return wheel


def _source_files() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_wheel_holds_the_package_with_its_data_files_and_nothing_else(dist: Path) -> None:
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    package = {n for n in names if n.startswith("airflow_hoop/")}
    assert package == _source_files()  # templates and other data files included
    others = names - package
    assert all(n.startswith(f"airflow_hoop-{airflow_hoop.__version__}.dist-info/") for n in others)


def test_wheel_metadata_and_entry_points(dist: Path) -> None:
    wheel = zipfile.ZipFile(_wheel(dist))
    info = f"airflow_hoop-{airflow_hoop.__version__}.dist-info"
    meta = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert meta["Name"] == "airflow-hoop" and meta["Version"] == airflow_hoop.__version__
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.replace(" ", "").startswith("apache-airflow<3.4,>=3.1") for r in requires)
    entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    for section, line in [
        ("apache_airflow_provider", "provider_info = airflow_hoop:get_provider_info"),
        ("airflow.plugins", "airflow_hoop = airflow_hoop.plugins.listener:HoopListenerPlugin"),
        ("console_scripts", "airflow-hoop = airflow_hoop.cli.main:main"),
    ]:
        assert f"[{section}]\n{line}" in entry_points


def test_sdist_has_what_building_and_testing_need_and_no_caches(dist: Path) -> None:
    (sdist,) = dist.glob("airflow_hoop-*.tar.gz")
    top = f"airflow_hoop-{airflow_hoop.__version__}/"
    with tarfile.open(sdist) as tar:
        names = {n.removeprefix(top) for n in tar.getnames()}
    assert {"pyproject.toml", "README.md", "airflow_hoop/__init__.py"} <= names
    assert _source_files() <= names
    assert "tests/support/hoop_contract/recordings/exec_select.json" in names
    cached = [n for n in names if n.split("/")[0] in {".venv", ".import_linter_cache", ".stack"}]
    assert not cached and not any("__pycache__" in n for n in names)


def test_installed_wheel_registers_the_provider_with_airflow(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-index", str(_wheel(dist))],
        check=True, timeout=120,
    )  # fmt: skip
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dev venv's packages after the new venv's own: Airflow from there, airflow_hoop not.
    dev_site = sysconfig.get_paths()["purelib"]
    (Path(site) / "zz_dev_venv.pth").write_text(f"import site; site.addsitedir({dev_site!r})\n")
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [python, "-c", "import airflow_hoop; print(airflow_hoop.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=True,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(site), where
    listed = subprocess.run(
        [python, "-m", "airflow", "providers", "list", "-o", "json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    providers = {p["package_name"]: p for p in json.loads(listed.stdout)}
    assert providers["airflow-hoop"]["version"] == airflow_hoop.__version__
