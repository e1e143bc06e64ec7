"""The render pipeline: ordered lists of small named steps over one ``Context``, run by one
runner for stills and for every frame of an animation, as imgproxy's ``processing/pipeline.go``.

1. ``DECODE``   the first decoder that applies gives the image: ``decode_whole`` (the whole
                original, every frame of an animation, oriented and in sRGB: a trim or a manual
                crop needs it), ``decode_scaled`` (JPEG shrink-on-load, ``jpeg.py``), or
                ``thumbnail`` (libvips: decode, orient, sRGB and resize in one call; every
                frame of an animation, each resized alike)
2. ``SOURCE``   the JPEG shrink-on-load path's ``resize``, ``orient``, ``colour_manage``
3. ``FRAME``    every frame alike (a still is one frame): the cut (``trim``, manual crop) and its
                resize, the crop of a COVER box (centre, attention, focal point), then the
                operations in the order ``Operations`` documents, 16->8 bits, flattening
4. the finished image is computed (an animation's frames joined into a strip first)
5. ``ENCODE``   the first encoder that applies: ``auto_quality`` (``--auto-quality``, no q in
                the URL: the lowest quality meeting the target on this image, a few trial
                encodes, ``autoquality.py``) or ``encode`` (the URL's or the format's quality);
                both lower the quality for ``max_bytes``; for an info document
                (``documents.info``), the JSON that describes the original and the placeholders
                computed on the (thumbnail-sized) image instead

The runner, not the steps, enforces the deadline: before each step it checks the
cancellation, and it watches the image each step returns (and the input of a step that reads
the whole image, which it computes first), so that cancelling kills libvips' evaluation
wherever the work is: decoding, resizing, statistics, any frame, any encoding. A step added
later cannot skip it. The geometry (``steps.layout``) is computed once, in ``prepare``, from
the header; only a trim, whose result the header cannot tell, computes it again, once.

Decisions that read pixels (the trim window, the attention crop window, ``fill(auto)``'s
colour) are made on the first frame and kept for every frame: per-frame choices would make
frames of different sizes, or jitter.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyvips

from tofu.errors import Unprocessable
from tofu.formats import FORMATS
from tofu.render import adjust, animated, autoquality, documents, filters, steps, watermark
from tofu.render.cancel import Cancellation
from tofu.render.encode import encode
from tofu.render.runtime import release_freed_memory
from tofu.render.steps import Box, Geometry, RenderSettings, Rendition, Source
from tofu.transform import (
    Colour,
    FillKind,
    Fit,
    ImageFormat,
    Operations,
    Output,
    Size,
    Watermark,
)

# Originals from this size up (pixels over all frames) leave tens of MB of freed decode
# buffers behind (an 18 MP progressive JPEG: ~100 MB): handing them back keeps RSS down.
_TRIM_AFTER_PIXELS = 8_000_000


@dataclass(slots=True)
class Context:
    """One render: what the header and the URL say, and what the first frame decided."""

    data: bytes
    source: Source  # the original's header
    request: Size  # the size as asked (its operations' box rules not yet applied)
    size: Size  # with its box rules applied for the (cut) source (``steps.layout``)
    geometry: Geometry
    output: ImageFormat
    animated: bool  # every frame, as a strip; else the first frame only
    settings: RenderSettings
    cancellation: Cancellation
    cut: Source | None = None  # what a trim and a manual crop leave of the original
    cut_box: Box | None = None  # the manual crop, in the (trimmed) decoded image
    trim_box: Box | None = None
    crop_box: Box | None = None  # the COVER box's window, once chosen
    fill_colour: Colour | None = None  # fill(auto)'s, once measured
    document: Output = Output.IMAGE  # INFO: the image is a thumbnail to describe, not encode
    # Each of ``size.operations.watermarks``: its original's bytes and header (``prepare``).
    watermark_data: tuple[bytes, ...] = ()
    watermark_sources: tuple[Source, ...] = ()
    watermark_images: tuple[pyvips.Image, ...] | None = None  # decoded on the first frame

    @property
    def fast_jpeg(self) -> bool:
        """JPEG shrink-on-load with libjpeg-turbo (else libvips decodes)."""
        return (
            self.source.turbo_decodable
            and not self.settings.exact_shrink
            and not self.request.operations.cuts_source
        )

    def computed(self, image: pyvips.Image) -> pyvips.Image:
        """``image``'s pixels, computed now where the deadline can stop them (for a step that
        reads the whole image, or for random access after a sequential decoder)."""
        self.cancellation.check()
        computed = self.cancellation.watch(image).copy_memory()
        if computed.pointer == image.pointer:
            # In memory already (libvips hands it back): keep ``image``, which holds pyvips'
            # reference to the buffer it wraps (the array libjpeg-turbo decoded into).
            return image
        return self.cancellation.watch(computed)


@dataclass(frozen=True, slots=True)
class Step:
    name: str  # what it does, for the reason of a 422 when it fails
    run: Callable[[Context, pyvips.Image], pyvips.Image]
    applies: Callable[[Context], bool]
    # Reads the whole image (statistics, a vertical flip, a turn): its input is computed first.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class Decoder:
    name: str
    run: Callable[[Context], pyvips.Image]
    applies: Callable[[Context], bool]


def _always(ctx: Context) -> bool:
    return True


# --- 1. decoding ------------------------------------------------------------------------------


def _decode_whole(ctx: Context) -> pyvips.Image:
    options: dict[str, object] = {"fail_on": "error"}
    if ctx.animated:
        options["n"] = -1
    image = pyvips.Image.new_from_buffer(ctx.data, "", **options).autorot()
    if ctx.source.needs_colour_transform:
        image = image.icc_transform("srgb", embedded=True, input_profile="srgb")
    return image


DECODE: tuple[Decoder, ...] = (
    Decoder("decode_whole", _decode_whole, lambda ctx: ctx.request.operations.cuts_source),
    Decoder(
        "decode_scaled",
        lambda ctx: steps.decode_scaled(ctx.data, ctx.source, ctx.geometry),
        lambda ctx: ctx.fast_jpeg,
    ),
    Decoder(
        "thumbnail",
        lambda ctx: steps.thumbnail(ctx.data, ctx.source, ctx.geometry, every_frame=ctx.animated),
        _always,
    ),
)


# --- 2. the source, after shrink-on-load --------------------------------------------------------

SOURCE: tuple[Step, ...] = (
    Step(
        "resize",
        lambda ctx, image: steps.resize(image, ctx.source, ctx.geometry),
        lambda ctx: ctx.fast_jpeg,
    ),
    Step(
        "orient",
        lambda ctx, image: steps.orient(image, ctx.source),
        lambda ctx: ctx.fast_jpeg and ctx.source.orientation != 1,
    ),
    Step(
        "colour_manage",
        lambda ctx, image: steps.colour_manage(image, ctx.source),
        lambda ctx: ctx.fast_jpeg and ctx.source.icc_profile is not None,
    ),
)


# --- 3. every frame -----------------------------------------------------------------------------


def _find_trim(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    """The trim window, and the geometry of what the trim and the manual crop leave."""
    ops = ctx.request.operations
    assert ops.trim is not None
    window = adjust.trim_window(image, ops.trim)
    ctx.trim_box = window or (0, 0, image.width, image.height)
    left, top, width, height = ctx.trim_box
    ctx.cut_box = steps.cut_box(width, height, ops, (left, top))
    if ctx.cut_box is not None:
        left, top = left + ctx.cut_box[0], top + ctx.cut_box[1]
        width, height = ctx.cut_box[2:]
    ctx.cut = steps.cut_source(ctx.source, width, height)
    ctx.size, ctx.geometry = steps.layout(ctx.cut, ctx.request, ctx.settings, (left, top))
    if ctx.animated and not animated.within_budget(ctx.cut, ctx.settings, ctx.geometry):
        # An upscale of a small trimmed part: only the pixels could tell.
        raise Unprocessable(
            f"the trimmed animation at {ctx.geometry.resized_width}x"
            f"{ctx.geometry.resized_height} x {ctx.cut.frames} frames is over the "
            f"{ctx.settings.max_animation_pixels} pixel budget for animations"
        )
    return image


def _cropped(image: pyvips.Image, box: Box | None) -> pyvips.Image:
    assert box is not None  # the step applies only once its box is known
    return image.crop(*box)


def _resize_cut(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    assert ctx.cut is not None
    return steps.resize(image, ctx.cut, ctx.geometry)  # decoded, oriented: no shrink-on-load


def _find_crop(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    ctx.crop_box = steps.crop_window(image, ctx.geometry)
    return image


def _find_fill_colour(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    ctx.fill_colour = adjust.median_colour(image)
    return image


def _fill(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    spec = ctx.size.operations.fill
    assert spec is not None
    return adjust.fill(image, spec, ctx.size, ctx.fill_colour)


def _ops(ctx: Context) -> Operations:
    return ctx.size.operations


def _stretch(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    """The box filled by scaling each side alone (thumbor's ``stretch``); never upscaled
    unless asked: a box larger than the source shrinks, keeping its aspect ratio, as a
    cover box does."""
    source = ctx.cut or ctx.source
    # The box as a cover box would be resolved ("orig" sides, adaptive), not stretched.
    plain = dataclasses.replace(ctx.request.operations, stretch=False)
    box = steps.resolve(dataclasses.replace(ctx.request, operations=plain), source, ctx.settings)
    width, height = box.width, box.height
    assert width is not None and height is not None  # a cover box has both
    scale = max(width / source.width, height / source.height)
    if scale > 1 and not ctx.size.upscale:
        width, height = max(1, round(width / scale)), max(1, round(height / scale))
    return filters.resize_to(image, width, height)


def _proportion(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    """The result scaled by the proportion, each side truncated (thumbor's ``int``); nothing
    when a side would vanish."""
    proportion = _ops(ctx).proportion
    assert proportion is not None
    width, height = int(image.width * proportion), int(image.height * proportion)
    if width < 1 or height < 1:
        return image
    return filters.resize_to(image, width, height)


def _decode_watermarks(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    """Each watermark decoded and sized for this (first) frame, computed under the deadline."""
    ctx.watermark_images = tuple(
        ctx.computed(watermark.decode(data, source, spec, image.width, image.height))
        for data, source, spec in zip(
            ctx.watermark_data, ctx.watermark_sources, _ops(ctx).watermarks, strict=True
        )
    )
    return image


def _watermark(ctx: Context, image: pyvips.Image) -> pyvips.Image:
    assert ctx.watermark_images is not None
    specs: tuple[Watermark, ...] = _ops(ctx).watermarks
    for decoded, spec in zip(ctx.watermark_images, specs, strict=True):
        image = watermark.composite(image, decoded, spec)
    return image


FRAME: tuple[Step, ...] = (
    Step(
        "find_trim",
        _find_trim,
        lambda ctx: _ops(ctx).trim is not None and ctx.trim_box is None,
        whole=True,
    ),
    Step(
        "trim",
        lambda ctx, image: _cropped(image, ctx.trim_box),
        lambda ctx: ctx.trim_box is not None,
    ),
    Step(
        "cut", lambda ctx, image: _cropped(image, ctx.cut_box), lambda ctx: ctx.cut_box is not None
    ),
    Step("resize_cut", _resize_cut, lambda ctx: ctx.cut is not None),
    Step(
        "find_attention",
        _find_crop,
        lambda ctx: ctx.geometry.crop == "attention" and ctx.crop_box is None,
        whole=True,
    ),
    Step(
        "find_centre",
        _find_crop,
        lambda ctx: ctx.geometry.crop == "centre" and ctx.crop_box is None,
    ),
    Step(
        "crop",
        lambda ctx, image: _cropped(image, ctx.crop_box),
        lambda ctx: ctx.crop_box is not None,
    ),
    Step(
        "crop_focal",
        lambda ctx, image: steps.crop_focal(image, ctx.geometry),
        lambda ctx: ctx.geometry.focal is not None,
    ),
    Step(
        "stretch",
        _stretch,
        lambda ctx: _ops(ctx).stretch and ctx.request.fit is Fit.COVER,
    ),
    Step("proportion", _proportion, lambda ctx: _ops(ctx).proportion is not None),
    Step(
        "flip_horizontal", lambda ctx, image: image.fliphor(), lambda ctx: _ops(ctx).flip_horizontal
    ),
    Step(
        "flip_vertical",
        lambda ctx, image: image.flipver(),
        lambda ctx: _ops(ctx).flip_vertical,
        whole=True,
    ),
    Step(
        "rotate",
        lambda ctx, image: adjust.rotate(image, _ops(ctx).rotate),
        lambda ctx: bool(_ops(ctx).rotate),
        whole=True,
    ),
    Step("grayscale", lambda ctx, image: image.colourspace("b-w"), lambda ctx: _ops(ctx).grayscale),
    Step(
        "brightness",
        lambda ctx, image: adjust.brightness(image, _ops(ctx).brightness),
        lambda ctx: bool(_ops(ctx).brightness),
    ),
    Step(
        "contrast",
        lambda ctx, image: adjust.contrast(image, _ops(ctx).contrast),
        lambda ctx: bool(_ops(ctx).contrast),
    ),
    Step(
        "rgb",
        lambda ctx, image: filters.rgb(image, _ops(ctx).rgb),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).rgb is not None,
    ),
    Step(
        "saturation",
        lambda ctx, image: filters.saturation(image, _ops(ctx).saturation),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).saturation is not None,
    ),
    Step(
        "colorize",
        lambda ctx, image: filters.colorize(image, _ops(ctx).colorize),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).colorize is not None,
    ),
    Step(
        "equalize",
        lambda ctx, image: filters.equalize(image),
        lambda ctx: _ops(ctx).equalize,
        whole=True,
    ),
    Step(
        "curve",
        lambda ctx, image: filters.curve(image, _ops(ctx).curve),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).curve is not None,
    ),
    Step(
        "convolution",
        lambda ctx, image: filters.convolution(image, _ops(ctx).convolution),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).convolution is not None,
        whole=True,  # a neighbourhood of every pixel, the alpha band read again
    ),
    Step(
        "sharpen",
        lambda ctx, image: filters.sharpen(image, _ops(ctx).sharpen, ctx.computed),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).sharpen is not None,
        whole=True,  # a neighbourhood of every pixel, the alpha band read again
    ),
    Step(
        "blur",
        lambda ctx, image: adjust.blur(image, *_ops(ctx).blur),  # type: ignore[misc]
        lambda ctx: _ops(ctx).blur is not None,
    ),
    Step(
        "noise",
        lambda ctx, image: filters.noise(image, *_ops(ctx).noise),  # type: ignore[misc]
        lambda ctx: _ops(ctx).noise is not None,
    ),
    Step(
        "round_corner",
        lambda ctx, image: adjust.round_corner(image, _ops(ctx).round_corner),  # type: ignore[arg-type]
        lambda ctx: _ops(ctx).round_corner is not None,
    ),
    Step(
        "find_fill_colour",
        _find_fill_colour,
        lambda ctx: (
            (spec := _ops(ctx).fill) is not None
            and spec.kind is FillKind.AUTO
            and ctx.fill_colour is None
        ),
        whole=True,
    ),
    Step("fill", _fill, lambda ctx: _ops(ctx).fill is not None),
    Step(
        "background",
        lambda ctx, image: adjust.background(image, _ops(ctx).background),  # type: ignore[arg-type]
        lambda ctx: (colour := _ops(ctx).background) is not None and colour[3] > 0,
    ),
    Step("to_8bit", lambda ctx, image: steps.to_8bit(image), _always),
    Step(
        "decode_watermarks",
        _decode_watermarks,
        lambda ctx: bool(_ops(ctx).watermarks) and ctx.watermark_images is None,
    ),
    Step("watermark", _watermark, lambda ctx: bool(_ops(ctx).watermarks)),
    Step("flatten", lambda ctx, image: steps.flatten(image, ctx.output), _always),
)


# --- 5. encoding ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Encoder:
    name: str
    run: Callable[[Context, pyvips.Image], tuple[bytes, int | None]]  # body, quality used
    applies: Callable[[Context], bool]


def _encode_fixed(ctx: Context, image: pyvips.Image) -> tuple[bytes, int | None]:
    """The URL's quality, else the format's (Save-Data) default; lowered for ``max_bytes``."""
    size = ctx.size
    quality = FORMATS[ctx.output].quality(size.quality, size.save_data)
    return adjust.encode_within(image, ctx.output, quality, ctx.settings, size.operations.max_bytes)


def _encode_auto(ctx: Context, image: pyvips.Image) -> tuple[bytes, int | None]:
    """The lowest quality meeting the target on this image (``autoquality``), every trial
    encoding under the deadline; ``max_bytes`` still lowers it further."""
    settings, output = ctx.settings, ctx.output
    target = settings.quality_target
    if ctx.size.save_data:
        target = autoquality.save_data_target(target)

    def encode_at(quality: int) -> bytes:
        return encode(ctx.cancellation.watch(image), output, quality, settings)

    ceiling = None
    if settings.auto_quality_lower_only:
        ceiling = FORMATS[output].quality(None, ctx.size.save_data)
    choice = autoquality.search(
        image, output, target, encode_at, check=ctx.cancellation.check, ceiling=ceiling
    )
    return adjust.encode_within(
        image, output, choice.quality, settings, ctx.size.operations.max_bytes, choice.body
    )


def _auto_applies(ctx: Context) -> bool:
    return (
        ctx.settings.auto_quality
        and ctx.size.quality is None  # the URL's q always wins
        and not ctx.animated
        and autoquality.applies(ctx.output)
    )


ENCODE: tuple[Encoder, ...] = (
    Encoder("auto_quality", _encode_auto, _auto_applies),
    Encoder("encode", _encode_fixed, _always),
)


# --- the runner ---------------------------------------------------------------------------------


def run_steps(pipeline: tuple[Step, ...], ctx: Context, image: pyvips.Image) -> pyvips.Image:
    """Each step that applies, in order, under the deadline."""
    for step in pipeline:
        ctx.cancellation.check()
        if not step.applies(ctx):
            continue
        if step.whole:
            image = ctx.computed(image)
        try:
            image = ctx.cancellation.watch(step.run(ctx, image))
        except pyvips.Error as exc:
            ctx.cancellation.check()  # killed by the deadline
            raise Unprocessable(f"cannot {step.name}: {steps.vips_reason(exc)}") from None
    return image


def run(ctx: Context) -> Rendition:
    """The whole pipeline. Raises ``Unprocessable`` for a corrupt original, never anything else
    for bad input; ``RenderTimeout`` once the cancellation is cancelled."""
    started = time.perf_counter()
    try:
        ctx.cancellation.check()
        decoder = next(d for d in DECODE if d.applies(ctx))
        image = ctx.cancellation.watch(decoder.run(ctx))
        image = run_steps(SOURCE, ctx, image)
        if ctx.animated:
            strip = ctx.computed(image)  # every frame decoded, for random access to each
            image = animated.join(
                [run_steps(FRAME, ctx, frame) for frame in animated.frames(strip)], strip
            )
        else:
            image = run_steps(FRAME, ctx, image)
        # libvips is demand-driven: nothing is decoded until pixels are asked for. Computing
        # the (output-sized, so small) result here keeps decode+resize apart from encoding,
        # for the phase timings, at the cost of one copy of the output pixels.
        image = ctx.computed(image)
    except pyvips.Error as exc:
        ctx.cancellation.check()  # killed by the deadline, not a bad original
        # A corrupt body surfaces when pixels are computed, not in probe.
        raise Unprocessable(f"cannot decode the original: {steps.vips_reason(exc)}") from None
    resized = time.perf_counter()
    source = ctx.source
    if source.width * source.height * (source.frames if ctx.animated else 1) >= _TRIM_AFTER_PIXELS:
        release_freed_memory()  # its decode buffers are gone now
    ctx.cancellation.check()
    if ctx.document is Output.INFO:
        try:
            body = documents.info(image, source)
        except pyvips.Error as exc:
            ctx.cancellation.check()
            raise Unprocessable(f"cannot describe the original: {steps.vips_reason(exc)}") from None
        return Rendition(
            body,
            None,
            image.width,
            image.height,
            resize_seconds=resized - started,
            encode_seconds=time.perf_counter() - resized,
        )
    encoder = next(e for e in ENCODE if e.applies(ctx))
    try:
        body, quality = encoder.run(ctx, ctx.cancellation.watch(image))
    except pyvips.Error as exc:
        ctx.cancellation.check()
        raise Unprocessable(f"cannot encode {ctx.output.value}: {steps.vips_reason(exc)}") from None
    height = image.get("page-height") if ctx.animated else image.height
    return Rendition(
        body,
        ctx.output,
        image.width,
        height,
        quality=quality,
        resize_seconds=resized - started,
        encode_seconds=time.perf_counter() - resized,
    )
