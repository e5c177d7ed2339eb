"""Stand-ins the batch tests send to Ray workers (imported by name, ``tests.batch_standins``,
so the workers can unpickle them): the context-free hematoxylin model of the whole-slide
tests, optionally slowed down so that a test can kill a worker in the middle of a task."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.test_wholeslide import HematoxylinModel, stand_in_bundle


class SlowHematoxylinModel(HematoxylinModel):
    """:class:`HematoxylinModel` sleeping ``delay`` seconds per call."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def __call__(self, batch):
        time.sleep(self.delay)
        return super().__call__(batch)


@dataclass(frozen=True)
class StandInSpec:
    """A :class:`~segcore.batch.worker.ModelSpec` for the stand-in model and bundle."""

    delay: float = 0.0
    runtime: str = "auto"

    def card(self):
        return stand_in_bundle().card

    def load(self):
        model = SlowHematoxylinModel(self.delay) if self.delay else HematoxylinModel()
        return stand_in_bundle(), model
