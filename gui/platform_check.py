"""Check, before Qt starts, that the system libraries its X11 (xcb) platform plugin
needs are installed.

The PySide6 wheels bundle Qt but not the X11 helper libraries.  When one is
missing, Qt aborts with a message naming only the *first* library it could not
load, so a user on a minimal Debian installs one package, restarts, and meets the
next.  Looking the libraries up first lets us name all of them, and the packages
that provide them, in one line.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

# What PySide6's libqxcb.so links against beyond what every desktop has (from `ldd`):
# soname -> the Debian/Ubuntu package that ships it.
XCB_LIBRARIES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
}


def _ldconfig_sonames() -> set[str] | None:
    """Sonames in the dynamic linker's cache (None if ldconfig cannot be asked)."""
    for exe in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    return None


def _in_library_path(soname: str, env: Mapping[str, str]) -> bool:
    return any((Path(d) / soname).exists() for d in env.get("LD_LIBRARY_PATH", "").split(":") if d)


def missing_xcb_libraries(env: Mapping[str, str] | None = None,
                          known: Iterable[str] | None = None,
                          find_library: Callable[[str], str | None] = ctypes.util.find_library) -> list[str]:
    """Sonames from :data:`XCB_LIBRARIES` the dynamic linker would not find."""
    env = os.environ if env is None else env
    sonames = set(known) if known is not None else _ldconfig_sonames()
    missing = []
    for soname in XCB_LIBRARIES:
        if sonames is not None:
            found = soname in sonames
        else:  # no ldconfig: ctypes' lookup (name without "lib" and ".so.N")
            found = find_library(soname[3:].split(".so")[0]) is not None
        if not found and not _in_library_path(soname, env):
            missing.append(soname)
    return missing


def uses_xcb(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """Whether Qt will start its X11 platform plugin (Linux, no other platform asked for)."""
    if not platform.startswith("linux"):
        return False
    asked = env.get("QT_QPA_PLATFORM", "")
    if asked:
        return asked.split(";")[0].split(":")[0] == "xcb"
    return not env.get("WAYLAND_DISPLAY")


def platform_problem(env: Mapping[str, str] | None = None, platform: str = sys.platform,
                     known: Iterable[str] | None = None) -> str | None:
    """One line naming every missing library and the packages to install, or None."""
    env = os.environ if env is None else env
    if not uses_xcb(env, platform):
        return None
    missing = missing_xcb_libraries(env, known)
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES[m] for m in missing)
    return (f"nodegraph gui: Qt's X11 platform needs libraries that are not installed: {', '.join(missing)}"
            f" -> install them (Debian/Ubuntu: sudo apt-get install {packages}),"
            " or run without a display with QT_QPA_PLATFORM=offscreen")
