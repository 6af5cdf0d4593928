"""`flask deploy ...` changes the same audited state the API does."""

from __future__ import annotations

import json

from flask import Flask
from flask.testing import FlaskClient


def test_cli_promote_canary_rollback_are_audited_and_routed(
    app: Flask, client: FlaskClient
) -> None:
    runner = app.test_cli_runner()

    assert runner.invoke(args=["deploy", "promote", "tab", "1"]).exit_code == 0
    assert runner.invoke(args=["deploy", "promote", "tab", "2"]).exit_code == 0
    canary = runner.invoke(args=["deploy", "canary", "tab", "1", "0"])
    assert canary.exit_code == 0, canary.output
    assert json.loads(canary.output)["labels"] == {"stable": 2, "canary": 1}
    back = runner.invoke(args=["deploy", "rollback", "tab"])
    assert json.loads(back.output)["labels"] == {"stable": 1}

    records = client.get("/api/audit?model=tab").get_json()
    assert [r["action"] for r in records] == ["rollback", "canary", "promote", "promote"]
    assert records[0]["actor"].startswith("cli:")
    assert "rollback" in runner.invoke(args=["deploy", "audit", "tab"]).output


def test_cli_refuses_unknown_versions_and_impossible_steps(app: Flask) -> None:
    runner = app.test_cli_runner()
    missing = runner.invoke(args=["deploy", "promote", "tab", "9"])
    nothing_to_roll_back = runner.invoke(args=["deploy", "rollback", "tab"])

    assert missing.exit_code != 0 and "no version directory 9" in missing.output
    assert nothing_to_roll_back.exit_code != 0
    assert "no earlier stable version" in nothing_to_roll_back.output
