"""Instance metrics: hand-built cases, StarDist's ``matching`` and a port of HoVer-Net's AJI."""

from __future__ import annotations

import time

import numpy as np
import pytest

from segcore.errors import ConfigError, InvalidImageError
from segcore.metrics import instances as mi
from segcore.metrics import labels as ml
from tests.conftest import REPO

SHARED_DATA = REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def squares(*boxes, shape=(40, 40), labels=None) -> np.ndarray:
    """A label image with one rectangle ``(y0, y1, x0, x1)`` per label (later ones on top)."""
    image = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        image[y0:y1, x0:x1] = labels[k] if labels else k + 1
    return image


def discs(rng, centres, radii, shape, labels) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape, np.int64)
    for (cy, cx), r, label in zip(centres, radii, labels, strict=True):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = label
    return image


def random_pair(seed: int, shape=(96, 96), n=45) -> tuple[np.ndarray, np.ndarray]:
    """Crowded random discs and a noisy prediction of them (jittered, resized, some dropped,
    some added, labels not consecutive), so IoUs spread over (0, 1) and matches compete."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, shape, (n, 2))
    radii = rng.uniform(2.5, 8.0, n)
    truth = discs(rng, centres, radii, shape, np.arange(1, n + 1))
    keep = rng.random(n) < 0.85
    extra = 6
    jittered = centres[keep] + rng.normal(0, 2.0, (keep.sum(), 2))
    p_centres = np.r_[jittered, rng.uniform(0, shape, (extra, 2))]
    p_radii = np.r_[radii[keep] * rng.uniform(0.7, 1.3, keep.sum()), rng.uniform(2.5, 8.0, extra)]
    p_labels = rng.choice(10_000, len(p_radii), replace=False) + 1
    return truth, discs(rng, p_centres, p_radii, shape, p_labels)


def above(threshold: float) -> float:
    """StarDist's ``thresh`` for our rule: it matches IoU >= thresh, with IoU in float32."""
    return float(np.nextafter(np.float32(threshold), np.float32(1.0)))


def reference_fast_aji(true: np.ndarray, pred: np.ndarray) -> float:
    """HoVer-Net's ``get_fast_aji`` (compute_stats/stats_utils.py, github.com/vqdang/hover_net,
    MIT licence), ported unchanged apart from the relabelling HoVer-Net's ``remap_label`` does
    first (the code indexes masks by label)."""
    true = np.unique(true, return_inverse=True)[1].reshape(true.shape)
    pred = np.unique(pred, return_inverse=True)[1].reshape(pred.shape)
    true_id_list = list(np.unique(true))
    pred_id_list = list(np.unique(pred))
    true_masks = [None] + [np.array(true == t, np.uint8) for t in true_id_list[1:]]
    pred_masks = [None] + [np.array(pred == p, np.uint8) for p in pred_id_list[1:]]
    pairwise_inter = np.zeros([len(true_id_list) - 1, len(pred_id_list) - 1], dtype=np.float64)
    pairwise_union = np.zeros([len(true_id_list) - 1, len(pred_id_list) - 1], dtype=np.float64)
    for true_id in true_id_list[1:]:
        t_mask = true_masks[true_id]
        for pred_id in list(np.unique(pred[t_mask > 0])):
            if pred_id == 0:
                continue
            p_mask = pred_masks[pred_id]
            total = (t_mask + p_mask).sum()
            inter = (t_mask * p_mask).sum()
            pairwise_inter[true_id - 1, pred_id - 1] = inter
            pairwise_union[true_id - 1, pred_id - 1] = total - inter
    pairwise_iou = pairwise_inter / (pairwise_union + 1.0e-6)
    paired_pred = np.argmax(pairwise_iou, axis=1)
    pairwise_iou = np.max(pairwise_iou, axis=1)
    paired_true = np.nonzero(pairwise_iou > 0.0)[0]
    paired_pred = paired_pred[paired_true]
    overall_inter = (pairwise_inter[paired_true, paired_pred]).sum()
    overall_union = (pairwise_union[paired_true, paired_pred]).sum()
    paired_true = list(paired_true + 1)
    paired_pred = list(paired_pred + 1)
    unpaired_true = [idx for idx in true_id_list[1:] if idx not in paired_true]
    unpaired_pred = [idx for idx in pred_id_list[1:] if idx not in paired_pred]
    for true_id in unpaired_true:
        overall_union += true_masks[true_id].sum()
    for pred_id in unpaired_pred:
        overall_union += pred_masks[pred_id].sum()
    return overall_inter / overall_union


