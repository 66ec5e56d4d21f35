"""Sparsity-constrained optimal transport (Liu, Puigcerver, Blondel; ICLR 2023; arXiv 2209.15466).

Entropic OT gives dense plans and quadratic OT sparse ones with no control over how many
nonzeros a column gets. The paper regularises every column ``t = T[:, j]`` of the plan with a
squared L2 term *and* a cardinality constraint, ``Ω(t) = (γ/2)‖t‖² + ι{‖t‖₀ ≤ k}`` on t ≥ 0
(paper §3), so each column holds at most k nonzeros. The primal is nonconvex, yet its dual and
semi-dual are unconstrained, piecewise smooth and cheap to evaluate (a top-k per column), so
L-BFGS solves them; k = 1 behaves like unregularised OT, k ≥ m is quadratic OT (paper §3–4).

Notation: a ∈ Δ^m (rows), b ∈ Δ^n (columns), cost C ∈ R^{m×n}, c_j its j-th column.

* Conjugate (paper §4.1, Prop. 2): δ_Ω(s) = sup_{t ≥ 0, ‖t‖₀ ≤ k} ⟨s, t⟩ − (γ/2)‖t‖²
  = (1/2γ) Σ_{i ∈ top-k(s)} [s_i]₊², with ∇δ_Ω(s) = [s]₊/γ on the top-k entries, 0 elsewhere.
* Dual (paper Eq. 7): max_{α, β} D(α, β) = ⟨α, a⟩ + ⟨β, b⟩ − Σ_j δ_Ω(α + β_j 1 − c_j);
  ∇_α D = a − T 1, ∇_β D = b − Tᵀ 1 with T[:, j] = ∇δ_Ω(α + β_j − c_j), the recovered plan.
* Semi-dual (paper Eq. 8, §4.2): max_α S(α) = ⟨α, a⟩ − Σ_j ψ_j(α − c_j) with
  ψ_j(s) = max_{t ∈ b_j Δ^m, ‖t‖₀ ≤ k} ⟨s, t⟩ − (γ/2)‖t‖², whose maximiser is
  t_j = b_j P_k(s / (γ b_j)); ∇S = a − Σ_j t_j, plan T[:, j] = t_j (columns sum to b exactly).
* P_k (:func:`projection_sparse_simplex`, Kyrillidis et al., ICML 2013; paper §4.2): the
  Euclidean projection onto {y ≥ 0, Σ y = z, ‖y‖₀ ≤ k} keeps the k largest entries, projects
  them onto the simplex and zeroes the rest — exact although the set is nonconvex.
* OT value and gradient (:func:`sparsity_constrained_ot2`): the optimal (semi-)dual value.
  By the envelope theorem ∇_C value = T, ∇_a value = α (∇_b = β for the dual); the value is
  recomputed with autograd at the fixed optimal duals and fixed top-k supports, so torch
  inputs that require grad get exactly these gradients and the value can be a loss.

Solvers (``solver=``), all started at zero potentials with POT's stopping rule — scipy's for
``minimize(..., tol=tol)``: ‖∇‖_∞ ≤ tol (the marginal error itself, ∇ = a − T1) or a relative
objective decrease ≤ tol. ``"scipy"`` is POT's own solver, scipy's L-BFGS-B on float64 NumPy
evaluations, one problem after another, restarted from where it stopped while a restart still
gains (on the kinks of this piecewise-smooth objective scipy often stops early; the k = 1 tests
caught it 1 time in 8). ``"numba"`` (the CPU default with numba installed and k ≤ 16 < m; else
``"scipy"`` is) runs the same algorithm compiled around the compiled evaluation: L-BFGS-B's
unbounded iteration (two-loop L-BFGS direction, Moré–Thuente line search with its constants,
its pair-skipping and stopping rules) with the same restarts, so its iterates are scipy's up to
rounding, without L-BFGS-B's per-iteration cost in Python and Fortran. Measured on 288 problems
(30–80 points, k = 1–16, γ = 0.01–10, both formulations): the same end value (≤ 1e-10
relative) in 142; in the others, all at small k, rounding sent the two to other kinks, −4e-4 to
+7e-4 apart — as far as scipy's own run moves when C changes by 1e-15 relative (apart in 151
of the 288, −4e-4 to +8e-4). ``"torch"`` (CUDA default) is a batched L-BFGS
(memory 10, compact form, backtracking Armijo search) on the input's device and dtype; on this
kinked objective its other line search stops elsewhere, −7e-5 to +3e-5 (relative) from POT's
value on 24 problems of 100–500 points. POT itself stops 1e-5–4e-5 below what a 5000-iteration
run at tol 1e-14 reaches, so values that close are equally good stopping points.
Defaults are
POT's ``smooth_ot_semi_dual`` (``stopThr=1e-9``, ``numItermax=500``; POT ``ot/smooth.py``,
contributed by the paper's first author) and γ = 1 (``SparsityConstrained``'s default ``gamma``,
``ot/smooth.py`` l. 230, and the ``reg`` of POT's tests, ``test/test_smooth.py``; POT's example
``examples/plot_OT_1D.py`` uses 0.1).

Cost per evaluation: forming α − c_j (O(mn)), a top-k per column (O(mn): ``np.partition`` or
``torch.topk``) and the simplex projection of the k kept values (O(nk log k)); POT sorts every
full column instead (O(mn log m)) and runs in NumPy on CPU only. The torch solver evaluates in
full (batched, on any device). The scipy solver's evaluations are exact (the full evaluation's
value and gradient up to summation order, so its iterates are those of a plain evaluation) but
go below that floor. With numba installed (optional: the extra ``fast``, ``pip install
"regzoo[fast]"``) and k ≤ 16 < m, the compiled evaluation (``compiled``) keeps each column's top k
by insertion in one pass; after the first evaluation it reads each column without a branch:
once to count (a vectorised pass) the entries at or above the smallest current value of the
previous evaluation's top k, and, unless there are exactly k (the old top k still is the top k:
then only those k are re-sorted), once more to gather them for the insertion. It beats any NumPy
or torch evaluation because those must first write α − Cᵀ to memory and then select in it, each
a full pass, with scatters and temporaries after; the loop reads Cᵀ and writes only n·k values.
Measured at 500×500, one thread, in two runs (``benchmarks/sparse_ot.py``): one ``np.partition``
of α − Cᵀ takes 0.50–0.68 ms and forming α − Cᵀ alone 0.10–0.14 ms (``torch.topk``: 0.30–0.45
ms at k = 2, 1.9–2.2 ms at k = 10); one compiled evaluation, value and gradient included, takes
0.12–0.13 ms at k = 2 and 0.26–0.30 ms at k = 10 on average over a whole solve (0.04–0.05 and
0.06–0.07 ms at the optimum after a previous one, 0.3–0.4 and 0.6–0.7 ms cold); one of POT's
takes 3–3.8 ms. The numba solver's whole
iteration costs little more than its evaluation; scipy's L-BFGS-B adds ~0.1 ms per iteration.
Without numba (or for k > 16) the evaluation is screened (``screening``): each column keeps its
top P rows at a reference α⁰ and the (P+1)-th value τ_j, and as long as the top k of those P (or
the projection's support) provably stays above every other row's bound, an evaluation reads n·P
entries instead of n·m.

Differences from POT, none of which changes the optimum: zero-mass columns are allowed (their
plan column is 0); POT's ``delta_Omega`` edits its argument in place and its row-wise projection
prints to stdout, neither is reproduced; the scipy solver restarts (above); the torch solver's
line search is backtracking (scipy's is Moré–Thuente), so its iteration counts differ slightly.

Modules: ``projection`` (P_k and δ_Ω), ``objectives`` (S and D of a batch in torch), ``lbfgs``
(the batched torch L-BFGS), ``scipy_solver`` (POT's L-BFGS-B with restarts), ``numba_solver``
(L-BFGS-B's iteration compiled), ``screening`` (the screened NumPy evaluation), ``compiled``
(the optional numba evaluation loops), ``solver`` (the public, registered functions and their
validation) and ``moe`` (the router and the MoE layer).
"""

from regzoo.methods.sparse_ot.moe import ROUTINGS, Routing, SparseMoE, SparseOTRouter
from regzoo.methods.sparse_ot.projection import delta_omega, projection_sparse_simplex
from regzoo.methods.sparse_ot.solver import (
    DEFAULTS,
    FORMULATIONS,
    SOLVERS,
    SparseOTResult,
    sparsity_constrained_ot,
    sparsity_constrained_ot2,
)

__all__ = [
    "DEFAULTS",
    "FORMULATIONS",
    "ROUTINGS",
    "SOLVERS",
    "Routing",
    "SparseMoE",
    "SparseOTResult",
    "SparseOTRouter",
    "delta_omega",
    "projection_sparse_simplex",
    "sparsity_constrained_ot",
    "sparsity_constrained_ot2",
]
