"""Result JSON → Markdown table, PNG plot, and the ``results/README.md`` overview.

Plots use matplotlib's Agg backend (imported lazily: it is the ``plot`` extra) with fixed size
and DPI and no software/date metadata, so reruns give byte-stable diffs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from regzoo.repro.claims import MIN_SEEDS, RULE_TEXT, status_line
from regzoo.repro.protocol import Reproduction

VERDICT_MARK = {"reproduced": "reproduced", "not_reproduced": "NOT reproduced",
                "inconclusive": "inconclusive"}


def _pm(summary: Mapping[str, Any], digits: int = 3) -> str:
    mean, se = summary.get("mean"), summary.get("se")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{mean:.{digits}f}"
    if 0 < se < 0.5 * 10 ** -digits:  # keep one significant digit of a tiny SE
        digits = min(-math.floor(math.log10(se)), 6)
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _in_display_order(repro: Reproduction, arms: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Arms in the order of ``repro.arm_labels``, any unlabelled arm after them."""
    rank = {arm: i for i, arm in enumerate(repro.arm_labels)}
    return sorted(arms.items(), key=lambda item: rank.get(item[0], len(rank)))


def _claim_lines(claim: Mapping[str, Any], title: str) -> list[str]:
    """A claim's statement and its verdict sentence, with the 95 % interval and any reason."""
    observed = claim["observed"]
    interval = observed.get("interval")
    bounds = ("" if not interval or any(b is None or b != b for b in interval)
              else f"; 95 % interval [{interval[0]:.4g}, {interval[1]:.4g}]")
    reason = f" ({claim['reason']})" if claim.get("reason") else ""
    return [
        f"**{title}.** {claim['statement']}",
        "",
        f"**Verdict: {VERDICT_MARK[claim['verdict']]}{reason}.** Effect of {claim['method']} "
        f"over {claim['baseline']} on `{claim['metric']}` ({claim['setting']}; "
        f"{claim['direction']} `{claim['metric']}` is better, so a positive effect favours "
        f"{claim['method']}): {_pm({'mean': observed['mean_effect'], 'se': observed['se']})} "
        f"(mean ± SE over {observed['n']} seeds{bounds}; margin {claim['margin']}).",
        "",
    ]


def status_header(result: Mapping[str, Any]) -> list[str]:
    """The lines at the top of ``result.md``: the status of every claim, or why there is none."""
    run = result["run"]
    if run.get("smoke"):
        lines = [f"**Smoke run ({len(run['seeds'])} seeds < {MIN_SEEDS}): no verdict.**"]
        if run.get("committed_status"):
            lines[0] += f" Committed full result, for reference: {run['committed_status']}."
        return [*lines, ""]
    from regzoo.repro.runner import result_changes

    changes = set(result_changes(result)) - {"<dirty>", "<mixed>"}
    flags = [flag for flag, on in (("dirty", run.get("git_dirty") is not False),
                                   ("mixed", run.get("mixed")), ("stale", changes)) if on]
    tail = f" ({', '.join(flags)})" if flags else ""
    return [f"**Status: {status_line(result)}{tail}.** {RULE_TEXT}", ""]


