"""A development-only family of scenes: a phone in dark mode, the autofocus locked behind
it ("af_dark").

A phone in dark mode shows its QR Code on a white card or, in about half the apps drawn
here, light on the dark screen (docscenes.documents.phone). Held where the autofocus
missed it, its modules spread as af_miss's do, and a code shown light on dark must be
found and solved as its negative. Dev seeds of their own, the dev cameras, lights and
papers; the focus drawn as af_miss draws it; the scene generator used as is.
"""

from __future__ import annotations

from ordoscan.devtools import af_miss, docscenes, splits
from ordoscan.devtools.docscenes import DocScene, Setting

NAME = "af_dark"
FIRST_SEED = 370_000  # dev seeds of their own (af_near takes those from 350 000)


def specs(n: int, offset: int = 0) -> list[tuple[int, Setting]]:
    """The first `n` scenes of the family from its `offset`-th: (dev seed, dev setting)."""
    return splits.dev_family_specs(NAME, FIRST_SEED, n, offset)


def render(seed: int, setting: Setting, difficulty: str = "hard",
           sensor: tuple[int, int] | None = None) -> DocScene:
    """One scene of a phone in dark mode, of `seed` under a dev `setting`, the autofocus
    locked behind it."""
    splits.check_dev(NAME, seed, setting)
    return docscenes.render("phone_dark", seed, setting=setting, difficulty=difficulty,
                            sensor=sensor, focus_behind_mm=af_miss.focus_behind(seed))
