"""Run keys written before a change of meaning, upgraded to what they meant then in today's fields, so an old run
folder resumes (or is refused) field by field like a new one."""

from __future__ import annotations

from dataclasses import asdict

from lemario.control.imagination import RETURN_UNIT
from lemario.data.tiers import TIERS


def upgrade_key(stored: dict) -> dict:
    """A run key from before a change of meaning: runs before issue 19 decided by the 'seeds' rule; runs before
    imagination's reward weights became pixels (`lemario.control.reward`) kept flat `imagine.death_penalty` and
    `imagine.score_weight` in units of RETURN_UNIT px; runs before reward spec v3 trained world models without the
    flag head, and counted flag episodes in the elite tier (a tier of its own since: both protected and uncapped,
    so the replay selects the same episodes); runs before the `cpu` preset's 112-px previous-action model (issue 16)
    played 84-px frames with models that had no previous-action input, runs before the HUD crop whole, pooled
    frames, runs before the residual predictor (the `cpu` preset's since session 22) plain ones, and runs before
    --on-policy explored every collected episode, whatever their key omits; runs before the detector's own config
    kept its fields flat and decided on max_x alone; runs before session 57 capped their world models' training on
    the wall clock."""
    stored = {"detector": "seeds", "on_policy": 0.0, **stored}
    if isinstance(stored["detector"], str):
        flat = ("threshold", "variance", "world_model_sd", "patience")
        detector = {"rule": stored["detector"], "metric": "max_x", **{k: stored[k] for k in flat if k in stored}}
        stored = {**{k: v for k, v in stored.items() if k not in flat}, "detector": detector}
    if "env" not in stored:  # before the env was one nested config: 84-px frames, not a flywheel setting then
        stored = {**stored, "env": {"resize": 84}}
    # before the HUD crop existed every frame was whole and pooled (the `cpu` preset has neither since session 15)
    stored = {**stored, "env": {"crop_top": 0, "pool": True, **stored["env"]}}
    tiers = stored.get("replay", {}).get("tiers")
    if isinstance(tiers, list) and len(tiers) == 4 and tiers[-1].get("hi", 0) is None:
        stored = {**stored, "replay": {**stored["replay"], "tiers": [asdict(t) for t in TIERS]}}
    train = stored.get("train")
    if isinstance(train, dict) and isinstance(train.get("model"), dict):
        # models before reward spec v3 had no flag head, before issue 16 no previous action, nor a residual predictor
        before = {"flag_head": False, "prev_action": False, "crop_top": 0, "pool": True, "residual": False}
        stored = {**stored, "train": {"clock": "wall", **train, "model": {**before, **train["model"]}}}
    imagine = dict(stored.get("imagine", {}))
    if "death_penalty" not in imagine:
        return stored
    reward = {k: imagine.pop(k) * RETURN_UNIT for k in ("death_penalty", "score_weight") if k in imagine}
    return {**stored, "imagine": {**imagine, "reward": reward}}
