"""A bounded CPU hog for busy-machine tests and benchmarks: a child process that spins on one
core until its deadline, and exits within ~10 ms once the process that started it is gone."""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["HOG_CODE", "start_hog"]

HOG_CODE = r"""
import os, sys, time
end, parent = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])
while time.monotonic() < end and os.getppid() == parent:
    t = time.monotonic() + 0.01
    while time.monotonic() < t:
        pass
"""


def start_hog(seconds: float) -> subprocess.Popen:
    """One hog spinning for at most `seconds`; the caller kills it when done."""
    return subprocess.Popen([sys.executable, "-c", HOG_CODE, str(seconds), str(os.getpid())])
