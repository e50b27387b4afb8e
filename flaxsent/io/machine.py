"""Where a run ran: the CPU, the library versions and the commit, named in every report."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "torch", "transformers", "tokenizers", "numpy", "flaxsent")


def git_state() -> dict[str, Any]:
    """The commit of the checkout this code runs from, and whether tracked files differ from it.

    Both None outside a git checkout (an installed wheel), or where git is missing.
    """
    here = Path(__file__).resolve()
    unknown: dict[str, Any] = {"commit": None, "dirty": None}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              timeout=30, cwd=here.parent)

    try:
        # this file must be tracked there: a wheel inside someone else's repository is not ours
        if git("ls-files", "--error-unmatch", here.name).returncode != 0:
            return unknown
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain",
                                                      "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return unknown
    if head.returncode != 0:
        return unknown
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def versions() -> dict[str, str | None]:
    """Python and the installed versions of every library the numbers depend on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
