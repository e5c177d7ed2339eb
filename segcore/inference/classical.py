"""The classical reference every model is compared with: no learning at all.

The hematoxylin channel by colour deconvolution (``skimage.color.rgb2hed``), smoothed with a
Gaussian, thresholded by Otsu's method over the whole image — the figure
``../shared/data/README.md`` quotes on each evaluation set. :class:`ClassicalBaseline` turns it
into a per-pixel *score* in ``[0, 1]`` that is 0.5 exactly at the Otsu threshold and grows with
the hematoxylin density, so the threshold sweeps, metrics and pictures made for models apply to
it unchanged: at threshold 0.5 it is the Otsu mask.

It works on the whole image at once (Otsu's threshold depends on the whole histogram), so
:func:`segcore.inference.predict.predict_probabilities` hands it the image directly, without
tiles or the models' preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu

from segcore.data.images import to_rgb_uint8
from segcore.errors import ConfigError

BASELINE_REF = "baseline"
"""The model ref (``--model baseline``) that names the classical baseline."""


@dataclass(frozen=True)
class ClassicalBaseline:
    """Hematoxylin (colour deconvolution) + Gaussian blur + Otsu, as a probability-like score.

    Args:
        sigma: Gaussian sigma in pixels, defaults to 2.0.
        softness: width of the score's logistic ramp around the Otsu threshold, in standard
            deviations of the smoothed hematoxylin channel, defaults to 0.25 (the sweep's
            thresholds 0.01–0.99 then span about ±1.1 standard deviations).
    """

    sigma: float = 2.0
    softness: float = 0.25
    name: str = "classical hematoxylin + Otsu"

    def __post_init__(self):
        if not self.sigma >= 0 or not self.softness > 0:
            raise ConfigError("ClassicalBaseline needs sigma >= 0 and softness > 0")

    def hematoxylin(self, image: np.ndarray) -> np.ndarray:
        """The smoothed hematoxylin optical density of an RGB image, float32 ``(H, W)``."""
        density = rgb2hed(to_rgb_uint8(image))[..., 0].astype(np.float32)
        return ndimage.gaussian_filter(density, self.sigma) if self.sigma else density

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """The score of every pixel, float32 ``(H, W)`` in ``[0, 1]``; ``>= 0.5`` is Otsu's mask
        (the pixels above the threshold).

        A flat image (one hematoxylin level) has no Otsu threshold: every pixel scores 0.
        """
        density = self.hematoxylin(image)
        low, high = float(density.min()), float(density.max())
        if high - low < 1e-6:
            return np.zeros(density.shape, np.float32)
        threshold = float(threshold_otsu(density))
        scale = self.softness * max(float(density.std()), 1e-6)
        z = np.clip((density - threshold) / scale, -60.0, 60.0)
        score = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        above = density > threshold  # Otsu's foreground (skimage's rule)
        score[above] = np.maximum(score[above], np.float32(0.5))
        score[~above] = np.minimum(score[~above], np.nextafter(np.float32(0.5), np.float32(0)))
        return score
