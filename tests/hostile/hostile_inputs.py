"""Generators of hostile inputs, made at test time (no binary is committed).

Names and paths an attacker picks, decompression bombs that are small on disk
and huge inflated (built from one repeated full-flush deflate block, so making
a 2 GiB bomb costs milliseconds), images whose header lies about their size,
deeply nested and huge sources, crafted checkpoints and data files, and
hostile metrics files.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from hostile_harness import SECRET

# ------------------------------------------------------------------ names
# File stems that break naive quoting: in Python strings, docstrings, comments, terminals, messages.
HOSTILE_STEMS = {
    "triple-quote": 'x""";open("PWNED","w").write("1");"""y',
    "single-triple-quote": "x''';open('PWNED','w').write('1');'''y",
    "newline": 'a\nopen("PWNED","w").write("1")\n#',
    "carriage-return": 'a\ropen("PWNED","w").write("1")\r#',
    "windows-path": "C:\\Users\\evil\\net",
    "trailing-backslash": "net\\",
    "escape-sequences": "\x1b]0;owned\x07\x1b[2J",
    "unicode-line-separator": "a\u2028open('PWNED','w').write('1')\u2029b",
    "quote-soup": "q'\"\\'\"\\\\x",
}
ESCAPES = "\x1b]0;window title\x07\x1b[2J\x1b]52;c;Y2xpcGJvYXJk\x07"  # title, clear screen, clipboard


# ------------------------------------------------------------------ bombs
_CHUNK = 1 << 20


def _deflate_zeros(n: int) -> bytes:
    """A raw deflate stream (not final) inflating to `n` zero bytes, about 1 KB per MiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(bytes(_CHUNK))
    c.flush(zlib.Z_FULL_FLUSH)  # after a full flush every further 1 MiB block compresses identically
    block = c.compress(bytes(_CHUNK)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    rest = n % _CHUNK
    end = tail.compress(bytes(rest)) + tail.flush(zlib.Z_FULL_FLUSH) if rest else b""
    return block * (n // _CHUNK) + end


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, empty fixed-Huffman block ends a raw deflate stream


def deflate_bomb(prefix: bytes, zeros: int) -> bytes:
    """A complete raw deflate stream of `prefix` followed by `zeros` zero bytes."""
    return _deflate_raw(prefix) + _deflate_zeros(zeros) + _FINAL_EMPTY_BLOCK


def zlib_bomb(prefix: bytes, zeros: int) -> bytes:
    """zlib format (as in PNG's IDAT), with the correct Adler-32 so a decoder reads it all."""
    adler = zlib.adler32(prefix)
    a, b = adler & 0xFFFF, adler >> 16
    b = (b + a * zeros) % 65521  # each zero byte adds a to b and nothing to a
    return b"\x78\xda" + deflate_bomb(prefix, zeros) + struct.pack(">I", (b << 16) | a)


def gzip_bomb(prefix: bytes, zeros: int) -> bytes:
    """gzip format; its CRC is left zero: a reader that inflates everything fails long before checking it."""
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + deflate_bomb(prefix, zeros) + struct.pack("<II", 0, (len(prefix) + zeros) & 0xFFFFFFFF)


def idx_header(dtype_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, dtype_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def write_gzip_idx_bomb(folder: Path, inflated: int = 2 << 30) -> Path:
    """An MNIST IDX folder whose gzipped train images declare 100000x1000x1000 and inflate to 2 GiB."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip_bomb(idx_header(0x08, (100000, 1000, 1000)), inflated))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_header(0x08, (4,)) + bytes(4))
    return folder


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version-1.0 .npy header for `shape` (the data may then lie about its length)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (dtype, tuple(shape))
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def zip_bytes(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip archive written by hand: (name, raw deflate data, inflated size, crc) per member.

    zipfile cannot write a member whose compressed data we made ourselves, and a
    bomb must not be inflated here to be written.
    """
    out, central = bytearray(), bytearray()
    for name, data, size, crc in members:
        raw_name = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size,
                           len(raw_name), 0) + raw_name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                               len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def write_npz_bomb(path: Path, inflated: int = 64 << 20) -> Path:
    """An .npz whose x_train declares 10^12 bytes (shape 10^6 x 1 x 1000 x 1000) and inflates to 64 MiB."""
    header = npy_header((10 ** 6, 1, 1000, 1000))
    labels = npy_bytes(np.zeros(4, np.int64))
    path.write_bytes(zip_bytes([
        ("x_train.npy", deflate_bomb(header, inflated), len(header) + inflated, 0),
        ("y_train.npy", _deflate_raw(labels) + _FINAL_EMPTY_BLOCK, len(labels), zlib.crc32(labels)),
    ]))
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray, palette: bytes | None = None) -> bytes:
    """A valid PNG of 8-bit grey (H, W) or RGB (H, W, 3) pixels; with a palette, colour type 3."""
    pixels = np.asarray(pixels, np.uint8)
    h, w = pixels.shape[:2]
    colour = 3 if palette is not None else (2 if pixels.ndim == 3 else 0)
    rows = pixels.reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    chunks = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
    if palette is not None:
        chunks += png_chunk(b"PLTE", palette)
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A grey PNG declaring width x height whose IDAT really inflates to (width + 1) x height zeros."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib_bomb(b"", (width + 1) * height))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR is patched to declare another size, with its CRC recomputed."""
    assert data[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + struct.pack(">I", 13) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) \
        + data[33:]


# ------------------------------------------------------------------ sources
def nested_parens(depth: int = 1000) -> str:
    return ("network N {\n    input x: [1, 8, 8]\n    x -> flatten -> linear(" + "(" * depth + "4"
            + ")" * depth + ")\n}\n")


def nested_ifs(depth: int = 1000) -> str:
    body = "relu"
    for _ in range(depth):
        body = f"if true {{ {body} }} else {{ relu }}"
    return "network N {\n    input x: [1, 8, 8]\n    x -> " + body + "\n}\n"


def long_literal(digits: int = 5000) -> str:
    return "network N {\n    input x: [1, 8, 8]\n    x -> flatten -> linear(" + "9" * digits + ")\n}\n"


def relu_chain(size: int = 900_000) -> str:
    """A single line of `-> relu` about `size` bytes long (more layers than cnnc allows)."""
    return "network N {\n    input x: [1, 8, 8]\n    x" + " -> relu" * (size // 8) + "\n}\n"


def shadow_text() -> str:
    """An /etc/shadow-like file carrying the secret marker that must never be quoted."""
    return f"root:{SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


# ------------------------------------------------------------------ checkpoints and data
def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)  # np.savez appends .npz only to names without it
    if not path.exists():  # np.savez appended ".npz"
        os.replace(str(path) + ".npz", path)
    return path


def meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def craft_checkpoint(source: Path, target: Path, *, meta_changes: dict | None = None,
                     drop_meta: tuple[str, ...] = (), array_changes: dict | None = None) -> Path:
    """A copy of the checkpoint `source` with metadata keys changed or removed, or arrays replaced."""
    arrays = read_npz(source)
    meta = json.loads(arrays["__meta__"].tobytes())
    for key in drop_meta:
        meta.pop(key, None)
    meta.update(meta_changes or {})
    arrays["__meta__"] = meta_array(meta)
    for key, value in (array_changes or {}).items():
        arrays[key] = value
    return write_npz(target, arrays)


def pickled_npz(path: Path) -> Path:
    """An .npz with an object-dtype (pickled) member; loading it would run pickle."""
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__meta__.npy", npy_bytes(meta_array({"epoch": 1})))
        zf.writestr("param/evil.npy", buf.getvalue())
    return path
