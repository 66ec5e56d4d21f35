"""Pages of the API reference site generated at build time (mkdocs-gen-files).

* ``index.md``: the README, its links rewritten for the site.
* ``methods/index.md``: every paper with its kind and status; ``methods/<slug>.md``: one page
  per paper: the card (paper, kind, status with every claim,
  equation, defaults and their sources, variants) and, for an implemented method, the API of
  the module that holds its registered object, rendered from the docstrings by mkdocstrings.
* ``results/``: the results index and each committed ``result.md`` with its plot.
"""

from pathlib import Path

import mkdocs_gen_files

from regzoo.registry import cards, results_dir

ROOT = Path(__file__).resolve().parents[1]
README_LINKS = {"(docs/architecture.md)": "(architecture.md)",
                "(docs/contributing.md)": "(contributing.md)",
                "(results/README.md)": "(results/index.md)"}


def _readme() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for old, new in README_LINKS.items():
        text = text.replace(old, new)
    return text


def _method_page(card) -> str:
    paper = card.paper
    lines = [f"# {card.slug}", "", f"**{paper.title}** — {paper.venue} ({paper.year})", "",
             f"- kind: `{card.kind}`",
             f"- status: {card.status_line()}",
             f"- arXiv: {paper.arxiv or '—'}; official code: {paper.code_url or '—'}",
             f"- claim checked: {paper.claim}", ""]
    if not card.implemented:
        return "\n".join([*lines, "Planned: the method has not landed yet.", ""])
    lines += [f"{card.summary}", "", f"Equation: `{card.equation}`", ""]
    if card.defaults:
        lines += ["| default | value | source |", "|---|---|---|"]
        lines += [f"| `{d.name}` | `{d.value!r}` | {d.source} |" for d in card.defaults]
        lines.append("")
    if card.variants:
        lines += ["Variants: " + "; ".join(card.variants), ""]
    for key, reason in card.declarations.items():
        reasons = reason.items() if isinstance(reason, dict) else [(None, reason)]
        lines += [f"- composition, `{key}`" + (f" with {other}" if other else "") + f": {text}"
                  for other, text in reasons]
    if (results_dir() / card.slug / "result.md").is_file():
        lines += [f"Committed reproduction: [results/{card.slug}](../results/{card.slug}.md)", ""]
    # A method that is a package documents itself in the package (regzoo.methods.<slug>).
    lines += [f"::: {'.'.join(card.obj.__module__.split('.')[:3])}", ""]
    return "\n".join(lines)


with mkdocs_gen_files.open("index.md", "w") as page:
    page.write(_readme())

rows = ["# Methods", "", "| method | kind | status | paper |", "|---|---|---|---|"]
for card in cards():
    rows.append(f"| [{card.slug}]({card.slug}.md) | {card.kind} | {card.status_line()} | "
                f"{card.paper.title} ({card.paper.year}) |")
    with mkdocs_gen_files.open(f"methods/{card.slug}.md", "w") as page:
        page.write(_method_page(card))
with mkdocs_gen_files.open("methods/index.md", "w") as page:
    page.write("\n".join(rows) + "\n")

index = (results_dir() / "README.md").read_text(encoding="utf-8")
for path in sorted(results_dir().glob("*/result.md")):
    slug = path.parent.name
    index = index.replace(f"({slug}/result.md)", f"({slug}.md)")
    with mkdocs_gen_files.open(f"results/{slug}.md", "w") as page:
        page.write(path.read_text(encoding="utf-8").replace(f"`{slug}.png`",
                                                            f"![{slug}]({slug}.png)"))
    for plot in path.parent.glob("*.png"):
        with mkdocs_gen_files.open(f"results/{plot.name}", "wb") as image:
            image.write(plot.read_bytes())
with mkdocs_gen_files.open("results/index.md", "w") as page:
    page.write(index)
