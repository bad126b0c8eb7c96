"""A synthetic release rewritten in DISFA's raw layout (``audet synth --layout DISFA``).

DISFA has one video per subject, AU intensities 0-5 in one file per AU and 66 landmarks per frame
in one ``.mat`` per frame; ``audet prepare DISFA`` reads (``docs/datasets.md``)::

    OUT/Videos_LeftCamera_frames/LeftVideo<SN>_comp/<k>.jpg    extracted frames, k = video frame (0-based)
    OUT/ActionUnit_Labels/<SN>/<SN>_au<N>.txt                  "frame,intensity", frame 1-based
    OUT/Landmark_Points/<SN>/tmp_frame_lm/<SN>_<kkkk>_lm.mat   variable pts, 66 x 2, 1-based pixels

:func:`to_disfa_layout` converts a BP4D-layout synthetic release (what the generator writes): the
sequences of a subject are joined into its one "video" (tasks in order); subject ``i`` (sorted
names) becomes ``SN<i+1:03d>``; the 68 landmarks lose the two inner-mouth corners (66 points); a
present AU is written as intensity 3 (binarised back to 1 at DISFA's >= 2) and an absent one as 0;
a frame with an unknown label (9) or lost landmarks gets no landmark file, so ``prepare`` skips it.
Only the AUs of DISFA's label files that the generator renders are written. ``synth_meta.json`` is
copied (so ``prepare`` knows the release is synthetic) with the subject mapping added.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

__all__ = ["to_disfa_layout", "DISFA_FILE_AUS"]

#: AUs DISFA's label files hold (12)
DISFA_FILE_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
#: 66-point layout = 68 without the inner-mouth corners (68-point indices 60 and 64)
KEEP_68_TO_66 = np.array([i for i in range(68) if i not in (60, 64)])


def to_disfa_layout(src, dst) -> dict:
    """Write the BP4D-layout synthetic release ``src`` in DISFA's layout under ``dst``; returns
    ``{"subjects": {SN: original}, "frames": n, "dropped": n}``."""
    from scipy.io import savemat

    from audet.data.prepare.bp4d import read_au_occ, read_fit_mat
    from audet.data.prepare.readers import frame_number

    src, dst = Path(src), Path(dst)
    images = src / "BP4D-training"
    if not images.is_dir():
        raise FileNotFoundError(f"{src}: no BP4D-training folder (expected `audet synth` output in BP4D layout)")
    meta = json.loads((src / "synth_meta.json").read_text())
    aus = [a for a in DISFA_FILE_AUS if a in meta.get("aus", DISFA_FILE_AUS)]
    mapping, n_frames, dropped = {}, 0, 0
    for i, subject in enumerate(sorted(p.name for p in images.iterdir() if p.is_dir())):
        sn = f"SN{i + 1:03d}"
        mapping[sn] = subject
        frame_dir = dst / "Videos_LeftCamera_frames" / f"LeftVideo{sn}_comp"
        lm_dir = dst / "Landmark_Points" / sn / "tmp_frame_lm"
        frame_dir.mkdir(parents=True, exist_ok=True)
        lm_dir.mkdir(parents=True, exist_ok=True)
        intens = {a: [] for a in aus}
        k = 0
        for task in sorted(p.name for p in (images / subject).iterdir() if p.is_dir()):
            files = sorted((images / subject / task).glob("*.jpg"), key=lambda p: frame_number(p.stem) or 0)
            labels, _ = read_au_occ(src / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv", aus)
            fits = read_fit_mat(src / "2DFeatures" / f"{subject}_{task}.mat")
            for j, f in enumerate(files):
                shutil.copyfile(f, frame_dir / f"{k}.jpg")
                lab = labels.get(frame_number(f.stem))
                pts = fits[j] if j < len(fits) else None
                ok = lab is not None and not (lab == 9).any() and pts is not None and pts.shape[0] == 68
                for a_i, a in enumerate(aus):
                    intens[a].append(3 if ok and lab[a_i] == 1 else 0)
                if ok:
                    savemat(str(lm_dir / f"{sn}_{k:04d}_lm.mat"), {"pts": pts[KEEP_68_TO_66]})
                else:
                    dropped += 1
                k += 1
                n_frames += 1
        lab_dir = dst / "ActionUnit_Labels" / sn
        lab_dir.mkdir(parents=True, exist_ok=True)
        for a in aus:
            (lab_dir / f"{sn}_au{a}.txt").write_text("".join(f"{n + 1},{v}\n" for n, v in enumerate(intens[a])))
    meta["layout"] = {"name": "DISFA", "from": str(src), "subjects": mapping}
    (dst / "synth_meta.json").write_text(json.dumps(meta, indent=1))
    return {"subjects": mapping, "frames": n_frames, "dropped": dropped}
