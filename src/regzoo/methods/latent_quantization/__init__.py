"""Disentanglement via latent quantisation (QLAE) and its metrics (InfoMEC, DCI).

- :mod:`~regzoo.methods.latent_quantization.qlae`: the autoencoder with per-dimension scalar
  codebooks and its baselines/ablations, the loss, the optimiser groups, ``fit_qlae``;
- :mod:`~regzoo.methods.latent_quantization.qlinfowgan`: QLInfoWGAN-GP and its InfoWGAN-GP
  baseline (WGAN-GP with InfoGAN's latent regression), ``fit_qlinfowgan``;
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
from regzoo.methods.latent_quantization.qlinfowgan import (
    InfoWGAN,
    InfoWGANConfig,
    InfoWGANResult,
    encode_real,
    fit_qlinfowgan,
    gradient_penalty,
)

__all__ = ["DCI", "InfoMEC", "InfoWGAN", "InfoWGANConfig", "InfoWGANResult", "LatentAutoencoder",
           "QLAEConfig", "QLAEResult", "dci", "encode", "encode_real", "fit_qlae",
           "fit_qlinfowgan", "gradient_penalty", "infoe", "infomec", "qlae_loss",
           "qlae_param_groups"]