# --------------------------------------------------------------------------------------------
# Hand-built cases
# --------------------------------------------------------------------------------------------


def test_two_overlapping_squares():
    truth = squares((0, 10, 0, 10))
    pred = squares((0, 10, 2, 12))  # intersection 80, union 120
    s = mi.instance_scores(truth, pred)
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (1, 1, 1, 0, 0)
    assert s.precision == s.recall == s.f1 == s.dq == 1.0
    assert s.sq == pytest.approx(2 / 3) and s.pq == pytest.approx(2 / 3)
    assert (s.aji_intersection, s.aji_union) == (80, 120) and s.aji == pytest.approx(2 / 3)
    # Shifted by 5: IoU 50 / 150, a match only below 1/3; AJI still pairs them.
    far = squares((0, 10, 5, 15))
    assert mi.match_instances(truth, far).tp == 0
    m = mi.match_instances(truth, far, iou_threshold=0.3)
    assert m.tp == 1 and m.ious[0] == pytest.approx(1 / 3)
    assert mi.aggregated_jaccard_index(truth, far) == pytest.approx(1 / 3)


def test_iou_must_exceed_the_threshold():
    truth = squares((0, 10, 0, 20))
    pred = squares((0, 10, 0, 10))  # IoU exactly 0.5
    assert mi.match_instances(truth, pred).tp == 0
    assert mi.match_instances(truth, pred, iou_threshold=0.49).tp == 1


def test_split_nucleus():
    truth = squares((0, 10, 0, 20))
    pred = squares((0, 10, 0, 12), (0, 10, 12, 20))  # IoU 0.6 and 0.4
    s = mi.instance_scores(truth, pred)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.precision == 0.5 and s.recall == 1.0 and s.f1 == pytest.approx(2 / 3)
    assert s.sq == pytest.approx(0.6) and s.pq == pytest.approx(0.4)
    # C = 120, U = 200 (the pair) + 80 (the unused half).
    assert (s.aji_intersection, s.aji_union) == (120, 280)
    # An even split: no half exceeds 0.5; the tie goes to the lower label.
    even = squares((0, 10, 0, 10), (0, 10, 10, 20))
    assert mi.instance_scores(truth, even).tp == 0
    assert mi.aggregated_jaccard_index(truth, even) == pytest.approx(100 / 300)


def test_merged_nuclei():
    truth = squares((0, 10, 0, 10), (0, 10, 10, 20))
    pred = squares((0, 10, 0, 20))
    s = mi.instance_scores(truth, pred)
    assert (s.tp, s.fp, s.fn) == (0, 1, 2) and s.pq == 0.0
    # Both true nuclei pair with the one prediction: its area enters U twice.
    assert (s.aji_intersection, s.aji_union) == (200, 400)
    pred_big = squares((0, 10, 0, 18))  # IoU 100/180 and 80/200
    s = mi.instance_scores(truth, pred_big)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1) and s.sq == pytest.approx(100 / 180)


