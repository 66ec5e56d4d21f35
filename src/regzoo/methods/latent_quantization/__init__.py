"""Disentanglement via latent quantisation (QLAE) and its metrics (InfoMEC, DCI).

- :mod:`~regzoo.methods.latent_quantization.qlae`: the autoencoder with per-dimension scalar
  codebooks and its baselines/ablations, the loss, the optimiser groups, ``fit_qlae``;
- :mod:`~regzoo.methods.latent_quantization.infomec`: InfoM, InfoC, InfoE and DCI.
"""

from regzoo.methods.latent_quantization.infomec import DCI, InfoMEC, dci, infoe, infomec
from regzoo.methods.latent_quantization.qlae import (
    LatentAutoencoder,
    QLAEConfig,
    QLAEResult,
    encode,
    fit_qlae,
    qlae_loss,
    qlae_param_groups,
)

__all__ = ["DCI", "InfoMEC", "LatentAutoencoder", "QLAEConfig", "QLAEResult", "dci", "encode",
           "fit_qlae", "infoe", "infomec", "qlae_loss", "qlae_param_groups"]
