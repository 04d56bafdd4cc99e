"""Temporal straightening (LeWorldModel): how straight latent trajectories are, along training.

Straightness is the mean cosine between consecutive latent velocities v_t = z_{t+1} - z_t: 1 for a straight line,
about 0 for a random walk, -1 for a zig-zag. It is measured over real trajectories (the encoder on held-out
episodes) and over predicted ones (the predictor rolled out under the same actions from the model's context of
real latents). The paper found LeWM's trajectories straighten over training with no term asking for it (SIGReg
is applied per time step, so the time axis is free): a mild temporal collapse it argues helps planning.

`lemario analyze straightening RUN [RUN ...]` measures every weight file of each run: a world-model training's
snapshots (`lemario train --snapshot-every N`) and final model, or a flywheel's iterations. Each run gets
RUN/analysis/straightening.json; the figure of all runs goes to --out. A weight file that json already measured
with the same corpus, windows, length and seed, and that has not been written since, is not measured again (a
flywheel's new iterations, or several runs put in one figure, cost only what is new).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import read_json, write_json
from lemario.core.plots import figure, save_png
from lemario.core.runconfig import as_json
from lemario.data.buffer import EpisodeBuffer
from lemario.flywheel.config import iter_dir
from lemario.model.world_model import WorldModel, load_world_model


def straightness(z: torch.Tensor) -> torch.Tensor:
    """(..., T, D) trajectories, T >= 3 -> (...) the mean cosine between consecutive velocities."""
    v = z[..., 1:, :] - z[..., :-1, :]  # (..., T-1, D)
    return F.cosine_similarity(v[..., 1:, :], v[..., :-1, :], dim=-1).mean(-1)


def model_context(meta: dict) -> int:
    """Real latents the model's rollouts start from (its training's loss context; 1 for older checkpoints)."""
    return int(((meta.get("train_config") or {}).get("loss") or {}).get("context", 1))


@torch.no_grad()
def trajectories(model: WorldModel, batch: dict[str, np.ndarray], context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real (N, L+1, D) and predicted (N, L+2-c, D) latent trajectories of a batch of windows; the predicted one
    starts at the newest context latent and continues with the rollout under the window's actions."""
    obs = torch.as_tensor(batch["obs"])
    real = model.encode(obs)  # (N, L+1, D)
    actions, prev = torch.as_tensor(batch["actions"]), torch.as_tensor(batch["prev"])
    preds = model.rollout(real[:, :context], actions, prev)  # (N, L+1-c, D)
    return real, torch.cat([real[:, context - 1 : context], preds], dim=1)


def weight_files(run: Path) -> tuple[str, list[tuple[int, Path]]]:
    """What x counts and the (x, weights) along a run: a flywheel's iterations (x = iteration, from 1) or a
    training's snapshots and final model (x = step)."""
    run = Path(run)
    if iter_dir(run, 1).exists():
        n, out = 1, []
        while iter_dir(run, n).exists():
            wm = iter_dir(run, n) / "wm" / "model.safetensors"
            if wm.exists():
                out.append((n, wm))
            n += 1
        return "flywheel iteration", out
    files = sorted((run / "snapshots").glob("step-*.safetensors"))
    out = [(checkpoint.load_meta(f, kind="world_model")["step"], f) for f in files]
    final = run / "model.safetensors"
    if final.exists():
        step = checkpoint.load_meta(final, kind="world_model")["step"]
        out = [(s, f) for s, f in out if s != step] + [(step, final)]
    return "training step", out


@dataclass(frozen=True)
class StraighteningConfig:
    runs: tyro.conf.Positional[tuple[Path, ...]]
    """World-model run folders (with snapshots: `lemario train --snapshot-every N`) or flywheel folders."""
    corpus: Path
    """Held-out episodes of the runs' game (never trained on)."""
    windows: int = 256
    """Trajectories per weight file (the same windows for all)."""
    length: int = 16
    """Steps per trajectory."""
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    out: Path | None = None
    """Folder of the figure and the combined JSON (default: the first run's analysis folder)."""

    def validate(self) -> None:
        if self.length < 3 or self.windows < 2:
            raise LemarioError("--length must be >= 3 and --windows >= 2: straightness needs two velocities")
        for run in self.runs:
            if not weight_files(run)[1]:
                raise LemarioError(
                    f"{run} holds no world model: pass a `lemario train` folder (with --snapshot-every for a curve) "
                    "or a flywheel folder"
                )


