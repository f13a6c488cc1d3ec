"""Render the editor window offscreen to a PNG, to look at every visible change.

    python scripts/screenshot.py [WORKFLOW] [-o out.png] [--run] [--size 1600x960]

``--run`` runs the workflow first (in the editor's worker thread, as a user
would) and waits for it, so node states, previews and the gallery show.
Without models the run fails on the loader and the error display is what you see.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workflow", nargs="?")
    p.add_argument("-o", "--output", default="screenshot.png")
    p.add_argument("--run", action="store_true")
    p.add_argument("--models-dir")
    p.add_argument("--size", default="1600x960")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from gui.app import create_window, make_app

    app = make_app()
    tmp = Path(tempfile.mkdtemp(prefix="ng-shot-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp))
    win = create_window(args.workflow, models_dir=args.models_dir, output_dir=str(tmp / "output"), recover=False,
                        recovery_path=tmp / "recovery.json",
                        qsettings=QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    w, h = (int(v) for v in args.size.split("x"))
    win.resize(w, h)
    win.show()
    app.processEvents()
    win.view.frame_all()
    if args.run:
        win.run()
        t0 = time.time()
        while (win.runner.busy or win.runner.queued) and time.time() - t0 < args.timeout:
            app.processEvents()
            time.sleep(0.02)
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)
    win.revalidate()
    app.processEvents()
    win.view.frame_all()
    app.processEvents()
    win.grab().save(args.output)
    print(args.output)
    win.shutdown()
    QApplication.processEvents()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
