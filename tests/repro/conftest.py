"""Shared pieces of the reproductions' smoke tests."""

from pathlib import Path
from typing import Any

import pytest

from regzoo.repro.runner import run_reproduction


def run_tiny(slug: str, factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``regzoo repro <slug> --tiny`` in a temporary folder with a temporary asset cache."""
    out = factory.mktemp(slug) / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGZOO_CACHE", str(factory.mktemp("cache")))
        return out, run_reproduction(slug, "tiny", out=out, jobs=1, progress=False,
                                     command=f"regzoo repro {slug} --tiny")
