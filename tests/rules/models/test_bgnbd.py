"""The pure BG/NBD and Gamma-Gamma functions agree with lifetimes' own on the CDNow model."""

from __future__ import annotations

import pytest

from rules.models.bgnbd import (
    BgNbdParams,
    GammaGammaParams,
    expected_order_value,
    expected_purchases,
    expected_purchases_age_at,
    log_likelihood,
    p_alive,
    p_alive_age_at,
)

lifetimes = pytest.importorskip("lifetimes")
np = pytest.importorskip("numpy")

CASES = [(2, 30.43, 38.86), (0, 0.0, 38.86), (1, 1.71, 38.86), (10, 38.0, 38.86), (5, 5.0, 60.0)]


@pytest.fixture(scope="module")
def fitted() -> tuple[object, BgNbdParams]:
    from lifetimes.datasets import load_cdnow_summary

    d = load_cdnow_summary(index_col=[0])
    bg = lifetimes.BetaGeoFitter().fit(d["frequency"], d["recency"], d["T"])
    return bg, BgNbdParams(**{k: float(v) for k, v in bg.params_.items()})


def _scalar(value: object) -> float:
    return float(np.ravel(value)[0])


def test_p_alive_and_expected_purchases_match_lifetimes(fitted: tuple) -> None:
    bg, m = fitted
    for x, t_x, T in CASES:
        assert p_alive(m, x, t_x, T) == pytest.approx(
            _scalar(bg.conditional_probability_alive(x, t_x, T)), rel=1e-9)
        for t in (1.0, 10.0, 39.0, 52.0, 200.0):
            assert expected_purchases(m, t, x, t_x, T) == pytest.approx(_scalar(
                bg.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T)),
                rel=1e-9)


def test_log_likelihood_is_the_papers(fitted: tuple) -> None:
    from lifetimes.datasets import load_cdnow_summary

    _, m = fitted
    d = load_cdnow_summary(index_col=[0])
    ll = sum(log_likelihood(m, x, t_x, T) for x, t_x, T in d.itertuples(index=False))
    assert ll == pytest.approx(-9582.4, abs=0.1)  # FHL 2005, section 5


def test_threshold_ages(fitted: tuple) -> None:
    _, m = fitted
    age = p_alive_age_at(m, 0.3, 2, 30.43)
    assert age is not None and p_alive(m, 2, 30.43, age) == pytest.approx(0.3, rel=1e-12)
    assert p_alive(m, 2, 30.43, age - 1e-6) > 0.3 > p_alive(m, 2, 30.43, age + 1e-6)
    assert p_alive_age_at(m, 0.3, 0, 0.0) is None
    age = expected_purchases_age_at(m, 0.5, 39.0, 2, 30.43, 38.86)
    assert age is not None
    assert expected_purchases(m, 39.0, 2, 30.43, age) == pytest.approx(0.5, rel=1e-6)


def test_gamma_gamma_matches_lifetimes() -> None:
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    d = load_cdnow_summary_data_with_monetary_value()
    d = d[d["frequency"] > 0]
    gg = lifetimes.GammaGammaFitter().fit(d["frequency"], d["monetary_value"])
    g = GammaGammaParams(**{k: float(v) for k, v in gg.params_.items()})
    for x, mv in ((1, 20.0), (3, 55.5), (0, 0.0)):
        assert expected_order_value(g, x, mv) == pytest.approx(_scalar(
            gg.conditional_expected_average_profit(x, mv)), rel=1e-9)
