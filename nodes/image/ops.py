"""Image and mask operations on tensors (no engine, no files).

Conventions (ComfyUI's, so existing habits carry over):

* IMAGE: ``float32`` tensor ``[B, H, W, C]`` with values in 0..1 (C is 3, or 4 with alpha);
* MASK: ``float32`` tensor ``[B, H, W]`` in 0..1, where 1 marks the area to repaint.

Every function returns a new tensor and never modifies its arguments, because
node outputs are cached and shared between consumers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .constants import CROP_MODES, MASK_CHANNELS, SCALE_METHODS

# -- checks --------------------------------------------------------------------------------------


def check_image(image: torch.Tensor, what: str = "image") -> None:
    """Raise ``ValueError`` unless ``image`` is a ``[B,H,W,C]`` tensor with at least one pixel."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{what} must be a [batch, height, width, channels] tensor, got {shape}")
    if min(image.shape[:3]) < 1:
        raise ValueError(f"{what} is empty: shape {tuple(image.shape)}")


def check_mask(mask: torch.Tensor, what: str = "mask") -> None:
    """Raise ``ValueError`` unless ``mask`` is a ``[B,H,W]`` tensor with at least one pixel."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{what} must be a [batch, height, width] tensor, got {shape}")
    if min(mask.shape) < 1:
        raise ValueError(f"{what} is empty: shape {tuple(mask.shape)}")


def as_mask(mask: torch.Tensor) -> torch.Tensor:
    """Accept ``[H,W]`` or ``[B,H,W]`` masks (some nodes of other packs produce 2-D ones)."""
    return mask.unsqueeze(0) if mask.ndim == 2 else mask


# -- resizing ------------------------------------------------------------------------------------


def _resize_bchw(x: torch.Tensor, height: int, width: int, method: str) -> torch.Tensor:
    """Resize a ``[B,C,H,W]`` float tensor.  Bilinear/bicubic antialias when shrinking
    (otherwise a 4x downscale aliases badly); bicubic and lanczos overshoot, so
    their result is clamped back to 0..1."""
    if method not in SCALE_METHODS:
        raise ValueError(f"unknown scale method {method!r}; expected one of {SCALE_METHODS}")
    if (x.shape[-2], x.shape[-1]) == (height, width):
        return x.clone()
    if method == "nearest":
        return F.interpolate(x, size=(height, width), mode="nearest-exact")
    if method == "area":
        return F.interpolate(x, size=(height, width), mode="area")
    if method in ("bilinear", "bicubic"):
        out = F.interpolate(x, size=(height, width), mode=method, align_corners=False, antialias=True)
        return out.clamp_(0.0, 1.0)
    return _lanczos(x, height, width)


def _lanczos(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Lanczos through Pillow's float ("F") mode, channel by channel (torch has no lanczos)."""
    from PIL import Image

    arr = x.detach().to("cpu", torch.float32).numpy()
    out = np.empty((arr.shape[0], arr.shape[1], height, width), dtype=np.float32)
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            im = Image.fromarray(np.ascontiguousarray(arr[b, c]), mode="F")
            out[b, c] = np.asarray(im.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return torch.from_numpy(out).to(x.device).clamp_(0.0, 1.0)


def resize(image: torch.Tensor, width: int, height: int, method: str = "bilinear") -> torch.Tensor:
    """Resize an IMAGE ``[B,H,W,C]`` to exactly ``width`` x ``height``."""
    check_image(image)
    if width < 1 or height < 1:
        raise ValueError(f"target size must be at least 1x1, got {width}x{height}")
    x = image.movedim(-1, 1).float()
    return _resize_bchw(x, height, width, method).movedim(1, -1).contiguous()


def resize_mask(mask: torch.Tensor, width: int, height: int, method: str = "bilinear") -> torch.Tensor:
    """Resize a MASK ``[B,H,W]``."""
    mask = as_mask(mask)
    check_mask(mask)
    return _resize_bchw(mask.unsqueeze(1).float(), height, width, method).squeeze(1)


def target_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """Resolve a requested size where 0 means "keep the aspect ratio from the other side"
    (both 0: unchanged)."""
    if width < 0 or height < 0:
        raise ValueError("width and height must be >= 0")
    if width == 0 and height == 0:
        return src_w, src_h
    if width == 0:
        return max(1, round(src_w * height / src_h)), height
    if height == 0:
        return width, max(1, round(src_h * width / src_w))
    return width, height


def scale(image: torch.Tensor, width: int, height: int, method: str = "bilinear",
          crop: str = "disabled") -> torch.Tensor:
    """Scale to ``width`` x ``height`` (0 = follow the aspect ratio).

    ``crop="center"`` keeps the aspect ratio: the image is first center-cropped
    to the target's aspect ratio, then resized, so nothing is stretched.
    """
    check_image(image)
    if crop not in CROP_MODES:
        raise ValueError(f"unknown crop mode {crop!r}; expected one of {CROP_MODES}")
    _, h, w, _ = image.shape
    tw, th = target_size(w, h, width, height)
    if crop == "center":
        # Largest window with the target aspect ratio, centred.
        if w * th > tw * h:  # source is wider than the target: trim left/right
            cw, ch = max(1, round(h * tw / th)), h
        else:  # source is taller: trim top/bottom
            cw, ch = w, max(1, round(w * th / tw))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        image = image[:, y0:y0 + ch, x0:x0 + cw, :]
    return resize(image, tw, th, method)


def scale_by(image: torch.Tensor, factor: float, method: str = "bilinear") -> torch.Tensor:
    """Scale both sides by ``factor`` (rounded to whole pixels, at least 1)."""
    check_image(image)
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"scale factor must be a positive number, got {factor}")
    _, h, w, _ = image.shape
    return resize(image, max(1, round(w * factor)), max(1, round(h * factor)), method)


