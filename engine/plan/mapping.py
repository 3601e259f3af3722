"""Which files went to which socket, summed over the plan: what ``gcbulk plan`` prints ("ct-image ← ct.mha in 498
cases, ← airway_seg.mha in 2 cases") and the warnings about positional rules that may map the wrong file.

Positions follow the sorted file names (the tutorial's "first file is the CT"), so ``airway_seg.mha`` sorts before
``ct.mha`` and lands on ``ct-image``. Nothing on disk says that is wrong; two signals hint at it, and are warned about:
a position that takes differently named files in different cases, and a file name that looks like another socket's
slug. Pure: counts what the planner hands it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from gcbulk.engine.jobfile import JobConfig
from gcbulk.engine.plan import findings as finding
from gcbulk.engine.plan.cases import PlannedCase
from gcbulk.engine.plan.findings import Finding

# Distinct file names remembered per socket and per rule: enough to show the pattern, bounded so that a tree whose
# every case names its files differently (p001_ct.mha, p002_ct.mha …) does not grow memory with the tree.
MAX_NAMES = 200
_TOKEN = re.compile(r"[a-z0-9]+")
# Words that say nothing about which socket a file belongs to (they appear in many slugs and names).
_GENERIC = frozenset(
    {
        "image",
        "img",
        "file",
        "mha",
        "mhd",
        "raw",
        "zraw",
        "nii",
        "gz",
        "tif",
        "tiff",
        "dcm",
        "json",
        "png",
        "jpg",
        "generic",
        "medical",
        "data",
        "scan",
    }
)


def _tokens(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(text.lower()) if t not in _GENERIC and not t.isdigit()}


def _resemblance(name_tokens: set[str], slug: str) -> int:
    """How many words of a file name also begin a word of the slug, or the other way round ("seg" ~ "segmentation")."""
    slug_tokens = _tokens(slug)
    return sum(
        1
        for a in name_tokens
        if any(a.startswith(b) or b.startswith(a) for b in slug_tokens if min(len(a), len(b)) >= 2)
    )


class NameCounts:
    """Counts per name, remembering at most MAX_NAMES distinct names (the rest are counted as 'other')."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.other = 0

    def add(self, name: str) -> None:
        if name in self.counts or len(self.counts) < MAX_NAMES:
            self.counts[name] += 1
        else:
            self.other += 1

    @property
    def distinct(self) -> int:
        return len(self.counts) + (1 if self.other else 0)

    def describe(self, limit: int = 5) -> str:
        common = self.counts.most_common(limit)
        text = ", ".join(f"{name} in {count} case{'s' if count != 1 else ''}" for name, count in common)
        rest = sum(self.counts.values()) - sum(count for _, count in common) + self.other
        return text + (f", and other names in {rest} cases" if rest else "")


class MappingSummary:
    """Fed every planned case (``add``); then ``findings()`` warns, ``lines()`` / ``as_dict()`` show the mapping."""

    def __init__(self, config: JobConfig) -> None:
        self.config = config
        self.sockets: dict[str, NameCounts] = {slug: NameCounts() for slug in config.socket_slugs}
        self.positional: dict[int, NameCounts] = {r.index: NameCounts() for r in config.rules if r.position is not None}
        self.cases = 0

    def add(self, case: PlannedCase) -> None:
        self.cases += 1
        for item in case.items:
            self.sockets.setdefault(item.socket_slug, NameCounts()).add(item.shape)
            names = self.positional.get(item.rule) if item.rule is not None else None
            if names is not None:
                names.add(item.files[0].name if item.files else (item.value_path or "").rpartition("/")[2])

    def findings(self) -> Iterator[Finding]:
        rules = {rule.index: rule for rule in self.config.rules}
        for index, names in self.positional.items():
            rule = rules[index]
            # By stem: ct.mha in one case and ct.mhd + ct.zraw in another are the same kind of file.
            stems = {name.partition(".")[0] for name in names.counts}
            if len(stems) + (1 if names.other else 0) > 1:
                most_common = names.counts.most_common(1)[0][0]
                yield finding.position_names_differ(rule.label, names.describe(), f"glob = {most_common!r}")
            for name, count in names.counts.most_common(MAX_NAMES):
                name_tokens = _tokens(name.rpartition(".")[0] or name)
                own = _resemblance(name_tokens, rule.socket)
                others = [
                    (_resemblance(name_tokens, slug), slug) for slug in self.config.socket_slugs if slug != rule.socket
                ]
                best, other = max(others, default=(0, ""))
                if best > own:
                    yield finding.position_name_mismatch(rule.label, name, count, other)

    def lines(self, limit: int = 5) -> list[str]:
        """One line per socket: ``ct-image ← ct.mha in 498 cases, ← airway_seg.mha in 2 cases``."""
        lines = []
        for slug, names in self.sockets.items():
            missing = self.cases - sum(names.counts.values()) - names.other
            common = names.counts.most_common(limit)
            parts = [f"← {name} in {count} case{'s' if count != 1 else ''}" for name, count in common]
            rest = sum(names.counts.values()) - sum(count for _, count in common) + names.other
            if rest:
                parts.append(
                    f"← {len(names.counts) - len(common) + (1 if names.other else 0)} other names in {rest} cases"
                )
            if missing > 0:
                parts.append(f"nothing in {missing} case{'s' if missing != 1 else ''}")
            lines.append(f"{slug} " + ", ".join(parts or ["← nothing"]))
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            slug: {
                "files": dict(names.counts.most_common()),
                "other_names_cases": names.other,
                "cases_without": self.cases - sum(names.counts.values()) - names.other,
            }
            for slug, names in self.sockets.items()
        }
