"""PySide6 6.12.0 aborts on Python <= 3.11 after a few thousand calls of
void-returning methods (None's refcount underflows).  This fails if such a
build is installed: the subprocess would die instead of exiting 0."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from PySide6.QtGui import QPainterPath
p = QPainterPath()
for i in range(10_000):
    p.lineTo(1, 1)
print("ok")
"""


def test_void_calls_do_not_abort():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
