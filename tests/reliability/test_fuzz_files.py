"""File-level fuzzing of everything that opens a workflow (``open_any``: our JSON, ComfyUI UI/API JSON).

Real files (the ComfyUI fixtures and the shipped workflows) are mutated by a seeded
mutator (:mod:`tests.reliability.mutator`); every result must open, or fail with one
:class:`WorkflowFileError` that names the problem — never another exception — and
whatever opens must validate and save as standard JSON.  ``open_any`` turns any
exception a reader lets slip into a generic "damaged file" error so users never see a
traceback; these tests fail when that safety net is *needed*, because each such file
deserves its own message.  Files that crashed the readers are kept in ``fixtures/``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nodegraph.cli import main
from nodegraph.open import DAMAGED
from tests.reliability.fuzz_budget import examples
from tests.reliability.mutator import SEEDS, mutated_file, open_checked

FIXTURES = Path(__file__).parent / "fixtures"
CRASHERS = sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", CRASHERS, ids=[p.stem for p in CRASHERS])
def test_files_that_crashed_a_reader_open_or_give_one_clean_error(path: Path) -> None:
    error = open_checked(path)
    if error is not None:
        assert DAMAGED not in str(error), f"{path.name} still needs the safety net: {error}"
        assert str(path) in str(error)


@pytest.mark.parametrize("path", CRASHERS[:6], ids=[p.stem for p in CRASHERS[:6]])
def test_cli_validate_reports_a_bad_file_in_one_line_with_exit_2(path: Path, capsys) -> None:
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2)
    if code == 2 and "problem(s)" not in err:  # a file error: one line naming the file
        assert len(err.strip().splitlines()) == 1 and str(path) in err


def test_the_seed_corpus_is_real() -> None:
    assert len(SEEDS) >= 8  # the ComfyUI fixtures and the shipped workflows


def test_mutated_real_files_never_crash(tmp_path: Path) -> None:
    """Seeded, so a failure names the seed that reproduces it (``mutated_file(random.Random(seed))``)."""
    path = tmp_path / "wf.json"
    for seed in range(1_000_000, 1_000_000 + examples(1500)):
        path.write_bytes(mutated_file(random.Random(seed)))
        try:
            error = open_checked(path)
        except Exception as exc:  # noqa: BLE001 - report which seed crashed, and how
            raise AssertionError(f"seed {seed}: {type(exc).__name__}: {exc}") from exc
        assert error is None or DAMAGED not in str(error), f"seed {seed} needed the safety net: {error}"
