"""Synthetic demo population with known truth (issue 7): `generate`, the exporters, `validate`."""

from .generate import Population, generate

__all__ = ["Population", "generate"]
