"""Reading photos, videos and cameras for inference, with one clear message per kind of bad input.

Images are decoded with Pillow: EXIF orientation applied (a phone photo comes out upright),
greyscale expanded to RGB, alpha composited over white, 16-bit scaled to 8-bit, CMYK converted;
unreadable, truncated and non-image files and images above ``max_pixels`` raise
:class:`MediaError` naming the file and the problem. Videos and cameras are read with OpenCV one
frame at a time (memory does not grow with length); a frame's timestamp is the container's
presentation time (``CAP_PROP_POS_MSEC``), so variable-frame-rate videos get true times.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "MediaError",
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "MAX_PIXELS",
    "read_image",
    "VideoSource",
    "Frame",
    "FrameError",
    "image_frames",
    "prefetch",
    "InputItem",
    "expand_inputs",
]

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".jp2"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".mts"}
#: default limit on image size (pixels); above it an image is refused rather than exhausting memory
MAX_PIXELS = 100_000_000


class MediaError(ValueError):
    """An input that cannot be used; the message names it and says what is wrong."""


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535.0 if a.max(initial=0) > 255 or arr.dtype.itemsize >= 2 else 255.0
    else:  # float images: [0, 1] or [0, 255]
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
    return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)


def read_image(path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to an upright RGB ``uint8`` ``(H, W, 3)`` array.

    Handles greyscale, palette, alpha (composited over white), 16-bit, CMYK and EXIF-rotated
    images. Raises :class:`MediaError` for a missing, unreadable, truncated or non-image file, and
    for an image with more than ``max_pixels`` pixels (``None`` or 0: no limit).
    """
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise ImportError("reading photos for inference needs Pillow: pip install pillow (or pip install 'audet[faces]')") from None

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(f"{path}: file not found")
    if os.path.isdir(path):
        raise MediaError(f"{path}: is a folder, not an image")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our own limit below gives the clearer message
    try:
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            raise MediaError(f"{path}: not an image (the content is no known image format, whatever its name says); "
                             "remove it from the input or give it its real extension") from None
        except OSError as exc:
            raise MediaError(f"{path}: cannot read the file ({exc})") from None
        with im:
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                raise MediaError(f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels), above the limit of "
                                 f"{max_pixels / 1e6:.0f} megapixels; downscale it or raise --max-pixels")
            try:
                im.load()
                im = ImageOps.exif_transpose(im) or im
            except OSError as exc:
                raise MediaError(f"{path}: truncated or corrupt image data ({exc}); re-export or re-download the file") from None
            mode = im.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
            if mode in ("RGB", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                return np.asarray(im.convert("RGB"))
            arr = np.asarray(im)  # I;16*, I, F: high bit depth
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise MediaError(f"{path}: unsupported image layout {arr.shape} ({mode})")
    return np.ascontiguousarray(arr[:, :, :3])


@dataclass
class Frame:
    index: int  # 0-based position in the video (or in the list of images)
    timestamp: float  # seconds (NaN for still images)
    image: np.ndarray  # RGB uint8 (H, W, 3)
    file: str = ""


@dataclass
class FrameError:
    """A frame (an image of a list) that could not be read; ``message`` says why."""

    index: int
    file: str
    message: str


def image_frames(paths, max_pixels: int | None = MAX_PIXELS, start: int = 0) -> Iterator[Frame | FrameError]:
    """Images as :class:`Frame` s (index = position in ``paths``), unreadable ones as :class:`FrameError`."""
    for i, p in enumerate(paths):
        if i < start:
            continue
        try:
            yield Frame(i, float("nan"), read_image(p, max_pixels), os.fspath(p))
        except MediaError as exc:
            yield FrameError(i, os.fspath(p), str(exc))


class VideoSource:
    """Frames of a video file or a camera (``int`` index), decoded one at a time with OpenCV.

    ``frames(start)`` yields :class:`Frame` s from frame ``start`` on (earlier frames are decoded
    and dropped, so the position is exact for any codec). After the loop, ``truncated`` tells
    whether the file ended before the frame count in its header, and ``frames_read`` how many
    frames were decoded in all.
    """

    def __init__(self, source, max_pixels: int | None = MAX_PIXELS):
        import cv2

        self.is_camera = isinstance(source, int)
        self.name = f"camera {source}" if self.is_camera else os.fspath(source)
        if not self.is_camera:
            if not os.path.exists(self.name):
                raise MediaError(f"{self.name}: file not found")
            if os.path.getsize(self.name) == 0:
                raise MediaError(f"{self.name}: empty file")
        self._cap = cv2.VideoCapture(source if self.is_camera else self.name)
        if not self._cap.isOpened():
            self._cap.release()
            if self.is_camera:
                raise MediaError(f"camera {source} cannot be opened (no such device, or in use by another program)")
            raise MediaError(f"{self.name}: cannot open as a video (corrupt, truncated, or a codec OpenCV lacks)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if n > 0 and not self.is_camera else None
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if max_pixels and self.width * self.height > max_pixels:
            self._cap.release()
            raise MediaError(f"{self.name}: frames are {self.width}x{self.height}, above the limit of "
                             f"{max_pixels / 1e6:.0f} megapixels; raise --max-pixels")
        self.frames_read = 0
        self.truncated = False
        self.variable_rate = False

    def frames(self, start: int = 0) -> Iterator[Frame]:
        import cv2

        cap = self._cap
        t0 = time.monotonic()
        idx = 0
        last_ts = None
        lo_s, hi_s = float("inf"), float("-inf")  # smallest and largest frame step so far
        while True:
            if idx < start:
                ok = cap.grab()
                if not ok:
                    break
                idx += 1
                self.frames_read = idx
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            self.frames_read = idx + 1
            if self.is_camera:
                ts = time.monotonic() - t0
            else:
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                ts = ms / 1000.0 if ms is not None and ms >= 0 else (idx / self.fps if self.fps > 0 else float(idx))
                if last_ts is not None and not self.variable_rate:
                    step = ts - last_ts
                    lo_s, hi_s = min(lo_s, step), max(hi_s, step)
                    if hi_s - lo_s > max(0.001, 0.1 * lo_s):
                        self.variable_rate = True
                        log.info("%s: variable frame rate; timestamps are the container's presentation times", self.name)
                last_ts = ts
            if bgr.ndim == 2:
                rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            else:
                rgb = cv2.cvtColor(bgr[:, :, :3], cv2.COLOR_BGR2RGB)
            yield Frame(idx, float(ts), _to_uint8(rgb), "" if self.is_camera else self.name)
            idx += 1
        if self.frame_count is not None and self.frames_read < self.frame_count - 1:
            self.truncated = self._ends_early()

    #: frames a container's header may over-count without the file being damaged (the count of many
    #: containers is an estimate from duration x frame rate)
    COUNT_SLACK = 3

    def _ends_early(self) -> bool:
        """After decoding stopped before the header's frame count: True when the file is damaged
        (a frame after the stop can still be decoded, or far fewer frames were read than the
        header says), False when the header merely over-counted by a few frames."""
        import cv2

        short = self.frame_count - self.frames_read
        if short > max(self.COUNT_SLACK, 0.02 * self.frame_count):
            return True
        cap = cv2.VideoCapture(self.name)
        try:
            if not cap.isOpened():
                return True
            cap.set(cv2.CAP_PROP_POS_FRAMES, self.frames_read + 1)
            ok, img = cap.read()
            return bool(ok and img is not None)
        finally:
            cap.release()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


def prefetch(frames, size: int = 8, name: str = "audet-reader") -> Iterator:
    """Iterate ``frames`` in a reader thread, up to ``size`` items ahead, so that decoding overlaps
    with the caller's work (OpenCV and Pillow release the GIL while decoding).

    Items come out in order; an exception raised by ``frames`` (a corrupt file, a
    ``KeyboardInterrupt`` in a test's stand-in) is raised in the caller at its place in the order.
    When the caller stops early (``close()``, an exception, Ctrl+C), the reader stops at its next
    item, ``frames`` is closed in the reader thread, and the thread is joined before this returns.
    ``size`` < 1 iterates in the caller's thread.
    """
    if size < 1:
        yield from frames
        return
    q: queue.Queue = queue.Queue(maxsize=int(size))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        it = iter(frames)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # handed to the caller, in order
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - closing must not hide the first problem
                    log.debug("closing the frame source failed: %s", exc)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)


@dataclass
class InputItem:
    kind: str  # "images" (one or more image files, one table) | "video" | "camera"
    source: object  # list of image paths, a video path (str) or a camera index (int)
    name: str  # stem of the output files


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "image" if ext in IMAGE_EXTS else "video" if ext in VIDEO_EXTS else None


def expand_inputs(inputs) -> tuple[list[InputItem], list[str]]:
    """Inputs (image/video files, folders, camera indices as digit strings) -> ``(items, problems)``.

    A folder gives one ``images`` item with all its image files (recursive, sorted; one table for
    the folder) and one ``video`` item per video file in it; other files are skipped. A named file
    with an unknown extension is treated as an image (the reader says clearly if it is not one).
    Output names are made unique (``name``, ``name-2``, ...). ``problems`` lists inputs that do
    not exist or hold nothing usable.
    """
    items: list[InputItem] = []
    problems: list[str] = []
    for raw in inputs:
        s = os.fspath(raw) if not isinstance(raw, int) else str(raw)
        if isinstance(raw, int) or (s.isdigit() and not os.path.exists(s)):
            items.append(InputItem("camera", int(s), f"camera{int(s)}"))
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _kind(q))
            images = [str(q) for q in found if _kind(q) == "image"]
            if images:
                items.append(InputItem("images", images, p.resolve().name or "images"))
            items.extend(InputItem("video", str(q), q.stem) for q in found if _kind(q) == "video")
            if not found:
                problems.append(f"{p}: folder holds no image or video files")
        elif p.exists():
            if _kind(p) == "video":
                items.append(InputItem("video", str(p), p.stem))
            else:
                items.append(InputItem("images", [str(p)], p.stem))
        else:
            problems.append(f"{p}: file not found")
    seen: dict[str, int] = {}
    for it in items:
        n = seen.get(it.name, 0)
        seen[it.name] = n + 1
        if n:
            it.name = f"{it.name}-{n + 1}"
    return items, problems
