"""GigaTok benchmark: quantiser vs vector-quantize-pytorch, chunked entropy loss, regulariser cost.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios only.

1. Quantiser step (forward + backward on the latents and the codebook) of
   :class:`regzoo.quantizers.VectorQuantizer` (cosine codebook, rotation trick) vs the peer
   ``vector_quantize_pytorch.VectorQuantize(use_cosine_sim=True, rotation_trick=True)`` with
   the same codebook copied in (timed in training mode with its EMA codebook update, the only
   way its cosine codebook learns; compared in evaluation mode on a fresh copy), and vs its
   ``FSQ`` (2 levels per dimension, symmetric, = 256 codes, no codebook): step-time ratios;
   agreement of the chosen indices and codes with the peer VQ on the same inputs. FSQ cannot
   agree index-wise (another code set, on another scale), so its row gives the share of its
   256 codes the same inputs use beside ours (K = 256, untrained codebook). Skipped when the
   peer is missing
   (``pip install vector-quantize-pytorch``, in the ``peers`` extra).
2. :func:`regzoo.methods.gigatok.vq_entropy_loss` at K = 16384 on 1024 tokens: one chunk vs
   chunks of 128 rows (activation checkpointing), time of forward + backward and the bytes
   autograd keeps for backward (``saved_tensors_hooks``).
3. A digits tokenizer step (small and large) with the semantic regulariser and/or the entropy
   loss over the plain VQ step.

Run: ``python benchmarks/gigatok.py [--quick]`` or ``regzoo bench gigatok``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from regzoo.methods.gigatok import (
    SemanticRegularizer,
    TokenizerConfig,
    VQTokenizer,
    tokenizer_loss,
    vq_entropy_loss,
)
from regzoo.quantizers import VectorQuantizer, codebook_usage
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` builds its graph."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def quantizer_rows(num_codes: int, tokens: int, repeats: int) -> None:
    try:
        from vector_quantize_pytorch import FSQ, VectorQuantize
    except ImportError:
        print("vector-quantize-pytorch is not installed: the peer rows are skipped (pip install "
              "vector-quantize-pytorch)\n")
        return
    torch.manual_seed(0)
    ours = VectorQuantizer(num_codes, 8)
    def make_peer() -> VectorQuantize:
        peer = VectorQuantize(dim=8, codebook_size=num_codes, use_cosine_sim=True,
                              rotation_trick=True, commitment_weight=0.25)
        with torch.no_grad():
            peer._codebook.embed.copy_(ours.codebook()[None])
        return peer

    # The peer's cosine codebook learns by EMA only (it refuses a learnable one): it is timed in
    # training mode (its EMA update included) and compared in evaluation mode on a fresh copy.
    peer = make_peer().train()
    fsq = FSQ(levels=[2] * 8, dim=8, preserve_symmetry=True)  # 2⁸ = 256 codes
    z = torch.randn(1, tokens, 8, generator=torch.Generator().manual_seed(1))
    zr = z.clone().requires_grad_()

    def ours_step() -> None:
        out = ours(zr)
        (out.z_hat.square().sum() + out.quantization_loss + out.commitment_loss).backward()

    def peer_step() -> None:
        q, _, loss = peer(zr)
        (q.square().sum() + loss).backward()

    def fsq_step() -> None:
        q, _ = fsq(zr)
        q.square().sum().backward()

    t = time_steps({"ours": ours_step, "peer": peer_step, "fsq": fsq_step}, repeats=repeats,
                   inner=3, warmup=2)
    with torch.no_grad():
        out = ours(z)
        q_peer, i_peer, _ = make_peer().eval()(z)
        _, i_fsq = fsq(z)
        used_fsq = codebook_usage(i_fsq, 256)
        used_ours = codebook_usage(out.indices, num_codes)
    agree = float((i_peer == out.indices).float().mean())
    diff = float((q_peer - out.z_q).abs().max())
    print(f"Quantiser step, {tokens} tokens × dim 8 (forward + backward); ours "
          f"{t['ours'] * 1e3:.2f} ms\n")
    print("| quantiser | step / ours | agreement on the same inputs |")
    print("|---|---:|---|")
    print(f"| ours: VectorQuantizer(K={num_codes}, cosine, rotation) | 1.00 | – |")
    print(f"| peer: VectorQuantize(K={num_codes}, cosine, rotation) | "
          f"{t['peer'] / t['ours']:.2f} | indices {agree:.1%} equal, max |Δz_q| {diff:.1e} |")
    if num_codes == 256:
        print(f"| peer: FSQ(2 levels × 8 dims = 256 codes) | {t['fsq'] / t['ours']:.2f} | codes "
              f"used {used_fsq:.1%} vs ours (untrained codebook) {used_ours:.1%} |")
    print()


def entropy_rows(tokens: int, num_codes: int, chunk: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    affinity = (-4 * torch.rand(tokens, num_codes, generator=g)).requires_grad_()

    def full() -> None:
        vq_entropy_loss(affinity).backward()

    def chunked() -> None:
        vq_entropy_loss(affinity, chunk_size=chunk).backward()

    torch.testing.assert_close(vq_entropy_loss(affinity, chunk_size=chunk),
                               vq_entropy_loss(affinity))
    t = time_steps({"full": full, "chunked": chunked}, repeats=repeats, inner=1, warmup=1)
    mem_full = saved_bytes(lambda: vq_entropy_loss(affinity))
    mem_chunked = saved_bytes(lambda: vq_entropy_loss(affinity, chunk_size=chunk))
    print(f"Entropy loss, {tokens} tokens × K = {num_codes} (forward + backward; the affinity "
          f"matrix itself is {affinity.numel() * 4 / 2**20:.0f} MiB)\n")
    print("| variant | time / one chunk | saved for backward |")
    print("|---|---:|---:|")
    print(f"| one chunk | 1.00 | {mem_full / 2**20:.0f} MiB |")
    print(f"| chunks of {chunk} rows (checkpointed) | {t['chunked'] / t['full']:.2f} | "
          f"{mem_chunked / 2**20:.1f} MiB |\n")


def regularizer_rows(repeats: int) -> None:
    from regzoo.models.digit_teacher import random_teacher

    images = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    teacher = random_teacher(0)
    print("Tokenizer step (batch 64 digits, 16 tokens, K = 256) over the plain VQ step\n")
    print("| size | + semantic | + entropy | + both |")
    print("|---|---:|---:|---:|")
    for size in ("small", "large"):
        config = getattr(TokenizerConfig, size)(width=32 if size == "small" else 64)
        steps = {}
        for name, sem, ent in (("plain", False, 0.0), ("semantic", True, 0.0),
                               ("entropy", False, 0.005), ("both", True, 0.005)):
            torch.manual_seed(0)
            model = VQTokenizer(config)
            regularizer = (SemanticRegularizer(config.width, 64,
                                               teacher=lambda x: teacher.patch_features(
                                                   (x + 1) / 2))
                           if sem else None)
            params = list(model.parameters()) + ([] if regularizer is None
                                                 else list(regularizer.parameters()))
            optimizer = torch.optim.AdamW(params, lr=1e-3)

            def step(model=model, regularizer=regularizer, optimizer=optimizer, ent=ent) -> None:
                optimizer.zero_grad()
                tokenizer_loss(model, images, semantic=regularizer,
                               entropy_weight=ent).total.backward()
                optimizer.step()

            steps[name] = step
        t = time_steps(steps, repeats=repeats, inner=2, warmup=2)
        print(f"| {size} (width {config.width}) | {t['semantic'] / t['plain']:.2f} | "
              f"{t['entropy'] / t['plain']:.2f} | {t['both'] / t['plain']:.2f} |")
    print()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 20
    print(f"{machine_line()}\n")
    quantizer_rows(256, 1024, repeats)
    if not args.quick:
        quantizer_rows(16384, 1024, repeats)
    entropy_rows(1024 if not args.quick else 256, 16384, 128, max(3, repeats // 4))
    regularizer_rows(repeats)


if __name__ == "__main__":
    main(sys.argv[1:])
