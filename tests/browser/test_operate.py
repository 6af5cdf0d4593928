"""The operator's pages in headless Chromium: rollouts and their audit, the experiment report,
API keys, batch jobs, the models overview, the API docs, and what each role does not see."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser.conftest import holdout_digit, screenshot, wait_until
from tests.conftest import PASSWORD
from tests.security.servers import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def token(server: Server, username: str) -> str:
    answer = requests.post(
        server.url("/auth/token"), json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def api(server: Server, path: str, username: str = "viewer") -> Any:
    answer = requests.get(
        server.url(path), headers={"Authorization": f"Bearer {token(server, username)}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def first_audit_row(page: Any) -> Any:
    return page.locator("#audit-table tbody tr").first


def test_a_deployer_moves_the_canary_share_and_the_audit_entry_appears(
    page_as: Callable[..., Any],
) -> None:
    page = page_as("deployer")
    page.goto("/rollouts?model=digits")
    page.locator("[data-testid=stable]").wait_for()
    version_select = page.get_by_label("Version", exact=True).first
    version = version_select.input_value()
    assert version, "no ready version besides the stable one to send a canary share to"

    page.get_by_label("Share of traffic").fill("25")
    assert page.locator("#canary-out").inner_text() == "25 %"
    page.get_by_role("button", name="Set canary share").click()

    canary = page.locator("[data-testid=canary]")
    canary.filter(has_text="25 %").wait_for()
    assert canary.inner_text() == f"version {version} · 25 %"
    row = first_audit_row(page)
    assert row.get_attribute("data-action") == "canary"
    assert row.locator("td").nth(1).inner_text() == "deployer"
    assert f"canary v{version}" in row.locator("td").nth(4).inner_text()
    assert f"v{version} (canary)" in page.locator("#state .legend").inner_text()
    assert page.locator("#toast").inner_text() == f"Canary: version {version} gets 25 % of traffic."
    screenshot(page, "rollouts-canary")

    page.get_by_role("button", name="End canary").click()
    canary.filter(has_text="none").wait_for()
    assert first_audit_row(page).get_attribute("data-action") == "canary-end"


def test_an_experiment_reports_traffic_per_variant_and_feedback(
    page_as: Callable[..., Any], server: Server, tmp_path: Path
) -> None:
    deployer = page_as("deployer")
    deployer.goto("/rollouts?model=digits")
    deployer.locator("[data-testid=stable]").wait_for()
    deployer.get_by_label("Name", exact=True).fill("ui-experiment")
    deployer.get_by_role("button", name="Start experiment").click()
    first_audit_row(deployer).and_(deployer.locator("[data-action=experiment-start]")).wait_for()

    # A predictor's request lands in a variant; they say whether the answer was right.
    image, label = holdout_digit(tmp_path)
    predictor = page_as("predictor")
    predictor.goto("/try?model=digits")
    predictor.get_by_label("Upload images").check()
    predictor.locator("input[type=file]").set_input_files(str(image))
    predictor.get_by_role("button", name="Predict").click()
    assert predictor.locator(".run-meta .chip.accent").inner_text().startswith("variant ")
    predictor.get_by_role("button", name="Yes").click()
    predictor.get_by_text(f"Thanks: recorded “{label}”.").wait_for()

    # Counts reach the shared store within a second whichever worker served them.
    def counted() -> bool:
        deployer.get_by_role("button", name="Refresh report").click()
        deployer.wait_for_timeout(200)
        return "1 req" in deployer.locator("#report").inner_text()

    wait_until(counted)
    report = deployer.locator("#report").inner_text()
    assert "Experiment “ui-experiment” (running)" in report
    assert "Traffic per variant" in report and "Latency (p50 · p95 · p99)" in report
    wait_until(
        lambda: (
            deployer.get_by_role("button", name="Refresh report").click() is None
            and "100 % [" in deployer.locator("#report").inner_text()
        )
    )
    screenshot(deployer, "rollouts-experiment-report")

    deployer.get_by_role("button", name="Stop experiment").click()
    deployer.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    deployer.locator("[data-action=experiment-stop]").first.wait_for()
    deployer.locator("#report", has_text="Experiment “ui-experiment” (stopped)").wait_for()


def test_a_predictor_sees_no_rollout_controls(page_as: Callable[..., Any]) -> None:
    page = page_as("predictor")
    page.goto("/models")
    page.locator(".model-card").first.wait_for()
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Rollouts").count() == 0
    assert nav.get_by_role("link", name="API keys").count() == 0
    assert page.get_by_role("link", name="Roll out").count() == 0

    response = page.goto("/rollouts")
    assert response.status == 403
    assert page.get_by_role("heading", level=1).inner_text() == "Not allowed"
    assert "needs the 'deploy' permission" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button", name="Set canary share").count() == 0
    screenshot(page, "rollouts-as-predictor")


def test_a_viewer_sees_models_with_state_size_accuracy_and_traffic(
    page_as: Callable[..., Any], server: Server
) -> None:
    listed = api(server, "/api/models")
    page = page_as("viewer")
    page.goto("/models")
    page.locator(".model-card").first.wait_for()

    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == ["Models", "API docs"]
    for model in (m for m in listed if m.get("kind") != "ensemble"):
        card = page.locator(f".model-card[data-model={model['name']}]")
        rows = card.locator("tbody tr")
        assert rows.count() == len(model["versions"])
        assert [f"v{v['version']}" for v in model["versions"]] == [
            rows.nth(i).locator("td strong").first.inner_text() for i in range(rows.count())
        ]
        assert "100 %" in card.locator(".legend").inner_text()
    assert page.get_by_role("link", name="Try it").count() == 0
    ensembles = page.locator("section[aria-labelledby=ensembles-h]").inner_text()
    assert "digits-ensemble" in ensembles and "digits-compare" in ensembles
    screenshot(page, "models")


def test_an_admin_creates_a_key_sees_the_secret_once_and_revokes_it(
    page_as: Callable[..., Any], server: Server
) -> None:
    page = page_as("admin")
    page.goto("/keys")
    page.get_by_label("Name").fill("ui-test-app")
    page.get_by_label("Rate limit").fill("100 per minute")
    page.get_by_role("button", name="Create key").click()

    secret = page.locator("#new-secret").inner_text()
    assert re.fullmatch(r"mg_\S+", secret), secret
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    page.locator("#secret-box [role=status]", has_text="Copied.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    answer = requests.get(server.url("/api/models"), headers={"X-API-Key": secret}, timeout=10)
    assert answer.status_code == 200
    row = page.locator("#keys-table tr", has_text="ui-test-app")
    assert "active" in row.inner_text() and "100 per minute" in row.inner_text()
    screenshot(page, "keys")

    page.get_by_role("button", name="I stored it, hide the secret").click()
    assert page.locator("#new-secret").count() == 0
    page.reload()
    row = page.locator("#keys-table tr", has_text="ui-test-app")
    assert row.locator("td").nth(3).inner_text() == "1"  # the request above, counted

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke ui-test-app").click()
    row.wait_for(state="detached")
    answer = requests.get(server.url("/api/models"), headers={"X-API-Key": secret}, timeout=10)
    assert answer.status_code == 401


def test_a_batch_job_runs_with_a_progress_bar_and_its_results_download(
    page_as: Callable[..., Any], tmp_path: Path
) -> None:
    rows = tmp_path / "flowers.jsonl"
    rows.write_text(
        '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}\n'
        '{"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}\n'
    )
    page = page_as("predictor")
    page.goto("/jobs")
    page.get_by_label("Model").select_option("iris")
    page.get_by_label("File").set_input_files(str(rows))
    page.get_by_role("button", name="Submit job").click()

    job = page.locator("#jobs-table tbody tr", has_text="flowers.jsonl").first
    # The runner thread is niced: on a busy machine it may wait its turn for seconds.
    job.and_(page.locator("[data-state=succeeded]")).wait_for(timeout=60_000)
    assert job.locator("progress").get_attribute("value") == "100"
    assert "2 done of 2" in job.inner_text()
    href = job.get_by_role("link", name="JSONL").get_attribute("href")
    results = page.request.get(href)
    labels = [line for line in results.text().splitlines() if line]
    assert len(labels) == 2 and '"setosa"' in labels[0] and '"virginica"' in labels[1]
    screenshot(page, "jobs")


def test_the_api_docs_are_in_the_navigation_and_take_a_bearer_token(
    page_as: Callable[..., Any], server: Server
) -> None:
    page = page_as("viewer")
    page.goto("/models")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API docs").click()
    page.wait_for_url("**/docs")
    page.context.clear_cookies()  # the bearer token alone, not the page's cookie, must work

    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".modal-ux")
    dialog.locator("#auth-bearer-value").fill(token(server, "viewer"))
    dialog.get_by_role("button", name="Apply credentials").first.click()
    dialog.get_by_role("button", name="Close").first.click()

    operation = page.locator("#operations-models-get_api_models")
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tr.response td.response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    screenshot(page, "docs")


@pytest.mark.parametrize("path", ["/models", "/rollouts", "/jobs", "/keys", "/compare"])
def test_every_page_fits_a_narrow_phone_screen(page_as: Callable[..., Any], path: str) -> None:
    page = page_as("admin", width=375, height=800)
    page.goto(path)
    wait_until(lambda: page.get_by_text("Loading…").count() == 0)

    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} scrolls sideways: {width} px"
    screenshot(page, f"{path.strip('/')}-375px")
