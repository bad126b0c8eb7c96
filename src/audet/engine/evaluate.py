"""``evaluate(checkpoint, root, prefix)``: per-AU F1-frame of a checkpoint on a prepared split.

Cross-dataset evaluation (paper section 4.3.3) scores the AUs the checkpoint and the data share:
a BP4D model (12 AUs) on GFT (10 AUs) is scored on the 10 common AUs; the result says which AUs
were evaluated and which of the checkpoint's / data's AUs were left out.

Scoring goes through :class:`audet.engine.scoring.AUEvaluator` on ``model.forward_logits`` over
:func:`eval_dataset` (a clip model's clips as :func:`audet.clip.eval_clip` serves them) --
the same path as the training-end test, so both score the same frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from audet.data.meta import data_aus
from audet.models.checkpoint import load_checkpoint
from audet.engine.data import shared_aus
from audet.engine.scoring import AUEvaluator
from audet.facs import resolve_aus
from audet.utils.precision import EVAL_PRECISIONS, inference_precision

__all__ = ["evaluate", "eval_dataset", "run_evaluator", "inference_precision", "EVAL_PRECISIONS", "stored_thresholds",
           "prediction_table"]


def eval_dataset(root, prefix: str, aus: Sequence[int], preprocess: dict, clip=None):
    """The scoring dataset of ``root``/``prefix``: the model's eval transform and, for a clip model,
    :func:`audet.clip.eval_clip` of its clip (the same frames the training-end test scores)."""
    from audet.clip import eval_clip
    from audet.data import AUDataset
    from audet.data.transforms import EvalTransform

    if clip is None:
        clip = preprocess.get("clip")
    return AUDataset(root, prefix, aus=list(aus), transform=EvalTransform.from_preprocess(preprocess),
                     clip=eval_clip(clip))


@torch.inference_mode()
def run_evaluator(model, loader, evaluator: AUEvaluator, device="cpu", precision: str = "32") -> AUEvaluator:
    """Feed every batch of ``loader`` through ``model.forward_logits`` into ``evaluator``
    (under :func:`inference_precision` ``precision``; logits scored in fp32)."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    model.eval()
    evaluator.reset()
    ctx = inference_precision(precision, device)
    for batch in loader:
        with ctx:
            logits = model.forward_logits(move_data_to_device(batch, device)["image"])
        evaluator.process(batch, logits.float())
    return evaluator


def stored_thresholds(meta: dict, aus) -> list[float] | None:
    """The validation-chosen thresholds a checkpoint's metadata holds, in the order of ``aus``
    (None when it holds none or not for every AU of ``aus``)."""
    thr = (meta or {}).get("thresholds") or {}
    by_au = {int(a): float(v) for a, v in zip(thr.get("aus") or [], thr.get("values") or [])}
    if not by_au or any(int(a) not in by_au for a in aus):
        return None
    return [by_au[int(a)] for a in aus]


def prediction_table(ev: AUEvaluator, dataset, aus: Sequence[int]):
    """The scored frames of ``ev`` as a table: ``sequence`` (the data's sequence name, e.g.
    ``F001/T1``), ``frame`` and ``AU<nn>_p`` (probabilities, float64 of the float32 values, so a
    CSV written with 17 significant digits reads back bit for bit), sorted by (sequence, frame)."""
    import pandas as pd

    probs, _, _ = ev.arrays()
    keys = ev.keys()
    names = list(getattr(dataset, "sequences", []) or [])
    seq = [names[int(i)] if 0 <= int(i) < len(names) else str(int(i)) for i in keys[:, 0]]
    df = pd.DataFrame({"sequence": seq, "frame": keys[:, 1].astype(np.int64)})
    for j, a in enumerate(aus):
        df[f"AU{int(a):02d}_p"] = probs[:, j].astype(np.float64)
    return df.sort_values(["sequence", "frame"], kind="stable").reset_index(drop=True)


