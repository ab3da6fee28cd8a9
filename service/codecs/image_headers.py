"""A bounded walk over an image's chunks (PNG) or marker segments (JPEG) before Pillow reads it.

Pillow parses every ancillary chunk or marker segment it meets, in Python: a small valid image
padded with millions of empty chunks or comment markers costs seconds of a worker (or, for a
small body, of the event loop) before a pixel is decoded. This walk reads only each segment's
length and type, at a few tenths of a microsecond each, and stops at caps far above what an
encoder writes (segments, and the bytes in them): so the work an image's structure can cost is
bounded by its size and the caps.
"""

from __future__ import annotations

import re

from easerve.service.errors import BadRequest

# Chunks other than image data (PNG) or marker segments before the scan (JPEG): encoders write
# tens (text, colour profiles, EXIF, thumbnails).
MAX_METADATA_SEGMENTS = 1024
# ... and this many bytes in them: colour profiles and XMP run to a few MB at most.
MAX_METADATA_BYTES = 16 * 1024 * 1024
# PNG image data may be split into many IDAT chunks (encoders use 8-64 KiB each): one per KiB
# of the file is allowed, plus the cap above.
BYTES_PER_DATA_CHUNK = 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8"
_JPEG_FILL = re.compile(rb"\xff+")
_JPEG_SCAN = 0xDA  # start of scan: the entropy-coded pixel data follows
_JPEG_SCAN_MARKER = bytes((0xFF, _JPEG_SCAN))
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length


def check_segments(data: bytes) -> None:
    """BadRequest when a PNG or JPEG holds more chunks or marker segments, or more bytes in
    them, than any encoder writes (see the module docstring); other formats, and truncated files
    (for Pillow to report), pass."""
    if metadata_segments(data) <= MAX_METADATA_SEGMENTS:
        return
    if data.startswith(_PNG_SIGNATURE):
        raise BadRequest(f"the PNG holds more than {MAX_METADATA_SEGMENTS} chunks besides image data; re-encode it")
    raise BadRequest(
        f"the JPEG holds more than {MAX_METADATA_SEGMENTS} marker segments before its image data; re-encode it"
    )


def metadata_segments(data: bytes, stop_after: int = MAX_METADATA_SEGMENTS) -> int:
    """The chunks besides image data (PNG) or the marker segments before the first scan and the
    scans after it (JPEG) in `data`, counted until there are more than `stop_after` (the walk stops there: its cost is
    bounded by `stop_after`, and for a PNG by the image-data chunks its size allows); 0 for other
    formats. BadRequest for a PNG whose image data is split into more chunks than
    BYTES_PER_DATA_CHUNK allows, or when the chunks or segments walked hold more than
    MAX_METADATA_BYTES."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_metadata(data, stop_after)
    if data.startswith(_JPEG_START):
        return _jpeg_segments(data, stop_after)
    return 0


def _png_metadata(data: bytes, stop_after: int) -> int:
    data_chunks_allowed = MAX_METADATA_SEGMENTS + len(data) // BYTES_PER_DATA_CHUNK
    metadata = chunks = metadata_bytes = 0
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data) and metadata <= stop_after:
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"IEND":
            break
        chunks += 1
        if kind != b"IDAT":
            metadata += 1
            metadata_bytes += length
        if chunks > data_chunks_allowed:
            raise BadRequest(
                f"the PNG holds more chunks than an image needs (over {data_chunks_allowed} in all); re-encode it"
            )
        _check_metadata_bytes("PNG", metadata_bytes)
        position += 12 + length  # length, type, data, CRC
    return metadata


def _jpeg_segments(data: bytes, stop_after: int) -> int:
    segments = metadata_bytes = 0
    position = len(_JPEG_START)
    while position < len(data) and segments <= stop_after:
        fill = _JPEG_FILL.match(data, position)
        if fill is None:  # not a marker where one must be: corrupt, Pillow says so
            break
        position = fill.end()
        if position >= len(data):
            break
        marker = data[position]
        position += 1
        if marker == _JPEG_SCAN:
            # Each further scan is another pass over every block (a progressive JPEG's few, or
            # an attacker's thousands): counted, from their markers (the entropy-coded data
            # between them stuffs every 0xFF with a zero, so none is mistaken for one).
            segments += data.count(_JPEG_SCAN_MARKER, position)
            break
        if marker in _JPEG_STANDALONE:
            continue
        segments += 1
        length = int.from_bytes(data[position : position + 2], "big")
        metadata_bytes += length
        _check_metadata_bytes("JPEG", metadata_bytes)
        position += length
    return segments


def _check_metadata_bytes(kind: str, metadata_bytes: int) -> None:
    if metadata_bytes > MAX_METADATA_BYTES:
        raise BadRequest(
            f"the {kind} holds more than {MAX_METADATA_BYTES // (1024 * 1024)} MiB in chunks or marker segments "
            "besides its image data; re-encode it"
        )
