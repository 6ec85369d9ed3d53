"""Property tests: whatever the file or the environment holds, a Config or a clear ConfigError."""

from __future__ import annotations

import datetime as dt
import math
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ordoscan.config import Config, load_config
from ordoscan.errors import ConfigError

PROPS = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SECTIONS = list(Config.model_fields)
KNOWN_KEYS = sorted({k for s in SECTIONS for k in Config.model_fields[s].annotation.model_fields})  # type: ignore[union-attr]
# Values a real file would hold, so that some generated files are valid.
PLAUSIBLE = [1883, 8883, 5, 4, "3.1.1", "localhost", "127.0.0.1", "mock", "replay", "v4l2", True,
             False, 15, 1.5, 60, 0, [640, 480], ["^A+$"], "info", "kiosk-01", "", "/tmp/x"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(doc: dict[str, Any]) -> str:
    """Top-level scalars first, then one [table] per dict."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(name)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


SCALARS = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC])),
    st.dates(),
    st.times(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=8,
)
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12))
TABLES = st.dictionaries(KEYS, VALUES, max_size=6)
RANDOM_DOCUMENTS = st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS), st.text(max_size=10)),
    st.one_of(TABLES, VALUES),
    max_size=5,
)
# Files close to a valid one: the default values (which are valid), with a few
# keys left out or given another value.
DEFAULTS: dict[str, dict[str, Any]] = Config().model_dump(mode="json")


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(SECTIONS), unique=True, max_size=len(SECTIONS))):
        table = {}
        for key, value in DEFAULTS[section].items():
            choice = draw(st.integers(0, 39))
            if choice < 34:
                table[key] = value
            elif choice < 37:
                table[key] = draw(st.sampled_from(PLAUSIBLE))
            elif choice < 39:
                table[key] = draw(VALUES)
        doc[section] = table
    return doc


DOCUMENTS = st.one_of(RANDOM_DOCUMENTS, near_valid_documents())
# What a shell can export: letters, digits and underscores.
ENV_NAME_PART = st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=6)
ENVS = st.dictionaries(
    st.builds(
        lambda s, k: f"ORDOSCAN_{s}__{k}",
        st.one_of(st.sampled_from([s.upper() for s in SECTIONS]), ENV_NAME_PART),
        st.one_of(st.sampled_from([k.upper() for k in KNOWN_KEYS]), ENV_NAME_PART),
    ),
    st.one_of(st.sampled_from([toml_value(v) for v in PLAUSIBLE]), st.text(max_size=20)),
    max_size=3,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-props")


def _load(path: Path, env: dict[str, str]) -> Config | None:
    """Config, or None after checking the ConfigError is clear; any other exception fails."""
    try:
        return load_config(path, env=env)
    except ConfigError as e:
        msg = str(e)
        assert msg.strip(), "empty error message"
        for line in msg.split("\n"):
            assert line.startswith((f"{path}:", "environment ORDOSCAN_")), line
        return None


@PROPS
@given(DOCUMENTS, ENVS)
def test_generated_documents(workdir: Path, doc: dict[str, Any], env: dict[str, str]) -> None:
    path = workdir / "generated.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    cfg = _load(path, env)
    if cfg is not None:
        assert isinstance(cfg, Config)
        assert not set(doc) - set(SECTIONS)  # an unknown section was accepted?


@PROPS
@given(st.text(max_size=300))
def test_random_text(workdir: Path, text: str) -> None:
    path = workdir / "text.toml"
    path.write_text(text, encoding="utf-8")
    _load(path, {})


@PROPS
@given(st.binary(max_size=300))
def test_random_bytes(workdir: Path, data: bytes) -> None:
    path = workdir / "bytes.toml"
    path.write_bytes(data)
    _load(path, {})


@PROPS
@given(st.lists(st.sampled_from(["[", "]", "{", "}", "a = ", "x.y = ", "[[t]]\n", "'", '"', "\n",
                                 "=", ",", "1", "#"]), max_size=60))
def test_toml_fragments(workdir: Path, parts: list[str]) -> None:
    path = workdir / "fragments.toml"
    path.write_text("".join(parts), encoding="utf-8")
    _load(path, {})


def test_the_writer_used_here_makes_toml_tomllib_reads_back() -> None:
    import tomllib

    doc = {"mqtt": {"host": 'a"b\\c\x7f\x01', "port": 1883, "x y": [1.5, float("inf")]},
           "top": dt.date(2024, 2, 29)}
    back = tomllib.loads(toml_document(doc))
    assert back["mqtt"]["host"] == 'a"b\\c\x7f\x01'
    assert back["mqtt"]["x y"] == [1.5, float("inf")] and back["top"] == dt.date(2024, 2, 29)
