"""`lemario compare`: world-model flywheel runs beside PPO runs against the env steps each learned from.

    OUT/curve.png     mean max_x (left) and flag rate (right) against env steps: each flywheel run's K-seed mean
                      per iteration (band: +- sd / sqrt(K), the policy noise within the run), each PPO run's
                      harness evaluations (band: their 95% CI), the marks and an optional reference line
    OUT/compare.md    per run, the first env step at which its evaluation mean reached each mark (x >= 700 / 1500 /
                      2000 by default, the PPO baseline's milestones) and the flag (half of the episodes); then each
                      milestone over each kind's runs (mean +- sd where every run reached it); then every flywheel
                      iteration beside PPO's seeds at the same env steps (PPO's evaluations interpolated linearly
                      between their env steps)

Runs are named by their folders; `ARM=FOLDER` puts a run in a named arm (default: its kind), so one call sets runs
fine-tuned from another model beside runs trained from scratch (issue 21's curves: `lemario flywheel --start-from`,
`lemario baseline ppo --init-from`) with marks that suit the level: the milestones are then pooled per arm, and with
two arms or more compare.md adds each arm's mean env steps to each mark and its ratio to the first arm's (list the
reference, e.g. scratch, first).

A flywheel iteration's env steps are every step its corpus holds after that iteration's collection (what its
world model and policies learned from; evaluations not counted, as issue 20 counts), its evaluation the K policies'
episodes on the harness's eval seeds; with --count-eval-play also every evaluation episode the run played by then
(`lemario.flywheel.summary.emulated_steps`: the play its pick of K and its detector decide on, which an agent that
chooses by playing the game spends); a PPO evaluation's env steps are the run's `num_timesteps` when it was taken.
Everything is read from the run folders, live or finished; rebuild it at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lemario.baselines.milestones import MILESTONES, record_milestones
from lemario.baselines.summary import load_run as load_ppo_run
from lemario.baselines.summary import mean_if_all_reached, milestone_row
from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_text, read_json
from lemario.core.plots import env_steps_axis, figure, save_png, table
from lemario.flywheel.run import finished
from lemario.flywheel.summary import emulated_steps


@dataclass(frozen=True)
class CompareConfig:
    flywheel: tuple[Path, ...] = ()
    """Flywheel run folders (`lemario flywheel --out`), typically one per base seed; ARM=FOLDER names its arm."""
    ppo: tuple[Path, ...] = ()
    """PPO run folders (`lemario baseline ppo --out`), typically one per seed; ARM=FOLDER names its arm."""
    out: Path = Path("runs/compare")
    marks: tuple[int, ...] = MILESTONES
    """The x an evaluation mean must reach for each milestone (1-1's flag is at x 3161; set lower ones for levels
    where the agents do not get that far)."""
    reference: float | None = None
    """A mean max_x to draw as a horizontal line (e.g. biased random's)."""
    reference_label: str = "reference"
    count_eval_play: bool = False
    """Put each flywheel iteration at every env step its run emulated by then, its evaluations' play included
    (`emulated_steps`), instead of its corpus's env steps alone. PPO's runs are unchanged: their evaluations choose
    nothing."""


@dataclass(frozen=True)
class Curve:
    """One run's evaluations against env steps."""

    kind: str
    """'flywheel' or 'PPO'."""
    arm: str
    """The arm its milestones are pooled in (`ARM=FOLDER`; default: the kind)."""
    label: str
    env_steps: np.ndarray  # (E,)
    mean: np.ndarray  # (E,) mean max_x
    low: np.ndarray  # (E,) the band's bottom
    high: np.ndarray  # (E,) the band's top
    flag_rate: np.ndarray  # (E,)

    def first_reached(self, marks: tuple[int, ...] = MILESTONES) -> dict[str, int]:
        """Milestone -> the first env step at which the evaluation mean got there (the flag: half the episodes)."""
        reached: dict[str, int] = {}
        for n, m, f in zip(self.env_steps, self.mean, self.flag_rate):
            record_milestones(reached, int(n), float(m), bool(f >= 0.5), marks)
        return reached


def arm_and_folder(arg: Path, kind: str) -> tuple[str, Path]:
    """`ARM=FOLDER` -> (ARM, FOLDER); a plain folder is in the arm of its kind."""
    arm, sep, folder = str(arg).partition("=")
    if not sep or "/" in arm:
        return kind, arg
    if not arm or not folder:
        raise LemarioError(f"{arg}: write ARM=FOLDER (e.g. scratch=runs/fw-5-1) or the folder alone")
    return arm, Path(folder)


def flywheel_curve(run: Path, arm: str = "flywheel", eval_play: bool = False) -> Curve:
    """A flywheel run's iterations: K-seed mean +- sd / sqrt(K), and the flag rate over all K policies' episodes, at
    the corpus's env steps (with `eval_play`, every env step emulated: `emulated_steps`)."""
    summaries = finished(run)
    if not summaries:
        raise LemarioError(
            f"{run} has no finished flywheel iteration: pass folders written by `lemario flywheel --out`"
        )
    seed = read_json(run / "config.json")["run_key"]["seed"]
    k = np.array([len(s.seed_scores) for s in summaries], dtype=np.float64)
    mean = np.array([s.k_mean for s in summaries])
    se = np.array([s.k_sd for s in summaries]) / np.sqrt(k)
    return Curve(
        kind="flywheel",
        arm=arm,
        label=f"{run.name} (seed {seed})",
        env_steps=np.array(emulated_steps(summaries) if eval_play else [s.env_steps for s in summaries]),
        mean=mean,
        low=mean - se,
        high=mean + se,
        flag_rate=np.array([np.mean([v["flag_rate"] for v in s.seed_scores.values()]) for s in summaries]),
    )


def ppo_curve(run: Path, arm: str = "PPO") -> Curve:
    """A PPO run's harness evaluations: mean max_x with its 95% CI, and the flag rate."""
    r = load_ppo_run(run)
    ev = r["evals"]
    return Curve(
        kind="PPO",
        arm=arm,
        label=f"{run.name} (seed {r['config']['seed']})",
        env_steps=np.array([e["env_steps"] for e in ev], dtype=np.int64),
        mean=np.array([e["eval/mean_max_x"] for e in ev], dtype=np.float64),
        low=np.array([e["eval/ci95_low"] for e in ev], dtype=np.float64),
        high=np.array([e["eval/ci95_high"] for e in ev], dtype=np.float64),
        flag_rate=np.array([e["eval/flag_rate"] for e in ev], dtype=np.float64),
    )


def at_env_steps(curve: Curve, n: int) -> float | None:
    """The curve's mean max_x at env step n, linear between its evaluations; None outside their range."""
    if len(curve.env_steps) == 0 or not curve.env_steps[0] <= n <= curve.env_steps[-1]:
        return None
    return float(np.interp(n, curve.env_steps, curve.mean))


def plot_curves(curves: list[Curve], cfg: CompareConfig, path: Path) -> None:
    plt = figure()
    fig, (ax_x, ax_flag) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, c in enumerate(curves):
        style = "o-" if c.kind == "flywheel" else "s--"
        ax_x.plot(c.env_steps, c.mean, style, color=f"C{i}", label=c.label)
        ax_x.fill_between(c.env_steps, c.low, c.high, color=f"C{i}", alpha=0.15)
        ax_flag.plot(c.env_steps, c.flag_rate, style, color=f"C{i}", label=c.label)
    for m in cfg.marks:
        ax_x.axhline(m, color="tab:red", linewidth=0.5, alpha=0.5)
    if cfg.reference is not None:
        ax_x.axhline(cfg.reference, color="gray", linestyle="--", linewidth=0.8, label=cfg.reference_label)
    ax_flag.axhline(0.5, color="gray", linestyle=":", linewidth=0.8, label="half the episodes")
    for ax, title in (
        (ax_x, "evaluation mean max_x (flywheel: +- sd/sqrt(K); PPO: 95% CI)"),
        (ax_flag, "evaluation flag rate"),
    ):
        env_steps_axis(ax, title)
    ax_x.set_ylabel("max x")
    ax_x.legend(fontsize=8)
    save_png(fig, path)


def _milestones_tables(curves: list[Curve], marks: tuple[int, ...]) -> str:
    """Per run its milestones; then, per arm, each milestone over its runs; with two arms or more, each arm's mean
    env steps to each milestone and its ratio to the first arm's."""
    keys = [str(m) for m in marks] + ["flag"]
    reached = [c.first_reached(marks) for c in curves]
    per_run = table(
        ["run", "kind", "evaluations", "env steps (last)", f"evaluation mean first at x >= {' / '.join(keys)}"],
        [
            [
                c.label,
                c.kind,
                len(c.env_steps),
                f"{int(c.env_steps[-1]):,}" if len(c.env_steps) else "-",
                " / ".join(f"{r[k]:,}" if k in r else "-" for k in keys),
            ]
            for c, r in zip(curves, reached)
        ],
    )[0]
    parts = [per_run]
    arms = list(dict.fromkeys(c.arm for c in curves))
    means = []  # (arms, marks): an arm's mean env steps to each mark, None unless all its runs reached it
    for arm in arms:
        runs = [(c, r) for c, r in zip(curves, reached) if c.arm == arm]
        rows = [milestone_row(k, [r.get(k) for _, r in runs]) for k in keys]
        parts += [f"\n{arm}:\n", table(["first at"] + [c.label for c, _ in runs] + ["over the runs"], rows)[0]]
        means.append([mean_if_all_reached([r.get(k) for _, r in runs]) for k in keys])
    if len(arms) > 1:
        parts += [f"\nEnv steps to each mark per arm (mean over its runs, where all reached it), ÷ {arms[0]}'s:\n"]
        parts.append(_ratio_table(arms, means, keys))
    return "\n".join(parts)


def _ratio_table(arms: list[str], means: list[list[float | None]], keys: list[str]) -> str:
    """means[arm][mark] (None: not every run of the arm reached it), and each arm's ÷ the first arm's."""
    rows = []
    for j, key in enumerate(keys):
        first = means[0][j]
        rows.append(
            [key]
            + ["-" if m[j] is None else f"{m[j]:,.0f}" for m in means]
            + ["-" if m[j] is None or first is None else f"{m[j] / first:.2f}" for m in means[1:]]
        )
    return table(["first at"] + arms + [f"{a} ÷ {arms[0]}" for a in arms[1:]], rows)[0]


def _equal_steps_table(curves: list[Curve]) -> str:
    """Every flywheel iteration beside each PPO seed's evaluation mean at the same env steps."""
    flywheel = [c for c in curves if c.kind == "flywheel"]
    ppo = [c for c in curves if c.kind == "PPO"]
    rows = []
    for c in flywheel:
        for i, n in enumerate(c.env_steps):
            at = [at_env_steps(p, int(n)) for p in ppo]
            known = [v for v in at if v is not None]
            rows.append(
                [
                    c.label,
                    i + 1,
                    f"{int(n):,}",
                    f"{c.mean[i]:.0f} [{c.low[i]:.0f}, {c.high[i]:.0f}]",
                    f"{c.flag_rate[i]:.2f}",
                ]
                + ["-" if v is None else f"{v:.0f}" for v in at]
                + [f"{np.mean(known):.0f}" if len(known) == len(ppo) and ppo else "-"]
            )
    header = ["flywheel run", "iter", "env steps", "K-seed mean [+- sd/sqrt(K)]", "flag rate"]
    return table(header + [f"{p.label} (interpolated)" for p in ppo] + ["PPO mean"], rows)[0]


def _arms(runs: tuple[Path, ...], kind: str) -> list[tuple[str, Path]]:
    return [arm_and_folder(Path(r), kind) for r in runs]


def _counted(cfg: CompareConfig) -> str:
    """What a flywheel run's env steps count, said once above the tables."""
    if not cfg.flywheel:
        return ""
    if cfg.count_eval_play:
        return "Flywheel env steps: every step each run emulated, its evaluations' play included.\n"
    return "Flywheel env steps: the steps each run's corpus holds (its evaluations' play not counted).\n"


def _names(runs: tuple[Path, ...]) -> str:
    return ", ".join(map(str, runs)) or "none"


def build(cfg: CompareConfig) -> str:
    """Write OUT/curve.png and OUT/compare.md; returns the Markdown."""
    if not cfg.flywheel and not cfg.ppo:
        raise LemarioError("no run folders given: pass --flywheel RUN ... and/or --ppo RUN ...")
    if not cfg.marks or min(cfg.marks) <= 0:
        raise LemarioError(f"--marks {' '.join(map(str, cfg.marks))}: give positive x (e.g. --marks 700 1500 2000)")
    curves = [flywheel_curve(folder, arm, cfg.count_eval_play) for arm, folder in _arms(cfg.flywheel, "flywheel")]
    curves += [ppo_curve(folder, arm) for arm, folder in _arms(cfg.ppo, "PPO")]
    cfg.out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, cfg, cfg.out / "curve.png")
    sections = [
        "# World-model flywheel and PPO against env steps\n",
        f"Flywheel runs: {_names(cfg.flywheel)}. PPO runs: {_names(cfg.ppo)}.",
        "Milestones: the evaluation mean max_x first at x, the flag when half the evaluation episodes took it.",
        _counted(cfg),
        "## Milestones (env steps)\n",
        _milestones_tables(curves, cfg.marks),
    ]
    if cfg.flywheel:
        sections += ["\n## At equal env steps\n", _equal_steps_table(curves)]
    sections.append("\n![against env steps](curve.png)\n")
    md = "\n".join(sections)
    atomic_write_text(cfg.out / "compare.md", md)
    return md


def compare_main(cfg: CompareConfig) -> None:
    print(build(cfg))
    print(f"wrote {cfg.out / 'compare.md'} and {cfg.out / 'curve.png'}")
