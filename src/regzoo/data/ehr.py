"""A seeded synthetic electronic-health-record (EHR) generator for the VGNN reproduction.

Real EHR data (MIMIC-III, eICU) are credentialed and cannot be shipped, so this generator builds
visits whose outcome depends on *co-occurring* codes and whose codes are partly undocumented,
the two properties VGNN's learned code graph is meant to exploit (spec ``vgnn_ehr`` §5):

* ``num_codes`` codes split into ``num_conditions`` latent conditions of equal size (code ``j``
  belongs to condition ``j // (num_codes / num_conditions)``);
* a patient has 1 to ``max_conditions`` active conditions (the count uniform, the conditions a
  uniform draw without replacement); each active condition *emits* each of its codes with
  probability ``p_emit``; each emitted code is *recorded* with probability ``p_record``
  (missing documentation); ``num_background`` codes drawn uniformly from the whole vocabulary are
  recorded as noise;
* outcome: ``y ~ Bernoulli(σ(b + Σ_{(a,c) ∈ pairs} w_ac·1[a, c active] + Σ_j β_j·1[j emitted]))``
  with ``num_interactions`` condition pairs of weight U(``interaction_low``,
  ``interaction_high``), small main effects β_j ~ N(0, ``main_effect_sd``²) on the *emitted*
  (true, partly unrecorded) codes, and the intercept b found by bisection so that the
  prevalence over 50 000 patients drawn from the structure's generator is ``prevalence``.

The hidden structure (condition of each code, interaction pairs and weights, main effects,
intercept) depends on ``structure_seed`` only, the patients on ``seed``: train, validation and
test splits share a structure and differ in ``seed``. Every draw comes from a
``numpy.random.Generator``, so the data are the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regzoo.core.checks import check_positive_int, check_range

_CALIBRATION_PATIENTS = 50_000


@dataclass(frozen=True)
class EHRStructure:
    """The hidden generative structure shared by every split of one ``structure_seed``.

    Attributes:
        condition_of_code: ``(num_codes,)`` the condition each code belongs to.
        pairs: ``(num_interactions, 2)`` the interacting condition pairs (a < c).
        pair_weights: ``(num_interactions,)`` their log-odds weights.
        main_effects: ``(num_codes,)`` per-code log-odds main effects β_j (on emitted codes).
        intercept: the calibrated log-odds intercept b.
        p_emit, p_record: emission and recording probabilities.
        num_background: background codes recorded per patient.
        max_conditions: the largest number of active conditions of a patient.
    """

    condition_of_code: np.ndarray
    pairs: np.ndarray
    pair_weights: np.ndarray
    main_effects: np.ndarray
    intercept: float
    p_emit: float
    p_record: float
    num_background: int
    max_conditions: int

    @property
    def num_codes(self) -> int:
        """The vocabulary size V."""
        return int(self.condition_of_code.shape[0])

    @property
    def num_conditions(self) -> int:
        """The number of latent conditions."""
        return int(self.condition_of_code.max()) + 1


@dataclass(frozen=True)
class EHRData:
    """One split of synthetic visits.

    Attributes:
        codes: ``(n, P)`` int64 recorded code ids in ``[0, num_codes)``, padded with 0 where
            ``mask`` is False (P = the largest number of recorded codes of a patient, at least 1).
        mask: ``(n, P)`` bool, True at recorded codes.
        multi_hot: ``(n, num_codes)`` float32 indicator of the recorded codes.
        y: ``(n,)`` float32 binary outcome.
        active: ``(n, num_conditions)`` bool, the patients' active conditions (hidden).
        emitted: ``(n, num_codes)`` bool, the codes emitted before documentation (hidden).
        structure: the hidden :class:`EHRStructure`.
    """

    codes: torch.Tensor
    mask: torch.Tensor
    multi_hot: torch.Tensor
    y: torch.Tensor
    active: torch.Tensor
    emitted: torch.Tensor
    structure: EHRStructure

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def prevalence(self) -> float:
        """The fraction of positive outcomes."""
        return float(self.y.mean())


def _patients(structure: EHRStructure, n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Active conditions, emitted codes, recorded codes and the outcome log-odds without b."""
    v, c = structure.num_codes, structure.num_conditions
    counts = rng.integers(1, structure.max_conditions + 1, size=n)
    order = np.argsort(rng.random((n, c)), axis=1)
    active = np.zeros((n, c), dtype=bool)
    rows = np.arange(n)
    for k in range(structure.max_conditions):
        chosen = counts > k
        active[rows[chosen], order[chosen, k]] = True
    emitted = active[:, structure.condition_of_code] & (rng.random((n, v)) < structure.p_emit)
    recorded = emitted & (rng.random((n, v)) < structure.p_record)
    if structure.num_background:
        background = np.argsort(rng.random((n, v)), axis=1)[:, :structure.num_background]
        recorded[rows[:, None], background] = True
    both = active[:, structure.pairs[:, 0]] & active[:, structure.pairs[:, 1]]
    logit = both.astype(np.float64) @ structure.pair_weights + emitted @ structure.main_effects
    return active, emitted, recorded, logit


