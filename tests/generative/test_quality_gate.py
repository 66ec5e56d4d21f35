"""The quality gate of the default digits DCGANs (the ones the reproductions sample from).

Bounds from ``benchmarks/digit_assets.py`` over GAN seeds 0–4 (2026-12-07): all ten classes,
FD to the test split 29.3–30.9 and every class share 0.071–0.138; classes 0–4, FD 32.7–34.1,
trained-class shares 0.157–0.217, 5.9–6.8 % of samples labelled 5–9. Reference: the FD between
the digits' own training and test splits is 9.4. The FD bounds are the largest of the five
seeds plus 20 %; the share bounds are the issue's 5–15 % for ten classes and the same relative
band (half to one and a half times a uniform share) for five. The first run builds the oracle
and both GANs (about 3 minutes on one core); later runs load them from the cache.
"""

import pytest

from regzoo.generative import digit_dcgan


@pytest.mark.slow
def test_the_ten_class_generator_covers_every_class_with_bounded_fd():
    gan = digit_dcgan(range(10))
    assert all(0.05 <= share <= 0.15 for share in gan.class_shares), gan.class_shares
    assert gan.fd_test <= 1.2 * 30.9


@pytest.mark.slow
def test_the_zero_to_four_generator_stays_mostly_in_its_classes():
    gan = digit_dcgan(range(5))
    assert all(0.10 <= share <= 0.30 for share in gan.class_shares[:5]), gan.class_shares
    assert sum(gan.class_shares[5:]) <= 0.10
    assert gan.fd_test <= 1.2 * 34.1
