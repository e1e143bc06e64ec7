"""Rendering: a pure function of (original bytes, watermark bytes, size) -> (bytes, format). No
I/O, no server: the service fetches the original and each of the size's watermarks.

``prepare`` reads the header only (cheap): ``probe`` sniffs the format and refuses unsupported
formats and image bombs (too many pixels per frame); ``steps.layout`` computes the geometry
(target box, resized size, crops, the operations' box rules; never upscaling unless asked) and
refuses plans whose intermediate image would be too large; ``animated.animated_output``
decides whether an animation stays animated (within its budget of frames and of decoded and
resized pixels over all frames, else its first frame as a still); and it estimates the memory
the render will hold (each watermark's header is probed with the original's limits and its
pixels counted). ``execute`` runs the pipeline (``pipeline.py``): decoding, scaling,
cropping and the operations, the same steps for a still and for every frame of an animation,
then encoding, all under the request's deadline.

A size whose ``output`` is a document (``tofu.render.documents``) goes the same way: ``info``
plans a thumbnail of the original (shrink-on-load, checked against the same limits and
admitted by its memory like any render), which the pipeline decodes and describes in JSON
instead of encoding it; thumbor's ``meta`` describes the planned geometry, from the header.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tofu.errors import TofuError
from tofu.negotiate import Negotiated
from tofu.render import animated, documents, pipeline, steps
from tofu.render.cancel import Cancellation
from tofu.render.runtime import configure_libvips, configure_malloc
from tofu.render.steps import Box, Geometry, RenderSettings, Rendition, Source
from tofu.transform import FillKind, ImageFormat, Output, Size

__all__ = [
    "Cancellation",
    "Plan",
    "RenderSettings",
    "Rendition",
    "configure_libvips",
    "configure_malloc",
    "execute",
    "prepare",
    "render",
]


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``prepare`` learnt from the header: enough to admit the render by its memory."""

    source: Source
    geometry: Geometry
    size: Size  # with the operations' box rules applied
    output: ImageFormat
    animated: bool  # every frame of an animation, within budget
    memory_bytes: int  # about the most the render will hold at once
    request: Size | None = None  # the size as asked, when it differs from ``size``
    cut: Source | None = None  # a manual crop (without trim) of the original, from the header
    cut_box: Box | None = None  # where that crop lies in the decoded original
    document: Output = Output.IMAGE  # what the render gives: an image, or a JSON document
    watermarks: tuple[Source, ...] = ()  # the header of each of the operations' watermarks


