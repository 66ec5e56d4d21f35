"""Run several reproductions' ``--tiny`` presets one after another in one torchrun group.

``python -m torch.distributed.run --nproc_per_node=2 torchrun_tiny_sweep.py OUT SLUG...``: each
process runs ``regzoo repro SLUG --tiny --out OUT/SLUG`` in turn, as the CLI would under
torchrun, and stops at the first failure with the slug in its message. One launch for all slugs
spares the interpreter and process-group start-up of one torchrun per reproduction (the test in
``test_gloo.py`` that reads the results is the contract; this file is its worker, not a test).
"""

from __future__ import annotations

import sys
from pathlib import Path

from regzoo.cli import main


def sweep(out: Path, slugs: list[str]) -> None:
    for slug in slugs:
        code = main(["repro", slug, "--tiny", "--out", str(out / slug)])
        if code != 0:
            raise SystemExit(f"regzoo repro {slug} --tiny exited with {code} under torchrun")


if __name__ == "__main__":
    sweep(Path(sys.argv[1]), sys.argv[2:])