# -- geometry -----------------------------------------------------------------------------------


def crop(image: torch.Tensor, x: int, y: int, width: int, height: int) -> torch.Tensor:
    """The ``width`` x ``height`` window whose top-left corner is (x, y), clipped to the image.

    Raises ``ValueError`` if the window lies entirely outside the image.
    """
    check_image(image)
    _, h, w, _ = image.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + width), min(h, y + height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop window x={x}, y={y}, {width}x{height} lies outside the {w}x{h} image")
    return image[:, y0:y1, x0:x1, :].clone()


def pad_for_outpaint(image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                     feathering: int = 0, fill: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend the canvas for outpainting; returns (padded image, mask).

    New pixels are mid-grey (``fill``) and masked 1.  With ``feathering`` F > 0
    the mask also reaches into the original image along the padded sides,
    fading as ``((F - d) / F) ** 2`` with ``d`` the distance in pixels from the
    nearest padded side (0 for the outermost original row), so the sampler may
    repaint a soft seam instead of a hard edge.  Unpadded sides get no feather.
    """
    check_image(image)
    if min(left, top, right, bottom, feathering) < 0:
        raise ValueError("padding and feathering must be >= 0")
    b, h, w, c = image.shape
    out = torch.full((b, h + top + bottom, w + left + right, c), float(fill), dtype=image.dtype)
    out[:, top:top + h, left:left + w, :] = image
    mask = torch.ones((b, h + top + bottom, w + left + right), dtype=torch.float32)
    inner = torch.zeros((h, w), dtype=torch.float32)
    if feathering > 0:
        big = float(h + w)  # "infinitely far" for sides that were not padded
        ys = torch.arange(h, dtype=torch.float32)
        xs = torch.arange(w, dtype=torch.float32)
        dy = torch.minimum(ys if top > 0 else torch.full_like(ys, big),
                           (h - 1 - ys) if bottom > 0 else torch.full_like(ys, big))
        dx = torch.minimum(xs if left > 0 else torch.full_like(xs, big),
                           (w - 1 - xs) if right > 0 else torch.full_like(xs, big))
        d = torch.minimum(dy[:, None], dx[None, :])
        inner = ((feathering - d).clamp(min=0) / feathering) ** 2
    mask[:, top:top + h, left:left + w] = inner
    return out, mask


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Paste ``source`` onto ``destination`` with its top-left corner at (x, y).

    Parts falling outside the destination are clipped (x, y may be negative).
    ``mask`` (same size as the source, else resized to it; 1 = take the source)
    blends softly.  Batches broadcast: a single source or mask is applied to
    every destination image.  Channels are matched to the destination (alpha
    dropped or an opaque one added).
    """
    check_image(destination, "destination")
    check_image(source, "source")
    bd, hd, wd, cd = destination.shape
    bs, hs, ws, cs = source.shape
    if cs != cd:
        source = source[..., :cd] if cs > cd else torch.cat(
            [source, torch.ones((bs, hs, ws, cd - cs), dtype=source.dtype)], dim=-1)
    out = destination.clone()
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(wd, x + ws), min(hd, y + hs)
    if x1 <= x0 or y1 <= y0:
        return out  # entirely outside: nothing to paste
    src = source[:, y0 - y:y1 - y, x0 - x:x1 - x, :]
    if src.shape[0] not in (1, bd):
        src = _repeat_to(src, bd)
    dst = out[:, y0:y1, x0:x1, :]
    if mask is None:
        out[:, y0:y1, x0:x1, :] = src.expand_as(dst)
        return out
    m = as_mask(mask).float()
    if m.shape[-2:] != (hs, ws):
        m = resize_mask(m, ws, hs, "bilinear")
    m = m[:, y0 - y:y1 - y, x0 - x:x1 - x]
    if m.shape[0] not in (1, bd):
        m = _repeat_to(m, bd)
    m = m.unsqueeze(-1)
    out[:, y0:y1, x0:x1, :] = src * m + dst * (1.0 - m)
    return out


def _repeat_to(t: torch.Tensor, n: int) -> torch.Tensor:
    """Cycle a batch to length ``n`` (a 2-image batch applied to 4 images repeats)."""
    reps = -(-n // t.shape[0])
    return t.repeat(reps, *([1] * (t.ndim - 1)))[:n]


def batch(images: Sequence[torch.Tensor], method: str = "bilinear") -> torch.Tensor:
    """Concatenate image batches; later images are resized to the first one's size."""
    if not images:
        raise ValueError("nothing to batch")
    first = images[0]
    check_image(first, "image1")
    _, h, w, c = first.shape
    parts = [first]
    for i, img in enumerate(images[1:], start=2):
        check_image(img, f"image{i}")
        if img.shape[1:3] != (h, w):
            img = resize(img, w, h, method)
        if img.shape[-1] != c:
            img = img[..., :c] if img.shape[-1] > c else torch.cat(
                [img, torch.ones((*img.shape[:3], c - img.shape[-1]), dtype=img.dtype)], dim=-1)
        parts.append(img)
    return torch.cat(parts, dim=0)


# -- colour / mask conversion -------------------------------------------------------------------


def invert(image: torch.Tensor) -> torch.Tensor:
    """``1 - x`` on colour channels (an alpha channel is kept as it is)."""
    check_image(image)
    out = image.clone()
    out[..., :3] = 1.0 - image[..., :3]
    return out


def invert_mask(mask: torch.Tensor) -> torch.Tensor:
    """``1 - mask``: swap the area to repaint and the area to keep."""
    return 1.0 - as_mask(mask)


def image_to_mask(image: torch.Tensor, channel: str = "red") -> torch.Tensor:
    """One channel of an image as a mask."""
    check_image(image)
    if channel not in MASK_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {MASK_CHANNELS}")
    idx = MASK_CHANNELS.index(channel)
    if idx >= image.shape[-1]:
        raise ValueError(f"the image has {image.shape[-1]} channels, so it has no {channel} channel")
    return image[..., idx].clone()


def mask_to_image(mask: torch.Tensor) -> torch.Tensor:
    """A mask as a grey RGB image (white = 1)."""
    mask = as_mask(mask)
    check_mask(mask)
    return mask.unsqueeze(-1).repeat(1, 1, 1, 3).float()


def grow_mask(mask: torch.Tensor, pixels: int, tapered_corners: bool = True) -> torch.Tensor:
    """Dilate (``pixels`` > 0) or erode (< 0) a mask by whole pixels.

    Each step takes the maximum over a 3x3 neighbourhood; ``tapered_corners``
    uses the 4-neighbour cross instead, which rounds the corners of a grown
    rectangle (diamond growth) rather than keeping them square.
    """
    mask = as_mask(mask).float()
    check_mask(mask)
    if pixels == 0:
        return mask.clone()
    m = mask if pixels > 0 else -mask  # erosion = -dilate(-m)
    m = m.unsqueeze(1)
    for _ in range(abs(pixels)):
        if tapered_corners:
            p = F.pad(m, (1, 1, 1, 1), mode="replicate")
            m = torch.stack([p[..., 1:-1, 1:-1], p[..., :-2, 1:-1], p[..., 2:, 1:-1],
                             p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(dim=0)
        else:
            m = F.max_pool2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)
    m = m.squeeze(1)
    return m if pixels > 0 else -m


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, truncated at 3 sigma."""
    radius = max(1, math.ceil(3.0 * sigma))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return k / k.sum()


def blur_mask(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian-blur a mask (separable; edges reflect so borders do not darken)."""
    mask = as_mask(mask).float()
    check_mask(mask)
    if sigma <= 0:
        return mask.clone()
    k = gaussian_kernel1d(sigma)
    r = (k.numel() - 1) // 2
    m = mask.unsqueeze(1)
    # Reflect padding needs the pad to be smaller than the side; fall back to replicate.
    mode = "reflect" if r < min(m.shape[-2:]) else "replicate"
    m = F.conv2d(F.pad(m, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return m.squeeze(1).clamp_(0.0, 1.0)


# -- edges ---------------------------------------------------------------------------------------


def canny(image: torch.Tensor, low: int = 100, high: int = 200) -> torch.Tensor:
    """Canny edges (OpenCV) as a white-on-black RGB image, the hint ControlNet-canny expects."""
    import cv2

    check_image(image)
    if not 0 <= low <= high:
        raise ValueError(f"thresholds must satisfy 0 <= low <= high, got low={low}, high={high}")
    out = []
    for img in to_uint8(image):
        rgb = img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, axis=-1)
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(gray, float(low), float(high))
        out.append(torch.from_numpy(edges).float().div_(255.0))
    return torch.stack(out).unsqueeze(-1).repeat(1, 1, 1, 3)


# -- conversion to/from 8-bit --------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[B,H,W,C]`` float 0..1 -> ``uint8`` array, rounding to nearest (so k/255 survives exactly)."""
    check_image(image)
    arr = image.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round_()
    return arr.to(torch.uint8).numpy()


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """``[H,W,C]`` or ``[B,H,W,C]`` ``uint8`` -> float 0..1 IMAGE."""
    t = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return t.unsqueeze(0) if t.ndim == 3 else t
