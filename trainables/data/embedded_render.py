"""Rendering embedded images: colours kept apart, patterned or textured backgrounds, the shape
composited over them and pixel noise; a pure function of its arguments and a generator."""

from __future__ import annotations

import math

import numpy as np

from trainables.data.embedded_shapes import draw_masks
from trainables.data.embedded_taxonomy import BACKGROUNDS, COLOURS, SIZES, UNNAMED

#: Smallest RGB distance between the shape colour and either end of the background gradient.
_MIN_COLOUR_GAP = 0.45
_GRADIENT_SPAN = 0.15  # per channel, between the two ends of the background gradient
_PATTERN_CONTRAST = 0.3  # brightness step between the two tones of a patterned background
_COLOUR_JITTER = 0.06  # per channel, around a named colour
_TEXTURE_AMPLITUDE = 0.1
_TEXTURE_GRID = 6  # coarse value-noise grid, upsampled bilinearly
_NAMED_RGB = np.array(list(COLOURS.values()), dtype=np.float32)


def _gap(fg: np.ndarray, bg0: np.ndarray, bg1: np.ndarray) -> np.ndarray:
    return np.minimum(np.linalg.norm(fg - bg0, axis=1), np.linalg.norm(fg - bg1, axis=1))


def _background_tones(
    rng: np.random.Generator, n: int, patterned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two ends of each gradient, or the two tones of each pattern (clearly apart)."""
    bg0 = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    shift = rng.uniform(-_GRADIENT_SPAN, _GRADIENT_SPAN, (n, 3)).astype(np.float32)
    # A pattern's second tone is brighter or darker by a fixed step, whichever fits in [0, 1].
    step = np.where(bg0.mean(axis=1, keepdims=True) > 0.5, -_PATTERN_CONTRAST, _PATTERN_CONTRAST)
    shift = np.where(patterned[:, None], step + 0.3 * shift, shift)
    return bg0, np.clip(bg0 + shift, 0.0, 1.0).astype(np.float32)


def _colours(
    rng: np.random.Generator, colour: np.ndarray, patterned: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background tones and shape colours ``[n, 3]``, the shape far from both tones.

    A random shape colour is redrawn until it stands apart; a named one keeps its colour (with a
    small jitter) and the background is redrawn instead.
    """
    n = colour.shape[0]
    named = colour != UNNAMED
    bg0, bg1 = _background_tones(rng, n, patterned)
    fg = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    jitter = rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, (n, 3)).astype(np.float32)
    fg[named] = np.clip(_NAMED_RGB[colour[named]] + jitter[named], 0.0, 1.0)
    for _ in range(100):
        redo = np.flatnonzero(_gap(fg, bg0, bg1) < _MIN_COLOUR_GAP)
        if redo.size == 0:
            break
        keep = named[redo]
        fg[redo[~keep]] = rng.uniform(0.0, 1.0, (int((~keep).sum()), 3))
        bg0[redo[keep]], bg1[redo[keep]] = _background_tones(
            rng, int(keep.sum()), patterned[redo[keep]]
        )
    else:  # practically unreachable; push any leftover to the opposite corner of the cube
        fg[redo] = np.where(bg0[redo] > 0.5, 0.0, 1.0)
    return bg0, bg1, fg


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of ``[n, G, G]`` grids to ``[n, size, size]``.

    Plain gathers rather than a matrix product: BLAS threads would oversubscribe the cores
    when several render processes run at once.
    """
    grid = coarse.shape[-1]
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (grid - 1)
    low = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    frac = pos - low
    rows = coarse[:, low, :] * (1.0 - frac)[:, None] + coarse[:, low + 1, :] * frac[:, None]
    return rows[:, :, low] * (1.0 - frac) + rows[:, :, low + 1] * frac


def _pattern(rng: np.random.Generator, kind: str, n: int, size: int) -> np.ndarray:
    """Where the second tone shows, float32 ``[n, S, S]`` in [0, 1], for a named background."""
    axis = np.arange(size, dtype=np.float32) + 0.5
    x, y = axis[None, None, :], axis[None, :, None]
    period = size / 3.2  # cells of 5 px at 32x32: wide enough to read as a pattern, not speckle
    phase = rng.uniform(0.0, period, (n, 2, 1, 1)).astype(np.float32)
    if kind == "plain":
        return np.zeros((n, size, size), dtype=np.float32)
    if kind == "checkered":
        cells = np.floor((x + phase[:, 0]) / (period / 2)) + np.floor(
            (y + phase[:, 1]) / (period / 2)
        )
        return np.mod(cells, 2).astype(np.float32)
    if kind == "dotted":
        dx = np.mod(x + phase[:, 0], period) - period / 2
        dy = np.mod(y + phase[:, 1], period) - period / 2
        return (dx * dx + dy * dy <= (0.25 * period) ** 2).astype(np.float32)
    raise ValueError(f"unknown background kind {kind!r}")


def _backgrounds(
    rng: np.random.Generator, bg0: np.ndarray, bg1: np.ndarray, size: int, kind: np.ndarray
) -> np.ndarray:
    """Backgrounds, float32 ``[n, 3, S, S]`` (unclipped): a textured gradient, or a named kind."""
    n = bg0.shape[0]
    direction = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    ramp = (
        np.cos(direction)[:, None, None] * axis[None, None, :]
        + np.sin(direction)[:, None, None] * axis[None, :, None]
    ) * np.float32(1.0 / math.sqrt(2.0)) + np.float32(0.5)  # 0..1 along the gradient direction
    coarse = rng.uniform(-1.0, 1.0, (n, _TEXTURE_GRID, _TEXTURE_GRID)).astype(np.float32)
    texture = _upsample(coarse, size)
    texture *= rng.uniform(0.3, 1.0, (n, 1, 1)).astype(np.float32) * np.float32(_TEXTURE_AMPLITUDE)
    tint = rng.uniform(0.5, 1.0, (n, 3, 1, 1)).astype(np.float32)
    named = kind != UNNAMED
    texture[named] = 0.0  # a named background is its pattern and nothing else
    for index, name in enumerate(BACKGROUNDS):
        rows = np.flatnonzero(kind == index)
        if rows.size:
            ramp[rows] = _pattern(rng, name, rows.size, size)
    image = ramp[:, None] * (bg1 - bg0)[:, :, None, None]
    image += bg0[:, :, None, None]
    image += texture[:, None] * tint
    return image


def _radii(rng: np.random.Generator, size_class: np.ndarray, default: tuple[float, float]):
    low = np.full(size_class.shape, default[0], dtype=np.float32)
    high = np.full(size_class.shape, default[1], dtype=np.float32)
    for index, (name_low, name_high) in enumerate(SIZES.values()):
        low[size_class == index], high[size_class == index] = name_low, name_high
    return low + rng.uniform(0.0, 1.0, size_class.shape).astype(np.float32) * (high - low)


def render_images(
    labels: np.ndarray,
    rng: np.random.Generator,
    image_size: int = 32,
    *,
    noise_max: float = 0.06,
    radius_range: tuple[float, float] = (0.28, 0.47),
    max_rotation_deg: float = 20.0,
    colour: np.ndarray | None = None,
    size_class: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Render one image per shape id in ``labels``; a pure function of its arguments and ``rng``.

    Returns uint8 ``[N, S, S, 3]`` (HWC). ``colour``, ``size_class`` and ``background`` are
    per-image indices into :data:`COLOURS`, :data:`SIZES` and :data:`BACKGROUNDS`, or
    :data:`UNNAMED` (the default for all): a random colour kept apart from the background, a
    radius from ``radius_range`` times the image side, a textured gradient. The rotation is drawn
    from +-``max_rotation_deg``, the centre so that the shape stays inside the image (a pixel
    from the edge when the radius leaves room), and the noise sigma from [0, ``noise_max``].
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, size = labels.shape[0], image_size
    unnamed = np.full(n, UNNAMED, dtype=np.int64)
    colour = unnamed if colour is None else np.asarray(colour, dtype=np.int64)
    size_class = unnamed if size_class is None else np.asarray(size_class, dtype=np.int64)
    background = unnamed if background is None else np.asarray(background, dtype=np.int64)
    bg0, bg1, fg = _colours(rng, colour, background > 0)  # "plain" (0) needs no second tone
    radii = _radii(rng, size_class, radius_range) * size
    slack = np.maximum(size / 2.0 - radii - 1.0, 0.0)  # keeps the whole shape inside
    centers = size / 2.0 + rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32) * slack[:, None]
    angles = rng.uniform(-max_rotation_deg, max_rotation_deg, n).astype(np.float32)
    variations = rng.uniform(0.0, 1.0, n).astype(np.float32)
    alpha = draw_masks(
        labels, size, centers=centers, radii=radii, angles_deg=angles, variations=variations
    )[:, None]
    # Channel-first while compositing: broadcasts then run over whole image planes.
    image = _backgrounds(rng, bg0, bg1, size, background)
    image -= fg[:, :, None, None]
    image *= 1.0 - alpha
    image += fg[:, :, None, None]  # = background * (1 - alpha) + shape colour * alpha
    sigma = rng.uniform(0.0, noise_max, (n, 1, 1, 1)).astype(np.float32)
    image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image *= np.float32(255.0)
    image += np.float32(0.5)  # round to nearest on the cast below (values are clipped >= 0)
    np.clip(image, 0.0, 255.0, out=image)
    return np.ascontiguousarray(image.astype(np.uint8).transpose(0, 2, 3, 1))
