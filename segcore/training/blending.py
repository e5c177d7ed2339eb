"""Blending a fine-tuning's weights with its starting bundle's (weight-space ensembling).

A fine-tuned network and the network it started from lie in the same basin of the loss, and
the straight line between their weights is a family of models: Wortsman et al., "Robust
fine-tuning of zero-shot models" (WiSE-FT, CVPR 2022), found that points inside it keep the
start's robustness to data it never saw while keeping most of what the fine-tuning learnt.
``TrainConfig.start_blend`` is the start's share ``s`` of that line:

    kept = s * start + (1 - s) * trained

for every weight and every BatchNormalization statistic alike (both models share one
architecture, which ``init_from`` already requires). With ``validation_sources``, every
epoch is scored as it would be kept — blended — so the best epoch is the best blend; the
checkpoints stay unblended, so a resumed run continues the fine-tuning itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np

from segcore.errors import ConfigError
from segcore.training.config import TrainConfig

log = logging.getLogger(__name__)


class StartBlend:
    """The starting bundle's weights and their share in the blend.

    Args:
        start_weights: the starting model's weights (``model.get_weights()`` order).
        share: the start's share ``s``, in ``(0, 1)``.
        ref: the starting bundle's ref, for messages.
    """

    def __init__(self, start_weights: list[np.ndarray], share: float, ref: str = "start"):
        self.start = [np.asarray(w) for w in start_weights]
        self.share = float(share)
        self.ref = ref

    @classmethod
    def for_config(
        cls, config: TrainConfig, start_weights: list[np.ndarray] | None = None
    ) -> StartBlend | None:
        """The blend ``config`` asks for (``start_blend`` > 0), or None.

        Args:
            config: the run's config.
            start_weights: the starting bundle's weights when the caller has them (a new
                run's model just initialised from ``init_from``); None loads the bundle (a
                resumed run, whose model comes from a checkpoint).

        Raises:
            BundleError: the starting bundle cannot be loaded.
        """
        if not config.start_blend:
            return None
        if start_weights is None:
            from segcore.bundles.loading import load_bundle

            start_weights = load_bundle(config.init_from).model.get_weights()
        return cls(start_weights, config.start_blend, config.init_from)

    def blended(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        """``share * start + (1 - share) * weights``, weight by weight.

        Raises:
            ConfigError: ``weights`` are not those of the starting bundle's architecture.
        """
        if len(weights) != len(self.start) or any(
            np.shape(w) != s.shape for w, s in zip(weights, self.start, strict=True)
        ):
            raise ConfigError(
                f"start_blend: the model's weights do not match those of {self.ref!r} "
                "(a different architecture)"
            )
        s = self.share
        return [
            (s * start + (1.0 - s) * np.asarray(w)).astype(start.dtype)
            for start, w in zip(self.start, weights, strict=True)
        ]

    def apply(self, model) -> None:
        """Replaces ``model``'s weights by their blend with the start's."""
        model.set_weights(self.blended(model.get_weights()))
        log.info("blended the weights with %s's (its share %.2f)", self.ref, self.share)

    @contextlib.contextmanager
    def applied(self, model) -> Iterator[None]:
        """Within the block ``model`` carries the blended weights; its own come back after,
        whatever happens inside."""
        own = model.get_weights()
        model.set_weights(self.blended(own))
        try:
            yield
        finally:
            model.set_weights(own)
