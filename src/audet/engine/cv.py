"""``cross_validate(config)``: the subject-exclusive folds of ``dataset.json``, one table.

Each fold ``k`` trains in ``<run_dir>/fold<k>`` (``data.fold=k``); a fold whose
``results.json`` exists is not trained again, and an interrupted fold resumes from its
``last.ckpt`` -- so ``audet cv`` can be re-run after a kill. The table has one row per fold and a
``Mean`` row (each AU averaged over folds, Avg = mean over AUs: :func:`audet.metrics.mean_over_folds`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from audet.data.meta import read_dataset_meta
from audet.engine.fit import check_run_dir, fit, run_dir_of
from audet.engine.schema import Config, as_config
from audet.utils.io import write_json_atomic

__all__ = ["cross_validate", "num_folds_of", "repeated_cv", "ranking_summary", "lodo_cv"]

log = logging.getLogger(__name__)


def num_folds_of(config: Config | Mapping) -> int:
    config = as_config(config)
    root = config.data.root
    meta = read_dataset_meta(root, required=False) if root else {}
    folds = meta.get("folds")
    if isinstance(folds, list) and folds:
        return len(folds)
    if isinstance(folds, int):
        return folds
    if isinstance(meta.get("num_folds"), int):
        return int(meta["num_folds"])
    ds = config.data.dataset or meta.get("dataset")
    if ds:
        from audet.data.folds import num_folds

        return num_folds(ds)
    raise ValueError(f"cannot tell the number of folds of {root}: no 'folds' in dataset.json and no data.dataset")


def cross_validate(config: Config | Mapping, *, folds: Sequence[int] | None = None, verbose: bool = True,
                   callbacks: Sequence = (), fresh: bool = False) -> dict:
    """Train every fold (skipping finished ones) and write ``cv_report.md/.csv`` + ``cv_results.json``.

    A fold directory made by another config is refused before any fold is trained (``fresh``:
    retrain every fold from scratch, also those made by another config)."""
    import pandas as pd

    from audet.engine.reports import f1_table, write_table
    from audet.metrics import mean_over_folds

    config = as_config(config)
    base_dir = run_dir_of(config)
    ks = list(folds) if folds is not None else list(range(num_folds_of(config)))
    per_fold: dict[int, dict] = {}
    cfgs = {}
    for k in ks:
        cfg = config.replace(**{"data.fold": int(k), "data.train_prefix": None, "data.test_prefix": None,
                                "output.dir": str(base_dir / f"fold{k}"), "name": f"{config.name}/fold{k}"})
        check_run_dir(cfg, fresh)  # every fold is checked before the first is trained
        cfgs[k] = cfg
    for k in ks:
        cfg = cfgs[k]
        done = Path(cfg.output.dir) / "results.json"
        if not fresh and done.is_file() and json.loads(done.read_text()).get("test"):
            if verbose:
                log.info(f"fold {k}: finished earlier ({done}); not retrained")
            per_fold[k] = json.loads(done.read_text())
            continue
        if verbose:
            log.info(f"== fold {k} ==")
        per_fold[k] = fit(cfg, verbose=verbose, callbacks=callbacks, resume=False if fresh else None)

    aus = next(iter(per_fold.values()))["aus"]
    out: dict = {"name": config.name, "folds": ks, "aus": aus, "selection": None, "per_fold": {}}
    tables, tuned_tables = [], []
    rows = {}
    for k in ks:
        r = per_fold[k]
        out["selection"] = r.get("selection")
        best = (r.get("test") or {}).get("best")
        if best is None:
            continue
        per_au = {int(a): v for a, v in best["per_au"].items()}
        rows[f"fold {k}"] = per_au
        out["per_fold"][str(k)] = {"f1": best["f1"], "per_au": per_au, "epoch": best.get("epoch"),
                                   **{key: best[key] for key in ("f1_micro", "auc", "ap", "auc_mean", "ap_mean", "tuned")
                                      if key in best}}
        tables.append(f1_table({"F1": per_au}, aus))  # same row name in every fold for the mean
        if best.get("tuned"):
            tuned_tables.append(f1_table({"F1": best["tuned"]["per_au"]}, aus))
    if tables:
        mean = mean_over_folds(tables)
        mean.index = ["Mean"]
        parts = [f1_table(rows, aus), mean]
        if tuned_tables and len(tuned_tables) == len(tables):
            tmean = mean_over_folds(tuned_tables)
            tmean.index = ["Mean, validation thresholds"]
            parts.append(tmean)
            out["mean_tuned"] = {"per_au": {a: float(tmean[f"AU{a}"].iloc[0]) / 100 for a in aus},
                                 "f1": float(tmean["Avg"].iloc[0]) / 100}
        df = pd.concat(parts)
        df.index.name = "F1"
        out["mean"] = {"per_au": {a: float(mean[f"AU{a}"].iloc[0]) / 100 for a in aus},
                       "f1": float(mean["Avg"].iloc[0]) / 100}
        sel = out.get("selection") or {}
        notes = [f"{config.model.name}, recipe {config.recipe}; best checkpoint of each fold selected on: "
                 f"{sel.get('on')}"]
        import numpy as np

        from audet.engine.figures import learning_curves_png, per_au_png
        from audet.engine.reports import metric_notes, metrics_table

        pf = out["per_fold"]
        for key in ("f1_micro", "auc_mean", "ap_mean"):
            vals = [v[key] for v in pf.values() if v.get(key) is not None]
            if len(vals) == len(pf):
                out["mean"][key] = float(np.nanmean(vals))
        if "f1_micro" in out["mean"]:
            notes.append(f"mean over folds: F1-micro {100 * out['mean']['f1_micro']:.1f}, mean ROC-AUC "
                         f"{100 * out['mean'].get('auc_mean', float('nan')):.1f}, mean AP "
                         f"{100 * out['mean'].get('ap_mean', float('nan')):.1f}")
        notes += metric_notes({f"fold {k}": v for k, v in pf.items()})
        if "mean_tuned" in out:
            notes.append("'validation thresholds': per-AU thresholds chosen on each fold's validation split (never "
                         "its test fold); the 0.5 rows are the headline")
        more = []
        mt = metrics_table({f"fold {k}": v for k, v in pf.items()}, aus)
        if len(mt):
            more.append(("threshold-free metrics per fold (percent)", mt))
        title = f"{config.name}: F1-frame, {len(tables)}-fold CV"
        if sel.get("on_test"):
            from audet.engine.reports import TEST_SELECTION

            title += f" ({TEST_SELECTION.upper()})"
            df.index.name = f"F1 ({TEST_SELECTION})"
            notes.append(f"WARNING: {TEST_SELECTION}: each fold's best epoch was chosen on its test fold "
                         "(selection.on_test=true); optimistic, not comparable to validation-selected results")
        write_table(df, base_dir / "cv_report", title=title, notes=notes, more=more)
        learning_curves_png({f"fold {k}": base_dir / f"fold{k}" for k in ks}, base_dir / "cv_curves.png",
                            title=f"{config.name}: learning curves per fold")
        per_au_png(df.loc[[i for i in df.index if not str(i).startswith("Mean,")]], base_dir / "cv_per_au.png",
                   title=f"{config.name}: F1-frame per AU and fold")
        if verbose:
            from audet.metrics import to_markdown

            log.info(to_markdown(df))
    write_json_atomic(base_dir / "cv_results.json", out)
    return out


# --------------------------------------------------------------------------------------------
# repeated random subject partitions (issue 18: "Beyond the Fold")
# --------------------------------------------------------------------------------------------
def _with(config: Config | Mapping, root, out: Path, name: str, **more) -> Config:
    return as_config(config).replace(**{"data.root": str(root), "data.fold": None, "output.dir": str(out),
                                        "name": name, **more})


def _cv_means(res: dict, aus: Sequence[int]) -> dict | None:
    m = res.get("mean")
    if not m:
        return None
    return {"f1": m["f1"], "per_au": {int(a): m["per_au"].get(a, m["per_au"].get(str(a))) for a in aus}}


def prior_f1(root, aus: Sequence[int]) -> dict:
    """The all-present prior (every AU predicted on every frame) on each fold's test prefix of
    ``root``, averaged over folds like a model's result: ``{"f1", "per_au"}`` in [0, 1]."""
    import numpy as np

    from audet.metrics import mean_over_folds

    per_fold = [np.array([v for v in prior_f1_of_prefix(root, f["test"], aus).values()])
                for f in read_dataset_meta(root).get("folds") or []]
    per_au, avg = mean_over_folds(per_fold)
    return {"f1": float(avg), "per_au": {int(a): float(v) for a, v in zip(aus, per_au)}}


