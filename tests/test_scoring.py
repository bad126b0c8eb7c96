"""AUEvaluator: every labelled frame scored exactly once (frames, clips, DDP repeats), F1 by hand."""
import numpy as np
import pytest
import torch

from audet.engine.scoring import AUEvaluator

LOGIT = {True: 4.0, False: -4.0}


def clip_batch(frames, labels, valid=None, centre=1):
    """One sequence (id 0); ``frames`` (B, T) frame numbers; ``labels`` {frame: [0/1 per AU]}."""
    fr = torch.as_tensor(frames)
    y = torch.as_tensor([[labels[int(f)] for f in row] for row in fr], dtype=torch.float32)
    m = torch.ones_like(y) if valid is None else torch.as_tensor(valid, dtype=torch.float32)[..., None].expand_as(y)
    return {"sequence": torch.zeros(len(fr), dtype=torch.long), "frames": fr, "labels": y, "mask": m.clone(),
            "centre": torch.full((len(fr),), centre), "frame": fr[:, centre]}


def test_frames_f1_by_hand_and_columns():
    ev = AUEvaluator([1, 2], columns=[2, 0])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    # model columns (AU6, AU2, AU1): scored columns 2 -> AU1, 0 -> AU2
    logits = torch.tensor([[-4.0, 0.0, 4.0], [4.0, 0.0, -4.0], [4.0, 0.0, 4.0], [-4.0, 0.0, -4.0]])
    ev.process({"labels": y, "mask": torch.ones_like(y), "index": torch.arange(4)}, logits)
    r = ev.evaluate()
    # AU1: tp=1 (row 0), fn=1 (row 1), fp=1 (row 2) -> F1 = 2/(2+1+1) = 0.5; AU2: tp=2, fp=0, fn=0 -> 1
    assert r["n"] == 4 and r["per_au"] == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert r["f1"] == pytest.approx(0.75)


def test_ddp_repeats_are_scored_once():
    ev = AUEvaluator([1])
    y = torch.tensor([[1.0], [0.0], [1.0]])
    ev.process({"labels": y, "mask": torch.ones_like(y), "index": torch.tensor([0, 1, 2])}, torch.tensor([[4.0], [-4.0], [4.0]]))
    other = AUEvaluator([1])
    other.process({"labels": y[:2], "mask": torch.ones(2, 1), "index": torch.tensor([2, 0])},
                  torch.tensor([[4.0], [4.0]]))  # rank 1 repeats rows 2 and 0 (sampler padding)
    ev.merge([ev.state(), other.state()])
    assert ev.evaluate()["n"] == 3


def test_disjoint_padded_runs_score_seven_frames_of_a_seven_frame_sequence():
    labels = {f: [f % 2] for f in range(1, 8)}
    ev = AUEvaluator([1])
    b = clip_batch([[1, 2, 3], [4, 5, 6], [7, 7, 7]], labels, valid=[[1, 1, 1], [1, 1, 1], [1, 0, 0]])
    logits = torch.tensor([[[LOGIT[labels[int(f)][0] == 1]] for f in row] for row in b["frames"]])
    logits[2, 1:] = -LOGIT[True]  # padded positions predict the opposite: they must not count
    ev.process(b, logits)
    r = ev.evaluate()
    assert r["n"] == 7 and r["f1"] == 1.0


def test_sliding_clips_prefer_the_centre_prediction():
    labels = {f: [1] for f in range(1, 8)}
    ev = AUEvaluator([1])
    frames = [[a, a + 1, a + 2] for a in range(1, 6)]  # sliding windows: frames appear up to 3 times
    b = clip_batch(frames, labels)
    logits = torch.full((5, 3, 1), -4.0)
    logits[:, 1] = 4.0  # only the centre positions are right
    logits[0, 0] = 4.0  # frame 1 is never a centre: its first prediction counts
    logits[4, 2] = 4.0  # frame 7 likewise
    ev.process(b, logits)
    r = ev.evaluate()
    assert r["n"] == 7 and r["f1"] == 1.0


def test_centre_target_clips_score_the_centre_frame():
    ev = AUEvaluator([1, 2])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = {"labels": y, "mask": torch.ones_like(y), "sequence": torch.tensor([0, 0]), "frame": torch.tensor([5, 6]),
         "centre": torch.tensor([1, 1])}
    logits = torch.full((2, 3, 2), -4.0)
    logits[0, 1, 0] = 4.0
    logits[1, 1, 1] = 4.0
    ev.process(b, logits)
    r = ev.evaluate()
    assert r["n"] == 2 and r["f1"] == 1.0
    assert np.array_equal(r["labels"], y.numpy())


def test_sequences_follow_the_deduplicated_rows():
    ev = AUEvaluator([1])
    y = torch.tensor([[1.0], [0.0], [1.0]])
    b = {"labels": y, "mask": torch.ones_like(y), "sequence": torch.tensor([7, 7, 9]), "frame": torch.tensor([0, 1, 0])}
    ev.process(b, torch.zeros(3, 1))
    ev.process({k: v[:1] for k, v in b.items()}, torch.zeros(1, 1))  # a repeat of (7, 0)
    probs, _, _ = ev.arrays()
    assert probs.shape == (3, 1) and ev.sequences().tolist() == [7, 7, 9]
    assert ev.keys().tolist() == [[7, 0], [7, 1], [9, 0]]


def test_f1_convention_switch_scores_like_the_published_cis_code():
    # AU a: labels 1,0 and probabilities exactly 0.5 -> paper (>=) predicts both present,
    # cis (strict >) predicts none; AU b has no positive label -> 0 (paper) / -1 (cis)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    b = {"labels": y, "mask": torch.ones_like(y), "sequence": torch.tensor([0, 0]), "frame": torch.tensor([0, 1])}
    paper, cis = AUEvaluator([1, 2]), AUEvaluator([1, 2], convention="cis")
    for ev in (paper, cis):
        ev.process(b, torch.zeros(2, 2))  # sigmoid(0) = 0.5
    assert paper.evaluate()["per_au"] == {1: pytest.approx(2 / 3), 2: 0.0}
    assert cis.evaluate()["per_au"] == {1: 0.0, 2: -1.0}
    assert cis.evaluate()["f1"] == -0.5  # the CIS code averages the -1 in
    with pytest.raises(ValueError, match="convention"):
        AUEvaluator([1], convention="strict")
