"""The one preprocessing function: every engine, the INT8 calibrator and evaluation use it.

An image is resized keeping its aspect ratio so that it fits the model input, then padded at the bottom
and right with zeros. Pixel values stay 0-255 float32: the model normalises inside its graph.
Boxes found on the model input map back to the original image by dividing by ``scale``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effdet_rt.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array, applying EXIF orientation (grayscale and RGBA become RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: not a readable image ({exc}); replace or remove the file") from exc


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror})") from exc
    return decode_image(data, str(path))


def resize_scale(height: int, width: int, size: tuple[int, int]) -> float:
    """Scale that fits (height, width) into size=(H, W) keeping the aspect ratio."""
    return min(size[0] / height, size[1] / width)


def preprocess_image(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """RGB uint8 (h, w, 3) -> (float32 (H, W, 3) in 0..255, scale), size = (H, W)."""
    height, width = image.shape[:2]
    scale = resize_scale(height, width, size)
    new_h = min(size[0], max(1, round(height * scale)))
    new_w = min(size[1], max(1, round(width * scale)))
    resized = Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((new_w, new_h), Image.BILINEAR)
    out = np.zeros((size[0], size[1], 3), dtype=np.float32)
    out[:new_h, :new_w] = np.asarray(resized, dtype=np.float32)
    return out, scale


def preprocess_batch(images: list[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Stack preprocessed images; returns (batch (N, H, W, 3) float32, scales (N,) float32)."""
    pairs = [preprocess_image(image, size) for image in images]
    batch = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size[0], size[1], 3), np.float32)
    return batch, np.asarray([p[1] for p in pairs], dtype=np.float32)
