"""Image files <-> tensors: decoding with Pillow, PNG encoding with embedded text.

Kept apart from the node definitions so it can be used (and tested) without
the engine, and so torch/Pillow are only imported when an image is actually
read or written.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


class ImageFileError(ValueError):
    """A file that cannot be decoded as an image (message meant for the user)."""


# Frames x pixels one image file may decode to: 2**27 (e.g. 16384 x 8192, or 64 frames of 1448 x 1448)
# is ~2 GiB as the float32 IMAGE + MASK a load makes (16 bytes per pixel).  Compressed formats make
# tiny files that expand enormously (a 6.9 KB GIF of many large frames -> ~54 GiB of frames; a 172 KB
# PNG just under Pillow's own limit -> 5 GiB), so the total is checked from the header, before decoding.
MAX_INPUT_PIXELS = 2**27
DECODED_BYTES_PER_PIXEL = 16


def _frame_count(im: Any) -> int:
    """Frames in an open image, from the container (no pixels decoded); 1 for stills and MPO."""
    if im.format == "MPO":
        return 1
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except (OSError, ValueError, EOFError, SyntaxError):
        return 1


def image_header(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(frames, height, width)`` of an image file from its header, without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    spath = os.fspath(path)
    try:
        with Image.open(spath) as im:
            width, height = im.size
            return _frame_count(im), height, width
    except FileNotFoundError:
        raise ImageFileError(f"{spath}: file not found") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{spath}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"{spath}: image is too large to load safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageFileError(f"{spath}: cannot read the image header ({exc})") from None


def check_decoded_size(frames: int, height: int, width: int, spath: str, limit: int = MAX_INPUT_PIXELS) -> None:
    """Refuse a file whose frames x pixels exceed ``limit`` (before any decoding)."""
    total = frames * height * width
    if total > limit:
        what = f"{frames} frames of {width}x{height}" if frames > 1 else f"{width}x{height} pixels"
        raise ImageFileError(f"{spath}: {what} would decode to about {total * DECODED_BYTES_PER_PIXEL / 2**30:.1f} "
                             f"GiB, over the limit of {limit:,} pixels (frames x width x height) per file")


def _frame_to_arrays(frame: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB float32 [H,W,3] in 0..1 and, if the frame has transparency, alpha [H,W]."""
    mode = frame.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit greyscale (PNG depth 16): Pillow stores it in 32-bit "I" mode, range 0..65535.
        gray = np.asarray(frame, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1), None
    if mode == "F":
        gray = np.asarray(frame, dtype=np.float32)
        return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1), None
    has_alpha = "A" in frame.getbands() or (mode in ("P", "L", "RGB") and "transparency" in frame.info)
    if has_alpha:
        arr = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
        return arr[..., :3], arr[..., 3]
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0, None


def load_image_file(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an image file into (IMAGE ``[B,H,W,3]``, MASK ``[B,H,W]``).

    * EXIF orientation is applied, so phone photos come out upright.
    * The mask is ``1 - alpha`` (transparent pixels are the ones to repaint, as
      in ComfyUI); an opaque image gets an all-zero mask of the same size.
    * Animated images (GIF, WebP, multi-page TIFF) become a batch of their
      frames; frames whose size differs from the first are skipped.  MPO
      (stereo JPEG) yields only its first image.

    Raises :class:`ImageFileError` for unreadable, damaged or oversized files.
    """
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    spath = os.fspath(path)
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    try:
        with Image.open(spath) as im:
            check_decoded_size(_frame_count(im), im.size[1], im.size[0], spath)
            frames = [im] if im.format == "MPO" else ImageSequence.Iterator(im)
            size = None
            for raw in frames:
                frame = ImageOps.exif_transpose(raw)
                if size is None:
                    size = frame.size
                elif frame.size != size:
                    continue
                rgb, alpha = _frame_to_arrays(frame)
                images.append(rgb)
                masks.append(1.0 - alpha if alpha is not None else np.zeros(rgb.shape[:2], np.float32))
    except FileNotFoundError:
        raise ImageFileError(f"{spath}: file not found") from None
    except UnidentifiedImageError:
        raise ImageFileError(f"{spath}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"{spath}: image is too large to load safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports damaged data through these
        raise ImageFileError(f"{spath}: cannot decode image ({exc})") from None
    if not images:
        raise ImageFileError(f"{spath}: the file holds no image frames")
    image = torch.from_numpy(np.stack(images)).float().contiguous()
    mask = torch.from_numpy(np.stack(masks)).float().contiguous()
    return image, mask


def encode_png(pixels: np.ndarray, text: Mapping[str, str] | None = None, *, compress_level: int = 4) -> bytes:
    """PNG bytes of one ``uint8`` image ``[H,W,C]`` (C = 1, 3 or 4) with ``tEXt`` chunks.

    Text values must be Latin-1 (``tEXt``'s charset); use :func:`workflow_text`
    for JSON, which escapes everything else so it always fits.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected uint8 [H,W,1|3|4] pixels, got {pixels.dtype} {pixels.shape}")
    arr = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    im = Image.fromarray(np.ascontiguousarray(arr))
    info = PngInfo()
    for key, value in (text or {}).items():
        value.encode("latin-1")  # fail loudly here rather than let Pillow silently switch chunk type
        info.add_text(key, value)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def workflow_text(doc: Mapping[str, Any]) -> str:
    """The workflow as compact JSON that is pure ASCII (non-ASCII is ``\\u``-escaped),
    so it fits a ``tEXt`` chunk and round-trips exactly."""
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"))
