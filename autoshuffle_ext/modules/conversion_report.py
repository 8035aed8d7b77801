"""`ConversionReport`: what the conversion pass changed in a model, site by site."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConversionReport", "ConvertedSite", "ShuffleConversionError"]


class ShuffleConversionError(ValueError):
    """Raised by the conversion pass with `strict=True` when a site cannot be converted, or when
    the model has none."""


@dataclass
class ConvertedSite:
    """One converted site: a row of `ConversionReport`."""

    name: str  # qualified name of the new module in the converted model
    code: str  # where a shuffle was written ("file.py:12 in channel_shuffle"); "" for modules
    channels: int
    what: str  # "shuffle g=2", "inverse shuffle g=3", "shuffle g=2 + split in 2", "conv 1x1 g=3"
    spelling: str  # how it was written ("view/transpose/contiguous/view", "Conv2d")
    became: str  # class of the module put there
    structure: str = "shuffle"  # the config that converted it (`StructureConfig.name`)


@dataclass
class ConversionReport:
    """What the pass did: the sites it converted, the places it could not look into or convert
    (`skipped`, warned about), the Python decisions on sizes that a rewritten graph fixed to the
    example input's answer (`specialized`), and notes (said, not warned)."""

    sites: list[ConvertedSite] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    specialized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        return [vars(site) for site in self.sites]

    def counts(self) -> dict[str, int]:
        """Converted sites per structure."""
        counts: dict[str, int] = {}
        for site in self.sites:
            counts[site.structure] = counts.get(site.structure, 0) + 1
        return counts

    def __str__(self) -> str:
        head = ("site", "channels", "what", "written as", "at", "became")
        rows = [
            (s.name, str(s.channels), s.what, s.spelling, s.code or "-", s.became)
            for s in self.sites
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        per = ", ".join(f"{name}: {n}" for name, n in self.counts().items())
        lines = [f"convert: {len(self.sites)} site(s) converted" + (f" ({per})" if per else "")]
        for row in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if self.specialized:
            lines.append(
                f"{len(self.specialized)} Python decision(s) on sizes fixed to the example "
                "input's: " + "; ".join(sorted(set(self.specialized)))
            )
        lines += [f"not converted: {why}" for why in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)
