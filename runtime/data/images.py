"""Stage 3 (runtime): image files as float32 arrays, read, converted and resized with Pillow.

Every format Pillow reads is accepted (PNG, PGM/PPM/PBM, JPEG, BMP, GIF, TIFF,
WebP, ...). Files are untrusted: the file is read through the bounded reader
(`cnnc.dsl.files`, regular files only, size-capped), Pillow parses only the
header first, and the declared size is checked against the image limit
before a single pixel is decoded, so a small file declaring 20000x20000 pixels
is refused in microseconds instead of allocating gigabytes. Anything Pillow
cannot read becomes a one-line `CnncError` naming the file.

How modes become channels (`read_image` returns float32 [C, H, W] in [0, 1]):

- grey (`1`, `L`) -> C = 1, value / 255 (`1`-bit images are 0 or 1);
- 16-bit grey (`I;16*`, and `I` as Pillow opens PGMs with maxval > 255) -> C = 1,
  value / 65535 (Pillow has already rescaled a PGM's maxval to 65535);
  32-bit values outside [0, 65535] are refused;
- float (`F`) -> C = 1, values taken as they are (must be finite);
- palette (`P`, `PA`) -> C = 3, each index looked up in the palette (RGB); a
  missing or malformed palette, or an index past its end, is refused;
- alpha (`LA`, `RGBA`, `PA`) -> the alpha channel is dropped, not composited;
- RGB and every other colour mode (CMYK, YCbCr, LAB, HSV) -> C = 3 through
  Pillow's conversion to RGB; 16-bit colour PNGs and PPMs with maxval > 255
  are read at 8 bits per channel (Pillow's RGB mode), so value / 255.

PGM/PPM values above the maxval or negative ones are refused (never wrapped).

`convert_channels` and `resize` give images a common channel count and size
(see their docstrings for the rules).
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...dsl import files
from ...dsl.source import CnncError

PathLike = str | os.PathLike



def image_limit() -> int:
    """Bytes one decoded image (float32) and one image file may take; env CNNC_MAX_IMAGE raises it."""
    return files.limit("image")


def image_suffixes() -> frozenset[str]:
    """File name endings Pillow has a reader for (".png", ".pgm", ".jpg", ...)."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _open_header(data: bytes, shown: str):
    """Pillow's `Image.open` on the bytes: it parses the header only, nothing is decoded yet."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (MAX_IMAGE_PIXELS) warns below its hard limit: cnnc's own
            # limit, checked next from the same header, decides, so the warning is not needed.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # what Pillow repairs in a header (corrupt EXIF)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise CnncError(f"image '{shown}' declares too many pixels ({err})",
                        hint="a file this large is refused as a possible decompression bomb") from None
    except UnidentifiedImageError:
        kind = _signature(data)
        if kind:  # it starts like an image, but no reader accepts it: say so, not "not an image"
            raise CnncError(f"image '{shown}' is a corrupt or truncated {kind} file") from None
        raise CnncError(f"'{shown}' is not an image cnnc can read",
                        hint="cnnc reads the formats Pillow reads: PNG, PGM/PPM, JPEG, BMP, GIF, "
                             "TIFF, WebP, ...") from None
    except Exception as err:  # Pillow's header parsers raise many types; all mean "unreadable"
        raise CnncError(f"image '{shown}' is corrupt or unsupported ({_reason(err)})") from None


# Only for the wording of a refusal: which format a file that no reader accepts claims to be.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if len(data) >= 2 and data[0:1] == b"P" and data[1:2] in b"1234567":
        return "PBM/PGM/PPM"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _channels(mode: str) -> int:
    """The channels `read_image` gives an image of this Pillow mode (see the module docstring)."""
    return 1 if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16") else 3


def _check_declared_size(img, shown: str, max_bytes: int) -> None:
    width, height = img.size
    channels = _channels(img.mode)
    need = width * height * channels * 4  # the float32 array read_image returns
    if width == 0 or height == 0:
        raise CnncError(f"image '{shown}' has no pixels ({width}x{height})")
    if need > max_bytes:
        raise CnncError(f"image '{shown}' declares {width}x{height} pixels ({files.size_text(need)} decoded), "
                        f"more than the limit of {files.size_text(max_bytes)}",
                        hint="a file this large is refused as a possible decompression bomb; "
                             "set CNNC_MAX_IMAGE (bytes) to raise the limit")


def _pixels(img, shown: str) -> np.ndarray:
    """Decoded pixels as float32 [C, H, W] in [0, 1], following the mode rules of the module."""
    mode = img.mode
    if mode in ("1", "L"):
        return (np.asarray(img.convert("L"), np.float32) / np.float32(255))[None]
    if mode == "I" or mode.startswith("I;16"):
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise CnncError(f"image '{shown}' holds values outside the 16-bit range "
                            f"({int(values.min())} to {int(values.max())})")
        return (values.astype(np.float32) / np.float32(65535))[None]
    if mode == "F":
        values = np.asarray(img, np.float32)
        if not np.isfinite(values).all():
            raise CnncError(f"image '{shown}' holds NaN or infinite values")
        return values[None].copy()
    if mode == "LA":
        return (np.asarray(img.getchannel("L"), np.float32) / np.float32(255))[None]
    if mode in ("P", "PA"):
        _check_palette(img, shown)
    rgb = np.asarray(img.convert("RGB"), np.float32) / np.float32(255)  # P, PA, RGBA, CMYK, ...
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _check_palette(img, shown: str) -> None:
    """A palette image needs a palette of whole entries and pixels that index into it
    (Pillow would otherwise show a missing entry as black)."""
    palette = img.palette
    table = palette.palette if palette is not None else b""
    width = len(palette.mode) if palette is not None else 3
    if not table or len(table) % width:
        raise CnncError(f"image '{shown}' is a palette image without a valid palette "
                        f"({len(table)} palette bytes)")
    entries = len(table) // width
    top = int(np.asarray(img.getchannel(0)).max(initial=0))
    if top >= entries:
        raise CnncError(f"image '{shown}' is corrupt: a pixel uses palette entry {top}, "
                        f"the palette has {entries}")


def read_image(path: PathLike, max_bytes: int | None = None) -> np.ndarray:
    """One image as float32 [C, H, W] in [0, 1]: C = 1 (grey) or 3 (colour); alpha is dropped.

    The header is checked against `max_bytes` (default `image_limit()`) for the
    decoded float32 array before any pixel is decoded.
    """
    shown = files.describe_path(path)
    limit = image_limit() if max_bytes is None else max_bytes
    data = files.read_bytes(path, "image", limit)
    with _open_header(data, shown) as img:
        _check_declared_size(img, shown, limit)
        try:
            with warnings.catch_warnings():
                # Pillow warns about what it repairs or skips (corrupt EXIF, odd chunks): the pixels
                # decode all the same; its warnings would only add noise after cnnc's own output.
                warnings.simplefilter("ignore", UserWarning)
                img.load()
                return _pixels(img, shown)
        except CnncError:
            raise
        except Exception as err:  # truncated data, a bad palette, a decoder error...
            raise CnncError(f"image '{shown}' is corrupt or unsupported ({_reason(err)})") from None


def image_shape(path: PathLike, max_bytes: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) of the array `read_image` would return, from the file's header alone (checked like
    `read_image`'s, nothing decoded): what a command checks before it decodes any image."""
    shown = files.describe_path(path)
    limit = image_limit() if max_bytes is None else max_bytes
    data = files.read_bytes(path, "image", limit)
    with _open_header(data, shown) as img:
        _check_declared_size(img, shown, limit)
        return (_channels(img.mode), img.size[1], img.size[0])


