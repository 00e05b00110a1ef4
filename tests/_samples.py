"""Pictures for the tests, all from inside this repository's test dependencies.

``sample(name)`` / ``sample_path(name)``: real photos from scikit-image's bundled sample data
(``skimage/data/<name>``: chelsea.png, coffee.png, astronaut.png, horse.png, rocket.jpg, ...;
mostly public domain or CC0, see scikit-image's own licence). scikit-image is a test
dependency (the ``test`` extra); the files are read by path, without importing ``skimage``
(slow to import).

``burst_frame(i)``: frame ``i`` of a rendered burst of one scene (potatoes moving along a
belt, 4 pixels a frame; 300 x 300 like the potato burst of the evaluation data it stands in
for): neighbouring frames are near-identical (within the verifier's hash gate) but different
pictures, which the verifier must refuse, also as a 75 x 75 copy; a frame's own JPEG q85 and
75 x 75 copies are the same picture.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path

import numpy as np
from PIL import Image


@functools.cache
def _data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "scikit-image is not installed: the tests take their sample photos from it "
            "(it is in the 'test' extra: python3 -m pip install -e '.[test]', or "
            "python3 -m pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_path(name: str) -> Path:
    """The path of scikit-image's sample file ``name`` (e.g. ``"chelsea.png"``)."""
    path = _data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sample in the installed scikit-image")
    return path


@functools.cache
def sample(name: str) -> bytes:
    """The bytes of scikit-image's sample file ``name``."""
    return sample_path(name).read_bytes()


BURST_STEP = 4  # pixels the belt moves between two frames


@functools.cache
def burst_frame(i: int, size: tuple[int, int] = (300, 300)) -> bytes:
    """Frame ``i`` of a burst (PNG bytes): nine potatoes on a belt, moved ``i * BURST_STEP``
    pixels to the right, the rails above and below fixed. Deterministic (fixed seed)."""
    w, h = size
    rnd = np.random.default_rng(7)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    shift = i * BURST_STEP
    belt = 70 + 12 * np.sin((x - shift) / 9.0) + 10 * (y / h)  # slats move with the belt
    arr = np.stack([belt, belt * 0.97, belt * 0.93], axis=-1)
    arr[: h // 8] = [150, 150, 155]
    arr[-(h // 8):] = [150, 150, 155]
    for _ in range(9):
        cx = rnd.uniform(-40, w + 40) + shift
        cy = rnd.uniform(h * 0.25, h * 0.75)
        rx, ry = rnd.uniform(18, 34), rnd.uniform(12, 22)
        angle = rnd.uniform(0, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        u = ((x - cx) * c + (y - cy) * s) / rx
        v = (-(x - cx) * s + (y - cy) * c) / ry
        inside = np.clip((1.0 - (u * u + v * v)) * 6, 0, 1)[..., None]
        shade = (1.15 - 0.35 * np.clip(u * 0.6 + v * 0.8 + 0.3, -1, 1))[..., None]
        colour = np.array([rnd.uniform(150, 200), rnd.uniform(110, 140), rnd.uniform(60, 85)])
        arr = arr * (1 - inside) + inside * colour * shade
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()
