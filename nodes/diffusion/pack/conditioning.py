"""Prompt encoding and ControlNet application."""

from __future__ import annotations

from nodegraph.context import NodeContext
from nodegraph.errors import NodeInputError
from nodegraph.spec import Float, In, Int, Out, String, node

from .common import MAX_RESOLUTION


@node("diffusion.text_encode", category="conditioning", display_name="Text Encode (Prompt)",
      inputs=[In("clip", "CLIP"), String("text", "", multiline=True,
                                         tooltip="prompt; (word:1.2) / (word) / [word] change emphasis; "
                                                 "embedding:name uses models/embeddings/name")],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def text_encode(ctx: NodeContext, clip, text: str):  # noqa: ANN001, ANN201
    """Encode a prompt with the model's text encoder(s).  Long prompts are split into
    75-token chunks; weights use ComfyUI's convention."""
    if clip is None:
        raise NodeInputError("clip", "the checkpoint has no text encoder", "connect a CLIP output that has one")
    return encode_prompt(ctx, clip, text, "text")


def encode_prompt(ctx: NodeContext, clip, text: str, input_name: str, encode=None):  # noqa: ANN001, ANN201
    """``clip.encode(text)`` (or ``encode(text, embeddings)``) with ``embedding:name`` words resolved
    from the embeddings folders; a missing or unusable embedding is an error on ``input_name``."""
    import inspect

    import torch

    from ..text.embeddings import EMBEDDING_PREFIX, EmbeddingError, EmbeddingLibrary, EmbeddingNotFound, EmbeddingSlots
    from .common import cpu_threads
    from .device_memory import encoders_on_device

    encode = encode or clip.encode
    embeddings = None
    if EMBEDDING_PREFIX in text:
        if "embeddings" not in inspect.signature(encode).parameters:
            raise NodeInputError(input_name, "textual-inversion embeddings are not supported for this text encoder",
                                 "remove the embedding:name words (SD1, SD2, SDXL and the refiner support them)")
        embeddings = EmbeddingSlots(EmbeddingLibrary.from_settings(ctx.settings).get)
    try:
        # the encoders visit the device for this prompt only (they leave it after encoding)
        with encoders_on_device(ctx, clip.encoders), cpu_threads(ctx, clip.encoders, 77), \
                torch.inference_mode():  # 77 tokens per chunk
            return encode(text) if embeddings is None else encode(text, embeddings=embeddings)
    except EmbeddingNotFound as exc:
        raise NodeInputError(input_name, f"embedding {exc.name!r} not found",
                             f"put {exc.name}.safetensors (or .pt / .bin) in one of: "
                             f"{', '.join(str(d) for d in exc.searched)}") from None
    except EmbeddingError as exc:
        raise NodeInputError(input_name, str(exc), "use an embedding made for this model family") from None
    except ValueError as exc:  # a text encoder that lacks a part (FLUX CLIP-L or T5 missing)
        raise NodeInputError("clip", str(exc), "load the model's text encoder(s) completely") from None


@node("diffusion.text_encode_sdxl_refiner", category="conditioning", display_name="Text Encode (SDXL Refiner)",
      inputs=[Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01,
                    tooltip="aesthetic score the refiner aims at (ComfyUI: 6 for positive, 2.5 for negative)"),
              Int("width", 1024, min=0, max=MAX_RESOLUTION, tooltip="original image width the refiner is told"),
              Int("height", 1024, min=0, max=MAX_RESOLUTION, tooltip="original image height the refiner is told"),
              String("text", "", multiline=True), In("clip", "CLIP")],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def text_encode_sdxl_refiner(ctx: NodeContext, ascore: float, width: int, height: int, text: str,  # noqa: ANN201
                             clip):  # noqa: ANN001
    """Encode a prompt for the SDXL refiner with its micro-conditioning: the refiner's vector input is
    the pooled text ++ embeddings of (height, width, crop 0, 0, aesthetic score)."""
    from dataclasses import replace

    if clip is None:
        raise NodeInputError("clip", "the checkpoint has no text encoder", "connect a CLIP output that has one")
    cond = encode_prompt(ctx, clip, text, "text")
    return replace(cond, size_cond=(float(height), float(width), 0.0, 0.0, float(ascore)))


def _size(name: str, default: int, tooltip: str) -> Int:
    return Int(name, default, min=0, max=MAX_RESOLUTION, tooltip=tooltip)


@node("diffusion.text_encode_sdxl", category="conditioning", display_name="Text Encode (SDXL)",
      inputs=[_size("width", 1024, "original image width SDXL is told (its size conditioning)"),
              _size("height", 1024, "original image height SDXL is told"),
              _size("crop_w", 0, "left edge of the crop SDXL is told, in pixels (0 = uncropped)"),
              _size("crop_h", 0, "top edge of the crop SDXL is told, in pixels"),
              _size("target_width", 1024, "target image width SDXL is told"),
              _size("target_height", 1024, "target image height SDXL is told"),
              String("text_g", "", multiline=True,
                     tooltip="prompt for the OpenCLIP bigG encoder (and the pooled vector)"),
              String("text_l", "", multiline=True, tooltip="prompt for the CLIP-L encoder"),
              In("clip", "CLIP")],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def text_encode_sdxl(ctx: NodeContext, width: int, height: int, crop_w: int, crop_h: int,  # noqa: ANN201
                     target_width: int, target_height: int, text_g: str, text_l: str, clip):  # noqa: ANN001
    """ComfyUI's CLIPTextEncodeSDXL: a prompt per SDXL text encoder plus the size micro-conditioning
    SDXL was trained with (original size, crop offset, target size), which plain Text Encode fills
    with the generated image's size and no crop."""
    from dataclasses import replace

    from ..runtime import TextEncoder

    if clip is None:
        raise NodeInputError("clip", "the checkpoint has no text encoder", "connect a CLIP output that has one")
    if not isinstance(clip, TextEncoder) or len(clip.encoders) != 2:
        raise NodeInputError("clip", "Text Encode (SDXL) needs SDXL's two text encoders (CLIP-L and OpenCLIP bigG)",
                             "use Text Encode (Prompt) for this model")

    def encode(text: str, embeddings=None):  # noqa: ANN001, ANN202
        return clip.encode(text, embeddings, text_l=text_l)

    cond = encode_prompt(ctx, clip, text_g, "text_g", encode=encode)
    return replace(cond, size_cond=(float(height), float(width), float(crop_h), float(crop_w),
                                    float(target_height), float(target_width)))


@node("diffusion.clip_set_last_layer", category="conditioning", display_name="CLIP Set Last Layer",
      inputs=[In("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1,
                                      tooltip="-1 = last layer, -2 = penultimate (\"clip skip 2\")")],
      outputs=[Out("CLIP", "CLIP")])
def clip_set_last_layer(ctx: NodeContext, clip, stop_at_clip_layer: int):  # noqa: ANN001, ANN201
    """Use an earlier hidden layer of the text encoder (clip skip)."""
    from dataclasses import replace

    return replace(clip, clip_skip=-stop_at_clip_layer)


def _hint(image, name: str):  # noqa: ANN001, ANN202
    if image.ndim != 4:
        raise NodeInputError(name, f"expected an IMAGE [B,H,W,C], got shape {tuple(image.shape)}",
                             "connect an image output")
    return image[..., :3].permute(0, 3, 1, 2).contiguous().float()


def _attach(cond, hint):  # noqa: ANN001, ANN202
    """Attach one ControlHint to every entry of a CONDITIONING value (ControlNets stay per entry)."""
    from dataclasses import replace

    from ..runtime import map_entries

    return map_entries(cond, lambda c: replace(c, controls=c.controls + (hint,)))


def _apply(cond, control_net, hint, strength: float, start: float, end: float):  # noqa: ANN001, ANN202
    from ..runtime import ControlHint

    return _attach(cond, ControlHint(control_net, hint, strength, start, end))


@node("diffusion.controlnet_apply", category="conditioning/controlnet", display_name="Apply ControlNet",
      inputs=[In("conditioning", "CONDITIONING"), In("control_net", "CONTROL_NET"), In("image", "IMAGE"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)],
      outputs=[Out("CONDITIONING", "CONDITIONING")])
def controlnet_apply(ctx: NodeContext, conditioning, control_net, image, strength: float):  # noqa: ANN001, ANN201
    """Guide generation with a control image (edges, masks, poses…) on one conditioning."""
    return _apply(conditioning, control_net, _hint(image, "image"), strength, 0.0, 1.0)


@node("diffusion.controlnet_apply_advanced", category="conditioning/controlnet",
      display_name="Apply ControlNet (Advanced)",
      inputs=[In("positive", "CONDITIONING"), In("negative", "CONDITIONING"), In("control_net", "CONTROL_NET"),
              In("image", "IMAGE"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001)],
      outputs=[Out("positive", "CONDITIONING"), Out("negative", "CONDITIONING")])
def controlnet_apply_advanced(ctx: NodeContext, positive, negative, control_net, image,  # noqa: ANN001, ANN201
                              strength: float, start_percent: float, end_percent: float):
    """Apply a ControlNet to both conditionings for part of the schedule."""
    if end_percent < start_percent:
        raise NodeInputError("end_percent", "end_percent is before start_percent", "make end >= start")
    hint = _hint(image, "image")
    from ..runtime import ControlHint

    c = ControlHint(control_net, hint, strength, start_percent, end_percent)
    # The same ControlHint object on both lets the sampler batch cond and uncond together.
    return _attach(positive, c), _attach(negative, c)


NODES = [text_encode, text_encode_sdxl, text_encode_sdxl_refiner, clip_set_last_layer, controlnet_apply,
         controlnet_apply_advanced]
