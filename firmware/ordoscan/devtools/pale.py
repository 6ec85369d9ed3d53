"""A development-only family of scenes: pale print ("pale").

A prescription printed by a laser printer whose toner runs low, or in toner-saving mode,
or by a worn inkjet: its ink is a grey, not a black, so the code's contrast is a half to
three quarters of a well-printed one's and the camera's noise counts for more. The dev
papers draw the ink's lightening towards the paper from 0 to 0.1; this family draws it
from PALE_INK (the dev scene of the same seed otherwise: the same document, pose, light,
focus and camera draws).

Dev data only: dev seeds, the dev cameras, lights and papers; the scene generator
(ordoscan.devtools.docscenes) is used as is, with the same draws as its render() but the
ink's. It is not the held-out "faded" paper, which fades its ink further
(0.25-0.5) on thin, curling, glossier paper: that stays held out, and measures how far
what was tuned here carries.
"""

from __future__ import annotations

import numpy as np

from ordoscan.devtools import docscenes, splits
from ordoscan.devtools.docscenes import DocScene, Setting

NAME = "pale"
PALE_INK = (0.15, 0.35)  # how far the ink lightens towards the paper (0: black)
FIRST_SEED = 100_000  # dev seeds of their own (af_miss takes those from 0)


def specs(n: int, offset: int = 0) -> list[tuple[int, Setting]]:
    """The first `n` scenes of the family from its `offset`-th: (dev seed, dev setting)."""
    return splits.dev_family_specs(NAME, FIRST_SEED, n, offset)


def render(seed: int, setting: Setting, difficulty: str = "hard",
           sensor: tuple[int, int] | None = None) -> DocScene:
    """One ordonnance scene of `seed` under a dev `setting`, printed pale."""
    splits.check_dev(NAME, seed, setting)
    return docscenes.render("ordonnance", seed, setting=setting, difficulty=difficulty,
                            sensor=sensor, ink_fade=ink_fade(seed))


def ink_fade(seed: int) -> float:
    """How far the ink of `seed` lightens towards the paper: from a stream of its own, so
    every other draw is the dev scene's."""
    return float(np.random.default_rng([seed, 0x1A4E]).uniform(*PALE_INK))


def presentation_ink(seed: int) -> float:
    """How far the ink of dev presentation `seed` lightens towards the paper: the family's
    presentations (docscenes.presentation.present(ink_fade=)), the dev presentations printed
    pale (ValueError for a seed outside the dev presentations)."""
    if seed not in splits.PRESENTATION_DEV_SEEDS:
        raise ValueError(f"{NAME} presents dev presentation seeds only, not {seed}")
    return ink_fade(seed)