def evaluate(
    checkpoint: str | Path,
    root: str | Path,
    prefix: str,
    *,
    aus: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    title: str | None = None,
    precision: str = "32",
    vs_prior: int = 0,
    f1_convention: str = "paper",
    save_predictions: str | Path | None = None,
    clip: dict | None = None,
) -> dict:
    """Evaluate ``checkpoint`` on ``root``/``prefix``; returns a dict with the per-AU table.

    Keys: ``table`` (DataFrame, F1 in percent, columns ``AU<n>`` and ``Avg``), ``aus`` (evaluated),
    ``skipped_checkpoint_aus``, ``skipped_data_aus``, ``n`` (frames), ``checkpoint``, ``data``.
    With ``out`` (a path stem), writes ``out.md`` and ``out.csv``. ``precision``: ``"32"``
    (default), ``"bf16"`` or ``"16"`` autocast (:func:`inference_precision`). ``vs_prior`` > 0:
    also compare with the all-present prior (:func:`audet.metrics.compare_with_prior`, that many
    resamples of whole sequences): ``result["prior"]`` (model/prior F1, difference, CI) and
    ``result["prior_text"]`` (one line). ``f1_convention``: ``"paper"`` (default) or a published
    code's (``"aunet"``, ``"cis"``; :func:`audet.metrics.f1_frame`), for comparing with its numbers.

    Beside F1-frame at 0.5 (the headline): ``f1_micro``, ``auc``/``ap`` per AU and, when the
    checkpoint holds thresholds chosen on its run's validation split (:func:`stored_thresholds`),
    ``tuned`` (F1 at those thresholds; a second table row). ``save_predictions``: write the scored
    table (:func:`prediction_table`) to this CSV, which ``audet score`` reads. ``clip``: score a
    clip model in these windows (e.g. ``{"length": 1}``: frame by frame) instead of its own clip.
    """
    from torch.utils.data import DataLoader

    model = load_checkpoint(checkpoint, map_location=device)
    model_aus = [int(a) for a in model.aus]
    have = data_aus(root, required=True)
    common = shared_aus(model_aus, have)
    if aus:
        wanted = [int(a) for a in aus]
        missing = [a for a in wanted if a not in common]
        if missing:
            raise ValueError(
                f"AU(s) {missing} are not in both the checkpoint ({model_aus}) and the data ({have})"
            )
        common = [a for a in model_aus if a in wanted]
    if not common:
        raise ValueError(f"the checkpoint's AUs {model_aus} and the data's AUs {have} have nothing in common")
    common, columns = resolve_aus(model_aus, common, source=f"{checkpoint}")  # the model's logit columns
    ds = eval_dataset(root, prefix, common, model.preprocess, clip=clip)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    ev = run_evaluator(model, loader, AUEvaluator(common, columns, convention=f1_convention), device, precision)
    meta = getattr(model, "checkpoint_meta", {}) or {}
    thresholds = stored_thresholds(meta, common)
    scores = ev.evaluate(thresholds=thresholds)
    row = f"{model.model_name} -> {Path(str(root)).name}/{prefix}"
    table = ev.table(row)
    if "tuned" in scores:
        import pandas as pd

        from audet.engine.reports import f1_table

        tuned = f1_table({f"{row}, validation thresholds": scores["tuned"]["per_au"]}, common)
        table = pd.concat([table, tuned])
        table.index.name = "F1"
    if save_predictions is not None:
        from audet.utils.io import write_text_atomic

        write_text_atomic(save_predictions, prediction_table(ev, ds, common).to_csv(index=False,
                                                                                      float_format="%.17g"))
    result = {
        "table": table,
        "aus": common,
        "skipped_checkpoint_aus": [a for a in model_aus if a not in common],
        "skipped_data_aus": [a for a in have if a not in common],
        "n": int(scores["n"]),
        "f1": scores["f1"],
        "per_au": scores["per_au"],
        "checkpoint": str(checkpoint),
        "data": f"{root}:{prefix}",
        "model": model.model_name,
        "selection": (getattr(model, "checkpoint_meta", {}) or {}).get("selection"),
        "pretrained": dict(getattr(model, "pretrained_status", {}) or {}),
        "precision": str(precision),
        "f1_convention": f1_convention,
        "f1_micro": scores["f1_micro"],
        "auc": scores["auc"],
        "ap": scores["ap"],
        "auc_mean": scores["auc_mean"],
        "ap_mean": scores["ap_mean"],
    }
    if "tuned" in scores:
        result["tuned"] = scores["tuned"]
    if vs_prior:
        from audet.metrics import compare_with_prior, prior_comparison_text

        probs, labels, mask = ev.arrays()
        seqs = ev.sequences()
        groups = seqs if len(seqs) and (seqs >= 0).all() else None
        r = compare_with_prior(labels, probs, mask=mask, groups=groups, n_boot=int(vs_prior),
                               convention=f1_convention)
        result["prior"] = {"f1_model": 100 * r.f1_a, "f1_prior": 100 * r.f1_b, "diff": 100 * r.diff,
                           "low": 100 * r.low, "high": 100 * r.high, "ci": r.ci, "n_boot": r.n_boot,
                           "n_units": r.n_units, "unit": "sequence" if groups is not None else "frame"}
        import numpy as np

        from audet.metrics import f1_frame

        prior_au = f1_frame(labels, np.ones_like(probs), mask=mask, convention=f1_convention)
        result["prior"]["per_au"] = {int(a): float(v) for a, v in zip(common, np.ravel(prior_au))}
        result["prior_text"] = prior_comparison_text(r, "sequences" if groups is not None else "frames")
    if out is not None:
        from audet.engine.reports import write_table

        notes = [f"{result['n']} frames; AUs evaluated: {', '.join(f'AU{a}' for a in common)}"]
        if f1_convention != "paper":
            notes.append(f"F1 under the published code's {f1_convention!r} convention (docs/metrics.md), "
                         "not comparable with audet's other tables")
        if str(precision) != "32":
            notes.append(f"evaluated with {precision} autocast (reduced precision)")
        if result["skipped_checkpoint_aus"]:
            notes.append("checkpoint AUs not in the data (not scored): "
                         + ", ".join(f"AU{a}" for a in result["skipped_checkpoint_aus"]))
        if result["skipped_data_aus"]:
            notes.append("data AUs the checkpoint does not predict: "
                         + ", ".join(f"AU{a}" for a in result["skipped_data_aus"]))
        sel = result.get("selection") or {}
        if sel:
            notes.append(f"checkpoint selected on: {sel.get('on')}")
        if result.get("prior_text"):
            notes.append(result["prior_text"])
        for part, status in result["pretrained"].items():
            if str(status).startswith("random"):
                notes.append(f"WARNING: {part} has RANDOM weights ({status}; allow_random_pretrained)")
        from audet.engine.reports import metric_notes, metrics_table

        notes += metric_notes({"this checkpoint": result})
        if "tuned" in result:
            notes.append("the validation-thresholds row uses the thresholds chosen on the checkpoint's own "
                         "validation split (best.json); the 0.5 row is the headline")
        write_table(table, out, title=title or f"{Path(str(checkpoint)).name} on {prefix}", notes=notes,
                    more=[("threshold-free metrics (percent)", metrics_table({"": result}, common))])
    return result
