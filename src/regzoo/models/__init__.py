"""Reference models for the reproductions: small MLP/CNN, QRNN3D (hyperspectral), tiny causal LM."""

from regzoo.models.qrnn3d import QRNN3D
from regzoo.models.small import CNN, MLP

__all__ = ["CNN", "MLP", "QRNN3D"]
