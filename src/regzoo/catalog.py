"""The 27 papers regzoo implements: one PaperEntry per slug.

This is the bibliographic and planning record of the library: for every paper, its kind of
method, title, year, arXiv id, official code, venue, and the one headline effect that regzoo's
reproduction checks at CPU scale. A method module's ``@register`` call looks its slug up here, so
a paper's title, year and links are written once, in this file.

Facts come from the paper's spec (``specs/<slug>.md``) and abstract; an arXiv id or code URL that
neither gives is ``None`` rather than a guess. The slug is the spec's file name and the one name
everywhere else: module, registry key, CLI name, reproduction, tests, benchmark and results.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperEntry:
    """One paper regzoo implements.

    Attributes:
        slug: The spec file name: module, registry key and CLI name.
        kind: How the method plugs in: ``criterion``, ``penalty``, ``transform``,
            ``procedure`` or ``estimator``.
        title: The paper's full title.
        year: Year of the version cited in ``venue``.
        arxiv: arXiv identifier such as ``"2007.00151"``, or ``None`` if none is recorded.
        code_url: The official code, or ``None`` if it was never released.
        venue: Where the paper appeared, e.g. ``"NeurIPS 2020"`` or ``"arXiv preprint"``.
        claim: The headline effect regzoo's reproduction checks at our scale, as one sentence
            naming the metric and its direction.
    """

    slug: str
    kind: str
    title: str
    year: int
    arxiv: str | None
    code_url: str | None
    venue: str
    claim: str


PAPERS: dict[str, PaperEntry] = {
    e.slug: e
    for e in (
        PaperEntry(
            slug="adapt_unlearn",
            kind="procedure",
            title=(
                "Adapt then Unlearn: Exploring Parameter Space Semantics for Unlearning in "
                "Generative Adversarial Networks"
            ),
            year=2025,
            arxiv=None,
            code_url="https://github.com/atriguha/Adapt_Unlearn",
            venue="TMLR 2025",
            claim=(
                "Unlearning the digit 8 from a digits DCGAN, the best repulsion (chosen on a "
                "validation seed) leaves at least 2 points fewer generated 8s than fine-tuning "
                "on the positives alone (5 seeds); also checked: at most 2% eights, Fréchet "
                "distance within 1.2× the pretrained generator's, and a lower one than "
                "parameter extrapolation."
            ),
        ),
        PaperEntry(
            slug="ba_lora",
            kind="transform",
            title=(
                "BA-LoRA: Bias-Alleviating Low-Rank Adaptation to Mitigate Catastrophic "
                "Inheritance in Large Language Models"
            ),
            year=2026,
            arxiv="2408.04556",
            code_url="https://github.com/cyp-jlu-ai/BA-LoRA",
            venue="ICLR 2026",
            claim=(
                "BA-LoRA beats PiSSA by at least 1 point in worst-group (bias-conflicting) test "
                "accuracy when fine-tuning a model pretrained with a planted spurious feature "
                "(5 paired seeds)."
            ),
        ),
        PaperEntry(
            slug="coherentgs",
            kind="procedure",
            title="CoherentGS: Sparse Novel View Synthesis with Coherent 3D Gaussians",
            year=2024,
            arxiv="2403.19495",
            code_url="https://github.com/avinashpaliwal/CoherentGS",
            venue="ECCV 2024",
            claim=(
                "From 3 views of a procedural scene, CoherentGS beats vanilla 3D Gaussian "
                "splatting by at least 2 dB of held-out-view PSNR, with lower depth error "
                "(3 scene families, 5 paired seeds each)."
            ),
        ),
        PaperEntry(
            slug="colide",
            kind="estimator",
            title="CoLiDE: Concomitant Linear DAG Estimation",
            year=2024,
            arxiv="2310.02895",
            code_url="https://github.com/SAMiatto/colide",
            venue="ICLR 2024",
            claim=(
                "CoLiDE-NV reaches a lower mean SHD than DAGMA on 50-node ER4 graphs with "
                "heteroscedastic noise variances U(0.5, 10) and n = 1000 (3 seeds)."
            ),
        ),
        PaperEntry(
            slug="dr_tune",
            kind="penalty",
            title=(
                "DR-Tune: Improving Fine-tuning of Pretrained Visual Models by Distribution "
                "Regularization with Semantic Calibration"
            ),
            year=2023,
            arxiv="2308.12058",
            code_url="https://github.com/weeknan/DR-Tune",
            venue="ICCV 2023",
            claim=(
                "In 10-shot fine-tuning on digits 5-9 of a CNN pretrained on digits 0-4 in a "
                "shifted domain (inverted, rotated 90°), DR-Tune beats vanilla fine-tuning by at "
                "least 1 point of final test accuracy (10 seeds, rates chosen on validation)."
            ),
        ),
        PaperEntry(
            slug="elr",
            kind="criterion",
            title="Early-Learning Regularization Prevents Memorization of Noisy Labels",
            year=2020,
            arxiv="2007.00151",
            code_url="https://github.com/shengliu66/ELR",
            venue="NeurIPS 2020",
            claim=(
                "ELR beats cross-entropy by at least 5 points of final-epoch test accuracy at "
                "40% symmetric label noise on digits (mean of 5 seeds)."
            ),
        ),
        PaperEntry(
            slug="ftwt",
            kind="transform",
            title=(
                "Fire Together Wire Together: A Dynamic Pruning Approach with Self-Supervised "
                "Mask Prediction"
            ),
            year=2022,
            arxiv="2110.08232",
            code_url="https://github.com/selkerdawy/FTWT",
            venue="CVPR 2022",
            claim=(
                "At a τ chosen on validation, FTWT's dynamic masks cut a digits CNN's counted "
                "FLOPs by at least 35% for at most 2 points of test accuracy and beat random "
                "per-input masks at equal FLOPs by at least 5 points (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="gifd",
            kind="procedure",
            title="GIFD: A Generative Gradient Inversion Method with Feature Domain Optimization",
            year=2023,
            arxiv="2308.04699",
            code_url="https://github.com/ffhibnese/GIFD_Gradient_Inversion_Attack",
            venue="ICCV 2023",
            claim=(
                "Out of distribution (a DCGAN prior trained on digits 0–4 attacking digits "
                "5–9), GIFD reconstructs private digits from a shared gradient with at least 1 "
                "dB more PSNR than latent-only search at equal iterations (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="gigatok",
            kind="penalty",
            title=(
                "GigaTok: Scaling Visual Tokenizers to 3 Billion Parameters for Autoregressive "
                "Image Generation"
            ),
            year=2025,
            arxiv="2504.08736",
            code_url="https://github.com/SilentView/GigaTok",
            venue="arXiv preprint",
            claim=(
                "Semantic regularization with a trained digit-classifier teacher lifts the linear-"
                "probe accuracy on a digits VQ tokenizer's decoder features at least 5 points "
                "above a random-init teacher (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="hag",
            kind="transform",
            title="Hard-Attention Gates with Gradient Routing for Endoscopic Image Computing",
            year=2024,
            arxiv="2407.04400",
            code_url="https://github.com/cosmoimd/feature-selection-gates",
            venue="MICCAI 2024",
            claim=(
                "On digits padded with 192 noise features, a gated MLP with gradient routing "
                "matches or beats the plain MLP in test accuracy and gates real features above "
                "noise (10 paired seeds)."
            ),
        ),
        PaperEntry(
            slug="hessian_alignment",
            kind="penalty",
            title="Understanding Hessian Alignment for Domain Generalization",
            year=2023,
            arxiv="2308.11778",
            code_url=(
                "https://github.com/huawei-noah/Federated-Learning/tree/main/HessianAlignment"
            ),
            venue="ICCV 2023",
            claim=(
                "On digits Colored-MNIST, HGP's test-environment accuracy is at least that of the "
                "best of IRMv1, V-REx, CORAL and Fishr (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="holobeam",
            kind="estimator",
            title=(
                "HoloBeam: Learning Optimal Beamforming in Far-Field Holographic Metasurface "
                "Transceivers"
            ),
            year=2024,
            arxiv="2401.05420",
            code_url=None,
            venue="INFOCOM 2024",
            claim=(
                "HoloBeam gets its probability of missing the best discretised beam below 0.1 "
                "with at most half the pilots Sequential Halving needs (2000 Monte-Carlo "
                "receivers)."
            ),
        ),
        PaperEntry(
            slug="hyde",
            kind="estimator",
            title=(
                "HyDe: The First Open-Source, Python-Based, GPU-Accelerated Hyperspectral "
                "Denoising Package"
            ),
            year=2022,
            arxiv=None,
            code_url="https://github.com/Helmholtz-AI-Energy/HyDe",
            venue="IGARSS 2022",
            claim=(
                "On synthetic low-rank 64³ cubes with Gaussian noise, FastHyDe beats oracle-rank "
                "PCA by at least 5 dB of mean band PSNR and matches hyde-images within 0.3 dB "
                "(3 draws)."
            ),
        ),
        PaperEntry(
            slug="latent_quantization",
            kind="procedure",
            title="Disentanglement via Latent Quantization",
            year=2023,
            arxiv="2305.18378",
            code_url="https://github.com/kylehkhsu/latent_quantization",
            venue="NeurIPS 2023",
            claim=(
                "On procedural mini-dSprites, QLAE beats a plain autoencoder by at least 0.1 "
                "InfoM with reconstruction error within 10% of it (5 paired seeds)."
            ),
        ),
        PaperEntry(
            slug="more_is_better",
            kind="estimator",
            title=(
                "More is Better in Modern Machine Learning: when Infinite Overparameterization "
                "is Optimal and Overfitting is Obligatory"
            ),
            year=2023,
            arxiv="2311.14646",
            code_url="https://github.com/dkarkada/more-is-better",
            venue="arXiv preprint",
            claim=(
                "The optimally ridged random-feature test risk predicted by the theory falls "
                "monotonically in features and samples and matches simulation within 5% relative "
                "error on average."
            ),
        ),
        PaperEntry(
            slug="nde_solver_reg",
            kind="penalty",
            title=(
                "Opening the Blackbox: Accelerating Neural Differential Equations by "
                "Regularizing Internal Solver Heuristics"
            ),
            year=2021,
            arxiv=None,
            code_url="https://github.com/avik-pal/RegNeuralODE.jl",
            venue="ICML 2021",
            claim=(
                "On concentric-circles classification, the error-estimate regularizer (ERNODE) "
                "needs at least 1.4x fewer test NFE than the unregularised dopri5 neural ODE "
                "(5 seeds), with at most 1 point of test accuracy lost (secondary claim)."
            ),
        ),
        PaperEntry(
            slug="pnp_mimo",
            kind="estimator",
            title=(
                "Plug-and-Play Regularization on Magnitude with Deep Priors for 3D Near-Field "
                "MIMO Imaging"
            ),
            year=2024,
            arxiv="2312.16024",
            code_url="https://github.com/METU-SPACE-Lab/PnP-Regularization-on-Magnitude",
            venue="IEEE TCI 2024",
            claim=(
                "On simulated 16³ MIMO scenes, PnP with a magnitude prior beats back-projection "
                "and Kirchhoff migration by at least 3 dB PSNR and beats the prior on the complex "
                "field (20 scenes)."
            ),
        ),
        PaperEntry(
            slug="pskd",
            kind="criterion",
            title="Self-Knowledge Distillation with Progressive Refinement of Targets",
            year=2021,
            arxiv="2006.12000",
            code_url="https://github.com/lgcnsai/PS-KD-Pytorch",
            venue="ICCV 2021",
            claim=(
                "PS-KD beats cross-entropy by at least 0.5 points of final test accuracy on clean "
                "mnist1d (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="quantnas",
            kind="procedure",
            title=(
                "QuantNAS for super resolution: searching for efficient quantization-friendly "
                "architectures against quantization noise"
            ),
            year=2022,
            arxiv="2208.14839",
            code_url="https://github.com/On-Point-RND/QuantNAS",
            venue="arXiv preprint",
            claim=(
                "QuantNAS's ×2 super-resolution nets are on or above the PSNR–BitOps front of "
                "uniformly quantised fixed all-conv3×3 nets (PSNR minus the front at matched "
                "BitOps, mean over λ_hw, ≥ 0; 5 seeds)."
            ),
        ),
        PaperEntry(
            slug="rmt",
            kind="transform",
            title=(
                "Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained "
                "Vision-Language Models"
            ),
            year=2023,
            arxiv="2307.15049",
            code_url="https://github.com/wuw2019/R-AMT",
            venue="ICCV 2023",
            claim=(
                "Regularized mask tuning of frozen MiniLM beats its zero-shot prompt classifier "
                "by at least 10 points on negation-heavy sentiment while masking under 5% of "
                "attention weights (3 seeds)."
            ),
        ),
        PaperEntry(
            slug="sara",
            kind="transform",
            title=(
                "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse "
                "Low-Rank Adaptation"
            ),
            year=2025,
            arxiv="2409.06633",
            code_url="https://github.com/sjtuplayer/SaRA",
            venue="ICLR 2025",
            claim=(
                "Adapting a digits MLP to permuted digits, SaRA retains at least as much "
                "original-task test accuracy as full fine-tuning at matched new-task accuracy "
                "(5 seeds)."
            ),
        ),
        PaperEntry(
            slug="soft_equivariance",
            kind="penalty",
            title="Regularizing Towards Soft Equivariance Under Mixed Symmetries",
            year=2023,
            arxiv="2306.00356",
            code_url="https://github.com/kim-hyunsu/PER",
            venue="ICML 2023",
            claim=(
                "On modified inertia, the auto-tuned λ of the exact symmetry O(2)_z ends above "
                "those of O(2)_x and O(2)_y, and test MSE is below the MLP's (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="sorsa",
            kind="transform",
            title=(
                "SORSA: Singular Values and Orthonormal Regularized Singular Vectors Adaptation "
                "of Large Language Models"
            ),
            year=2024,
            arxiv="2409.00055",
            code_url="https://github.com/Gunale0926/SORSA",
            venue="arXiv preprint",
            claim=(
                "Adapting a digits MLP to permuted digits, SORSA keeps its orthonormality error "
                "near 0 (unlike γ = 0) and reaches at least PiSSA's test accuracy at each one's "
                "best lr (5 seeds)."
            ),
        ),
        PaperEntry(
            slug="sparse_ot",
            kind="estimator",
            title="Sparsity-Constrained Optimal Transport",
            year=2023,
            arxiv="2209.15466",
            code_url="https://github.com/PythonOT/POT",
            venue="ICLR 2023",
            claim=(
                "Sparsity-constrained OT plans never exceed k nonzeros per column, cost no more "
                "above EMD than quadratic OT at the same γ, and need fewer L-BFGS iterations as "
                "k grows."
            ),
        ),
        PaperEntry(
            slug="stn",
            kind="procedure",
            title=(
                "Self-Tuning Networks: Bilevel Optimization of Hyperparameters using Structured "
                "Best-Response Functions"
            ),
            year=2019,
            arxiv="1903.03088",
            code_url="https://github.com/asteroidhouse/self-tuning-networks",
            venue="ICLR 2019",
            claim=(
                "One STN run tuning a digits MLP's two dropout rates from 0.05 reaches lower "
                "test NLL than the best of a 5-point shared-rate grid selected on validation "
                "NLL (10 seeds); also checked: the same with the official script's recipe (lr "
                "decay, early stopping, best checkpoint), ≥ 0.02 below fixed 0.05, against random "
                "search, the replayed schedule, and ridge λ converging to the validation optimum."
            ),
        ),
        PaperEntry(
            slug="vgnn_ehr",
            kind="penalty",
            title=(
                "Variationally Regularized Graph-based Representation Learning for Electronic "
                "Health Records"
            ),
            year=2021,
            arxiv="1912.03761",
            code_url="https://github.com/NYUMedML/GNN_for_EHR",
            venue="AAAI 2021",
            claim=(
                "On synthetic EHR with 500 training patients, VGNN beats the same graph network "
                "without the KL term by at least 0.01 test AUPRC (paired over 5 seeds)."
            ),
        ),
        PaperEntry(
            slug="weight_compander",
            kind="transform",
            title="Weight Compander: A Simple Weight Reparameterization for Regularization",
            year=2023,
            arxiv="2306.16993",
            code_url=None,
            venue="IJCNN 2023",
            claim=(
                "Weight compander (fixed a, b) raises test accuracy over weight decay alone on "
                "small-data digits (paper: +0.2 to +1.6 points); weight statistics reported beside."
            ),
        ),
    )
}
