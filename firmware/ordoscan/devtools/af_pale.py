"""A development-only family of scenes: pale print with the autofocus missing the page
("af_pale"): the two dev families ordoscan.devtools.af_miss and .pale at once, the focus
drawn as af_miss draws it and the ink as pale does, on dev seeds of their own. Dev seeds
and settings only; not the held-out fixed-focus camera nor the faded paper.
"""

from __future__ import annotations

from ordoscan.devtools import af_miss, docscenes, pale, splits
from ordoscan.devtools.docscenes import DocScene, Setting

NAME = "af_pale"
FIRST_SEED = 200_000  # dev seeds of their own (pale takes those from 100 000)


def specs(n: int, offset: int = 0) -> list[tuple[int, Setting]]:
    """The first `n` scenes of the family from its `offset`-th: (dev seed, dev setting)."""
    return splits.dev_family_specs(NAME, FIRST_SEED, n, offset)


def render(seed: int, setting: Setting, difficulty: str = "hard",
           sensor: tuple[int, int] | None = None) -> DocScene:
    """One ordonnance scene of `seed` under a dev `setting`, printed pale, the autofocus
    locked behind it."""
    splits.check_dev(NAME, seed, setting)
    return docscenes.render("ordonnance", seed, setting=setting, difficulty=difficulty,
                            sensor=sensor, focus_behind_mm=af_miss.focus_behind(seed),
                            ink_fade=pale.ink_fade(seed))
