"""Face detectors whose weights ship inside registry packages, on frontal to profile faces: recall,
false detections and speed.

Detectors (audet.faces.FACE_DETECTORS): ``mtcnn`` (facenet-pytorch), ``dlib-hog``, ``dlib-cnn``
(dlib's MMOD CNN, weights in face-recognition-models) and ``haar`` (OpenCV's frontal + profile
cascades, both directions). Not compared: OpenCV's YuNet (no model file ships in any registry
package) and mediapipe (the releases that still ship face models need protobuf<5, which conflicts
with onnx 1.23; /work/shared/reference/environment.md).

The test set, honestly described (no licensed profile photos are available here):

- ``astronaut``: skimage.data.astronaut(), a real near-frontal face, and its mirror image (2);
- ``roll``: the astronaut rotated in the image plane by +-20 and +-40 degrees (4);
- ``warp``: the astronaut under a planar perspective warp that narrows one side of the face by
  cos(30/45/60 degrees), both directions (6). A stand-in for a head turn, NOT a real one: the
  face stays flat (no occluded cheek, no nose outline);
- ``cameraman``: skimage.data.camera(), a real three-quarter-to-profile face, and its mirror (2);
- ``synth yaw Y``: faces rendered by audet's synthetic generator (docs/synth.md) at yaw
  Y = 0, 15, 30, 45, 60, 75, 90 degrees, 6 identities each, alternating left and right turns,
  face height ~110 px in 256 px images. Real head turns of a drawn (not photographed) face.

A face counts as found when a detection's centre lies in the true box and the true box's centre
in the detection (box conventions differ between detectors); other detections are false.
Speed: median ms per call on the 512x512 astronaut, one thread each (torch and OpenCV), 5 calls.

    PYTHONPATH=src python benchmarks/face_detectors.py

Prints a markdown table (docs/inference.md keeps the measured figures).
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

ASTRONAUT_FACE = (175.0, 65.0, 270.0, 170.0)
CAMERAMAN_FACE = (188.0, 105.0, 262.0, 198.0)


def _mirror(img, box):
    W = img.shape[1]
    return img[:, ::-1].copy(), (W - box[2], box[1], W - box[0], box[3])


def _rotate(img, box, deg):
    h, w = img.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    M = cv2.getRotationMatrix2D((cx, cy), deg, 1.0)
    out = cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REFLECT)
    pts = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[2], box[3], 1], [box[0], box[3], 1]]) @ M.T
    return out, (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())


def _warp(img, box, deg):
    """Narrow the face's right half (deg > 0) or left half by cos(deg), as a planar homography."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    c = np.cos(np.radians(abs(deg)))
    cx = (x1 + x2) / 2
    src = np.float32([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    half = (x2 - x1) / 2
    shrink = (1 - c) * (y2 - y1) * 0.15
    if deg > 0:
        dst = np.float32([[x1, y1], [cx + half * c, y1 + shrink], [cx + half * c, y2 - shrink], [x1, y2]])
    else:
        dst = np.float32([[cx - half * c, y1 + shrink], [x2, y1], [x2, y2], [cx - half * c, y2 - shrink]])
    H = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(img, H, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
    return out, (float(dst[:, 0].min()), float(dst[:, 1].min()), float(dst[:, 0].max()), float(dst[:, 1].max()))


def test_set(n_ids: int = 6) -> list[tuple[str, np.ndarray, tuple]]:
    from skimage.data import astronaut, camera

    items = []
    a = astronaut()
    items += [("astronaut", a, ASTRONAUT_FACE), ("astronaut", *_mirror(a, ASTRONAUT_FACE))]
    items += [("roll +-20/40", *_rotate(a, ASTRONAUT_FACE, d)) for d in (20, -20, 40, -40)]
    items += [("warp 30", *_warp(a, ASTRONAUT_FACE, d)) for d in (30, -30)]
    items += [("warp 45", *_warp(a, ASTRONAUT_FACE, d)) for d in (45, -45)]
    items += [("warp 60", *_warp(a, ASTRONAUT_FACE, d)) for d in (60, -60)]
    c = np.repeat(camera()[:, :, None], 3, axis=2)
    items += [("cameraman (3/4-profile)", c, CAMERAMAN_FACE), ("cameraman (3/4-profile)", *_mirror(c, CAMERAMAN_FACE))]
    items += synth_faces(n_ids)
    return items


def synth_faces(n_ids: int, size: int = 256) -> list[tuple[str, np.ndarray, tuple]]:
    from audet.data.synth.grid import render_still
    from audet.data.synth.identity import make_subject
    from audet.data.synth.presets import get_config

    cfg = get_config("default")
    out = []
    for yaw in (0, 15, 30, 45, 60, 75, 90):
        for i in range(n_ids):
            ident = make_subject(0, i, cfg)[0]
            sign = 1 if i % 2 == 0 else -1
            img, lm = render_still(ident, cfg, size=size, scale=0.18, yaw=sign * yaw)
            lm = np.asarray(lm, dtype=np.float64).reshape(-1, 2)
            x1, y1 = lm.min(0)
            x2, y2 = lm.max(0)
            pad = 0.1 * (y2 - y1)
            out.append((f"synth yaw {yaw}", np.ascontiguousarray(img), (x1 - pad, y1 - 2 * pad, x2 + pad, y2 + pad)))
    return out


def found(det_box, true_box) -> bool:
    dx, dy = (det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2
    tx, ty = (true_box[0] + true_box[2]) / 2, (true_box[1] + true_box[3]) / 2
    return (true_box[0] <= dx <= true_box[2] and true_box[1] <= dy <= true_box[3]
            and det_box[0] <= tx <= det_box[2] and det_box[1] <= ty <= det_box[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["mtcnn", "mtcnn:min_score=0.9", "dlib-hog", "dlib-cnn", "haar"],
                    help="names of audet.faces.FACE_DETECTORS, optionally NAME:key=value (e.g. the old "
                         "MTCNN default mtcnn:min_score=0.9)")
    ap.add_argument("--ids", type=int, default=6, help="synthetic identities per yaw")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from audet.faces import FACE_DETECTORS as DETECTORS

    items = test_set(args.ids)
    groups = list(dict.fromkeys(g for g, _, _ in items))
    rows = {}
    for name in args.detectors:
        base, _, opts = name.partition(":")
        kwargs = {k: float(v) for k, v in (o.split("=") for o in opts.split(",") if o)}
        det = DETECTORS[base](**kwargs)
        hits, false = {g: [0, 0] for g in groups}, 0
        for g, img, box in items:
            faces = det.detect(img)
            ok = [found(f.box, box) for f in faces]
            hits[g][0] += any(ok)
            hits[g][1] += 1
            false += sum(not o for o in ok)
        a = items[0][1]
        det.detect(a)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            det.detect(a)
            times.append(time.perf_counter() - t0)
        rows[name] = (hits, false, 1000 * float(np.median(times)))
        print(f"{name}: done", flush=True)
    print()
    print("| faces | n | " + " | ".join(args.detectors) + " |")
    print("|---|---|" + "---|" * len(args.detectors))
    for g in groups:
        n = rows[args.detectors[0]][0][g][1]
        print(f"| {g} | {n} | " + " | ".join(f"{rows[d][0][g][0]}/{n}" for d in args.detectors) + " |")
    total = len(items)
    print(f"| all (recall) | {total} | " + " | ".join(
        f"{sum(h[0] for h in rows[d][0].values())}/{total}" for d in args.detectors) + " |")
    print("| false detections | | " + " | ".join(str(rows[d][1]) for d in args.detectors) + " |")
    print("| ms per 512x512 photo | | " + " | ".join(f"{rows[d][2]:.0f}" for d in args.detectors) + " |")


if __name__ == "__main__":
    main()