def prepare(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None = None,
    watermarks: Sequence[bytes] = (),
) -> Plan:
    """The header's part (cheap). The output format is the URL's, else ``negotiated`` (from
    the Accept header), else the source's family (a PNG without alpha as JPEG with
    ``auto_jpeg``); animated sources within budget stay animated. ``watermarks``: the bytes of
    each of the operations' watermarks, probed with the original's limits. Raises
    ``UnsupportedMediaType`` or ``Unprocessable``."""
    source = steps.probe(data, settings)
    if size.output is Output.INFO:
        # The placeholders' thumbnail, first frame only; kept with its alpha (PNG's rules).
        thumbnail, geometry = steps.layout(source, documents.INFO_THUMBNAIL, settings)
        return Plan(
            source,
            geometry,
            thumbnail,
            ImageFormat.PNG,
            animated=False,
            memory_bytes=steps.memory_bytes(source, geometry),
            document=Output.INFO,
        )
    ops = size.operations
    marks = tuple(
        _probe_watermark(mark, spec.key, settings)
        for mark, spec in zip(watermarks, ops.watermarks, strict=True)
    )
    cut = cut_box = None
    if ops.cuts_source and ops.trim is None:
        cut_box = steps.cut_box(source.width, source.height, ops)
        width, height = cut_box[2:] if cut_box else (source.width, source.height)
        cut = steps.cut_source(source, width, height)
    # With a trim, what is left is known only from the pixels: the pipeline lays it out again
    # then; this layout of the whole original bounds it.
    offset = cut_box[:2] if cut_box else (0, 0)
    resolved, geometry = steps.layout(cut or source, size, settings, offset)
    moving = animated.animated_output(source, geometry, resolved, settings, negotiated)
    if moving is not None:
        output = moving
        memory = animated.memory_bytes(source, geometry, whole=ops.cuts_source)
        most = settings.max_animation_pixels * 4 * 2  # as resized, twice
    else:
        output = resolved.format or (negotiated.still if negotiated else None) or source.family
        if ops.auto_jpeg and output is ImageFormat.PNG and _opaque_png(source, resolved):
            output = ImageFormat.JPEG
        memory = steps.memory_bytes(source, geometry, whole=ops.cuts_source)
        most = settings.max_source_pixels * source.bands * source.sample_bytes
    if ops.trim is not None and size.upscale:
        # Without upscaling, what is made of a trimmed part is at most what this layout of the
        # whole makes; upscaled, it is bounded only by the limits the pipeline checks again.
        memory += most
    for mark in marks:
        # Decoded whole (at most), and an overlay of tiles as large as the resized image.
        resized = geometry.resized_width * geometry.resized_height
        memory += (mark.width * mark.height + resized) * 4 * mark.sample_bytes
    if size.output is Output.THUMBOR_META:
        memory = 0  # the geometry described: nothing is decoded
    return Plan(
        source,
        geometry,
        resolved,
        output,
        animated=moving is not None,
        memory_bytes=memory,
        request=size if resolved != size else None,
        cut=cut,
        cut_box=cut_box,
        document=size.output,
        watermarks=marks,
    )


def _probe_watermark(data: bytes, key: str, settings: RenderSettings) -> Source:
    """A watermark's header, within the limits of an original (refused before decoding)."""
    try:
        return steps.probe(data, settings)
    except TofuError as exc:
        raise type(exc)(f"watermark {key!r}: {exc.reason}") from None


def _opaque_png(source: Source, size: Size) -> bool:
    """thumbor's ``autojpg`` condition: a PNG original without transparency, here from its
    header, and no operation that makes some (transparent corners or fill)."""
    ops = size.operations
    transparent_corners = ops.round_corner is not None and ops.round_corner.colour[3] < 255
    transparent_fill = (
        ops.fill is not None and ops.fill.kind is FillKind.COLOUR and ops.fill.colour[3] < 255
    )
    return (
        source.loader == "png"
        and not source.has_alpha
        and size.format is None
        and not transparent_corners
        and not transparent_fill
    )


def execute(
    data: bytes,
    plan: Plan,
    settings: RenderSettings,
    cancellation: Cancellation | None = None,
    watermarks: Sequence[bytes] = (),
) -> Rendition:
    """The pipeline (``watermarks``: as ``prepare`` had them). Raises ``Unprocessable`` for a
    corrupt original, never anything else for bad input; ``RenderTimeout`` once
    ``cancellation`` is cancelled."""
    if plan.document is Output.THUMBOR_META:
        started = time.perf_counter()
        body = documents.thumbor_meta(plan.source, plan.cut, plan.cut_box, plan.size, plan.geometry)
        return Rendition(body, None, 0, 0, encode_seconds=time.perf_counter() - started)
    context = pipeline.Context(
        data=data,
        source=plan.source,
        request=plan.request or plan.size,
        size=plan.size,
        geometry=plan.geometry,
        output=plan.output,
        animated=plan.animated,
        settings=settings,
        cancellation=cancellation or Cancellation(),
        cut=plan.cut,
        cut_box=plan.cut_box,
        document=plan.document,
        watermark_data=tuple(watermarks),
        watermark_sources=plan.watermarks,
    )
    return pipeline.run(context)


def render(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None = None,
    cancellation: Cancellation | None = None,
    watermarks: Sequence[bytes] = (),
) -> Rendition:
    """Render ``data`` at ``size`` (with the bytes of its watermarks): ``prepare`` then
    ``execute``."""
    plan = prepare(data, size, settings, negotiated, watermarks)
    return execute(data, plan, settings, cancellation, watermarks)
