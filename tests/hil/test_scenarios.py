"""Every scenario of tests.hil.scenarios on the rig chosen with --rig (virtual by default)."""

from __future__ import annotations

import pytest

from tests.hil.rig import Rig, Unsupported
from tests.hil.scenarios import SCENARIOS, Row, Scenario, run


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, marks=[pytest.mark.timeout(s.timeout_s)] if s.timeout_s else [])
     for s in SCENARIOS],
    ids=[s.name.replace(" ", "-") for s in SCENARIOS],
)
def test_scenario(rig: Rig, scenario: Scenario, report_row: list[Row]) -> None:
    try:
        row, problems = run(rig, scenario)
    except Unsupported as e:
        report_row.append(Row(scenario.name, scenario.signals, "-", "-", f"skipped: {e}"))
        pytest.skip(f"{rig.name} rig: {e}")
    except Exception as e:
        report_row.append(Row(scenario.name, scenario.signals, "-", "-", f"ERROR: {e}"[:60]))
        raise
    report_row.append(row)
    assert not problems, f"{scenario.name}: " + "; ".join(problems) + f"\n  seen: {row.seen}"