MEASURE = ("corpus", "windows", "length", "seed")
"""The settings a measured row depends on."""


def measured_before(run: Path, cfg: StraighteningConfig) -> dict[str, dict]:
    """Weight file -> its row in RUN/analysis/straightening.json, for the files measured with cfg's settings and
    not written since."""
    path = Path(run) / "analysis" / "straightening.json"
    if not path.exists():
        return {}
    stored, now = read_json(path), as_json(cfg)
    if any(stored["config"].get(k) != now[k] for k in MEASURE):
        return {}
    written = path.stat().st_mtime
    return {
        r["weights"]: r
        for r in stored["rows"]
        if Path(r["weights"]).exists() and os.path.getmtime(r["weights"]) < written
    }


def measure_run(run: Path, buffer: EpisodeBuffer, cfg: StraighteningConfig) -> list[dict]:
    """One row per weight file of the run: straightness of real and predicted trajectories, mean and SE."""
    rows, known = [], measured_before(run, cfg)
    for x, path in weight_files(run)[1]:
        if str(path) in known:
            rows.append({**known[str(path)], "x": x})
            print(
                f"{run} {x:>6}: real {rows[-1]['real']:+.3f}  predicted {rows[-1]['predicted']:+.3f} (measured before)"
            )
            continue
        t_start = time.perf_counter()
        model, meta = load_world_model(path)
        if (buffer.game == "push") != model.cfg.continuous_actions:
            raise LemarioError(f"{path} is a model of the other game than {cfg.corpus}: pass a corpus of its game")
        batch = buffer.sample(cfg.windows, cfg.length, model.cfg.frame_stack, np.random.default_rng(cfg.seed))
        real, predicted = trajectories(model, batch, model_context(meta))
        row = {"x": x, "weights": str(path)}
        for name, traj in (("real", real), ("predicted", predicted)):
            s = straightness(traj).numpy()
            row[name], row[f"{name}_se"] = float(s.mean()), float(s.std(ddof=1) / np.sqrt(len(s)))
        row["seconds"] = round(time.perf_counter() - t_start, 3)
        rows.append(row)
        print(
            f"{run} {x:>6}: real {row['real']:+.3f} +- {row['real_se']:.3f}  predicted {row['predicted']:+.3f} "
            f"({row['seconds']:.0f} s)"
        )
    return rows


def plot(results: dict[str, list[dict]], path: Path, xlabel: str) -> None:
    plt = figure()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (run, rows) in enumerate(results.items()):
        x = [r["x"] for r in rows]
        for name, style in (("real", "-"), ("predicted", "--")):
            y, se = np.array([r[name] for r in rows]), np.array([r[f"{name}_se"] for r in rows])
            ax.plot(x, y, style, color=f"C{i}", marker="o", ms=3, label=f"{Path(run).name} {name}")
            ax.fill_between(x, y - se, y + se, color=f"C{i}", alpha=0.15)
    ax.set(xlabel=xlabel, ylabel="cos(v_t, v_t+1), mean ± SE", title="temporal straightening")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    save_png(fig, path)


def straightening_main(cfg: StraighteningConfig) -> None:
    cfg.validate()
    buffer = EpisodeBuffer.load(cfg.corpus)
    results = {}
    for run in cfg.runs:
        with torch_threads(cfg.threads):
            rows = measure_run(run, buffer, cfg)
        write_json(Path(run) / "analysis" / "straightening.json", {"config": as_json(cfg), "rows": rows})
        results[str(run)] = rows
    out = cfg.out or Path(cfg.runs[0]) / "analysis"
    plot(results, out / "straightening.png", weight_files(cfg.runs[0])[0])
    write_json(out / "straightening-all.json", {"config": as_json(cfg), "runs": results})
    print(f"wrote {out / 'straightening.png'}")
