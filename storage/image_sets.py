"""Decode the images of an archive that a training or calibration run needs, into one in-memory array.

Each image is decoded once, straight from the streamed shard, at the size the model wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.archives import Shard, iter_members, list_shards
from xray.codec.decode import DecodeError, decode_resized, image_dimensions


@dataclass(frozen=True)
class ImageSet:
    """Decoded images in a fixed order: ids (N,), pixels (N, 1, S, S) uint8, and the ones that failed."""

    ids: tuple[str, ...]
    pixels: np.ndarray
    errors: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DecodedShard:
    """One shard's wanted images, decoded once: ids (N,), pixels (N, 1, S, S) uint8, the stored image's
    (width, height) per image (N, 2) — bounding boxes are in those pixels — and the failures."""

    shard: str
    ids: np.ndarray
    pixels: np.ndarray
    dimensions: np.ndarray
    errors: tuple[tuple[str, str], ...]


def load_shard_images(shard: Shard, wanted: frozenset[str] | None, size: int,
                      endpoint: str | None = None) -> DecodedShard:
    """Decode one shard's wanted images (all when None) at `size`, in archive order."""
    ids: list[str] = []
    pixels: list[np.ndarray] = []
    dims: list[tuple[int, int]] = []
    errors: list[tuple[str, str]] = []
    for member in iter_members(shard, endpoint):
        if wanted is not None and member.image_id not in wanted:
            continue
        if member.error is not None or member.data is None:
            errors.append((member.image_id, member.error or "no data"))
            continue
        try:
            pixels.append(decode_resized(member.data, size)[None])
            dims.append(image_dimensions(member.data))
        except DecodeError as exc:
            errors.append((member.image_id, str(exc)))
            continue
        ids.append(member.image_id)
    stacked = np.stack(pixels) if pixels else np.zeros((0, 1, size, size), np.uint8)
    return DecodedShard(shard.name, np.array(ids, dtype=object), stacked,
                        np.array(dims, dtype=np.int64).reshape(-1, 2), tuple(errors))


def load_image_set(
    archive: str, wanted: set[str] | None, size: int, endpoint: str | None = None
) -> ImageSet:
    """Images whose id is in wanted (all when None), sorted by id so the order is deterministic."""
    found: dict[str, np.ndarray] = {}
    errors: list[tuple[str, str]] = []
    for shard in list_shards(archive, endpoint):
        decoded = load_shard_images(shard, None if wanted is None else frozenset(wanted), size, endpoint)
        found.update(zip(decoded.ids.tolist(), decoded.pixels, strict=True))
        errors.extend(decoded.errors)
    ids = tuple(sorted(found))
    pixels = np.stack([found[i] for i in ids]) if ids else np.zeros((0, 1, size, size), np.uint8)
    return ImageSet(ids=ids, pixels=pixels, errors=tuple(errors))
