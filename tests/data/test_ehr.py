"""Synthetic EHR generator: seeded, calibrated prevalence, the stated emission structure."""

import numpy as np
import pytest
import torch

from regzoo.data.ehr import ehr_structure, synthetic_ehr


def test_same_seed_same_visits_and_another_seed_other_visits():
    a = synthetic_ehr(300, seed=4)
    b = synthetic_ehr(300, seed=4)
    c = synthetic_ehr(300, seed=5)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.y, b.y)
    assert not torch.equal(a.multi_hot, c.multi_hot)
    assert np.array_equal(a.structure.pairs, c.structure.pairs)  # one structure_seed
    other = synthetic_ehr(300, seed=4, structure_seed=1)
    assert not np.array_equal(a.structure.condition_of_code, other.structure.condition_of_code)


def test_the_global_rngs_are_untouched():
    np.random.seed(0)
    torch.manual_seed(0)
    before = (np.random.random(), torch.rand(1))
    np.random.seed(0)
    torch.manual_seed(0)
    synthetic_ehr(50, seed=1)
    assert (np.random.random(), torch.rand(1)) == before


@pytest.mark.parametrize("structure_seed", [0, 1, 2])
def test_prevalence_hits_its_target(structure_seed):
    data = synthetic_ehr(20_000, seed=7, structure_seed=structure_seed)
    # binomial SE ≈ 0.0025 at n = 20 000, plus the calibration sample's own ≈ 0.0016
    assert abs(data.prevalence - 0.15) < 0.012
    assert abs(synthetic_ehr(20_000, seed=7, structure_seed=structure_seed,
                             prevalence=0.3).prevalence - 0.3) < 0.015


def test_codes_mask_and_multi_hot_agree_and_follow_the_emission_structure():
    data = synthetic_ehr(2000, seed=3)
    s = data.structure
    rebuilt = torch.zeros_like(data.multi_hot)
    rows = torch.arange(len(data))[:, None].expand_as(data.codes)
    rebuilt[rows[data.mask], data.codes[data.mask]] = 1.0
    assert torch.equal(rebuilt, data.multi_hot)
    assert data.mask.sum(1).min() >= s.num_background  # background codes are always recorded
    counts = data.active.sum(1)
    assert int(counts.min()) == 1 and int(counts.max()) == 3
    # emitted codes belong to active conditions only, at rate p_emit
    of_active = data.active[:, torch.from_numpy(s.condition_of_code)]
    assert not (data.emitted & ~of_active).any()
    rate = float(data.emitted.sum() / of_active.sum())
    assert abs(rate - s.p_emit) < 0.01
    # recorded ⊇ (emitted ∩ documented): an emitted code is recorded w.p. ≥ p_record
    recorded_given_emitted = float((data.multi_hot.bool() & data.emitted).sum()
                                   / data.emitted.sum())
    assert s.p_record - 0.02 < recorded_given_emitted < s.p_record + 0.05
    assert data.codes.dtype == torch.int64 and data.mask.dtype == torch.bool


def test_the_outcome_depends_on_condition_interactions():
    data = synthetic_ehr(20_000, seed=2)
    s = data.structure
    both = (data.active[:, s.pairs[:, 0]] & data.active[:, s.pairs[:, 1]]).any(1)
    assert float(data.y[both].mean()) > 2 * float(data.y[~both].mean())


def test_bad_options_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="num_codes must be a multiple of num_conditions"):
        ehr_structure(num_codes=201)
    with pytest.raises(ValueError, match="num_interactions must be at most 45"):
        ehr_structure(num_interactions=46)
    with pytest.raises(ValueError, match="p_record must lie in"):
        ehr_structure(p_record=0.0)
    with pytest.raises(ValueError, match="prevalence must lie in"):
        ehr_structure(prevalence=1.0)
    with pytest.raises(ValueError, match="either structure or structure options"):
        synthetic_ehr(5, structure=ehr_structure(), num_codes=100)
    with pytest.raises(TypeError, match="n must be an int"):
        synthetic_ehr(5.0)
