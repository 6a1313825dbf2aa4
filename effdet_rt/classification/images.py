"""Image loading and the train / eval transforms (Pillow + numpy), as TAO's classification data loader does them.

Evaluation, inference, INT8 calibration, export verification and every engine use `eval_image`; training uses
`train_image`. Both give float32 (H, W, C) arrays of raw pixel values; normalisation happens inside the network.

- eval with ``augment.enable_center_crop``: resize keeping the aspect ratio until both sides are at least the target
  plus 32 pixels, then cut the centre (TAO's CROP_PADDING, from the EfficientNet TPU reference); without it: resize
  to the target, ignoring the aspect ratio.
- train with ``augment.enable_random_crop``: a crop fraction f ~ U(0.45, 1): resize keeping the aspect ratio until
  both sides are at least target / f, then cut a random target-sized window; without it: plain resize.
  Then, with ``enable_color_augmentation`` (RGB): hue rotated by U(-25, 25) degrees, saturation shifted by
  U(-0.2, 0.2); contrast scaled by 1 + U(-0.1, 0.1) around mid-grey (also for grayscale). Horizontal flip with
  probability 1/2 unless ``disable_horizontal_flip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effdet_rt.errors import DataError

CROP_PADDING = 32
RANDOM_CROP_MIN_FRACTION = 0.45
HUE_DEGREES, SATURATION_SHIFT, CONTRAST_SCALE = 25.0, 0.2, 0.1
RESAMPLE = {"BILINEAR": Image.BILINEAR, "BICUBIC": Image.BICUBIC}


@dataclass(frozen=True)
class ImageFormat:
    """What the network takes: (H, W), channels (1 or 3), bit depth, resize method, centre crop at eval time."""

    size: tuple[int, int]
    channels: int = 3
    depth: int = 8
    interpolation: str = "BILINEAR"
    center_crop: bool = True

    @classmethod
    def from_spec(cls, spec) -> ImageFormat:
        m = spec.model
        return cls(m.size, m.channels, m.input_image_depth, m.resize_interpolation_method,
                   spec.augment.enable_center_crop)

    def as_metadata(self) -> dict:
        return {"input_size": list(self.size), "channels": self.channels, "input_image_depth": self.depth,
                "resize_interpolation_method": self.interpolation, "center_crop": self.center_crop}

    @classmethod
    def from_metadata(cls, meta: dict) -> ImageFormat:
        return cls(tuple(meta["input_size"]), int(meta["channels"]), int(meta["input_image_depth"]),
                   str(meta["resize_interpolation_method"]), bool(meta["center_crop"]))


def open_image(path: str | Path, channels: int, depth: int = 8) -> Image.Image:
    """Decode with EXIF orientation applied: RGB (channels 3), L (1, 8-bit) or F holding 16-bit values (1, 16-bit)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if channels == 3:
                return img.convert("RGB")
            if depth == 8:
                return img.convert("L")
            return img.convert("I").convert("F") if img.mode != "F" else img.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}); replace or remove the file") from exc


def _as_array(img: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(img, dtype=np.float32)
    return array[..., None] if channels == 1 else array


def _resize_to_cover(img: Image.Image, width: float, height: float, resample: int) -> Image.Image:
    ratio = max(width / img.width, height / img.height)
    return img.resize((int(img.width * ratio), int(img.height * ratio)), resample=resample)


def center_crop(img: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    height, width = size
    img = _resize_to_cover(img, width + CROP_PADDING, height + CROP_PADDING, resample)
    left = int(round(img.width / 2)) - int(round(width / 2))
    top = int(round(img.height / 2)) - int(round(height / 2))
    return img.crop((left, top, left + width, top + height))


def eval_image(path: str | Path, fmt: ImageFormat) -> np.ndarray:
    img = open_image(path, fmt.channels, fmt.depth)
    return eval_transform(img, fmt)


def eval_transform(img: Image.Image, fmt: ImageFormat) -> np.ndarray:
    resample = RESAMPLE[fmt.interpolation]
    height, width = fmt.size
    if (img.width, img.height) != (width, height):
        img = center_crop(img, fmt.size, resample) if fmt.center_crop else img.resize((width, height), resample)
    return _as_array(img, fmt.channels)


def random_crop(img: Image.Image, size: tuple[int, int], resample: int, rng: np.random.Generator) -> Image.Image:
    height, width = size
    fraction = rng.uniform(RANDOM_CROP_MIN_FRACTION, 1.0)
    img = _resize_to_cover(img, width / fraction, height / fraction, resample)
    left = int(rng.integers(0, img.width - width + 1))
    top = int(rng.integers(0, img.height - height + 1))
    return img.crop((left, top, left + width, top + height))


def color_augment(img: Image.Image, rng: np.random.Generator, peak: float) -> np.ndarray:
    """Hue and saturation (RGB only), then contrast; returns float pixels in 0..peak."""
    if img.mode == "RGB":
        hsv = np.asarray(img.convert("HSV"), dtype=np.float32)
        hue = (hsv[..., 0] + rng.uniform(-HUE_DEGREES, HUE_DEGREES) / 360.0 * 256.0) % 256.0
        saturation = np.clip(hsv[..., 1] + rng.uniform(-SATURATION_SHIFT, SATURATION_SHIFT) * 255.0, 0.0, 255.0)
        hsv = np.stack([hue, saturation, hsv[..., 2]], axis=-1)
        img = Image.fromarray(np.round(hsv).astype(np.uint8), "HSV").convert("RGB")
    x = np.asarray(img, dtype=np.float32) / peak
    x = (x - 0.5) * (1.0 + rng.uniform(-CONTRAST_SCALE, CONTRAST_SCALE)) + 0.5
    return np.clip(x, 0.0, 1.0) * peak


def train_image(path: str | Path, fmt: ImageFormat, augment, rng: np.random.Generator) -> np.ndarray:
    """One augmented training image; ``augment`` is the spec's augment section, ``rng`` this sample's generator."""
    img = open_image(path, fmt.channels, fmt.depth)
    resample = RESAMPLE[fmt.interpolation]
    height, width = fmt.size
    if augment.enable_random_crop:
        img = random_crop(img, fmt.size, resample, rng)
    elif (img.width, img.height) != (width, height):
        img = img.resize((width, height), resample)
    if augment.enable_color_augmentation:
        array = color_augment(img, rng, 255.0 if fmt.depth == 8 else 65535.0)
        array = array[..., None] if fmt.channels == 1 else array
    else:
        array = _as_array(img, fmt.channels)
    if not augment.disable_horizontal_flip and rng.random() < 0.5:
        array = array[:, ::-1]
    return np.ascontiguousarray(array, dtype=np.float32)
