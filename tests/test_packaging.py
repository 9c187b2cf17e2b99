"""The pip-installable package: the wheel's contents (kernel sources, console scripts), an installed copy that works
outside the checkout and writes relative to the current directory, quiet imports, and the checkout's scripts."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"bert4rec-gen": "bert4rec.cli.gen:main", "bert4rec-train": "bert4rec.cli.train:main",
           "bert4rec-tune": "bert4rec.cli.tune:main", "bert4rec-recommend": "bert4rec.cli.recommend:main",
           "bert4rec-report": "bert4rec.cli.report:main", "bert4rec-export": "bert4rec.cli.export:main"}


def env_with(pythonpath: Path | None) -> dict[str, str]:
    """The environment without anything that makes the tools talk or finds another copy of the package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BERT4REC_VERBOSE", "PYTHONWARNINGS")}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def run(args: list[str], cwd: Path, pythonpath: Path | None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env_with(pythonpath), capture_output=True, text=True, timeout=timeout)


def build_tools_missing() -> str | None:
    """Why a wheel cannot be built here without network access (None: it can)."""
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed"
    needed = re.search(r'"setuptools>=(\d+)', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    have = int(importlib.metadata.version("setuptools").split(".")[0])
    if needed and have < int(needed.group(1)):
        return f"setuptools {have} is older than the build-system's >={needed.group(1)}"
    if have < 70 and importlib.util.find_spec("wheel") is None:  # setuptools >= 70.1 builds wheels by itself
        return "wheel is not installed"
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the build leaves build/ and *.egg-info/ behind)."""
    missing = build_tools_missing()
    if missing:
        pytest.skip(missing)
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "bert4rec", src / "bert4rec", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheelhouse")
    proc = run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
               cwd=src, pythonpath=None, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed into a folder of its own (no dependencies: they are this environment's)."""
    target = tmp_path_factory.mktemp("site")
    proc = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target),
                str(wheel)], cwd=target, pythonpath=None, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_the_wheel_has_the_kernel_sources_the_cli_and_the_console_scripts(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    for name in ("bert4rec/csrc/common.h", "bert4rec/csrc/fused_attention.cc", "bert4rec/csrc/fused_layers.cc",
                 "bert4rec/cli/__init__.py", "bert4rec/cli/train.py", "bert4rec/cli/tune.py",
                 "bert4rec/cli/report.py", "bert4rec/cli/export.py", "bert4rec/paths.py",
                 "bert4rec/models/__init__.py", "bert4rec/tuning/__init__.py", "bert4rec/data/__init__.py"):
        assert name in names, name
    outside = sorted(n for n in names if not n.startswith(("bert4rec/", info + "/")))
    assert not outside, outside  # no tests/, bench/, examples/ or top-level scripts
    assert "[console_scripts]" in entry_points
    for script, target in SCRIPTS.items():
        assert re.search(rf"^{re.escape(script)} = {re.escape(target)}$", entry_points, re.M), script
    assert "Name: bert4rec-paddle" in metadata and "Version: 0.4.0" in metadata
    for dep in ("paddlepaddle>=3.0", "numpy>=1.24", "pandas>=2.0", "pyarrow>=14", "tqdm>=4.60", "matplotlib>=3.7",
                "optuna>=4.0"):
        assert f"Requires-Dist: {dep}\n" in metadata, dep


def test_the_installed_copy_is_used_outside_the_checkout(site, tmp_path):
    code = ("import bert4rec, bert4rec.cli.train, bert4rec.cli.tune, bert4rec.cli.report, bert4rec.cli.export\n"
            "from bert4rec.paths import config_dir, project_root\n"
            "print(bert4rec.__file__); print(project_root()); print(config_dir())")
    proc = run([sys.executable, "-c", code], cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # quiet there too
    package_file, root, configs = proc.stdout.splitlines()
    assert Path(package_file).resolve() == (site / "bert4rec" / "__init__.py").resolve()
    assert Path(root).resolve() == tmp_path.resolve()  # an installed package writes relative to the cwd
    assert configs == "None"


def test_the_installed_console_script_and_its_defaults(site, tmp_path):
    script = site / "bin" / "bert4rec-train"
    assert script.is_file()
    proc = run([sys.executable, str(script), "--help"], cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: bert4rec-train ")
    # argparse wraps long paths at their hyphens too
    assert f"(default:{tmp_path.resolve() / 'data' / 'ml-1m'})" in "".join(proc.stdout.split())
    proc = run([sys.executable, "-m", "bert4rec.cli.train", "--DATA_DIR", str(tmp_path)], cwd=tmp_path,
               pythonpath=site)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bert4rec-train: --CONFIG_PATH is required outside a source checkout (no bundled configs; the "
        "repository's bert_train/ has them)"]
    proc = run([sys.executable, "-m", "bert4rec.cli.tune", "--NOT_A_FLAG"], cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 2 and "error: bert4rec-tune: the following arguments are required: --params_file" \
        in proc.stderr


def test_project_root_in_the_checkout():
    from bert4rec.paths import checkout_root, config_dir, project_root

    assert checkout_root() == REPO and project_root() == REPO
    assert config_dir() == REPO / "bert_train" and (config_dir() / "bert_config_ml-1m_64_d01.json").is_file()
    from bert4rec.cli import train, tune

    assert train.default_data_dir() == REPO / "data" / "ml-1m"
    assert tune.worker_command() == [sys.executable, str(REPO / "tune.py")]
    assert tune.retrain_prefix() == ["python", "trainrec.py"]


@pytest.mark.parametrize("statement", ["import bert4rec", "from bert4rec.trained import load_run"])
def test_imports_print_nothing(statement, tmp_path):
    code = f"{statement}\nimport sys\nassert ('paddle' in sys.modules) == ('trained' in {statement!r})"
    proc = run([sys.executable, "-c", code], cwd=tmp_path, pythonpath=REPO)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")


def test_installed_gen_turns_a_csv_into_data_under_the_working_directory(site, tmp_path):
    rows = "".join(f"user{u},item{(u * 7 + k) % 30},{1_600_000_000 + k}\n" for u in range(20) for k in range(8))
    (tmp_path / "clicks.csv").write_text("user_id,item_id,timestamp\n" + rows)
    proc = run([sys.executable, str(site / "bin" / "bert4rec-gen"), "--raw_path", "clicks.csv", "--min_item_count",
                "1", "--num_negatives", "5", "--no_progress"], cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "clicks" / "users.txt").read_text().splitlines()[0] == "1\tuser0"
    proc = run([sys.executable, str(site / "bin" / "bert4rec-recommend"), "--help"], cwd=tmp_path, pythonpath=site)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: bert4rec-recommend ")


@pytest.mark.parametrize("script", ["trainrec.py", "tune.py", "report.py", "export.py", "recommend.py"])
def test_the_checkout_scripts_still_answer(script, tmp_path):
    proc = run([sys.executable, str(REPO / script), "--help"], cwd=tmp_path, pythonpath=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {script} ")
    proc = run([sys.executable, str(REPO / script), "--NOT_A_FLAG"], cwd=tmp_path, pythonpath=None)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(f"error: {script}: ")


def test_main_returns_the_exit_code(capsys):
    from bert4rec.cli import export, report

    assert report.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: report.py ")
    assert report.main([]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: report.py: the following arguments are required: runs (see --help)"
    assert export.main(["--CHECKPOINTS", "x", "--output", "y", "--k", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --k must be >= 1, got 0"
