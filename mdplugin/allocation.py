"""Keep freed memory in the process, so that every MD step does not page its activations in again.

glibc's malloc serves each buffer above its mmap threshold (at most 32 MB) with a fresh mmap and returns it to
the kernel when freed; an evaluation of a large system allocates hundreds of such buffers, so every step pays
page faults for all of them (system time that grew faster than N: the local water model's CPU time per atom rose
2.2x from 1.5k to 32k atoms). Setting the same options as MALLOC_MMAP_MAX_=0 / MALLOC_TRIM_THRESHOLD_ /
MALLOC_TOP_PAD_, at run time through mallopt, keeps the heap after the first step; the process's memory stays at
its peak, which an MD engine reaches on its first step anyway. Applied by the engine adapters (`mdplugin.load`,
ASE, OpenMM); MDPLUGIN_RETAIN_HEAP=0 turns it off; a no-op where malloc is not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
TOP_PAD_BYTES = 512 << 20  # grow the heap in steps of 512 MB: fewer brk calls for large systems

_applied = False


def retain_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (once per process); True if the options were set."""
    global _applied
    if _applied:
        return True
    if os.environ.get("MDPLUGIN_RETAIN_HEAP", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # the trim threshold is an int: the largest value means "never give the top of the heap back"
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, TOP_PAD_BYTES))
    _applied = all(mallopt(option, value) == 1 for option, value in settings)
    return _applied
