"""Missing X11 libraries are named all at once, before Qt starts (issue 20)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gui import app
from gui.platform_check import XCB_LIBRARIES, missing_xcb_libraries, platform_problem, uses_xcb

ALL = set(XCB_LIBRARIES)
X11 = {"DISPLAY": ":0"}


def test_every_missing_library_and_its_package_in_one_line():
    known = ALL - {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    msg = platform_problem(X11, "linux", known)
    assert msg is not None and "\n" not in msg
    for soname, package in (("libxcb-cursor.so.0", "libxcb-cursor0"), ("libxcb-icccm.so.4", "libxcb-icccm4"),
                            ("libxcb-keysyms.so.1", "libxcb-keysyms1")):
        assert soname in msg and package in msg
    assert "apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in msg


def test_no_complaint_when_complete_or_not_using_x11(tmp_path):
    assert platform_problem(X11, "linux", ALL) is None
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", set()) is None
    assert platform_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux", set()) is None
    assert platform_problem(X11, "darwin", set()) is None
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb:dpi=1"}, "linux")
    # a library found through LD_LIBRARY_PATH counts as installed
    (tmp_path / "libxcb-icccm.so.4").write_bytes(b"")
    assert missing_xcb_libraries({"LD_LIBRARY_PATH": str(tmp_path)}, ALL - {"libxcb-icccm.so.4"}) == []


@pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")
def test_agrees_with_what_the_qt_plugin_actually_links():
    """Real data: ldd on PySide6's xcb plugin says which of our libraries resolve here."""
    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.exists():
        pytest.skip("this PySide6 has no xcb plugin")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30).stdout
    not_found = {line.split()[0] for line in out.splitlines() if "not found" in line}
    linked = {line.split()[0] for line in out.splitlines() if "=>" in line}
    assert set(missing_xcb_libraries({})) & linked == not_found & ALL


def test_main_prints_the_line_and_stops_before_creating_the_app(monkeypatch, capsys):
    monkeypatch.setattr("gui.platform_check.platform_problem", lambda: "nodegraph gui: missing libxcb-icccm.so.4")
    monkeypatch.setattr(app, "make_app", lambda *a: pytest.fail("QApplication must not be created"))
    assert app.main([]) == 1
    assert capsys.readouterr().err.strip() == "nodegraph gui: missing libxcb-icccm.so.4"
