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


def make_checkpoint(path, clip: dict | None = None, seed: int = 0, **preprocess) -> Path:
    from audet.models.checkpoint import save_checkpoint
    from audet.models import create_model

    torch.manual_seed(seed)
    pre = {**({"clip": clip} if clip else {}), **preprocess} or None
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


# --- a fast stand-in for MTCNN + dlib ------------------------------------------------------------
# Most inference tests check resuming, chunking, tracking, writers and bad media, not the face
# models: they use BlobFaces through the public plug-in interface (audet.faces), or, for
# `audet predict`, through use_blob_faces() below. Real MTCNN + dlib stay in the tests of photos
# (the astronaut, two faces in one photo, EXIF, downscaled detection) and one short video.

BACKGROUND = (95, 95, 110)  # what scene() paints around the faces


class BlobFaces:
    """A deterministic face detector + landmarker for the synthetic scenes of this module: every
    blob of pixels that differs from the flat background is a face; its 68 landmarks are the
    procedural iBUG template (:func:`audet.data.prepare.landmarks.face_template_68`) fitted to the
    box, so the real protocol alignment and the checkpoint's transform still run on them.

    Accepts (and ignores) the keyword arguments of MTCNNFaceDetector / DlibLandmarker, so it can stand in
    for them in the factories.
    """

    def __init__(self, *args, min_area: int = 400, **kwargs):
        import os

        from audet.data.prepare.landmarks import face_template_68

        self.min_area = int(min_area)
        self.template = face_template_68()
        self.delay = float(os.environ.get("AUDET_TEST_FACE_DELAY", 0))  # seconds per frame (a kill test)

    def detect(self, image):
        from audet.faces import DetectedFace

        if self.delay:
            import time

            time.sleep(self.delay)

        img = np.asarray(image).astype(np.int16)
        mask = (np.abs(img - np.asarray(BACKGROUND, np.int16)).max(axis=2) > 30).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        return [DetectedFace((float(x), float(y), float(x + w), float(y + h)), 0.99)
                for x, y, w, h, area in stats[1:] if area >= self.min_area]

    def landmarks(self, image, boxes):
        out = []
        for x1, y1, x2, y2 in boxes:
            out.append(self.template * [x2 - x1, y2 - y1] + [x1, y1])
        return out


def use_blob_faces(monkeypatch):
    """Make the built-in factories (``--face-detector mtcnn``, ``--landmarker dlib``, i.e. what
    `audet predict` builds) give :class:`BlobFaces` for the rest of a test."""
    from audet import faces

    monkeypatch.setitem(faces.FACE_DETECTORS, "mtcnn", BlobFaces)
    monkeypatch.setattr(faces, "DlibLandmarker", BlobFaces)


#: runs `audet predict` in a subprocess with BlobFaces (tests/ must be on PYTHONPATH)
BLOB_CLI = ("import sys; from audet import faces; from inference_helpers import BlobFaces; "
            "faces.FACE_DETECTORS['mtcnn'] = BlobFaces; faces.DlibLandmarker = BlobFaces; "
            "from audet.cli import main; sys.exit(main(sys.argv[1:]))")
