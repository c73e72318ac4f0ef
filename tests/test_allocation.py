"""The engines' allocator setting: freed buffers stay in the process (no page faults on the next step)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import torch
from mdplugin.allocation import retain_freed_memory

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

applied = retain_freed_memory()
before = rss_mb()
buffer = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MB: above glibc's largest mmap threshold
del buffer
print(applied, rss_mb() - before)
"""


def probe(environment: dict[str, str]) -> tuple[bool, float]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**os.environ, **environment}
    )
    applied, kept_mb = completed.stdout.split()
    return applied == "True", float(kept_mb)


def test_freed_buffers_stay_in_the_process():
    applied, kept_mb = probe({})
    assert applied and kept_mb > 50  # the 64 MB buffer, freed, is still resident for the next step


def test_the_setting_can_be_turned_off():
    applied, kept_mb = probe({"MDPLUGIN_RETAIN_HEAP": "0"})
    assert not applied and kept_mb < 10  # glibc's default: the freed mmap goes back to the kernel
