"""Media and checkpoints the inference tests make themselves: skimage's astronaut (a public-domain
photo) and videos written with cv2.VideoWriter in which copies of her face move, enter and leave."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

AUS = [1, 2, 12]


def astronaut() -> np.ndarray:
    from skimage.data import astronaut as _a

    return _a()


def face_patch(h: int = 120, w: int = 95) -> np.ndarray:
    """The astronaut's head and shoulders, resized to (h, w) (RGB)."""
    return cv2.resize(astronaut()[20:300, 120:340], (w, h), interpolation=cv2.INTER_AREA)


def make_checkpoint(path, clip: dict | None = None, seed: int = 0) -> Path:
    from audet.engine.checkpoint import save_checkpoint
    from audet.models import create_model

    torch.manual_seed(seed)
    pre = {"clip": clip} if clip else None
    model = create_model("resnet_tiny", num_aus=len(AUS), aus=AUS, width=4, preprocess=pre).eval()
    save_checkpoint(model, path)
    return Path(path)


def scene(t: int, faces: list[tuple[int, int, bool]], size=(320, 180)) -> np.ndarray:
    """One RGB frame with a face at (x, y) for each ``(x, y, mirrored)``; x moves with t."""
    W, H = size
    img = np.full((H, W, 3), 95, np.uint8)
    img[:, :, 2] = 110
    f = face_patch()
    for x, y, mirrored in faces:
        p = f[:, ::-1] if mirrored else f
        h, w = p.shape[:2]
        img[y:y + h, x:x + w] = p
    return img


def enter_leave_schedule(t: int) -> list[tuple[int, int, bool]]:
    """Face A all along (drifting right); face B in frames 8-17 and again in 34-41 (a new id:
    it was gone for more than max_age=10 frames)."""
    faces = [(10 + t, 30, False)]
    if 8 <= t <= 17 or 34 <= t <= 41:
        faces.append((205, 40, True))
    return faces


def write_video(path, n: int = 44, schedule=enter_leave_schedule, fps: float = 25.0, fourcc: str = "mp4v",
                size=(320, 180)) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert vw.isOpened(), f"cannot write {path}"
    for t in range(n):
        vw.write(cv2.cvtColor(scene(t, schedule(t), size), cv2.COLOR_RGB2BGR))
    vw.release()
    return Path(path)


def make_variable_rate(src, dst, durations: list[int]) -> Path:
    """Rewrite an MP4's video time-to-sample table (``stts``) so that frame i lasts ``durations[i]``
    timescale units: a variable-frame-rate file with the same pictures. The ``moov`` box must come
    after ``mdat`` (as OpenCV writes it), so chunk offsets stay valid."""
    import struct

    data = bytes(Path(src).read_bytes())

    def boxes(buf, start, end):
        i = start
        while i < end:
            size, typ = struct.unpack(">I4s", buf[i:i + 8])
            yield i, size, typ
            i += size

    def rewrite(buf: bytes, start: int, end: int, path: tuple) -> bytes:
        out = b""
        for off, size, typ in boxes(buf, start, end):
            body = buf[off + 8: off + size]
            if typ in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                body = rewrite(buf, off + 8, off + size, path + (typ,))
            elif typ == b"stts":
                n = sum(struct.unpack(">I", buf[off + 16 + 8 * k: off + 20 + 8 * k])[0]
                        for k in range(struct.unpack(">I", buf[off + 12: off + 16])[0]))
                assert n == len(durations), f"{n} samples, {len(durations)} durations"
                body = buf[off + 8: off + 12] + struct.pack(">I", n) + b"".join(struct.pack(">II", 1, d) for d in durations)
            out += struct.pack(">I", len(body) + 8) + typ + body
        return out

    top = list(boxes(data, 0, len(data)))
    assert [t for _, _, t in top].index(b"moov") > [t for _, _, t in top].index(b"mdat"), "moov before mdat"
    Path(dst).write_bytes(rewrite(data, 0, len(data), ()))
    return Path(dst)