def _intercept(logit: np.ndarray, prevalence: float) -> float:
    """The b with mean σ(b + logit) = prevalence (bisection; the mean is increasing in b)."""
    low, high = -40.0, 40.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        if np.mean(1.0 / (1.0 + np.exp(-(mid + logit)))) < prevalence:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def ehr_structure(*, num_codes: int = 200, num_conditions: int = 10, max_conditions: int = 3,
                  p_emit: float = 0.3, p_record: float = 0.6, num_background: int = 3,
                  num_interactions: int = 8, interaction_low: float = 1.5,
                  interaction_high: float = 3.0, main_effect_sd: float = 0.3,
                  prevalence: float = 0.15, structure_seed: int = 0) -> EHRStructure:
    """Draw the hidden structure and calibrate its intercept to ``prevalence``.

    Raises ValueError when ``num_codes`` is not a multiple of ``num_conditions``, when more
    interactions are asked for than there are condition pairs, or a probability is out of range.
    """
    check_positive_int("num_codes", num_codes)
    check_positive_int("num_conditions", num_conditions)
    if num_codes % num_conditions:
        raise ValueError(f"num_codes must be a multiple of num_conditions ({num_conditions}), "
                         f"got {num_codes}")
    check_positive_int("max_conditions", max_conditions)
    if max_conditions > num_conditions:
        raise ValueError(f"max_conditions must be at most num_conditions ({num_conditions}), "
                         f"got {max_conditions}")
    check_range("p_emit", p_emit, 0.0, 1.0, low_inclusive=False)
    check_range("p_record", p_record, 0.0, 1.0, low_inclusive=False)
    check_positive_int("num_background", num_background, minimum=0)
    if num_background > num_codes:
        raise ValueError(f"num_background must be at most num_codes ({num_codes}), got "
                         f"{num_background}")
    check_positive_int("num_interactions", num_interactions, minimum=0)
    all_pairs = np.array([(a, c) for a in range(num_conditions)
                          for c in range(a + 1, num_conditions)], dtype=np.int64).reshape(-1, 2)
    if num_interactions > len(all_pairs):
        raise ValueError(f"num_interactions must be at most {len(all_pairs)} (the condition "
                         f"pairs), got {num_interactions}")
    check_range("interaction_low", interaction_low)
    check_range("interaction_high", interaction_high, interaction_low)
    check_range("main_effect_sd", main_effect_sd, 0.0)
    check_range("prevalence", prevalence, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_positive_int("structure_seed", structure_seed, minimum=0)
    rng = np.random.default_rng([structure_seed, 0xE4])
    size = num_codes // num_conditions
    condition_of_code = rng.permutation(np.repeat(np.arange(num_conditions), size))
    pairs = all_pairs[np.sort(rng.choice(len(all_pairs), num_interactions, replace=False))]
    structure = EHRStructure(
        condition_of_code=condition_of_code, pairs=pairs,
        pair_weights=rng.uniform(interaction_low, interaction_high, num_interactions),
        main_effects=rng.normal(0.0, main_effect_sd, num_codes), intercept=0.0, p_emit=p_emit,
        p_record=p_record, num_background=num_background, max_conditions=max_conditions)
    *_, logit = _patients(structure, _CALIBRATION_PATIENTS, rng)
    return EHRStructure(**{**structure.__dict__, "intercept": _intercept(logit, prevalence)})


def synthetic_ehr(n: int, *, structure: EHRStructure | None = None, seed: int = 0,
                  **structure_options: float) -> EHRData:
    """``n`` synthetic visits drawn from ``structure`` (built by :func:`ehr_structure` if None).

    Args:
        n: number of patients.
        structure: the hidden structure; ``None`` builds one from ``structure_options``
            (the keyword arguments of :func:`ehr_structure`, e.g. ``structure_seed=1``).
        seed: the patients' seed (give each split its own).

    Returns:
        :class:`EHRData` with padded code ids, their mask, the multi-hot matrix, the outcome
        and the hidden structure.
    """
    check_positive_int("n", n)
    check_positive_int("seed", seed, minimum=0)
    if structure is None:
        structure = ehr_structure(**structure_options)  # type: ignore[arg-type]
    elif structure_options:
        raise ValueError(f"give either structure or structure options, not both (got "
                         f"{sorted(structure_options)})")
    rng = np.random.default_rng([seed, 0x5A7])
    active, emitted, recorded, logit = _patients(structure, n, rng)
    probability = 1.0 / (1.0 + np.exp(-(structure.intercept + logit)))
    y = rng.random(n) < probability
    lengths = recorded.sum(axis=1)
    width = max(int(lengths.max()), 1)
    codes = np.zeros((n, width), dtype=np.int64)
    mask = np.arange(width)[None, :] < lengths[:, None]
    codes[mask] = np.nonzero(recorded)[1]
    return EHRData(codes=torch.from_numpy(codes), mask=torch.from_numpy(mask),
                   multi_hot=torch.from_numpy(recorded.astype(np.float32)),
                   y=torch.from_numpy(y.astype(np.float32)), active=torch.from_numpy(active),
                   emitted=torch.from_numpy(emitted), structure=structure)
