"""The wheel as `pip install mas-runtime` gets it: built for real, read, and installed.

The wheel must hold only the `mas` package: a top-level `agents` package would clash with
other distributions importing that name (OpenAI's Agents SDK). The built-in echo agent
ships inside `mas`, so it works from the wheel alone, away from this repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed: it builds the wheel")
    return uv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_ships_only_the_mas_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"mas"}
    assert "mas/agents/echo.py" in names


def test_the_echo_agent_works_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    uv = _uv()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, capture_output=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--offline", "--no-deps", "--python", str(python), wheel],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # The dependencies come from this interpreter's site-packages (no download); PYTHONPATH
    # does not read .pth files, so this repository's editable install stays out of reach.
    deps = os.pathsep.join(
        dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAS_", "PYTHON"))}
    env["PYTHONPATH"] = deps
    code = (
        "import importlib.util, mas\n"
        "from mas.agents.echo import EchoAgent\n"
        "print(mas.__file__)\n"
        "print(importlib.util.find_spec('agents'))\n"
    )
    found = subprocess.run(
        [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0, found.stderr
    where, agents = found.stdout.splitlines()
    assert Path(where).is_relative_to(venv)
    assert agents == "None"

    # `mas demo` runs the built-in echo agent, as `mas up` does.
    demo = subprocess.run(
        [python, "-m", "mas.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 0, demo.stderr
    assert "1. ask echo" in demo.stdout
