"""The demo's images: uploads decoded safely (size, pixel and format limits), pictures encoded as PNG data URLs,
and the errors the page shows."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Decompression-bomb guard: Pillow refuses images with more pixels than this (a 20 MB file can declare far more).
MAX_IMAGE_PIXELS = 40_000_000
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}
#: Worker colours (RGB), one per worker index; the edge is drawn in red.
WORKER_COLOURS = ((31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (23, 190, 207), (188, 189, 34), (140, 86, 75), (227, 119, 194))
EDGE_COLOUR = (214, 39, 40)


class ApiError(Exception):
    """An error the page shows: HTTP status + message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_image(data: bytes) -> np.ndarray:
    """Decode an uploaded file into an H x W x 3 uint8 RGB array, safely.

    Raises ApiError(400/413/415) for empty, oversized, undecodable, unsupported or bomb-sized files.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ApiError(400, "empty upload: choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(413, f"file too large ({len(data)} bytes); the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that: make it an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in ALLOWED_FORMATS:
                    raise ApiError(415, f"unsupported image format {img.format}; use one of {', '.join(sorted(ALLOWED_FORMATS))}")
                img.load()
                img = ImageOps.exif_transpose(img)  # phone photos: show them the way up the user sees them
                rgb = img.convert("RGB")
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"image has too many pixels (limit {MAX_IMAGE_PIXELS:,})") from None
    except UnidentifiedImageError:
        raise ApiError(415, "not an image file Pillow can read (PNG, JPEG, WebP, BMP, GIF or TIFF)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ApiError(400, f"could not decode the image: {error}") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ApiError(400, f"image too small: {array.shape[1]} x {array.shape[0]} px")
    return np.ascontiguousarray(array)


def png_bytes(array: np.ndarray) -> bytes:
    """H x W x 3|4 uint8 array -> PNG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """(r, g, b) -> "#rrggbb" (the page's CSS colours)."""
    return "#%02x%02x%02x" % rgb


def worker_colour(index: int) -> str:
    """The CSS colour of worker ``index`` (cycling through `WORKER_COLOURS`)."""
    return hex_colour(WORKER_COLOURS[index % len(WORKER_COLOURS)])


def mask_rgba(mask: np.ndarray, colour: tuple[int, int, int], alpha: int = 140) -> np.ndarray:
    """H x W bool mask -> H x W x 4 uint8 overlay (colour where True, transparent elsewhere)."""
    out = np.zeros(mask.shape + (4,), dtype=np.uint8)
    out[mask] = (*colour, alpha)
    return out