def test_worked_aji_example():
    """Three true nuclei, three predictions, worked by hand on a 1-D strip.

    t1 = [0, 10), t2 = [10, 20), t3 = [30, 40); p1 = [2, 14), p2 = [14, 22), p3 = [50, 55).
    t1: p1 (inter 8, union 14); t2: p1 (4 / 18 = 0.22) loses to p2 (6 / 12 = 0.5);
    t3 overlaps nothing (+10 to U); p3 is used by none (+5 to U).
    C = 8 + 6 = 14, U = 14 + 12 + 10 + 5 = 41.
    """
    truth, pred = np.zeros(60, np.int32), np.zeros(60, np.int32)
    truth[0:10], truth[10:20], truth[30:40] = 1, 2, 3
    pred[2:14], pred[14:22], pred[50:55] = 1, 2, 3
    assert mi.aggregated_jaccard_index(truth, pred) == pytest.approx(14 / 41)
    assert reference_fast_aji(truth, pred) == pytest.approx(14 / 41)


def test_low_threshold_maximises_the_number_of_matches():
    # t1-p1 has the highest IoU, but pairing t1-p2 and t2-p1 matches both nuclei.
    truth, pred = np.zeros(40, np.int32), np.zeros(40, np.int32)
    truth[0:20], truth[20:30] = 1, 2
    pred[10:26], pred[0:6] = 1, 2  # t1-p1 10/26, t1-p2 6/20, t2-p1 6/20
    m = mi.match_instances(truth, pred, iou_threshold=0.25)
    assert m.tp == 2
    assert sorted(zip(m.true_ids.tolist(), m.pred_ids.tolist(), strict=True)) == [(1, 2), (2, 1)]
    assert m.ious == pytest.approx([0.3, 0.3])
    assert mi.match_instances(truth, pred, iou_threshold=0.35).tp == 1


def test_empty_images():
    truth = squares((0, 10, 0, 10), (20, 30, 20, 30))
    empty = np.zeros_like(truth)
    s = mi.instance_scores(truth, empty)  # nothing predicted
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (2, 0, 0, 0, 2)
    assert s.precision == s.recall == s.f1 == s.sq == s.pq == s.aji == 0.0
    s = mi.instance_scores(empty, truth)  # empty truth
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (0, 2, 0, 2, 0)
    assert s.precision == s.recall == s.f1 == s.sq == s.pq == s.aji == 0.0
    s = mi.instance_scores(empty, empty)
    assert s.precision == s.recall == s.f1 == s.sq == s.pq == s.aji == 1.0
    assert (s.aji_intersection, s.aji_union) == (0, 0)
    assert mi.aggregated_jaccard_index(empty, empty) == 1.0


def test_non_consecutive_labels_and_original_ids():
    truth = squares((0, 10, 0, 10), (20, 30, 20, 30), labels=[5, 900])
    pred = squares((0, 10, 0, 10), (20, 30, 20, 30), labels=[7, 3]).astype(np.uint16)
    m = mi.match_instances(truth, pred)
    assert m.true_ids.tolist() == [5, 900] and m.pred_ids.tolist() == [7, 3]
    huge = truth.astype(np.int64) * 2**40  # takes the sorting path of the relabelling
    assert mi.instance_scores(huge, pred).pq == 1.0
    assert mi.instance_scores(truth.astype(np.float32), pred).aji == 1.0


def test_many_nuclei_stay_fast():
    """A 1000×1000 image with 20,164 nuclei (the sparse path) against a shifted copy."""
    tile = np.zeros((7, 7), np.int32)
    tile[1:6, 1:6] = 1
    grid = np.kron(np.arange(1, 142**2 + 1).reshape(142, 142), np.ones((7, 7), np.int32))
    truth = np.zeros((1000, 1000), np.int32)
    truth[:994, :994] = grid * np.tile(tile, (142, 142))
    start = time.perf_counter()
    s = mi.instance_scores(truth, np.roll(truth, 1, axis=1))  # IoU 20 / 30 each
    assert time.perf_counter() - start < 3.0
    assert (s.n_true, s.tp) == (142**2, 142**2)
    assert s.sq == pytest.approx(2 / 3) and s.aji == pytest.approx(2 / 3)
    assert mi.match_instances(truth, truth, iou_threshold=0.1).tp == 142**2


