"""Modality and component ablation: one run per variant, each scored on the test split.

Variants: T, A, V, T+A, T+V, A+V, T+A+V, T+A+V without VSC, T+A+V without the contrastive loss.
Every run uses the same model and training configs apart from what the variant changes, and
picks its epoch on the dev split.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from deepmsi.config import ModelConfig, TrainConfig
from deepmsi.data.dataset import FeatureStore
from deepmsi.errors import ConfigError
from deepmsi.modalities import parse_modalities

log = logging.getLogger(__name__)

JSON_FILE = "ablation.json"
MD_FILE = "ablation.md"


@dataclass(frozen=True)
class Variant:
    """What a row changes: the modality subset, VSC on/off, contrastive loss on/off."""

    modalities: str
    vsc: bool = True
    contrastive: bool = True

    @property
    def name(self) -> str:
        """Folder name: ``tav``, ``tav-novsc``, ``tav-nocontrastive``."""
        return (
            self.modalities
            + ("" if self.vsc else "-novsc")
            + ("" if self.contrastive else "-nocontrastive")
        )

    @property
    def title(self) -> str:
        extra = [] if self.vsc else ["w/o VSC"]
        extra += [] if self.contrastive else ["w/o contrastive"]
        return " ".join(["+".join(self.modalities.upper()), *extra])


ALL_VARIANTS: tuple[Variant, ...] = (
    Variant("t"),
    Variant("a"),
    Variant("v"),
    Variant("ta"),
    Variant("tv"),
    Variant("av"),
    Variant("tav"),
    Variant("tav", vsc=False),
    Variant("tav", contrastive=False),
)


@dataclass(frozen=True)
class AblationRow:
    """One row of ``ablation.json``; scores are fractions in [0, 1] on the test split.

    ``vsc`` is the variant's switch; ``vsc_ran`` says whether the run compressed stage 3 (the
    model config can turn VSC off, and a run without text or audio does not use it)."""

    modalities: str
    vsc: bool
    contrastive: bool
    accuracy: float
    weighted_f1: float
    seconds_per_epoch: float
    vsc_ran: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AblationResult:
    rows: list[AblationRow]
    out: Path

    def table(self) -> str:
        """Markdown table, scores in percent."""
        lines = [
            "| modalities | VSC | contrastive | accuracy | weighted F1 | s/epoch |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in self.rows:
            vsc = _vsc_cell(r)
            lines.append(
                f"| {'+'.join(r.modalities.upper())} | {vsc} | "
                f"{'on' if r.contrastive else 'off'} | {100 * r.accuracy:.2f} | "
                f"{100 * r.weighted_f1:.2f} | {r.seconds_per_epoch:.1f} |"
            )
        return "\n".join(lines)

    def row(self, modalities: str, vsc: bool = True, contrastive: bool = True) -> AblationRow:
        for r in self.rows:
            if (r.modalities, r.vsc, r.contrastive) == (modalities, vsc, contrastive):
                return r
        raise KeyError(f"no ablation row for {modalities} vsc={vsc} contrastive={contrastive}")


def _vsc_cell(row: AblationRow) -> str:
    """What VSC did in that run: nothing without video; nothing without text or audio to guide
    it; nothing where the variant or the model config turned it off."""
    if "v" not in row.modalities:
        return "-"
    if row.vsc_ran:
        return "on"
    return "off" if ModelConfig(modalities=row.modalities).vsc_enabled else "off (no guidance)"


def parse_variants(specs: Sequence[str]) -> list[Variant]:
    """``["t", "a", "tav", "tav-novsc", "tav-nocontrastive"]`` -> variants."""
    out = []
    for spec in specs:
        mods, *flags = spec.strip().lower().split("-")
        try:
            if set(flags) - {"novsc", "nocontrastive"}:
                raise ConfigError(spec)
            mods = parse_modalities("".join(dict.fromkeys(mods)))
        except ConfigError:
            raise ConfigError(
                f"bad ablation variant {spec!r}; use e.g. t, ta, tav, tav-novsc, tav-nocontrastive"
            ) from None
        out.append(Variant(mods, "novsc" not in flags, "nocontrastive" not in flags))
    return out


def ablate(
    cache,
    out: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig | None = None,
    *,
    variants: Sequence[Variant] = ALL_VARIANTS,
    reuse: Mapping[Variant, str | Path] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> AblationResult:
    """Train and score each variant; write ``ablation.json`` and ``ablation.md`` into ``out``.

    Runs live in ``out/runs/<variant>``; with ``resume`` (default) finished runs are reused, so
    an interrupted ablation picks up where it stopped. ``reuse`` maps a variant to an existing
    run folder trained with the same configs (it is scored, not retrained).
    """
    from deepmsi.evaluation.scoring import score
    from deepmsi.runs.card import OWN, evaluation_entry, refresh_card
    from deepmsi.runs.folder import load_run, read_metrics
    from deepmsi.training.loop import train

    train_config = train_config or TrainConfig()
    store = cache if isinstance(cache, FeatureStore) else FeatureStore(cache)
    test = store.records("test")
    if not test:
        raise ConfigError(f"{store.cache.path}: ablation needs a labelled test split")
    out = Path(out)
    rows = []
    for i, v in enumerate(variants, start=1):
        run_dir = Path(reuse[v]) if reuse and v in reuse else out / "runs" / v.name
        log.info("ablation %d/%d: %s", i, len(variants), v.title)
        if not (reuse and v in reuse):
            mc = model_config.replace(modalities=v.modalities, vsc=model_config.vsc and v.vsc)
            tc = train_config if v.contrastive else train_config.replace(contrastive_weight=0.0)
            train(store, run_dir, mc, tc, resume=resume, progress=progress)
        run = load_run(run_dir)
        report = score(run, store, test, split="test")
        entry = evaluation_entry(report.to_dict(), data=OWN, epoch=run.epoch)
        refresh_card(run_dir, evaluation=entry)
        history = read_metrics(run_dir)
        spe = sum(h["seconds"] for h in history) / len(history) if history else 0.0
        rows.append(
            AblationRow(
                v.modalities,
                v.vsc,
                v.contrastive,
                report.accuracy,
                report.weighted_f1,
                spe,
                vsc_ran=run.model_config.vsc_enabled,
            )
        )
        log.info(
            "%s: test accuracy %.2f, weighted F1 %.2f",
            v.title,
            100 * report.accuracy,
            100 * report.weighted_f1,
        )
    result = AblationResult(rows, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / JSON_FILE).write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    (out / MD_FILE).write_text(
        "# Ablation (test split)\n\n" + result.table() + "\n\n"
        "Scores in percent; each run picks its epoch on the dev split.\n"
    )
    return result