def prior_f1_of_prefix(root, prefix: str, aus: Sequence[int]) -> dict[int, float]:
    """Per-AU F1 of the all-present prior on one list prefix of ``root``."""
    import warnings

    import numpy as np

    from audet.data.listfile import read_list
    from audet.data.meta import data_aus
    from audet.metrics import f1_frame

    have = data_aus(root, required=True)
    lab = read_list(root, prefix, check_images=False).labels[:, [have.index(a) for a in aus]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1 = np.asarray(f1_frame(lab, np.ones(lab.shape)), dtype=np.float64)
    return {int(a): float(v) for a, v in zip(aus, f1)}


def repeated_cv(configs: Sequence[Config | Mapping], *, repeats: int, seed: int = 0, out: str | Path | None = None,
                verbose: bool = True, callbacks: Sequence = ()) -> dict:
    """The official folds plus ``repeats`` random subject-exclusive partitions (as many parts as
    the official folds) of the same frames, for every config; the same partitions for every config.

    Layout (``out``, default the first config's run directory)::

        partitions/repeat<r>/          derived data (lists only; images linked), seed ``seed + r``
        <config name>/official/        audet cv on the official folds (fold<k>/, cv_report.md)
        <config name>/repeat<r>/       audet cv on partition r
        repeats_report.md/.csv, repeats_results.json, repeats.png

    Finished folds are never retrained (a killed run continues). The report gives, per config,
    per-AU and average F1 as mean +- sd over the repeats with the official-fold result beside it;
    with several configs, how often their ranking (by average F1) differs between repeats and from
    the official folds, and Kendall's tau (:func:`scipy.stats.kendalltau`) between rankings.
    """
    from audet.engine.partitions import random_partition_root

    if int(repeats) < 1:
        raise ValueError(f"--repeats {repeats}: give at least 1 random partition")
    configs = [as_config(c) for c in configs]
    names = [str(c.name) for c in configs]
    if len(set(names)) < len(names):
        raise ValueError(f"configs with the same name: {names}; give each a different name= override")
    roots = {str(c.data.root) for c in configs}
    if len(roots) != 1:
        raise ValueError(f"the configs use different data.root values ({sorted(roots)}); compare on one dataset")
    root = roots.pop()
    base = Path(out) if out is not None else run_dir_of(configs[0])
    parts = []
    for r in range(int(repeats)):
        parts.append(random_partition_root(root, base / "partitions" / f"repeat{r}", seed=int(seed) + r))
    results: dict = {"repeats": int(repeats), "seed": int(seed), "data": root, "configs": {}}
    for cfg, name in zip(configs, names):
        sub = base / name if len(configs) > 1 else base
        if verbose:
            log.info(f"== {name}: official folds ==")
        official = cross_validate(_with(cfg, root, sub / "official", f"{name}/official"), verbose=verbose,
                                  callbacks=callbacks)
        reps = []
        for r, proot in enumerate(parts):
            if verbose:
                log.info(f"== {name}: random partition {r} (seed {int(seed) + r}) ==")
            reps.append(cross_validate(_with(cfg, proot, sub / f"repeat{r}", f"{name}/repeat{r}"), verbose=verbose,
                                       callbacks=callbacks))
        aus = official["aus"]
        results["configs"][name] = {"aus": aus, "official": _cv_means(official, aus),
                                    "repeats": [_cv_means(x, aus) for x in reps], "dir": str(sub)}
    aus0 = next(iter(results["configs"].values()))["aus"]
    results["prior"] = {"aus": aus0, "official": prior_f1(root, aus0), "repeats": [prior_f1(p, aus0) for p in parts]}
    table, rank = repeats_tables(results)
    results["ranking"] = rank
    _write_repeats_report(base, results, table, rank)
    return results


def repeats_tables(results: dict):
    """(per-config table: official, mean, sd rows over AUs + Avg in percent; ranking summary)."""
    import numpy as np
    import pandas as pd

    frames = []
    avgs = {}
    configs = dict(results["configs"])
    if results.get("prior"):
        configs["prior (all present)"] = results["prior"]
    for name, r in configs.items():
        aus = r["aus"]
        cols = [f"AU{a}" for a in aus] + ["Avg"]
        reps = [x for x in r["repeats"] if x]
        arr = np.array([[100 * (x["per_au"][a] if x["per_au"][a] is not None else np.nan) for a in aus]
                        + [100 * x["f1"]] for x in reps], dtype=float)
        off = r["official"]
        rows = {}
        if off:
            rows[f"{name}: official folds"] = [100 * (off["per_au"][a] if off["per_au"][a] is not None else np.nan)
                                               for a in aus] + [100 * off["f1"]]
        rows[f"{name}: mean of {len(reps)} repeats"] = np.nanmean(arr, axis=0)
        rows[f"{name}: sd"] = np.nanstd(arr, axis=0, ddof=1) if len(reps) > 1 else np.full(arr.shape[1], np.nan)
        rows[f"{name}: min"] = np.nanmin(arr, axis=0)
        rows[f"{name}: max"] = np.nanmax(arr, axis=0)
        frames.append(pd.DataFrame(rows, index=cols).T)
        if name not in results["configs"]:
            continue
        avgs[name] = {"official": 100 * off["f1"] if off else None, "repeats": [100 * x["f1"] for x in reps]}
    table = pd.concat(frames)
    table.index.name = "F1"
    return table, ranking_summary(avgs)


def ranking_summary(avgs: dict) -> dict | None:
    """How stable the ranking of configs (by average F1) is over repeats: per repeat the order, the
    number of repeats whose order differs from the official folds' (``flips_vs_official``), pairwise
    sign flips, Kendall's tau of each repeat's ranking with the official one, and the mean tau over
    all pairs of repeats."""
    import itertools

    import numpy as np
    from scipy.stats import kendalltau

    names = list(avgs)
    if len(names) < 2:
        return None
    R = min(len(v["repeats"]) for v in avgs.values())
    mat = np.array([[avgs[n]["repeats"][r] for n in names] for r in range(R)])  # (R, C)
    official = np.array([avgs[n]["official"] if avgs[n]["official"] is not None else np.nan for n in names])
    order = lambda v: [names[i] for i in np.argsort(-v, kind="stable")]  # noqa: E731
    out = {"configs": names, "orders": [order(m) for m in mat],
           "official_order": order(official) if np.isfinite(official).all() else None}
    if out["official_order"]:
        out["flips_vs_official"] = int(sum(o != out["official_order"] for o in out["orders"]))
        taus = [kendalltau(-official, -m).statistic for m in mat]
        out["tau_vs_official"] = [float(t) for t in taus]
    pairs = {}
    for i, j in itertools.combinations(range(len(names)), 2):
        sign = np.sign(mat[:, i] - mat[:, j])
        ref = np.sign(official[i] - official[j]) if np.isfinite(official[[i, j]]).all() else np.sign(np.median(
            mat[:, i] - mat[:, j]))
        pairs[f"{names[i]} vs {names[j]}"] = {"repeats_i_ahead": int((sign > 0).sum()),
                                              "repeats_j_ahead": int((sign < 0).sum()),
                                              "flips_vs_official": int((sign != ref).sum())}
    out["pairs"] = pairs
    if R > 1:
        tt = [kendalltau(-mat[a], -mat[b]).statistic for a, b in itertools.combinations(range(R), 2)]
        out["mean_tau_between_repeats"] = float(np.nanmean(tt))
    return out


def _write_repeats_report(base: Path, results: dict, table, rank: dict | None) -> None:
    from audet.engine.reports import write_table

    notes = [f"{results['repeats']} random subject-exclusive partitions (audet.data.folds.assign_parts, seeds "
             f"{results['seed']}..{results['seed'] + results['repeats'] - 1}) of {results['data']}, as many parts as "
             "its official folds; each repeat's value is its mean over folds; sd is the sample sd over repeats"]
    import numpy as np

    configs = dict(results["configs"])
    if results.get("prior"):
        configs["prior (all present)"] = results["prior"]
    for name, r in configs.items():
        reps = [100 * x["f1"] for x in r["repeats"] if x]

        off = r["official"]
        notes.append(f"{name}: average F1 {np.mean(reps):.1f} +- {np.std(reps, ddof=1) if len(reps) > 1 else float('nan'):.1f} "
                     f"over {len(reps)} repeats (range {min(reps):.1f}..{max(reps):.1f}); official folds "
                     f"{100 * off['f1']:.1f}" if off else f"{name}: no official result")
    if rank:
        notes.append("ranking by average F1 per repeat: " + "; ".join(" > ".join(o) for o in rank["orders"]))
        if rank.get("official_order"):
            notes.append(f"official folds: {' > '.join(rank['official_order'])}; {rank['flips_vs_official']} of "
                         f"{len(rank['orders'])} repeats rank the configs differently; Kendall's tau with the official "
                         f"ranking per repeat: {', '.join(f'{t:.2f}' for t in rank['tau_vs_official'])}")
        if "mean_tau_between_repeats" in rank:
            notes.append(f"mean Kendall's tau between the rankings of two repeats: {rank['mean_tau_between_repeats']:.2f}")
        for pair, v in rank["pairs"].items():
            notes.append(f"{pair}: first ahead in {v['repeats_i_ahead']}, second in {v['repeats_j_ahead']} repeats; "
                         f"{v['flips_vs_official']} flip(s) against the official order")
    write_table(table, base / "repeats_report", title="F1-frame over repeated random subject partitions", notes=notes)
    write_json_atomic(base / "repeats_results.json", results)
    _repeats_png(base / "repeats.png", results)


def _repeats_png(path: Path, results: dict) -> None:
    """Average F1 of every repeat (dots) and of the official folds (cross), one column per config."""
    import numpy as np

    from audet.engine.figures import _plt, _save

    plt = _plt()
    names = list(results["configs"])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 3.6))
    for i, n in enumerate(names):
        r = results["configs"][n]
        reps = [100 * x["f1"] for x in r["repeats"] if x]
        ax.plot(np.full(len(reps), i) + np.linspace(-0.12, 0.12, len(reps)), reps, "o", ms=5, alpha=0.7,
                label="random partitions" if i == 0 else None, color="tab:blue")
        if r["official"]:
            ax.plot([i], [100 * r["official"]["f1"]], "x", ms=10, mew=2, color="tab:red",
                    label="official folds" if i == 0 else None)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="average F1 (%)", title="F1 per repeat (mean over its folds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# leave one dataset out
