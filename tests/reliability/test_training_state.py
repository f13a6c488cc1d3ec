"""The training scripts' state files are full pickles: they are only read from a private folder."""

from __future__ import annotations

import os

import pytest
import torch

from training.common import load_work


def test_state_is_refused_from_a_folder_others_can_write(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    torch.save({"step": 3}, folder / "unet.pt")
    os.chmod(folder, 0o777)
    with pytest.raises(PermissionError, match="NODEGRAPH_TRAIN_DIR"):
        load_work(folder / "unet.pt")
    os.chmod(folder, 0o700)
    assert load_work(folder / "unet.pt") == {"step": 3}