def result_markdown(repro: Reproduction, result: Mapping[str, Any]) -> str:
    """The Markdown report: claim and verdict, a table per setting, timing, the command."""
    run, claim = result["run"], result["claim"]
    lines = [f"# {run['slug']}: {run['title']}", "", *status_header(result),
             *_claim_lines(claim, "Claim")]
    if claim.get("note"):
        lines += [claim["note"], ""]
    for number, secondary in enumerate(result.get("secondary_claims", ()), start=2):
        lines += _claim_lines(secondary, f"Claim {number}")
    aggregate = result["metrics"]["aggregate"]
    for setting, arms in aggregate.items():
        present = {m for a in arms.values() for m in a}
        # table_metrics spans every setting; a setting's table shows the ones its arms report.
        metrics = [m for m in repro.table_metrics if m in present] or sorted(present)
        lines += [f"## {setting}", "",
                  "| arm | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for arm, values in _in_display_order(repro, arms):
            # A label may hold "|" (PnP-MIMO's "TV on |x|"): escaped, it stays one table cell.
            label = repro.arm_labels.get(arm, arm).replace("|", "\\|")
            cells = [_pm(values[m]) if m in values else "–" for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    timing = result.get("timing") or {}
    if timing:
        lines += ["## Step time (same process, interleaved)", ""]
        lines += [f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}"
                  for key, value in timing.items()]
        lines.append("")
    lines += [
        "## Run", "",
        f"- command: `{run['command']}`"
        + (f" (from scratch: `regzoo repro {run['slug']} --{run['mode']}`)"
           if "--resume" in run["command"] else ""),
        f"- seeds: {run['seeds']}; mode: {run['mode']}; wall time: {run['wall_seconds']:.0f} s",
        f"- regzoo {run['regzoo_version']} at commit {run['git_commit']}"
        f"{' (with uncommitted changes)' if run.get('git_dirty') else ''}; {run['created_at']}",
        f"- env: torch {result['env']['torch']}, {result['env']['device']}, "
        f"{result['env']['cpu_count']} CPUs",
        *_distributed_line(run),
        f"- plot: `{run['slug']}.png`",
        "",
    ]
    return "\n".join(lines)


def _distributed_line(run: Mapping[str, Any]) -> list[str]:
    """The torchrun line of a run over several processes (none for one process)."""
    world_size = run.get("world_size", 1)
    if world_size == 1:
        return []
    return [f"- distributed: world size {world_size}, backend {run.get('backend') or 'unknown'} "
            "(torchrun)"]


LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "x", "P", "*")


def _plot_title(result: Mapping[str, Any], width: int) -> str:
    """The figure's title: the verdict badge, the headline claim in words, what the bands are."""
    import textwrap

    claim, run = result["claim"], result["run"]
    if run.get("smoke"):
        badge = f"[SMOKE RUN: {len(run['seeds'])} seeds < {MIN_SEEDS}, no verdict]"
    else:
        tally = status_line(result).partition(" · ")[2]
        badge = f"[{VERDICT_MARK[claim['verdict']].upper()} · {tally}]"
    statement = textwrap.shorten(claim["statement"], width=3 * width, placeholder=" …")
    return "\n".join([f"{run['slug']} {badge}", *textwrap.wrap(statement, width),
                      "curves: mean ± SE over seeds"])


MAX_ARMS_IN_PANEL = 12
"""Most arms whose legend fits inside a panel; more and it is drawn beside the panels."""


