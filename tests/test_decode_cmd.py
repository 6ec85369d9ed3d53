"""`ordoscan decode` on real images made with zxing-cpp's writer (SPEC §5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from ordoscan.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ordoscan.cli import main as cli_main
from ordoscan.privacy import INS_REDACTED
from PIL import Image

EPU = "01S2TBPZ2JCNZZYGHZ"
INS = "IS0112345678901234567890S1ABCDEF"  # the shape of an INS code; no real identity
GTIN = "03400935955838"  # Doliprane 1000 mg, CIP13 3400935955838
GS1_HRI = f"(01){GTIN}(17)270300(10)LOT7(21)SER123"
URL = "https://example.fr/notice?id=42"
QR, DM = zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.DataMatrix


def barcode(content: str, fmt: zxingcpp.BarcodeFormat, **opts: object) -> np.ndarray:
    return np.array(zxingcpp.create_barcode(content, fmt, **opts).to_image(scale=6))


def save(path: Path, grey: np.ndarray) -> Path:
    Image.fromarray(grey).save(path)
    return path


def side_by_side(*images: np.ndarray) -> np.ndarray:
    """The codes on one white page, apart, as on a paper ordonnance with its INS code."""
    h = max(i.shape[0] for i in images) + 80
    w = sum(i.shape[1] for i in images) + 80 * (len(images) + 1)
    page = np.full((h, w), 255, np.uint8)
    x = 80
    for i in images:
        page[40:40 + i.shape[0], x:x + i.shape[1]] = i
        x += i.shape[1] + 80
    return page


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    out = {
        "ordo": save(tmp_path / "ordonnance.png", barcode(EPU, QR)),
        "ins": save(tmp_path / "ins.png", barcode(INS, DM)),
        "gs1": save(tmp_path / "pack.png", barcode(GS1_HRI, DM, gs1=True)),
        "url": save(tmp_path / "url.png", barcode(URL, QR)),
        "paper": save(tmp_path / "paper.png", side_by_side(barcode(EPU, QR), barcode(INS, DM))),
        "blank": save(tmp_path / "blank.png", np.full((200, 300), 255, np.uint8)),
    }
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(out["ordo"].read_bytes()[:60] + b"\x00garbage" * 20)
    out["corrupt"] = corrupt
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    out["text"] = text
    out["missing"] = tmp_path / "missing.png"
    return out


@pytest.fixture(autouse=True)
def no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORDOSCAN_"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = cli_main(["decode", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def objects(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_json_one_object_per_image_payloads_masked(
    images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files = [images[k] for k in ("ordo", "gs1", "url", "blank")]
    rc, out, err = run(capsys, "--json", *files)
    assert rc == EXIT_OK, err
    docs = objects(out)
    assert [d["file"] for d in docs] == [str(f) for f in files]
    ordo, gs1, url, blank = (d["symbols"] for d in docs)
    assert ordo == [{"kind": "ordonnance_numerique", "format": ordo[0]["format"],
                     "symbology_id": "]Q1", "payload": "…YGHZ", "details": {"rule": "accept[0]"}}]
    assert "QR" in str(ordo[0]["format"])
    (pack,) = gs1
    assert pack["kind"] == "medicine_pack" and pack["symbology_id"] == "]d2"
    assert pack["details"] == {"gtin": GTIN, "cip13": GTIN[1:], "expiry": "2027-03-31",
                               "lot": "LOT7", "serial": "SER123"}
    assert url[0]["kind"] == "url" and url[0]["payload"] == "…d=42"
    assert blank == []  # no symbol is not an error
    assert EPU not in out and URL not in out


def test_reveal_shows_payloads(images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "--json", "--reveal", images["ordo"], images["url"])
    assert rc == EXIT_OK
    ordo, url = objects(out)
    assert ordo["symbols"][0]["payload"] == EPU
    assert url["symbols"][0]["payload"] == URL


@pytest.mark.parametrize("flags", [[], ["--reveal"], ["--json"], ["--json", "--reveal"]])
def test_ins_is_never_shown(
    images: dict[str, Path], capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    rc, out, err = run(capsys, *flags, images["ins"], images["paper"])
    assert rc == EXIT_OK
    for i in range(len(INS) - 3):  # no 4 consecutive characters of it, anywhere
        assert INS[i:i + 4] not in out + err
    if "--json" in flags:
        ins_doc, paper = objects(out)
        assert ins_doc["symbols"] == [{"kind": "ins", "format": ins_doc["symbols"][0]["format"],
                                       "symbology_id": "]d1", "payload": None,
                                       "reason": "INS (patient identity)"}]
        kinds = sorted(s["kind"] for s in paper["symbols"])
        assert kinds == ["ins", "ordonnance_numerique"]  # the QR beside it is still read
    else:
        assert INS_REDACTED in out


def test_text_output(images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, images["ordo"], images["gs1"], images["blank"])
    assert rc == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{images['ordo']}: ordonnance_numerique") and "…YGHZ" in lines[0]
    assert lines[1].startswith(f"{images['gs1']}: medicine_pack")
    assert "cip13=3400935955838" in lines[1]
    assert lines[2] == f"{images['blank']}: no symbol found"
    assert EPU not in out


@pytest.mark.parametrize("bad", ["corrupt", "text", "missing"])
def test_unreadable_file_named_others_still_decoded_exit_1(
    images: dict[str, Path], capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    rc, out, err = run(capsys, "--json", images["ordo"], images[bad], images["url"])
    assert rc == EXIT_FAILURE
    docs = objects(out)
    assert [d["file"] for d in docs] == [str(images[k]) for k in ("ordo", bad, "url")]
    assert "symbols" not in docs[1] and docs[1]["error"]  # a JSON line says why, on stdout too
    (line,) = err.strip().splitlines()
    assert str(images[bad]) in line and "Traceback" not in err
    assert str(docs[1]["error"]) in line


def test_every_file_bad(images: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, images["missing"], images["corrupt"])
    assert rc == EXIT_FAILURE and out == ""
    assert len(err.strip().splitlines()) == 2


def test_config_rules_are_used(
    images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "ordoscan.toml"
    cfg.write_text("[scan]\naccept = ['https://example\\.fr/notice\\?id=[0-9]+']\n")
    rc, out, _ = run(capsys, "--json", "--config", cfg, images["url"], images["ordo"])
    assert rc == EXIT_OK
    url, ordo = objects(out)
    assert url["symbols"][0]["kind"] == "ordonnance_numerique"
    assert ordo["symbols"][0]["kind"] == "unknown"


def test_config_from_the_environment(
    images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tmp_path / "env.toml"
    cfg.write_text("[scan]\naccept = ['^NOTHING$']\n")
    monkeypatch.setenv("ORDOSCAN_CONFIG", str(cfg))
    rc, out, _ = run(capsys, "--json", images["ordo"])
    assert rc == EXIT_OK
    assert objects(out)[0]["symbols"][0]["kind"] == "unknown"


def test_bad_config_exits_2(
    images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[scan]\naccept = ['(']\n")
    rc, out, err = run(capsys, "--config", cfg, images["ordo"])
    assert rc == EXIT_USAGE and out == ""
    assert str(cfg) in err and "scan.accept" in err


def test_missing_config_exits_2(
    images: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(capsys, "--config", tmp_path / "nope.toml", images["ordo"])
    assert rc == EXIT_USAGE and "nope.toml" in err


def test_no_config_no_file_needed(
    images: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # No --config and no $ORDOSCAN_CONFIG: the defaults, /etc/ordoscan is not needed.
    rc, out, _ = run(capsys, "--json", images["ordo"])
    assert rc == EXIT_OK and objects(out)[0]["symbols"][0]["kind"] == "ordonnance_numerique"


def test_console_command(images: dict[str, Path]) -> None:
    """The real `python -m ordoscan decode` process: exit codes and streams."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDOSCAN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ordoscan", "decode", "--json",
         str(images["paper"]), str(images["missing"])],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    doc, missing = objects(proc.stdout)
    assert sorted(s["kind"] for s in doc["symbols"]) == ["ins", "ordonnance_numerique"]
    assert missing["file"] == str(images["missing"]) and "no such file" in missing["error"]
    assert str(images["missing"]) in proc.stderr
    assert EPU not in proc.stdout and INS[4:12] not in proc.stdout + proc.stderr