# ------------------------------------------------------------------ channels and size
# ITU-R 601-2 luma, the weights Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[C, H, W] -> [channels, H, W]: grey to RGB repeats the channel; RGB to grey is the
    ITU-R 601-2 luma 0.299 R + 0.587 G + 0.114 B (as Pillow's convert("L"))."""
    have = image.shape[0]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    if have == 3 and channels == 1:
        return np.tensordot(_LUMA, image, axes=1)[None].astype(np.float32)
    raise CnncError(f"cannot convert an image with {have} channels to {channels}")


def target_size(size: int | Sequence[int]) -> tuple[int, int]:
    """The (height, width) that `size` asks for: an int n means n x n; a pair is (height, width)."""
    if isinstance(size, bool):
        raise CnncError(f"images: size must be a positive whole number or (height, width), got {size!r}")
    if isinstance(size, (int, np.integer)):
        pair = (int(size), int(size))
    elif isinstance(size, (list, tuple)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        pair = (int(size[0]), int(size[1]))
    else:
        raise CnncError(f"images: size must be a positive whole number or (height, width), got {size!r}")
    if min(pair) < 1 or max(pair) > 65535:
        raise CnncError(f"images: size must lie between 1 and 65535 pixels, got {size!r}")
    return pair


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C, H, W] float32 -> [C, height, width] with Pillow's bilinear filter (`Image.BILINEAR`).

    Each channel is resized as a 32-bit float image, so no precision is lost to
    8-bit rounding. Pillow's bilinear filter is a triangle filter widened by the
    scale factor when shrinking (it averages every source pixel that falls
    under an output pixel, i.e. it anti-aliases) and plain bilinear
    interpolation when enlarging; pixel centres are aligned.
    """
    height, width = size
    if image.shape[1:] == (height, width):
        return image
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(channel, np.float32))
                                .resize((width, height), Image.BILINEAR), np.float32)
                     for channel in image])


# ------------------------------------------------------------------ masks
# Modes whose pixel values are class indices as they are: 8-bit grey, palette (the index, not the
# colour it looks up) and 1-bit (0 or 1).
_MASK_MODES = ("L", "P", "1")


def read_mask(path: PathLike, max_bytes: int | None = None) -> np.ndarray:
    """A segmentation mask as uint8 [H, W] of class indices, from an 8-bit grey or palette image.

    A palette image's indices are the classes (its colours are only for viewers);
    any other mode (RGB, 16-bit, alpha) is refused naming the file, since its
    values are colours, not indices. Bounded like `read_image`.
    """
    shown = files.describe_path(path)
    limit = image_limit() if max_bytes is None else max_bytes
    data = files.read_bytes(path, "mask", limit)
    with _open_header(data, shown) as img:
        _check_declared_size(img, shown, limit)
        if img.mode not in _MASK_MODES:
            raise CnncError(f"mask '{shown}' is a {img.mode} image; a mask holds one class index per pixel",
                            hint="save masks as 8-bit grey or palette PNGs (value = class index)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # see read_image
                img.load()
                return np.asarray(img if img.mode != "1" else img.convert("L").point(lambda v: v // 255),
                                  np.uint8).copy()
        except Exception as err:  # truncated data, a decoder error...
            raise CnncError(f"mask '{shown}' is corrupt or unsupported ({_reason(err)})") from None


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] class indices -> [height, width] with Pillow's nearest filter (indices are never mixed)."""
    height, width = size
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST), np.uint8)
