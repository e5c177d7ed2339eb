"""The version of segcore (recorded in model cards and Hub uploads)."""

__version__ = "0.1.0"
