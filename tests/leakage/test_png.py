import struct
import zlib

import numpy as np
import pytest

from leakage.errors import ShapeMismatchError
from leakage.png import encode_png, image_grid, write_grid


def _decode(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, dict[bytes, bytes]()
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, payload = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + payload)
        chunks[kind] = chunks.get(kind, b"") + payload
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(_decode(encode_png(rgb)), rgb)


def test_grid_puts_originals_above_reconstructions(tmp_path):
    originals = np.zeros((2, 3, 4, 4))
    reconstructions = np.ones((2, 1, 4, 4))  # greyscale rows are expanded to RGB
    path = write_grid(tmp_path / "g.png", originals, reconstructions, scale=2)
    pixels = _decode(path.read_bytes())
    assert pixels.shape == (2 + 2 * (8 + 2), 2 + 2 * (8 + 2), 3)
    assert (pixels[2:10, 2:10] == 0).all()  # first original
    assert (pixels[12:20, 2:10] == 255).all()  # first reconstruction


def test_bad_input_is_refused():
    with pytest.raises(ShapeMismatchError):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ShapeMismatchError):
        image_grid([np.zeros((1, 2, 4, 4))])
