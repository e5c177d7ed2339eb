"""segcore.inference.instances: touching nuclei split, specks dropped, holes filled, µm units."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segcore.errors import ConfigError
from segcore.inference.instances import InstanceConfig, label_instances
from segcore.metrics.instances import instance_scores


def discs(size=200, scale=1.0):
    """Probabilities of two touching discs (radius 30 px at scale 1) and a lone one."""
    prob = np.zeros((int(size * scale), int(1.5 * size * scale)), np.float32)
    for x, y, r in ((80, 100, 30), (130, 100, 30), (250, 100, 20)):
        centre = (round(x * scale), round(y * scale))
        cv2.circle(prob, centre, round(r * scale), 0.9, -1)
    return prob


def test_touching_nuclei_are_split_and_a_deep_threshold_keeps_them_whole():
    labels = label_instances(discs(), 0.5)
    assert labels.dtype == np.int32 and labels.max() == 3
    assert sorted(np.bincount(labels.ravel())[1:]) == pytest.approx([1256, 2700, 2700], abs=80)
    whole = label_instances(discs(), 0.5, InstanceConfig(split_depth_um=20))
    assert whole.max() == 2


def test_settings_are_in_micrometres_so_20x_and_40x_agree():
    at_40x = label_instances(discs(), 0.5, pixel_size=0.25)
    at_20x = label_instances(discs(scale=0.5), 0.5, pixel_size=0.5)
    assert at_40x.max() == at_20x.max() == 3


def test_specks_go_holes_fill_and_empty_gives_zero():
    prob = np.zeros((60, 60), np.float32)
    prob[5:8, 5:8] = 1  # 9 px = 0.56 µm² at 0.25 µm/px: a speck
    cv2.circle(prob, (35, 35), 12, 1.0, -1)
    prob[33:37, 33:37] = 0  # a hole
    labels = label_instances(prob, 0.5, InstanceConfig(min_area_um2=2.0))
    assert labels.max() == 1 and labels[35, 35] == 1 and labels[6, 6] == 0
    kept = label_instances(prob, 0.5, InstanceConfig(min_area_um2=0.0, fill_holes=False))
    assert kept[6, 6] > 0 and kept[35, 35] == 0  # the speck stays, the hole too
    assert not label_instances(np.zeros((9, 9)), 0.5).any()


@pytest.mark.parametrize(
    "fields",
    [{"min_area_um2": -1}, {"split_depth_um": float("nan")}, {"fill_holes": "yes"}],
)
def test_bad_settings_are_refused_by_name(fields):
    with pytest.raises(ConfigError, match=next(iter(fields))):
        InstanceConfig(**fields)


def test_bad_threshold_and_shape_are_refused():
    with pytest.raises(ConfigError):
        label_instances(np.zeros((4, 4)), 1.5)
    with pytest.raises(ConfigError, match="shape"):
        label_instances(np.zeros((4, 4, 3)), 0.5)


def test_a_real_binary_mask_is_split_close_to_its_annotation(monuseg):
    truth = cv2.imread(str(sorted((monuseg / "test" / "masks").glob("*.png"))[0]), -1)
    labels = label_instances((truth > 0).astype(np.float32), 0.5)
    merged = cv2.connectedComponents((truth > 0).astype(np.uint8), connectivity=8)[0] - 1
    scores = instance_scores(truth, labels)
    n_true = len(np.unique(truth)) - 1
    # Splitting recovers nuclei that connected components merge, and most match the annotation.
    assert merged < labels.max() and abs(labels.max() - n_true) < abs(merged - n_true)
    assert scores.pq > 0.6 and scores.aji > 0.6
