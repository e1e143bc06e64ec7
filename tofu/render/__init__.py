"""Rendering: a pure function of (original bytes, size) -> (bytes, format). No I/O, no server.

``prepare`` reads the header only (cheap): ``probe`` sniffs the format and refuses unsupported
formats and image bombs (too many pixels per frame); ``steps.layout`` computes the geometry
(target box, resized size, crops, the operations' box rules; never upscaling unless asked) and
refuses plans whose intermediate image would be too large; ``animated.animated_output``
decides whether an animation stays animated (within its budget of frames and of decoded and
resized pixels over all frames, else its first frame as a still); and it estimates the memory
the render will hold. ``execute`` runs the pipeline (``pipeline.py``): decoding, scaling,
cropping and the operations, the same steps for a still and for every frame of an animation,
then encoding, all under the request's deadline.

A size whose ``output`` is a document (``tofu.render.documents``) goes the same way: ``info``
plans a thumbnail of the original (shrink-on-load, checked against the same limits and
admitted by its memory like any render), which the pipeline decodes and describes in JSON
instead of encoding it; thumbor's ``meta`` describes the planned geometry, from the header.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tofu.negotiate import Negotiated
from tofu.render import animated, documents, pipeline, steps
from tofu.render.cancel import Cancellation
from tofu.render.runtime import configure_libvips, configure_malloc
from tofu.render.steps import Box, Geometry, RenderSettings, Rendition, Source
from tofu.transform import ImageFormat, Output, Size

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


def prepare(
    data: bytes, size: Size, settings: RenderSettings, negotiated: Negotiated | None = None
) -> Plan:
    """The header's part (cheap). The output format is the URL's, else ``negotiated`` (from
    the Accept header), else the source's family; animated sources within budget stay animated.
    Raises ``UnsupportedMediaType`` or ``Unprocessable``."""
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
        memory = steps.memory_bytes(source, geometry, whole=ops.cuts_source)
        most = settings.max_source_pixels * source.bands * source.sample_bytes
    if ops.trim is not None and size.upscale:
        # Without upscaling, what is made of a trimmed part is at most what this layout of the
        # whole makes; upscaled, it is bounded only by the limits the pipeline checks again.
        memory += most
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
    )


def execute(
    data: bytes,
    plan: Plan,
    settings: RenderSettings,
    cancellation: Cancellation | None = None,
) -> Rendition:
    """The pipeline. Raises ``Unprocessable`` for a corrupt original, never anything else for
    bad input; ``RenderTimeout`` once ``cancellation`` is cancelled."""
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
    )
    return pipeline.run(context)


def render(
    data: bytes,
    size: Size,
    settings: RenderSettings,
    negotiated: Negotiated | None = None,
    cancellation: Cancellation | None = None,
) -> Rendition:
    """Render ``data`` at ``size``: ``prepare`` then ``execute``."""
    return execute(data, prepare(data, size, settings, negotiated), settings, cancellation)
