"""One distinct, stable colour per class id (the same class is the same colour in every picture)."""

from __future__ import annotations

import colorsys

_GOLDEN_RATIO = 0.618033988749895


def class_colour(class_id: int) -> tuple[int, int, int]:
    """Hues spread by the golden ratio so neighbouring ids differ; fixed saturation/value stay readable."""
    hue = (int(class_id) * _GOLDEN_RATIO + 0.13) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def text_colour_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)
