"""`lemario study detector`: what a detector config decides over finished flywheel runs, beside what they decided.

Each run's iterations are replayed in turn (`lemario.flywheel.detector.replay`): the same policies' scores, each
iteration judged against the verdicts the replayed detector gave the ones before. Up to the first verdict that
differs from the run's own, the replay is what the run would have done; past it the run would have gone on
otherwise (another flip, or a halt), and the replay says only what the detector makes of the same results. Reads the
runs' summaries, writes nothing.

    lemario study detector --runs runs/flywheel-1-1 --detector.metric max_x   # the run's own rule: its verdicts back
    lemario study detector --runs runs/flywheel-1-1 runs/flywheel-1-1-s1       # the default (either) on both runs
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lemario.core.errors import LemarioError
from lemario.flywheel.detector import DetectorConfig, replay
from lemario.flywheel.run import finished


@dataclass(frozen=True)
class DetectorStudyConfig:
    runs: tuple[Path, ...] = ()
    """Flywheel run folders with finished iterations."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The detector to replay (`lemario flywheel --detector.*`)."""


def redecide(run: Path, detector: DetectorConfig) -> str:
    """One run's table: per iteration its scores, its own verdict and the replayed one with both tests' z."""
    summaries = finished(run)
    if not summaries:
        raise LemarioError(f"{run} has no finished flywheel iteration: pass a run folder with an iterNNN/summary.json")
    scores = [s.as_score for s in summaries]
    rule = f"rule {detector.rule}, metric {detector.metric}, threshold {detector.test_threshold():.3f} per test"
    head = (
        f"{'iter':>4}  {'mean max_x':>12}  {'flag rate':>13}  {'run':>6}  {'replay':>6}  {'z max_x':>8}  {'z flags':>8}"
    )
    lines = [f"{run}: replayed with {rule}", head]
    diverged = False
    for s, d in zip(scores, replay(scores, detector), strict=True):
        mark = ""
        if d.verdict != s.verdict and not diverged:
            diverged, mark = True, "  <- first difference: the run goes on otherwise from here"
        lines.append(
            f"{s.iteration:>4}  {s.mean:>6.0f} ± {s.sd:>3.0f}  {s.flag_rate:>5.3f} ± {s.flag_sd:.3f}  {s.verdict:>6}  "
            f"{d.verdict:>6}  {d.z:>8.2f}  {d.flags.z:>8.2f}{mark}"
        )
    return "\n".join(lines)


def study_detector_main(cfg: DetectorStudyConfig) -> None:
    if not cfg.runs:
        raise LemarioError("pass the runs to replay: --runs RUN [RUN ...]")
    cfg.detector.validate()
    print("\n\n".join(redecide(Path(run), cfg.detector) for run in cfg.runs))
