"""Exceptions raised by segcore.

Every error the library raises on bad input derives from :class:`SegcoreError`, so callers
(the CLI, the Streamlit pages) can catch one type and show its message. Messages name the file
and the problem, and where possible the fix.
"""

from __future__ import annotations


class SegcoreError(Exception):
    """Base class of every error segcore raises on purpose."""


class InvalidImageError(SegcoreError, ValueError):
    """An image or mask could not be used: unreadable, empty, too large, or mismatched."""


class DatasetError(SegcoreError, ValueError):
    """A dataset folder or array file is malformed.

    Attributes:
        problems: list of ``(path, problem)`` pairs, one per offending file.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            lines = "\n".join(f"  - {path}: {problem}" for path, problem in self.problems)
            message = f"{message}\n{lines}"
        super().__init__(message)


class BackboneWeightsError(SegcoreError, RuntimeError):
    """Pretrained backbone weights were requested but are not available."""


class ConfigError(SegcoreError, ValueError):
    """A configuration value or file is invalid."""


class BundleError(SegcoreError):
    """A model bundle (``model.keras`` + ``card.json``) is missing, malformed, altered or
    could not be downloaded."""


class SlideError(SegcoreError, ValueError):
    """A whole-slide image could not be used: not a slide, truncated, unreadable region, no
    pyramid where one is needed, or no pixel size where one is needed."""