def plot_result(repro: Reproduction, result: Mapping[str, Any], path: Path) -> None:
    """Mean ± SE over seeds of each of ``repro.plot_curves`` (rows) per setting (columns)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'regzoo[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = result["metrics"]["curves"]
    rows = [(name, label) for name, label in repro.plot_curves
            if any(name in arm for by_arm in curves.values() for arm in by_arm.values())]
    settings = [s for s in curves if any(name in arm for name, _ in rows
                                         for arm in curves[s].values())]
    if not rows or not settings:
        return
    config = repro.config_type.from_dict(result["run"]["config"])
    axis = {setting: repro.curve_x(config, setting) for setting in settings}
    extra = 1 if repro.extra_row_label else 0
    drawn_arms = {arm for by_arm in curves.values() for arm in by_arm}
    # Past a dozen arms the legend would cover the curves: it goes beside the panels instead.
    beside = len(drawn_arms) > MAX_ARMS_IN_PANEL
    fig, axes = plt.subplots(len(rows) + extra, len(settings), dpi=110, squeeze=False,
                             figsize=(3.6 * len(settings) + 0.8 + 3.4 * beside,
                                      2.9 * (len(rows) + extra)))
    # One colour, line style and marker per arm across every panel (curves that overlap stay
    # distinguishable), and one legend naming every arm drawn.
    order = [arm for arm, _ in _in_display_order(repro, dict.fromkeys(drawn_arms))]
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(order)}
    styles = {arm: LINE_STYLES[i % len(LINE_STYLES)] for i, arm in enumerate(order)}
    markers = {arm: MARKERS[i % len(MARKERS)] for i, arm in enumerate(order)}
    handles: dict[str, Any] = {}
    for r, (name, label) in enumerate(rows):
        for ax, setting in zip(axes[r], settings):
            if not any(name in named for named in curves[setting].values()):
                # A setting without this curve (a suite with no validation curve, say).
                ax.text(0.5, 0.5, f"no {label} curve\nin {setting}", ha="center", va="center",
                        fontsize=8, color="grey", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(setting)
                continue
            for arm, named in _in_display_order(repro, curves[setting]):
                if name not in named:
                    continue
                mean, se = named[name]["mean"], named[name]["se"]
                values = axis[setting][1]
                xs = list(values)[: len(mean)] if values is not None else range(1, len(mean) + 1)
                (line,) = ax.plot(xs, mean, label=repro.arm_labels.get(arm, arm), lw=1.5,
                                  color=colours[arm], ls=styles[arm], marker=markers[arm],
                                  markersize=3.5, markevery=max(1, len(mean) // 8))
                handles.setdefault(arm, line)
                if se is not None:
                    ax.fill_between(xs, [m - e for m, e in zip(mean, se)],
                                    [m + e for m, e in zip(mean, se)],
                                    color=line.get_color(), alpha=0.2, lw=0)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(setting)
            ax.set_xscale(axis[setting][2])
            ax.set_yscale(repro.curve_scales.get(name, "linear"))
            ax.set_xlabel(axis[setting][0], fontsize=8)
            if axis[setting][0] == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[r][0].set_ylabel(label)
    # Before the extra row: a reproduction may redraw a panel there, legend included.
    placement = ({"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 7,
                  "ncol": 1 + len(handles) // 24} if beside else {"loc": "best", "fontsize": 8})
    axes[0][-1].legend(handles=[handles[a] for a, _ in _in_display_order(repro, handles)],
                       **placement)
    if extra:
        for ax, setting in zip(axes[-1], settings):
            if repro.draw_extra_row(ax, setting, dict(result)):
                ax.grid(alpha=0.3)
            else:
                ax.axis("off")
        axes[-1][0].set_ylabel(repro.extra_row_label)
    fig.suptitle(_plot_title(result, width=int(42 * fig.get_figwidth() / 3.6)), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def build_results_index(results: Path) -> str:
    """``results/README.md``: one row per method or study with a committed full result.

    The status column is the headline verdict and the count of all claims by verdict (✓
    reproduced, ✗ not reproduced, ? inconclusive), then ``stale`` when the code or the
    provenance of the result no longer matches (:func:`regzoo.repro.runner.result_changes`).
    """
    from regzoo.registry import cards
    from regzoo.repro.runner import STUDIES, result_changes

    rows = ["# Results", "",
            "Generated by `regzoo report` from `results/<slug>/result.json`; one row per method or "
            "cross-method study.",
            "Status: the headline verdict, then every claim of the result counted by verdict "
            "(✓ reproduced, ✗ not reproduced, ? inconclusive); `stale` when the result's code "
            "fingerprint no longer matches the code (or it ran dirty or mixed): re-run it.",
            "", RULE_TEXT, "",
            "| method | claim metric (setting) | baseline | method | effect (mean ± SE) | "
            "status | seeds | date | command |",
            "|---|---|---|---|---|---|---|---|---|"]
    for slug in [c.slug for c in cards()] + sorted(STUDIES):
        path = results / slug / "result.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        claim, run = result["claim"], result["run"]
        status = status_line(result) + (" · stale" if result_changes(result) else "")
        arms = result["metrics"]["aggregate"][claim["setting"]]
        metric = claim["metric"]
        effect = {"mean": claim["observed"]["mean_effect"], "se": claim["observed"]["se"]}
        rows.append(
            f"| [{slug}]({slug}/result.md) | {metric} ({claim['setting']}) | "
            f"{claim['baseline']} {_pm(arms[claim['baseline']][metric])} | "
            f"{claim['method']} {_pm(arms[claim['method']][metric])} | {_pm(effect)} | "
            f"{status} | {len(run['seeds'])} | "
            f"{run['created_at'][:10]} | `{run['command']}` |"
        )
    planned = [c.slug for c in cards() if not (results / c.slug / "result.json").is_file()]
    rows += ["", f"Without a committed full result yet ({len(planned)}): "
             + ", ".join(planned) + ".", ""]
    return "\n".join(rows)
