"""The evaluation splits: which scenes a decoder may be tuned on, and which only measure it.

Rules (docs/EVALUATION.md says why):
- **dev** splits may be looked at, rendered, debugged and tuned on, as much as wanted.
- **held-out** splits are rendered only by the benchmarks (`./dev bench`); nobody looks at
  their frames or their misses to change the decoder. A miss saved under tests/ from a
  held-out run is a picture to describe, not a case to tune to: after a change made because
  of it, the next report must move to a fresh held-out seed range (bump `HELDOUT_EPOCH`).
- Held-out data differ from dev data by seed (both generators) AND, for the second
  generator, by setting: one light, one camera module and one paper are never used in
  dev, so a decoder cannot fit the look of the dev conditions.

Sources:
- gen1: ordoscan.devtools.scenes (PIL drawing, zxing-cpp's writer). It has only a
  difficulty, no named settings: its held-out part is held-out seeds only.
- gen2: ordoscan.devtools.docscenes (PDF documents, segno, physical camera model).
- zxing: ZXing's black-box photos in ../shared/corpora/zxing-blackbox (real photographs;
  they have been seen before, so they are reported as a check, not as held-out data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

from ordoscan.devtools.docscenes import Setting
from ordoscan.devtools.scenes import SET_STRIDE

HELDOUT_EPOCH = 24  # bumped when a held-out range has been looked at; moves every held-out seed

# --- gen1: ordoscan.devtools.scenes.scene_set(seed, n, difficulty) -------------------
# A set seed names a whole mixed set; scene i of set s has render seed s * SET_STRIDE + i
# (kept below 2**32, where render masks it): sets of the two ranges never share a render
# seed for sets of fewer than SET_STRIDE (100 003) scenes.
GEN1_DEV_SETS = range(0, 1_000)  # includes 7, the bench's set until now
_SEED_LIMIT = 2**32


def gen1_heldout_sets(epoch: int) -> range:
    """The gen1 held-out sets of a held-out epoch: 1 000 an epoch to epoch 21, then 40 an
    epoch from 42 000 (the bench takes one set; a set over 42 947 would push its scenes'
    render seeds past 2**32, where render masks them and they would meet the dev sets')."""
    if epoch < 22:
        return range(20_000 + 1_000 * epoch, 21_000 + 1_000 * epoch)
    start = 42_000 + 40 * (epoch - 22)
    if (start + 40) * SET_STRIDE > _SEED_LIMIT:
        raise ValueError(f"held-out epoch {epoch}: no gen1 sets left under 2**32 render seeds")
    return range(start, start + 40)


GEN1_HELDOUT_SETS = gen1_heldout_sets(HELDOUT_EPOCH)

# --- gen2: ordoscan.devtools.docscenes ------------------------------------------------
DEV_LIGHTS = ("office", "dim", "window")
DEV_CAMERAS = ("cm3", "cm3_wide")
DEV_PAPERS = ("plain", "glossy", "folded")
HELDOUT_LIGHTS = ("spot",)
HELDOUT_CAMERAS = ("fixed_focus",)
HELDOUT_PAPERS = ("faded",)

GEN2_DEV_SEEDS = range(0, 500_000)
GEN2_HELDOUT_SEEDS = range(500_000 + 100_000 * HELDOUT_EPOCH, 600_000 + 100_000 * HELDOUT_EPOCH)

DEV_SETTINGS = tuple(Setting(li, ca, pa)
                     for li, ca, pa in product(DEV_LIGHTS, DEV_CAMERAS, DEV_PAPERS))
# every setting with at least one held-out value (the rest of its values from dev)
HELDOUT_SETTINGS = tuple(
    Setting(li, ca, pa)
    for li, ca, pa in product(DEV_LIGHTS + HELDOUT_LIGHTS, DEV_CAMERAS + HELDOUT_CAMERAS,
                              DEV_PAPERS + HELDOUT_PAPERS)
    if li in HELDOUT_LIGHTS or ca in HELDOUT_CAMERAS or pa in HELDOUT_PAPERS
)

SPLITS = ("dev", "heldout-seeds", "heldout-settings")


@dataclass(frozen=True)
class Spec:
    """One gen2 scene to render: docscenes.render(kind, seed, setting=, difficulty=)."""

    kind: str
    seed: int
    setting: Setting
    difficulty: str


def gen2_specs(split: str, n: int, difficulty: str, offset: int = 0) -> Iterator[Spec]:
    """`n` mixed gen2 scenes of `split` ("dev", "heldout-seeds" or "heldout-settings").

    Seeds run from the start of the split's range (+ `offset`); settings cycle through the
    split's list (heldout-seeds uses the dev settings with held-out seeds)."""
    from ordoscan.devtools.docscenes import scene_kind

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    seeds = GEN2_DEV_SEEDS if split == "dev" else GEN2_HELDOUT_SEEDS
    settings = HELDOUT_SETTINGS if split == "heldout-settings" else DEV_SETTINGS
    # the two held-out splits use different halves of the held-out range
    base = seeds.start + (len(seeds) // 2 if split == "heldout-settings" else 0) + offset
    for i in range(n):
        seed = base + i
        if seed not in seeds:
            raise ValueError(f"split {split!r} has no seed {seed}: range {seeds}")
        yield Spec(scene_kind(seed, i), seed, settings[(seed * 7919) % len(settings)],
                   difficulty)


def dev_family_specs(family: str, first: int, n: int, offset: int = 0
                     ) -> list[tuple[int, Setting]]:
    """The first `n` scenes of a dev family (ordoscan.devtools.af_miss, .pale) from its
    `offset`-th: (dev seed, dev setting), its seeds from dev seed `first`."""
    out = []
    for i in range(offset, offset + n):
        seed = GEN2_DEV_SEEDS.start + first + i
        if seed not in GEN2_DEV_SEEDS:
            raise ValueError(f"{family} has no seed {seed}: dev range {GEN2_DEV_SEEDS}")
        out.append((seed, DEV_SETTINGS[(seed * 7919) % len(DEV_SETTINGS)]))
    return out


def check_dev(family: str, seed: int, setting: Setting) -> None:
    """Refuse a held-out seed or setting for a dev family's scene (ValueError)."""
    if seed not in GEN2_DEV_SEEDS or setting not in DEV_SETTINGS:
        raise ValueError(f"{family} renders dev seeds and settings only, not {seed} {setting}")


def gen1_set(split: str) -> int:
    """The gen1 set seed the benchmarks use for `split` ("dev" or "heldout")."""
    if split == "dev":
        return 7
    if split == "heldout":
        return GEN1_HELDOUT_SETS.start + 1
    raise ValueError(f"unknown gen1 split {split!r}; expected 'dev' or 'heldout'")


# --- presentations (docscenes.presentation) ---------------------------------------------
# Their own part of each gen2 range (present() and render() draw with different keys, the
# seeds are kept apart all the same). Settings alternate dev / held-out with the seed.
PRESENTATION_DEV_SEEDS = range(400_000, 500_000)
# Held-out presentations already looked at in this epoch (none of epoch 14's yet); the
# held-out range starts past them.
_PRESENTATIONS_SEEN = 0
PRESENTATION_HELDOUT_SEEDS = range(GEN2_HELDOUT_SEEDS.start + 90_000 + _PRESENTATIONS_SEEN,
                                   GEN2_HELDOUT_SEEDS.stop)
# 16 dev and 16 held-out settings in a period-8 pattern (D H H D H D D H): presentation
# styles cycle with the seed mod 4, so each style meets both kinds of setting.
_PATTERN = "DHHDHDDH"
PRESENTATION_SETTINGS = tuple(
    (DEV_SETTINGS if _PATTERN[i % 8] == "D" else HELDOUT_SETTINGS)[
        (i // 8) * 4 + _PATTERN[: i % 8].count(_PATTERN[i % 8])]
    for i in range(32)
)


def presentation_settings(split: str) -> tuple[Setting, ...]:
    """The settings presentations of `split` cycle through: dev presentations only ever
    use dev settings (they are tuned on); held-out ones mix dev and held-out settings."""
    if split == "dev":
        return DEV_SETTINGS
    if split == "heldout":
        return PRESENTATION_SETTINGS
    raise ValueError(f"unknown presentation split {split!r}; expected 'dev' or 'heldout'")


def presentation_seeds(split: str, n: int) -> range:
    """The first `n` presentation seeds of `split` ("dev" or "heldout")."""
    seeds = {"dev": PRESENTATION_DEV_SEEDS, "heldout": PRESENTATION_HELDOUT_SEEDS}.get(split)
    if seeds is None:
        raise ValueError(f"unknown presentation split {split!r}; expected 'dev' or 'heldout'")
    if n > len(seeds):
        raise ValueError(f"split {split!r} has {len(seeds)} presentation seeds, not {n}")
    return range(seeds.start, seeds.start + n)
