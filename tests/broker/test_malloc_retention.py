"""The broker keeps freed heap memory for reuse (keep_freed_memory): measured in a child
process, since the setting is process-wide."""

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, sys
from distlog.broker.__main__ import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
buffers = [bytearray(1_000_000) for _ in range(24)]  # batch-sized buffers, as a broker's
del buffers
print(libc.mallinfo2().fordblks)  # free bytes the heap kept instead of giving back
"""


def free_bytes_kept(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and "mallinfo2" in out.stderr:
        pytest.fail(f"this C library has no mallinfo2: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_freed_batch_buffers_stay_in_the_heap_for_the_next_batches():
    kept = free_bytes_kept("keep")
    assert kept >= 20_000_000, f"only {kept} bytes kept: the pages went back to the kernel"
    assert free_bytes_kept("default") < 20_000_000, "glibc's defaults already keep them: the test proves nothing"