# --------------------------------------------------------------------------------------------
# Ground truth conversion and bad input
# --------------------------------------------------------------------------------------------


def test_ground_truth_label_image():
    mask = squares((0, 10, 0, 10), (0, 10, 10, 20), (30, 35, 30, 35), labels=[4, 9, 300])
    labels, note = ml.ground_truth_instances(mask.astype(np.uint16))
    assert note is None and labels.dtype == np.int32
    assert np.array_equal(labels, squares((0, 10, 0, 10), (0, 10, 10, 20), (30, 35, 30, 35)))
    labels, note = ml.ground_truth_instances(np.zeros((5, 5), np.uint8))
    assert note is None and not labels.any()


def test_ground_truth_binary_mask_note():
    mask = squares((0, 10, 0, 10), (10, 20, 10, 20), (30, 35, 30, 35)) > 0  # two touch diagonally
    for array in (mask, mask.astype(np.uint8) * 255):
        labels, note = ml.ground_truth_instances(array)
        assert labels.max() == 2 and note == ml.BINARY_NOTE
        assert "binary" in note and "touching nuclei count as one" in note


def test_ground_truth_colour_rendering():
    truth = squares((0, 10, 0, 10), (0, 10, 10, 20), (30, 35, 30, 35))
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30]], np.uint8)
    labels, note = ml.ground_truth_instances(palette[truth])
    assert note == ml.COLOUR_NOTE and mi.instance_scores(truth, labels).pq == 1.0
    rgba = np.dstack([palette[truth], np.full(truth.shape, 255, np.uint8)])
    rgba[0, 0, 3] = 0  # transparent: background
    labels, _ = ml.ground_truth_instances(rgba)
    assert labels[0, 0] == 0 and labels.max() == 3
    wide, _ = ml.ground_truth_instances(palette[truth].astype(np.uint16) * 257)
    assert mi.instance_scores(truth, wide).pq == 1.0
    grey, note = ml.ground_truth_instances(np.dstack([truth] * 3))
    assert note is None and np.array_equal(grey, truth)


@pytest.mark.parametrize(
    "array",
    [
        np.full((4, 4), 0.5),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        -np.ones((4, 4), np.int32),
        np.zeros((0, 4), np.uint8),
        np.array([[np.nan, 1.0]]),
    ],
)
def test_ground_truth_bad_input_names_the_mask(array):
    with pytest.raises(InvalidImageError, match=r"cells_07\.png"):
        ml.ground_truth_instances(array, name="cells_07.png")


def test_bad_label_pairs_and_thresholds():
    with pytest.raises(InvalidImageError, match="same shape"):
        mi.instance_scores(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(InvalidImageError, match="pred_labels"):
        mi.aggregated_jaccard_index(np.zeros((4, 4), int), np.full((4, 4), 0.5))
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ConfigError):
            mi.match_instances(np.zeros((4, 4), int), np.zeros((4, 4), int), iou_threshold=bad)


# --------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.1])
def test_matching_agrees_with_stardist(seed, threshold):
    matching = pytest.importorskip("stardist.matching").matching
    truth, pred = random_pair(seed)
    ref = matching(truth, pred, thresh=above(threshold))
    m = mi.match_instances(truth, pred, iou_threshold=threshold)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (
        ref.n_true,
        ref.n_pred,
        ref.tp,
        ref.fp,
        ref.fn,
    )
    assert m.tp > 0 and m.fp > 0 and m.fn > 0
    assert m.ious.mean() == pytest.approx(ref.mean_matched_score, abs=1e-6)
    if threshold == 0.5:
        s = mi.instance_scores(truth, pred)
        for ours, theirs in [
            (s.precision, ref.precision),
            (s.recall, ref.recall),
            (s.f1, ref.f1),
            (s.sq, ref.mean_matched_score),
            (s.pq, ref.panoptic_quality),
        ]:
            assert ours == pytest.approx(theirs, abs=1e-6)


