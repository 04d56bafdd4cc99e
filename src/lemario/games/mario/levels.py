"""Issue 21's split of Super Mario Bros' levels, fixed before any multi-level run and shared by every method that
trains on several levels (the flywheel, PPO)."""

TRAIN_LEVELS = ("1-1", "2-1", "1-2", "1-4", "2-4", "6-1")
"""Levels trained on: overworld (1-1, 2-1, 6-1), underground (1-2) and castle (1-4, 2-4) looks..."""
HELD_OUT_LEVELS = ("5-1", "4-2", "3-4")
"""...and levels no multi-level run trains or tunes on, one of each look: overworld 5-1, underground 4-2, castle
3-4 (zero-shot evaluation: `lemario eval --levels 5-1 4-2 3-4`)."""
