"""The demo's sample scenes: committed PNGs under `samples/`, rendered once by the scene generator.

The demo reads the files (no rendering at start). After a change to
`devtools/scenes`, refresh them with `python -m ordoscan.devtools.demo_samples`
and commit the PNGs; `tests/test_demo.py` checks that they are what the
generator draws.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Sample:
    """One bundled scene: what it shows, how it is rendered, what the kiosk should do."""

    name: str
    kind: str  # scenes.render kind
    seed: int
    expect: str
    sent: bool  # a new scan reaches the pharmacy system

    @property
    def path(self) -> Path:
        """The committed PNG."""
        return SAMPLES_DIR / f"{self.kind}-{self.seed}.png"


SAMPLES: tuple[Sample, ...] = (
    Sample("ordonnance on paper", "ordonnance", 0,
           "good read: green blinks off, one beep; sent", True),
    Sample("ordonnance beside an INS code", "ordonnance", 2,
           "good read; the INS code (patient identity) is ignored, never sent", True),
    Sample("phone in dark mode", "phone_dark", 0, "good read; sent", True),
    Sample("medicine pack (GS1 DataMatrix)", "medicine_pack", 0,
           "refused: red for 1 s, two beeps; nothing sent", False),
    Sample("2D-Doc", "2d_doc", 0, "refused: red for 1 s, two beeps; nothing sent", False),
    Sample("blank counter", "blank", 0, "nothing to read: no signal", False),
    Sample("the first ordonnance again", "ordonnance", 0,
           "repeat: the same signal as a good read, not sent again", False),
)


def write_samples(folder: Path = SAMPLES_DIR) -> list[Path]:
    """Render every sample into `folder` (each kind and seed once)."""
    from ordoscan.devtools import scenes

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for s in SAMPLES:
        path = folder / s.path.name
        if path not in written:
            scenes.render(s.kind, s.seed).save(path)
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR):
        print(p)