def test_low_threshold_case_agrees_with_stardist():
    matching = pytest.importorskip("stardist.matching").matching
    truth, pred = np.zeros((1, 40), np.int32), np.zeros((1, 40), np.int32)
    truth[0, 0:20], truth[0, 20:30] = 1, 2
    pred[0, 10:26], pred[0, 0:6] = 1, 2
    ref = matching(truth, pred, thresh=above(0.25))
    assert ref.tp == mi.match_instances(truth, pred, iou_threshold=0.25).tp == 2


@pytest.mark.parametrize("seed", range(8))
def test_aji_agrees_with_hovernet(seed):
    truth, pred = random_pair(seed, shape=(64, 64), n=25)
    assert mi.aggregated_jaccard_index(truth, pred) == pytest.approx(
        reference_fast_aji(truth, pred), abs=1e-12
    )


# --------------------------------------------------------------------------------------------
# Sets of images and real data
# --------------------------------------------------------------------------------------------


def test_combine_instance_scores():
    a = mi.instance_scores(squares((0, 10, 0, 10)), squares((0, 10, 2, 12)))  # IoU 2/3
    b = mi.instance_scores(squares((0, 10, 0, 10), (20, 30, 20, 30)), np.zeros((40, 40), int))
    c = mi.instance_scores(np.zeros((40, 40), int), squares((0, 5, 0, 5)))
    out = mi.combine_instance_scores([a, b, c])
    assert out["n_images"] == 3
    assert (out["n_true"], out["n_pred"], out["tp"], out["fp"], out["fn"]) == (3, 2, 1, 1, 2)
    assert out["precision"] == 0.5 and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == out["dq"] == pytest.approx(2 / 5)
    assert out["sq"] == pytest.approx(2 / 3) and out["pq"] == pytest.approx(4 / 15)
    assert out["aji"] == pytest.approx(80 / (120 + 200 + 25))
    assert out["mean_pq"] == pytest.approx(2 / 9) and out["mean_aji"] == pytest.approx(2 / 9)
    assert out["median_count_error"] == 0.5  # images a (0) and b (1)
    assert set(a.as_dict()) < set(out)
    empty = mi.instance_scores(np.zeros((4, 4), int), np.zeros((4, 4), int))
    assert mi.combine_instance_scores([empty])["median_count_error"] is None
    with pytest.raises(ValueError):
        mi.combine_instance_scores([])


def test_real_mask_against_itself():
    from PIL import Image

    paths = sorted(SHARED_DATA.glob("*/masks/*.png")) + sorted(
        SHARED_DATA.glob("monuseg/test/masks/*.png")
    )
    if not paths:
        pytest.skip(f"no real masks under {SHARED_DATA} (expected ../shared/data/<set>/masks)")
    mask = np.array(Image.open(paths[-1]))
    labels, note = ml.ground_truth_instances(mask, name=paths[-1].name)
    assert note is None and labels.max() == len(np.unique(mask)) - 1 > 1
    s = mi.instance_scores(labels, mask)
    assert s.pq == s.aji == s.f1 == 1.0 and s.tp == s.n_true == labels.max()
    shifted = mi.instance_scores(labels, np.roll(labels, 2, axis=0))
    assert 0.5 < shifted.aji < 1.0 and 0.5 < shifted.pq < 1.0


def test_colour_rendering_with_a_reused_colour_gives_one_nucleus_per_region():
    rgb = np.zeros((12, 12, 3), np.uint8)
    rgb[1:4, 1:4] = (200, 10, 10)
    rgb[7:10, 7:10] = (200, 10, 10)  # same colour, another nucleus
    rgb[1:4, 7:10] = (10, 200, 10)
    labels, note = ml.ground_truth_instances(rgb, name="render.png")
    assert note == ml.COLOUR_NOTE
    assert labels.max() == 3 and sorted(np.bincount(labels.ravel())[1:]) == [9, 9, 9]
