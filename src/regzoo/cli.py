"""The ``regzoo`` command: ``list``, ``info SLUG``, ``repro SLUG``, ``bench SLUG``, ``report``.

``assets list|build NAME|clear [NAME]`` manages the pretrained models :mod:`regzoo.assets` caches.
"""

from __future__ import annotations

import argparse
import json
import logging
import runpy
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from regzoo.registry import KINDS, MethodCard, card, cards, results_dir


def _cmd_list(args: argparse.Namespace) -> int:
    selected = cards(kind=args.kind, pattern=args.pattern)
    lines = {c.slug: c.status_line() for c in selected}
    if args.json:
        rows = [{"slug": c.slug, "kind": c.kind, "title": c.paper.title, "year": c.paper.year,
                 "arxiv": c.paper.arxiv, "code": c.paper.code_url, "status": c.status,
                 "status_line": lines[c.slug], "claims": _claim_counts(c),
                 "stale": lines[c.slug].endswith("· stale"), "claim": c.paper.claim}
                for c in selected]
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(c.slug) for c in selected) if selected else 4
    status_width = max(len(s) for s in lines.values()) if lines else 6
    print(f"{'slug':<{width}}  {'kind':<10} {'status':<{status_width}} year  title")
    for c in selected:
        title = c.paper.title if len(c.paper.title) <= 60 else c.paper.title[:57] + "..."
        print(f"{c.slug:<{width}}  {c.kind:<10} {lines[c.slug]:<{status_width}} "
              f"{c.paper.year}  {title}")
    counts = {s: sum(c.status == s for c in selected) for s in {c.status for c in selected}}
    print(f"\n{len(selected)} methods: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _claim_counts(c: MethodCard) -> dict[str, int] | None:
    """Every claim of the committed result counted by verdict (None without one)."""
    from regzoo.repro.claims import claim_counts

    result = c.last_result() if c.implemented else None
    return None if result is None or "claim" not in result else claim_counts(result)


def _card_text(c: MethodCard) -> str:
    p = c.paper
    lines = [
        f"{c.slug} — {p.title}",
        f"  {p.venue} ({p.year}); arXiv {p.arxiv or '—'}; official code {p.code_url or '—'}",
        f"  kind: {c.kind}; status: {c.status_line()}",
    ]
    if c.implemented:
        lines += [f"  object: {c.target}", f"  method: {c.summary}", f"  equation: {c.equation}"]
        if c.defaults:
            lines.append("  defaults:")
            lines += [f"    {d.name} = {d.value!r}   ({d.source})" for d in c.defaults]
        if c.variants:
            lines.append("  variants: " + "; ".join(c.variants))
        if c.declarations:
            lines.append("  composition:")
            for key, reason in c.declarations.items():
                reasons = reason.items() if isinstance(reason, dict) else [("", reason)]
                lines += [f"    {key}{' with ' + other if other else ''}: {text}"
                          for other, text in reasons]
    lines.append(f"  claim checked: {p.claim}")
    result = c.last_result() if c.implemented else None
    if result is not None:
        claim = result["claim"]
        obs = claim["observed"]
        def number(value: float | None) -> str:
            return "–" if value is None else f"{value:.4f}"

        lines.append(f"  last full run: {claim['verdict']} — effect {number(obs['mean_effect'])}"
                     f" ± {number(obs['se'])} (SE, n={obs['n']}) on {claim['metric']} "
                     f"({claim['setting']}), {result['run']['created_at']}")
        lines.append(f"  command: {result['run']['command']}")
        from regzoo.repro.runner import result_changes

        changes = result_changes(result)
        if changes:
            lines.append("  stale: re-run it; changed since it ran: " + ", ".join(changes))
    elif c.implemented:
        lines.append(f"  no committed full run yet: regzoo repro {c.slug} --full")
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    print(_card_text(card(args.slug)))
    return 0


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_repro(args: argparse.Namespace) -> int:
    from regzoo.repro.claims import MIN_SEEDS, status_line
    from regzoo.repro.report import VERDICT_MARK, result_markdown
    from regzoo.repro.runner import load_reproduction, run_reproduction

    mode = "tiny" if args.tiny else "full" if args.full else "quick"
    result = run_reproduction(
        args.slug, mode, seeds=args.seeds, overrides=_parse_sets(args.set),
        device=args.device, out=args.out, resume=args.resume, jobs=args.jobs,
        command="regzoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        allow_dirty=args.allow_dirty, reuse_stale=args.reuse_stale,
    )
    if "out" not in result["run"]:
        return 0
    print(result_markdown(load_reproduction(args.slug), result))
    print(f"artefacts: {result['run']['out']}" + (
        f" (and {result['run']['results_dir']})" if "results_dir" in result["run"] else ""))
    verdict = result["claim"]["verdict"]
    if result["run"]["smoke"]:
        reference = result["run"]["committed_status"]
        print(f"smoke run ({len(result['run']['seeds'])} seeds < {MIN_SEEDS}): no verdict"
              + (f"; committed full result: {reference}" if reference else ""))
        return 1 if args.strict else 0
    print(f"verdict: {VERDICT_MARK[verdict]} ({status_line(result)})")
    return 1 if args.strict and verdict != "reproduced" else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.all:
        return _bench_all(args)
    if args.slug is None:
        raise ValueError("name a method (regzoo bench SLUG [--quick]) or run them all "
                         "(regzoo bench --all [--quick])")
    method = card(args.slug)
    if not method.implemented:
        raise ValueError(f"{args.slug!r} is planned, not implemented yet: it has no benchmark "
                         "(regzoo list shows what is implemented)")
    # A benchmark shared by several methods (the adapters) is named in the card's extras.
    name = method.extras.get("benchmark", args.slug)
    script = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    if not script.is_file():
        raise ValueError(f"no benchmark for {args.slug!r} at {script} (benchmarks/ ships with the "
                         "source checkout: run from a clone installed with pip install -e .)")
    sys.argv = [str(script), *(["--quick"] if args.quick else []), *args.args]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/x.py` does: shared helpers
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _bench_all(args: argparse.Namespace) -> int:
    from regzoo.bench import run_all

    if args.slug is not None or args.args:
        raise ValueError("--all runs every benchmark: drop the method name and its arguments "
                         f"({' '.join([args.slug or '', *args.args]).strip()})")
    out = Path(args.out) if args.out else results_dir() / "benchmarks.md"
    logging.getLogger("regzoo.bench").setLevel(logging.INFO)  # a long run shows its progress
    runs = run_all(out, quick=args.quick, timeout=args.timeout, allow_dirty=args.allow_dirty)
    failed = [run.name for run in runs if not run.ok]
    print(f"{len(runs) - len(failed)} of {len(runs)} benchmarks ran -> {out}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from regzoo.repro.claims import MIN_SEEDS
    from regzoo.repro.report import build_results_index
    from regzoo.repro.runner import judge, load_reproduction, render_artefacts
    from regzoo.train.checkpoint import atomic_write_bytes

    root = Path(args.results) if args.results else results_dir()
    if not root.is_dir():
        raise ValueError(f"results folder {root} does not exist; pass --results DIR")
    if not any(root.glob("*/result.json")):
        raise ValueError(f"results folder {root} holds no <slug>/result.json; run "
                         "`regzoo repro SLUG --full` first, or pass the folder that has them")
    write = args.write or args.results is not None
    if args.render and not write:
        raise ValueError("--render rewrites the committed results/: add --write (or pass "
                         "--results DIR to render another folder)")
    if args.render:
        for path in sorted(root.glob("*/result.json")):
            result = json.loads(path.read_text())
            repro = load_reproduction(path.parent.name)
            config = repro.config_type.from_dict(result["run"]["config"])
            result.update(judge(repro, config, result["metrics"]["per_seed"]))
            result["run"].setdefault("smoke", len(result["run"]["seeds"]) < MIN_SEEDS)
            render_artefacts(repro, result, path.parent)
            print(f"rendered {path.parent}")
    text = build_results_index(root)
    if not write:
        print(text)  # the checkout's results/README.md changes only with --write
        return 0
    atomic_write_bytes(root / "README.md", text.encode())
    print(f"wrote {root / 'README.md'}")
    return 0


def _asset_overrides(name: str, items: Sequence[str]) -> dict[str, object]:
    """``--set key=value`` items for a registered asset, each parsed as its default's type."""
    from regzoo.assets import registered
    from regzoo.repro.config import parse_value

    defaults = registered(name).defaults
    values: dict[str, object] = {}
    for key, text in _parse_sets(items).items():
        if key not in defaults:
            raise ValueError(f"asset {name!r} has no config field {key!r}; fields: "
                             f"{', '.join(defaults)}")
        default = defaults[key]
        hint = tuple[type(default[0]), ...] if isinstance(default, tuple) else type(default)
        values[key] = parse_value(key, text, hint)
    return values


LATE_ASSET_PLUGINS = ("regzoo.models.pretrained", "regzoo.models.pnp_mimo_denoiser",
                      "regzoo.models.digit_cnn", "regzoo.models.digit_teacher")
"""Asset modules the CLI imports beside ``regzoo.assets.PLUGINS``. ``assets.py`` is in the
fingerprint of six committed results, so a builder added since its last full re-run is listed
here (the CLI is bookkeeping) and moves into ``PLUGINS`` at the next re-run of those results."""


def _cmd_assets(args: argparse.Namespace) -> int:
    import importlib

    from regzoo import assets

    for module in LATE_ASSET_PLUGINS:
        importlib.import_module(module)

    if args.action == "list":
        print(f"cache: {assets.cache_dir()}")
        found = assets.list_cached()
        for entry in found:
            if entry.error is not None:
                print(f"{entry.name}  {entry.key}  unreadable ({entry.error:.80})")
                continue
            config = " ".join(f"{k}={v}" for k, v in sorted((entry.config or {}).items()))
            print(f"{entry.name}  {entry.key}  {entry.size_bytes / 1024:.0f} KiB  "
                  f"{entry.created}  {config}")
        if not found:
            print("no cached assets")
        print("buildable (regzoo assets build NAME [--set KEY=VALUE]):")
        for asset in assets.registry().values():
            defaults = " ".join(f"{k}={v}" for k, v in asset.defaults.items())
            print(f"  {asset.name}: {asset.summary}; defaults {defaults}")
        return 0
    if args.action == "build":
        overrides = _asset_overrides(args.name, args.set)
        payload = assets.get(args.name, overrides)
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in payload.items()
                            if isinstance(v, float))
        print(f"{args.name}: {assets.location(args.name, overrides)}"
              + (f" ({numbers})" if numbers else ""))
        return 0
    removed = assets.clear(args.name)
    print(f"removed {removed} cached asset file(s) from {assets.cache_dir()}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``regzoo`` command."""
    parser = argparse.ArgumentParser(prog="regzoo", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="all 27 papers: slug, kind, status, year, title")
    p.add_argument("--kind", choices=KINDS)
    p.add_argument("--pattern", default="*", help="shell wildcard on the slug, e.g. '*lora*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="a method's card: paper, equation, defaults, last verdict")
    p.add_argument("slug")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("repro", help="run a method's reproduction of its paper's claim "
                                      "(or a cross-method study: compose)")
    p.add_argument("slug", help="a method's slug (regzoo list) or a study: compose")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="smoke size (seconds)")
    size.add_argument("--quick", action="store_true", help="default: ≤ 2 minutes on 2 cores")
    size.add_argument("--full", action="store_true", help="full run, writes results/<slug>/")
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds, e.g. --seeds 0 1 2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set epochs=50")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:K")
    p.add_argument("--out", help="output folder (default runs/<slug>/<mode>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (units whose code changed are re-run)")
    p.add_argument("--reuse-stale", action="store_true",
                   help="with --resume: keep units computed with other code (result: mixed)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="let --full run from uncommitted source (result: dirty)")
    p.add_argument("--jobs", type=_positive_int,
                   help="parallel processes (default: number of cores)")
    p.add_argument("--strict", action="store_true", help="exit 1 unless the claim reproduces")
    p.set_defaults(func=_cmd_repro)

    p = sub.add_parser("bench", help="step-time ratios: method vs plain step, peers, paper "
                       "formula (benchmarks/); --all runs every one into results/benchmarks.md")
    p.add_argument("slug", nargs="?", help="the method whose benchmark to run")
    p.add_argument("--all", action="store_true",
                   help="run every benchmark, one process each, into results/benchmarks.md")
    p.add_argument("--quick", action="store_true", help="each benchmark's small smoke sizes")
    p.add_argument("--out", help="with --all: the markdown file to write (default: "
                   "results/benchmarks.md)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="with --all: seconds one benchmark may take before it counts as failed")
    p.add_argument("--allow-dirty", action="store_true",
                   help="with --all: run from uncommitted src/ or benchmarks/ (marked dirty)")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="passed to the benchmark script (e.g. --quick, --large)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="the results index of committed results (printed; "
                       "--write rebuilds results/README.md)")
    p.add_argument("--results", help="results folder to index and write into (default: the "
                   "checkout's results/, written only with --write)")
    p.add_argument("--write", action="store_true",
                   help="write the index (and --render's files) into the checkout's results/")
    p.add_argument("--render", action="store_true",
                   help="also re-judge each result's claims with the current claim code and "
                   "verdict rule and rewrite its note, result.md and plot from its "
                   "result.json (no training; a stale result stays stale)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("assets", help="pretrained models cached in $REGZOO_CACHE "
                       "(default ~/.cache/regzoo): list, build or clear them")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="cached assets and the names that can be built")
    q = actions.add_parser("build", help="build a registered asset into the cache")
    q.add_argument("name")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set seed=1")
    q = actions.add_parser("clear", help="delete cached assets (all, or those of NAME)")
    q.add_argument("name", nargs="?")
    p.set_defaults(func=_cmd_assets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``regzoo`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, KeyError, TypeError, ImportError, OSError, FloatingPointError) as error:
        if args.verbose:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"regzoo: error: {message} (rerun with -v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
