"""Signature matrices: the in-memory type, loaders for every supported format, and synthetic data."""

from __future__ import annotations

from deeppert.data._signatures import Signatures, landmark_genes

__all__ = ["Signatures", "landmark_genes"]
