"""Disentanglement via latent quantisation (QLAE) and its metrics (InfoMEC, DCI).

The metrics land first (:mod:`regzoo.methods.latent_quantization.infomec`); the QLAE model, its
optimiser groups and the reproduction follow (issue 17). Until then the card stays ``planned``.
"""

from regzoo.methods.latent_quantization.infomec import DCI, InfoMEC, dci, infoe, infomec

__all__ = ["DCI", "InfoMEC", "dci", "infoe", "infomec"]
