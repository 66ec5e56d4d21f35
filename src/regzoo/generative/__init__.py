"""Generative models and the digits assets built on them (oracle classifier, DCGANs).

:mod:`.dcgan` holds the generator, discriminator and training loop; :mod:`.assets` registers the
cached ``digit_oracle`` and ``digit_dcgan`` with :mod:`regzoo.assets`.
"""

from regzoo.generative.assets import DigitGAN, digit_dcgan, digit_oracle, generator_quality
from regzoo.generative.dcgan import DigitDiscriminator, DigitGenerator, train_dcgan

__all__ = [
    "DigitDiscriminator",
    "DigitGAN",
    "DigitGenerator",
    "digit_dcgan",
    "digit_oracle",
    "generator_quality",
    "train_dcgan",
]