# --------------------------------------------------------------------------------------------
def lodo_cv(config: Config | Mapping, roots: Sequence, *, out: str | Path | None = None, verbose: bool = True,
            callbacks: Sequence = ()) -> dict:
    """Leave-one-dataset-out on the AUs every prepared directory of ``roots`` labels: for each
    dataset, train on all the others (validation subjects held out from them) and test on it.

    ``out`` (default the config's run directory) holds ``lodo_data/`` (the merged lists:
    :func:`audet.engine.partitions.lodo_root`), ``fold<k>/`` (one run per held-out dataset) and
    ``lodo_report.md/.csv`` + ``lodo_results.json``: one row per held-out dataset and their mean.
    """
    import pandas as pd

    from audet.engine.partitions import lodo_root
    from audet.engine.reports import f1_table, write_table

    config = as_config(config)
    base = Path(out) if out is not None else run_dir_of(config)
    merged = lodo_root(roots, base / "lodo_data")
    meta = read_dataset_meta(merged)
    cfg = _with(config, merged, base, f"{config.name}/lodo", **{"data.dataset": None, "data.aus": None})
    res = cross_validate(cfg, verbose=verbose, callbacks=callbacks)
    aus = res["aus"]
    rows = {}
    for k, f in enumerate(meta["folds"]):
        r = res["per_fold"].get(str(k))
        if r:
            others = [n for n in meta["datasets"] if n != f["held_out"]]
            rows[f"test {f['held_out']} (train {' + '.join(others)})"] = r["per_au"]
    priors, prior_lines = {}, []
    for k, f in enumerate(meta["folds"]):
        if str(k) not in res["per_fold"]:
            continue
        best = base / f"fold{k}" / "best.safetensors"
        if best.is_file():  # the model against the prior on the same frames: paired bootstrap over sequences
            from audet.engine.evaluate import evaluate

            ev = evaluate(best, merged, f["test"], vs_prior=1000,
                          batch_size=int(config.data.eval_batch_size or config.data.batch_size or 64))
            prior_lines.append(f"test {f['held_out']}: {ev['prior_text']}")
        priors[f"prior (all present) on {f['held_out']}"] = prior_f1_of_prefix(merged, f["test"], aus)
    df = f1_table(rows, aus)
    if len(rows) > 1:
        from audet.metrics import mean_over_folds

        mean = mean_over_folds([f1_table({"F1": v}, aus) for v in rows.values()])  # the models' rows only
        mean.index = ["Mean"]
        df = pd.concat([df, mean])
    df = pd.concat([df, f1_table(priors, aus)])
    df.index.name = "F1"
    notes = [f"{config.model.name} ({config.name}); shared AUs: {', '.join(f'AU{a}' for a in aus)}",
             "AUs per dataset: " + "; ".join(f"{n}: {a}" for n, a in meta["aus_per_dataset"].items()),
             "each run selects its best epoch on validation subjects held out from its training datasets",
             *prior_lines]
    write_table(df, base / "lodo_report", title="leave-one-dataset-out F1-frame", notes=notes)
    out_res = {"datasets": meta["datasets"], "aus": aus, "per_dataset": {k: {int(a): v for a, v in r.items()}
                                                                         for k, r in rows.items()}}
    write_json_atomic(base / "lodo_results.json", out_res)
    if verbose:
        from audet.metrics import to_markdown

        log.info(to_markdown(df))
    out_res["table"] = df
    return out_res
