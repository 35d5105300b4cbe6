"""Shared by the benchmarks: run a console script of the working tree or of a git revision.

``--before REF`` in a benchmark exports revision REF (its ``src/``, ``conf/`` and
``pyproject.toml``) and runs its console scripts as that revision declares them, with its
``src/`` first on PYTHONPATH, so old and new code run side by side on the same machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def export_revision(ref: str, into: Path) -> Path:
    """``src/``, ``conf/`` and ``pyproject.toml`` of git revision ``ref`` under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src", "conf", "pyproject.toml"],
        capture_output=True,
        check=True,
    )
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def console_command(script: str, revision: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Command line and environment that run console script ``script`` (e.g. ``mlplab-train``).

    Without ``revision`` it is the installed script of the working tree. With an exported
    revision it is that revision's entry point (``module:function`` from its pyproject.toml),
    called the way the installed wrapper would call it.
    """
    env = dict(os.environ)
    if revision is None:
        return [str(BIN / script)], env
    # Its [project.scripts] line, e.g. mlplab-train = "mlplab.tasks.train:main" (3.10: no tomllib)
    pyproject = (revision / "pyproject.toml").read_text()
    entry = re.search(rf'^{re.escape(script)}\s*=\s*"([\w.]+):(\w+)"', pyproject, re.MULTILINE)
    if entry is None:
        raise SystemExit(f"{revision}/pyproject.toml declares no console script {script}")
    module, function = entry.groups()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(revision / "src"), env.get("PYTHONPATH")])
    )
    code = (
        f"import sys; sys.argv[0] = {script!r}; "
        f"from {module} import {function}; sys.exit({function}())"
    )
    return [sys.executable, "-c", code], env
