"""A development-only family of scenes: the autofocus missed the page ("af_miss").

The Camera Module 3's autofocus can lock on the counter behind a page held above it, or
still be focused where the page was a moment before: the page is then sharp nowhere and
each module spreads into a defocus disc as wide as a module or more. The dev scenes draw
only a small focus error (autofocus that found the page), so this family renders dev
scenes of ordonnances with the focus locked from 8 to 40 cm behind the page instead.

Dev data only: dev seeds, the dev cameras (cm3, cm3_wide), lights and papers; the scene
generator (ordoscan.devtools.docscenes) is used as is, through its public steps, with the
same draws as its render() so a scene here is the dev scene of its seed but for the focus.
"""

from __future__ import annotations

import numpy as np

from ordoscan.devtools import docscenes, splits
from ordoscan.devtools.docscenes import DocScene, Setting

NAME = "af_miss"
FOCUS_BEHIND_MM = (80.0, 400.0)  # where the focus locked, behind the page


def specs(n: int, offset: int = 0) -> list[tuple[int, Setting]]:
    """The first `n` scenes of the family from its `offset`-th: (dev seed, dev setting)."""
    return splits.dev_family_specs(NAME, 0, n, offset)


def render(seed: int, setting: Setting, difficulty: str = "hard",
           sensor: tuple[int, int] | None = None) -> DocScene:
    """One ordonnance scene of `seed` under a dev `setting`, the autofocus locked behind it."""
    splits.check_dev(NAME, seed, setting)
    return docscenes.render("ordonnance", seed, setting=setting, difficulty=difficulty,
                            sensor=sensor, focus_behind_mm=focus_behind(seed))


def focus_behind(seed: int) -> float:
    """Where the focus locked behind the page of `seed`, in mm: from a stream of its own, so
    the scene's other draws are not moved."""
    return float(np.random.default_rng([seed, 0xAF]).uniform(*FOCUS_BEHIND_MM))


def presentation_focus(seed: int) -> float:
    """Where the lens is locked behind the page of dev presentation `seed`, in mm: the
    family's presentations (docscenes.presentation.present(focus_behind_mm=)), the dev
    presentations with the autofocus left on the counter behind the page (ValueError for a
    seed outside the dev presentations)."""
    if seed not in splits.PRESENTATION_DEV_SEEDS:
        raise ValueError(f"{NAME} presents dev presentation seeds only, not {seed}")
    return focus_behind(seed)
