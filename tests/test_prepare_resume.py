"""audet prepare: determinism, worker-count independence, kill-and-resume, invalidation."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audet.data.prepare import fake, prepare_dataset
from audet.data.prepare.types import DELAY_ENV, PrepareInterrupted


def _tree(out: Path) -> dict[str, bytes]:
    """Every output file except the internal manifests, by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".prepare" not in p.parts}  # fmt: skip


def _manifests(out: Path) -> list[Path]:
    return sorted((out / ".prepare").rglob("*.npz")) if (out / ".prepare").is_dir() else []


@pytest.fixture
def log(caplog):
    """The runner's progress lines (logger ``audet.data.prepare``)."""
    caplog.set_level(logging.INFO, logger="audet.data.prepare")
    return caplog


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """BP4D layout, 3 subjects x 2 tasks x 4 frames, with defects; and a reference output."""
    base = tmp_path_factory.mktemp("resume")
    raw = base / "raw"
    fake.make_bp4d(raw, n_frames=6, defects=True)
    ref = base / "ref"
    prepare_dataset("BP4D", raw, ref, workers=1, progress=False)
    return raw, ref, _tree(ref)


def test_two_runs_and_worker_counts_are_byte_identical(release, tmp_path):
    raw, ref, ref_tree = release
    assert any(k.startswith("list/") for k in ref_tree) and any(k.startswith("images/") for k in ref_tree)
    prepare_dataset("BP4D", raw, tmp_path / "again", workers=1, progress=False)
    prepare_dataset("BP4D", raw, tmp_path / "two", workers=2, progress=False)
    assert _tree(tmp_path / "again") == ref_tree
    assert _tree(tmp_path / "two") == ref_tree


def test_interrupt_hook_then_resume_matches_uninterrupted(release, tmp_path, log):
    raw, _, ref_tree = release
    out = tmp_path / "out"
    with pytest.raises(PrepareInterrupted):
        prepare_dataset("BP4D", raw, out, workers=1, progress=False, stop_after=2)
    assert len(_manifests(out)) == 2 and not (out / "dataset.json").exists()
    log.clear()
    prepare_dataset("BP4D", raw, out, workers=2, progress=False)
    assert "2 already done, resuming" in log.text
    assert _tree(out) == ref_tree


def test_killed_subprocess_resumes_to_identical_output(release, tmp_path, log):
    """SIGKILL a real 2-worker run in the middle (pool workers included), then resume."""
    raw, _, ref_tree = release
    out = tmp_path / "out"
    env = dict(os.environ, **{DELAY_ENV: "0.12"})
    # the `audet prepare` command module, without importing every other CLI command
    script = ("import argparse, sys; from audet.commands import prepare as m; "
              "p = argparse.ArgumentParser(); m.add_arguments(p); sys.exit(m.run(p.parse_args()))")  # fmt: skip
    cmd = [sys.executable, "-c", script, "BP4D", "--root", str(raw), "--out", str(out),
           "--workers", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _manifests(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its pool workers
    finally:
        proc.wait(timeout=30)
    done = len(_manifests(out))
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 1 <= done < 6, f"the run was not interrupted in the middle ({done} of 6 sequences done)"
    assert not (out / "dataset.json").exists()

    log.clear()
    prepare_dataset("BP4D", raw, out, workers=2, progress=False)
    assert f"{done} already done, resuming" in log.text
    assert not list(out.rglob(".*.tmp"))
    tree = _tree(out)
    assert tree.pop("audet-manifest.json")  # the command's record of its inputs (prepare_dataset writes none)
    assert tree == ref_tree


def test_changed_input_or_corrupt_manifest_is_redone(release, tmp_path, log):
    raw0, _, ref_tree = release
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(raw0, raw)
    out = tmp_path / "out"
    prepare_dataset("BP4D", raw, out, progress=False)
    ref_tree = _tree(out)  # (dataset.json names this raw root)
    # a corrupt manifest (e.g. a disk error) is redone, not trusted
    _manifests(out)[0].write_bytes(b"garbage")
    log.clear()
    prepare_dataset("BP4D", raw, out, progress=False)
    assert "5 already done" in log.text
    assert _tree(out) == ref_tree
    log.clear()
    # an edited label file invalidates its sequence only
    csv = raw / "AUCoding/AU_OCC/F004_T2.csv"
    lines = csv.read_text().splitlines()
    head, first = lines[0], lines[1].split(",")
    first[1:] = ["1"] * (len(first) - 1)
    csv.write_text("\n".join([head, ",".join(first), *lines[2:]]) + "\n")
    prepare_dataset("BP4D", raw, out, progress=False)
    assert "5 already done" in log.text
    log.clear()
    new = _tree(out)
    assert new["list/BP4D_part3_AUoccur.txt"] != ref_tree["list/BP4D_part3_AUoccur.txt"]
    assert new["list/BP4D_part1_AUoccur.txt"] == ref_tree["list/BP4D_part1_AUoccur.txt"]
    # --force redoes everything and gives the same bytes
    prepare_dataset("BP4D", raw, out, progress=False, force=True)
    assert "already done" not in log.text
    assert _tree(out) == new


def _sigint_handler_after_init(_):
    import signal

    from audet.data.prepare.worker import _init_worker
    from audet.data.prepare.types import PrepareOptions
    from dataclasses import asdict

    _init_worker(asdict(PrepareOptions(dataset="BP4D", root=".", out=".")))
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_pool_workers_ignore_ctrl_c():
    """Ctrl-C goes to the whole process group: only the main process may stop the preparation."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.map(_sigint_handler_after_init, [0]) == [True]


def test_a_manifest_write_cut_by_a_kill_leaves_no_temporary_file(release, tmp_path):
    """A kill during the manifest's atomic write leaves ``.<key>.npz.<random>.tmp``; the re-run that
    redoes the sequence removes it (seen when the SIGKILL above lands inside that write)."""
    raw, _, ref_tree = release
    out = tmp_path / "out"
    prepare_dataset("BP4D", raw, out, workers=1, progress=False)
    manifests = sorted((out / ".prepare").rglob("*.npz"))
    victim = manifests[0]
    (victim.parent / f".{victim.name}.abc123.tmp").write_bytes(b"half a manifest")
    victim.unlink()  # not committed: the sequence is redone
    prepare_dataset("BP4D", raw, out, workers=1, progress=False)
    assert victim.is_file() and not list(out.rglob(".*.tmp"))
    assert _tree(out) == ref_tree
