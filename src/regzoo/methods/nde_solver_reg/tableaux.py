"""Butcher tableaux of the two embedded 5(4) pairs the solver runs: Dormand–Prince and Tsitouras.

Both pairs have seven stages, the last two evaluated at ``t + h`` and the seventh at the new
state (first same as last, FSAL), so the Hairer stiffness test ‖k₇ − k₆‖ / ‖u₊ − U₆‖ needs no
extra function evaluation.

* ``dopri5``: Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae", J. Comput.
  Appl. Math. 6(1); error weights b − b̂ and the dense-output midpoint weights of Shampine
  (1986), as torchdiffeq 0.2.5 uses them (``_impl/dopri5.py``), so step sequences match.
* ``tsit5``: Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column
  simplifying assumption", Comput. Math. Appl. 62(2); error weights with the sign of the last
  one corrected (as in OrdinaryDiffEq.jl and torchode 1.0.1) and the paper's free fourth-order
  interpolant b_i(θ).

Stability-region sizes along the negative real axis (OrdinaryDiffEq's ``alg_stability_size``):
dopri5 3.3066, Tsit5 3.5068.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit embedded Runge–Kutta pair with FSAL and a dense output.

    ``c`` the nodes (s), ``a`` the lower-triangular rows (row i has i entries, row 0 empty), ``b``
    the fifth-order weights, ``b_error`` the weights of the error estimate ``h Σ b_error_i k_i``
    (fifth minus fourth order), ``order`` the order of the propagated solution,
    ``stability_size`` the stability region's extent along the negative real axis, ``dense``
    which continuous extension the solver evaluates between steps: ``"midpoint"`` (torchdiffeq's
    quartic through y₀, y₁, y(h/2), f₀, f₁ with ``mid`` the weights of y(h/2)) or ``"polynomial"``
    (``interpolant`` the coefficients of θ, θ², θ³, θ⁴ of each b_i(θ)).
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...]
    order: int
    stability_size: float
    dense: str
    mid: tuple[float, ...] = ()
    interpolant: tuple[tuple[float, ...], ...] = ()

    @property
    def stages(self) -> int:
        """Number of stages s (seven for both pairs)."""
        return len(self.c)


DOPRI5 = ButcherTableau(
    name="dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    b_error=(
        35 / 384 - 1951 / 21600,
        0.0,
        500 / 1113 - 22642 / 50085,
        125 / 192 - 451 / 720,
        -2187 / 6784 + 12231 / 42400,
        11 / 84 - 649 / 6300,
        -1 / 60,
    ),
    order=5,
    stability_size=3.3066,
    dense="midpoint",
    mid=(
        6025192743 / 30085553152 / 2,
        0.0,
        51252292925 / 65400821598 / 2,
        -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2,
        -1776094331 / 19743644256 / 2,
        11237099 / 235043384 / 2,
    ),
)


def _expand(scale: float, roots_quadratic: tuple[float, ...]) -> tuple[float, ...]:
    """Coefficients of θ¹..θ⁴ of ``scale · θ² · (θ² + p θ + q)`` given ``(p, q)``."""
    p, q = roots_quadratic
    return (0.0, scale * q, scale * p, scale)


def _tsit5_interpolant() -> tuple[tuple[float, ...], ...]:
    """Tsitouras' continuous-extension weights b_i(θ) as coefficients of θ, θ², θ³, θ⁴."""
    # b_1(θ) = −1.0530884977290216 θ (θ − 1.3299890189751412)(θ² − 1.4364028541716351 θ
    #          + 0.7139816917074209), expanded.
    s, r, p, q = -1.0530884977290216, 1.3299890189751412, -1.4364028541716351, 0.7139816917074209
    b1 = (-s * r * q, s * (q - r * p), s * (p - r), s)
    b2 = _expand(0.1017, (-2.1966568338249754, 1.2949852507374631))
    b3 = _expand(2.490627285651252793, (-2.38535645472061657, 1.57803468208092486))

    def two_roots(scale: float, r1: float, r2: float) -> tuple[float, ...]:
        return (0.0, scale * r1 * r2, -scale * (r1 + r2), scale)

    b4 = two_roots(-16.54810288924490272, 1.21712927295533244, 0.61620406037800089)
    b5 = two_roots(47.37952196281928122, 1.203071208372362603, 0.658047292653547382)
    b6 = two_roots(-34.87065786149660974, 1.2, 0.666666666666666667)
    b7 = two_roots(2.5, 1.0, 0.6)
    return (b1, b2, b3, b4, b5, b6, b7)


TSIT5 = ButcherTableau(
    name="tsit5",
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
         -0.02826905039406838),
        (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
         2.324710524099774),
    ),
    b=(0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081,
       2.324710524099774, 0.0),
    b_error=(0.00178001105222577714, 0.0008164344596567469, -0.007880878010261995,
             0.1447110071732629, -0.5823571654525552, 0.45808210592918697, -1 / 66),
    order=5,
    stability_size=3.5068,
    dense="polynomial",
    interpolant=_tsit5_interpolant(),
)

TABLEAUX = {"dopri5": DOPRI5, "tsit5": TSIT5}
"""The solver's methods by name."""
METHODS = tuple(TABLEAUX)