# --- hostile payloads and names: nothing acts on the terminal (issue 9 item 10) -------------

HOSTILE = "DC04FR000001ABCD\x1b[2J\x1b[31mX\u202eY\u009bZ\x1dEND\x1b[0m"  # a 2D-Doc shape
RAW_UNSAFE = ("\x1b", "\u202e", "\u009b", "\x9b")


@pytest.mark.parametrize("flags", [[], ["--reveal"], ["--json"], ["--json", "--reveal"]])
def test_a_hostile_payload_cannot_act_on_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    image = save(tmp_path / "doc.png", barcode(HOSTILE, DM))
    rc, out, err = run(capsys, *flags, image)
    assert rc == EXIT_OK, err
    for ch in RAW_UNSAFE:
        assert ch not in out and ch not in err, f"{ch!r} reached the terminal"
    if "--json" in flags:
        (doc,) = objects(out)
        (symbol,) = doc["symbols"]
        assert symbol["kind"] == "2d_doc"
        # JSON escapes, so a consumer still gets the exact payload when it is revealed
        assert symbol["payload"] == (HOSTILE if "--reveal" in flags else "…\\e[0m")
    else:
        assert "\\e[2J" in out or "--reveal" not in flags
        assert out.rstrip().endswith("(2D-Doc, not an ordonnance numérique)")


def test_a_hostile_file_name_is_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = save(tmp_path / "x\x1b[2J\nINFO forged.png", barcode(EPU, QR))
    rc, out, err = run(capsys, image, tmp_path / "gone\u202e.png")
    assert rc == EXIT_FAILURE
    assert "\x1b" not in out and "\n" not in out.rstrip("\n") and "\u202e" not in err
    assert "x\\e[2J\\nINFO forged.png: ordonnance_numerique" in out
    assert "gone\\u202e.png" in err


def test_text_on_several_lines_is_shown_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vcard = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Pharmacie du Port\r\nEND:VCARD"
    image = save(tmp_path / "card.png", barcode(vcard, QR))
    rc, out, _ = run(capsys, "--reveal", image)
    assert rc == EXIT_OK
    (line,) = out.splitlines()
    assert "BEGIN:VCARD\\r\\nVERSION:3.0" in line and "binary" not in line
    assert "text on 4 line(s)" in line


def test_a_micro_qr_says_it_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    micro = np.pad(barcode("MICRO12345", zxingcpp.BarcodeFormat.MicroQRCode), 40,
                   constant_values=255)
    image = save(tmp_path / "micro.png", micro)
    rc, out, _ = run(capsys, image)
    assert rc == EXIT_OK
    assert out.strip() == f"{image}: Micro QR Code found, not read: the kiosk reads full-size " \
        "QR Codes and Data Matrix only"
    assert "MICRO12345" not in out
    rc, out, _ = run(capsys, "--json", image)
    assert objects(out) == [{"file": str(image), "symbols": [], "not_read": ["Micro QR Code"]}]
