"""Digits assets: an oracle classifier and DCGANs, built once and cached by :mod:`regzoo.assets`.

- ``digit_oracle``: :class:`regzoo.models.CNN` ((8, 8), 10 classes, channels (32, 64)) trained
  with Adam on the training split of :func:`regzoo.data.load_digits` ``(seed)``; its
  ``features(x)`` (the 256 penultimate activations) are the feature space of the Fréchet
  distance, its arg-max labels the class of a generated digit. Metrics never use a model that a
  method also attacks or distils from: the oracle is trained for measuring only.
- ``digit_dcgan``: the :mod:`regzoo.generative.dcgan` generator, its EMA and its discriminator,
  trained on the training-split digits of the listed ``classes`` (all ten, or 0–4 for GIFD's
  out-of-distribution prior). The payload also records the EMA generator's quality as the
  oracle sees it: Fréchet distance of 2000 samples to the test split's digits of those classes,
  and the share of each class among the samples.

``digit_oracle()`` and ``digit_dcgan(classes=...)`` return ready models (CPU, eval mode);
``regzoo assets build digit_dcgan --set classes=[0,1,2,3,4]`` builds one from the shell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from regzoo import assets
from regzoo.data.batches import TensorBatches
from regzoo.data.classification import load_digits
from regzoo.generative.dcgan import DigitDiscriminator, DigitGenerator, train_dcgan
from regzoo.metrics import accuracy, class_histogram, frechet_distance, predict_logits
from regzoo.models.small import CNN
from regzoo.train.loop import fit

QUALITY_SAMPLES = 2000
"""Generated digits per quality measurement (the issue's 2000)."""


def _build_oracle(config: Mapping[str, Any]) -> assets.Payload:
    data = load_digits(config["seed"])
    torch.manual_seed(config["seed"])
    model = CNN((8, 8), 10, channels=tuple(config["channels"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])

    def step(net: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, _ = batch
        return F.cross_entropy(net(x), y)

    # A cold cache may be hit from inside torch.no_grad(); training needs autograd either way.
    with torch.enable_grad():
        fit(model, TensorBatches(data.x_train, data.y_train, config["batch_size"],
                                 seed=config["seed"]),
            step, optimizer, epochs=config["epochs"], distribute=False, progress=None,
            desc="digit_oracle")
    model.eval()
    return {"state_dict": model.state_dict(), "channels": list(config["channels"]),
            "test_accuracy": accuracy(predict_logits(model, data.x_test), data.y_test)}


def load_oracle(payload: assets.Payload) -> CNN:
    """The oracle CNN of a ``digit_oracle`` payload (CPU, eval mode; draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        model = CNN((8, 8), 10, channels=tuple(int(c) for c in payload["channels"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


assets.register(assets.Asset(
    name="digit_oracle",
    summary="CNN on the digits' training split (Adam, 40 epochs): the classifier that labels "
            "generated digits and the feature space of their Fréchet distance",
    defaults={"seed": 0, "channels": (32, 64), "epochs": 40, "lr": 1e-3, "batch_size": 64},
    build=_build_oracle,
    check=load_oracle,
))


def digit_oracle(**config: Any) -> CNN:
    """The cached oracle (built on first use, about 10 s); ``config`` overrides its defaults."""
    return load_oracle(assets.get("digit_oracle", config))


@dataclass
class DigitGAN:
    """A trained digits DCGAN: generator, its EMA (the one to sample from), discriminator."""

    generator: DigitGenerator
    generator_ema: DigitGenerator
    discriminator: DigitDiscriminator
    classes: tuple[int, ...]
    fd_test: float
    class_shares: list[float]


def _digits_of(classes: Iterable[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test images of ``classes`` from :func:`load_digits` ``(seed)``."""
    data = load_digits(seed)
    chosen = torch.tensor(sorted(set(classes)))
    keep_train, keep_test = torch.isin(data.y_train, chosen), torch.isin(data.y_test, chosen)
    return data.x_train[keep_train], data.x_test[keep_test]


@torch.no_grad()
def generator_quality(generator: DigitGenerator, oracle: CNN, real: torch.Tensor, *,
                      samples: int = QUALITY_SAMPLES, seed: int = 1) -> dict[str, Any]:
    """Fréchet distance to ``real`` (oracle features) and class shares of ``samples`` draws."""
    fake = generator.sample(samples, generator=torch.Generator().manual_seed(seed)).cpu()
    labels = oracle(fake).argmax(1)
    return {"fd": frechet_distance(oracle.features(fake), oracle.features(real)),
            "class_shares": class_histogram(labels, 10).tolist()}


def _build_dcgan(config: Mapping[str, Any]) -> assets.Payload:
    train, test = _digits_of(config["classes"], config["data_seed"])
    result = train_dcgan(train, steps=config["steps"], batch_size=config["batch_size"],
                         lr=config["lr"], r1_gamma=config["r1_gamma"],
                         ema_decay=config["ema_decay"], latent_dim=config["latent_dim"],
                         seed=config["seed"], device="cpu")
    quality = generator_quality(result.generator_ema, digit_oracle(), test)
    return {"generator": result.generator.state_dict(),
            "generator_ema": result.generator_ema.state_dict(),
            "discriminator": result.discriminator.state_dict(),
            "latent_dim": config["latent_dim"], "classes": list(config["classes"]),
            "fd_test": quality["fd"], "class_shares": quality["class_shares"],
            "history": result.history}


def load_dcgan(payload: assets.Payload) -> DigitGAN:
    """The models of a ``digit_dcgan`` payload (CPU, eval mode; draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        generator, average = (DigitGenerator(int(payload["latent_dim"])) for _ in range(2))
        discriminator = DigitDiscriminator()
    generator.load_state_dict(payload["generator"])
    average.load_state_dict(payload["generator_ema"])
    discriminator.load_state_dict(payload["discriminator"])
    return DigitGAN(generator.eval(), average.eval(), discriminator.eval(),
                    tuple(int(c) for c in payload["classes"]), float(payload["fd_test"]),
                    [float(s) for s in payload["class_shares"]])


DCGAN_DEFAULTS = {"classes": tuple(range(10)), "seed": 0, "data_seed": 0, "steps": 4000,
                  "batch_size": 64, "lr": 2e-4, "r1_gamma": 1.0, "ema_decay": 0.999,
                  "latent_dim": 32}

assets.register(assets.Asset(
    name="digit_dcgan",
    summary="DCGAN (z = 32, 50k-parameter G with three stages, spectral-norm D, EMA of G) on "
            "the digits' training split of the given classes; records FD and class shares",
    defaults=DCGAN_DEFAULTS,
    build=_build_dcgan,
    check=load_dcgan,
))


def digit_dcgan(classes: Iterable[int] = tuple(range(10)), **config: Any) -> DigitGAN:
    """The cached DCGAN on ``classes`` (built on first use, 1–3 min on one CPU core)."""
    chosen = sorted({int(c) for c in classes})
    if not chosen or chosen[0] < 0 or chosen[-1] > 9:
        raise ValueError(f"classes must be a non-empty set of digits 0–9, got {list(classes)}")
    return load_dcgan(assets.get("digit_dcgan", {**config, "classes": chosen}))
