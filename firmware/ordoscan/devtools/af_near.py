"""A development-only family of scenes: the autofocus a little off the page ("af_near").

The autofocus locked 2-8 cm behind the page (a page brought closer after the focus
settled, a lens hunting): each module is blurred by a disc of about half to one module,
which af_miss (8-40 cm behind) seldom draws. Dev seeds of their own, the dev cameras,
lights and papers; the scene generator used as is, with the same draws as its render() but
the focus.
"""

from __future__ import annotations

import numpy as np

from ordoscan.devtools import docscenes, splits
from ordoscan.devtools.docscenes import DocScene, Setting

NAME = "af_near"
FOCUS_BEHIND_MM = (20.0, 80.0)  # where the focus locked, behind the page
FIRST_SEED = 350_000  # dev seeds of their own (af_pale takes 200 000 on, dev checks 300 000 on)


def specs(n: int, offset: int = 0) -> list[tuple[int, Setting]]:
    """The first `n` scenes of the family from its `offset`-th: (dev seed, dev setting)."""
    return splits.dev_family_specs(NAME, FIRST_SEED, n, offset)


def render(seed: int, setting: Setting, difficulty: str = "hard",
           sensor: tuple[int, int] | None = None) -> DocScene:
    """One ordonnance scene of `seed` under a dev `setting`, the focus a little behind it."""
    splits.check_dev(NAME, seed, setting)
    behind = float(np.random.default_rng([seed, 0xAF2]).uniform(*FOCUS_BEHIND_MM))
    return docscenes.render("ordonnance", seed, setting=setting, difficulty=difficulty,
                            sensor=sensor, focus_behind_mm=behind)
