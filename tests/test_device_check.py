"""The prepared device check (``benchmarks/device/cuda_vs_cpu.py``) runs on CPU, every row.

A device session is short and rare, so the script must not first fail there: its smoke run puts
every row through the same code on CPU (CUDA itself is only exercised on a device machine).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from regzoo.bench import BENCHMARKS_DIR


def test_the_device_check_fills_every_row_on_cpu(tmp_path):
    for package in ("ot", "dagma", "hyde", "skimage"):
        pytest.importorskip(package, reason="the device check compares with the peers extra")
    spec = importlib.util.spec_from_file_location("cuda_vs_cpu",
                                                  BENCHMARKS_DIR / "device" / "cuda_vs_cpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "cuda_vs_cpu.md"
    threads = torch.get_num_threads()
    try:
        script.main(["--device", "cpu", "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script pins the CPU side to one thread
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")
            and not line.startswith("| case")]
    assert len(rows) == 1 + 1 + len(script.HYDE_OPTIONS)
    assert not [row for row in rows if "error:" in row]
