"""Small reference models for the reproductions (width and depth configurable)."""

from regzoo.models.small import CNN, MLP

__all__ = ["CNN", "MLP"]
