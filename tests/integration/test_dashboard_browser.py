"""The dashboard in a real browser (headless Chromium driven by Playwright) against `mas up`.

A user opens the URL `mas up` prints, sees the echo agent live, submits a task with the form
and sees it succeed in the task table. Needs Debian's `chromium` (`.ci/run` installs it);
Playwright cannot download its own browser here, so it drives that binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect
from pydantic import SecretStr

from mas import Runtime, Settings
from mas.agents import EchoAgent
from tests.conftest import require_service
from tests.process_support import MasProcess, clean_environment

pytestmark = pytest.mark.anyio

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    path = os.environ.get("MAS_TEST_CHROMIUM") or shutil.which("chromium") or ""
    require_service("Chromium", bool(path), "no `chromium` on PATH: apt-get install chromium")
    return path


@pytest.fixture
def mas_up(tmp_path: Path) -> Iterator[tuple[str, MasProcess]]:
    env = clean_environment(MAS_AUTH__JWT_SECRET="b" * 40)
    process = MasProcess(["up", "--port", "0"], env, tmp_path)
    try:
        line = process.wait_for(lambda line: line.strip().startswith("dashboard:"))
        process.wait_for(lambda line: "Ctrl-C stops" in line)
        # `mas up` keeps its dev token out of its output: the user pastes it, or puts it in
        # the link's fragment, as here.
        dashboard = line.split(":", 1)[1].split()[0]
        token = (tmp_path / ".mas" / "dev-token").read_text().strip()
        yield f"{dashboard}#token={token}", process
    finally:
        process.terminate()


async def test_the_dashboard_shows_agents_and_runs_a_task(
    chromium: str, mas_up: tuple[str, MasProcess], tmp_path: Path
) -> None:
    dashboard_url, _ = mas_up
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            refused: list[str] = []  # what the page's Content-Security-Policy blocked
            page.on(
                "console",
                lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
            )
            await page.goto(dashboard_url)
            echo_row = page.locator("#agents tr[data-agent-id=echo]")
            await expect(echo_row).to_contain_text("live", timeout=15_000)
            assert "token=" not in page.url, "the token stayed in the address bar"
            await page.fill("#submit-form input[name=payload]", '{"text": "from the browser"}')
            await page.click("#submit-form button")
            await expect(page.locator("#submit-result")).to_contain_text(
                "succeeded", timeout=15_000
            )
            succeeded = page.locator("#tasks tr[data-status=succeeded]")
            await expect(succeeded).to_have_count(1, timeout=5_000)
            await expect(succeeded).to_contain_text("from the browser")
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # A bad payload is refused in the page, before anything is sent.
            await page.fill("#submit-form input[name=payload]", "{not json")
            await page.click("#submit-form button")
            await expect(page.locator("#submit-result")).to_contain_text("not JSON")
            assert refused == [], refused
        finally:
            await browser.close()


async def test_without_a_token_the_dashboard_asks_for_one(
    chromium: str, mas_up: tuple[str, MasProcess]
) -> None:
    dashboard_url, _ = mas_up
    bare_url = dashboard_url.split("#", 1)[0]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(bare_url)
            await expect(page.locator("#login")).to_be_visible()
            await page.fill("#login-form input[name=token]", "not-a-token")
            await page.click("#login-form button")
            await expect(page.locator("#status")).to_contain_text("error")
            await expect(page.locator("#login")).to_be_visible()
            token = dashboard_url.split("#token=", 1)[1]
            await page.fill("#login-form input[name=token]", token)
            await page.click("#login-form button")
            await expect(page.locator("#agents tr[data-agent-id=echo]")).to_be_visible()
        finally:
            await browser.close()


async def test_the_api_docs_render_without_internet(
    chromium: str, mas_up: tuple[str, MasProcess]
) -> None:
    base = mas_up[0].split("/dashboard", 1)[0]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            # What a page without internet could not load. ReDoc's "by Redocly" logo is an
            # image from its CDN: a missing logo, not a blank page, so images are let be.
            elsewhere: list[str] = []

            async def only_the_gateway(route: Any) -> None:
                if route.request.url.startswith(base):
                    await route.continue_()
                    return
                if route.request.resource_type != "image":
                    elsewhere.append(route.request.url)
                await route.abort()

            await page.route("**/*", only_the_gateway)
            await page.goto(f"{base}/docs")
            # Swagger UI drew the document: its title and an operation of the gateway.
            await expect(page.locator(".swagger-ui .title")).to_contain_text(
                "mas gateway", timeout=15_000
            )
            await expect(page.locator(".opblock-summary-path").first).to_be_visible()
            await page.goto(f"{base}/redoc")
            await expect(page.locator("h1")).to_contain_text("mas gateway", timeout=15_000)
            assert elsewhere == [], elsewhere
        finally:
            await browser.close()


async def test_a_dead_letter_is_replayed_from_the_page(chromium: str, tmp_path: Path) -> None:
    flag = tmp_path / "fragile.flag"
    flag.touch()
    env = clean_environment(MAS_AUTH__JWT_SECRET="b" * 40, MAS_TEST_FRAGILE=str(flag))
    args = ["up", "--port", "0", "--agents", "tests.integration.work_agents:Fragile"]
    process = MasProcess(args, env, tmp_path)
    try:
        line = process.wait_for(lambda line: line.strip().startswith("dashboard:"))
        process.wait_for(lambda line: "Ctrl-C stops" in line)
        token = (tmp_path / ".mas" / "dev-token").read_text().strip()
        url = f"{line.split(':', 1)[1].split()[0]}#token={token}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_FLAGS
            )
            try:
                page = await browser.new_page()
                await page.goto(url)
                await page.fill("#submit-form input[name=type]", "fragile")
                await page.fill("#submit-form input[name=payload]", '{"n": 5}')
                await page.click("#submit-form button")
                await expect(page.locator("#submit-result")).to_contain_text(
                    "dead_lettered", timeout=30_000
                )
                letter = page.locator("#dead-letters tr[data-letter-id]")
                await expect(letter).to_have_count(1, timeout=15_000)
                await expect(letter).to_contain_text("max_attempts")
                await expect(letter).to_contain_text("fragile while the flag file exists")

                flag.unlink()  # the operator fixed the cause
                await letter.get_by_role("button", name="Replay").click()
                await expect(page.locator("#dead-letters-result")).to_contain_text("replayed")
                await expect(letter).to_have_count(0, timeout=15_000)  # settled
                await expect(page.locator("#tasks tr[data-status=succeeded]")).to_contain_text(
                    '"n":5', timeout=30_000
                )
            finally:
                await browser.close()
    finally:
        process.terminate()


def _start_up(env: dict[str, str], cwd: Path, port: str = "0") -> tuple[MasProcess, str]:
    """`mas up` on `port`; the process and its dashboard URL."""
    process = MasProcess(["up", "--port", port], env, cwd)
    line = process.wait_for(lambda line: line.strip().startswith("dashboard:"))
    process.wait_for(lambda line: '"event": "runtime_started"' in line)
    return process, line.split(":", 1)[1].split()[0]


def _node_of(process: MasProcess) -> str:
    started = next(e for e in process.logs() if e.get("event") == "runtime_started")
    return str(started["node_id"])


async def test_the_page_shows_the_cluster_live_and_survives_a_gateway_restart(
    chromium: str, tmp_path: Path
) -> None:
    # One secret: the token outlives the gateway. A long grace: the open dashboard must not
    # be what the drain waits for.
    env = clean_environment(MAS_AUTH__JWT_SECRET="b" * 40, MAS_SHUTDOWN_TIMEOUT="30")
    first, dashboard = _start_up(env, tmp_path)
    token = (tmp_path / ".mas" / "dev-token").read_text().strip()
    port = dashboard.rsplit(":", 1)[1].split("/", 1)[0]
    second: MasProcess | None = None
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_FLAGS
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{dashboard}#token={token}")
                node = page.locator(f"#nodes tr[data-node-id='{_node_of(first)}']")
                await expect(node).to_contain_text("this gateway", timeout=15_000)
                await expect(page.locator("#types tr[data-agent-type=echo]")).to_contain_text(
                    "echo"
                )
                tree = page.locator("#tree-root")
                await expect(tree.locator("li[data-supervisor-id=root]")).to_contain_text(
                    "one_for_one"
                )
                await expect(tree.locator("li[data-agent-id=echo]")).to_contain_text("running")
                # Another node (a worker) on the same database: the gateway draws its tree
                # from its agents' records.
                worker_settings = Settings(
                    database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'mas.db'}"),
                    persist=True,
                    log_level="WARNING",
                )
                async with Runtime(worker_settings, node_id="worker-b") as worker:
                    team = await worker.spawn_supervisor("team")
                    await team.spawn(EchoAgent, id="helper")
                    assert worker.journal is not None
                    await worker.journal.flush()
                    drawn = page.locator("#trees div[data-node-id=worker-b]")
                    await expect(
                        drawn.locator("li[data-supervisor-id=team] li[data-agent-id=helper]")
                    ).to_contain_text("live", timeout=15_000)

                # SIGTERM: the page's event stream ends at once, so the gateway stops well
                # within its grace (it is killed, and the code is not 0, after 20 s).
                assert first.terminate(timeout=20) == 0
                await expect(page.locator("#status")).to_contain_text(
                    "reconnecting", timeout=15_000
                )
                second, _ = _start_up(env, tmp_path, port)
                await expect(page.locator("#status")).to_contain_text("live", timeout=30_000)
                await expect(
                    page.locator(f"#nodes tr[data-node-id='{_node_of(second)}']")
                ).to_be_visible(timeout=15_000)

                # Pushed, not asked for: the task the form submits appears in the table.
                await page.fill("#submit-form input[name=payload]", '{"after": "restart"}')
                await page.click("#submit-form button")
                await expect(page.locator("#tasks tr[data-status=succeeded]")).to_contain_text(
                    '"after":"restart"', timeout=15_000
                )
            finally:
                await browser.close()
    finally:
        first.terminate()
        if second is not None:
            second.terminate()


async def _open(playwright: Any, chromium: str, url: str) -> tuple[Any, Any, list[str]]:
    """A browser, its page at `url`, and what the page's Content-Security-Policy blocked."""
    browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
    page = await browser.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await page.goto(url)
    await expect(page.locator("#agents tr[data-agent-id=echo]")).to_contain_text(
        "live", timeout=15_000
    )
    return browser, page, refused


async def _submit(page: Any, agent_type: str, payload: str, ends: str) -> str:
    """Submits a task with the page's form; its id, once the form says it ended `ends`."""
    await page.fill("#submit-form input[name=type]", agent_type)
    await page.fill("#submit-form input[name=payload]", payload)
    await page.click("#submit-form button")
    result = page.locator("#submit-result")
    await expect(result).to_contain_text(f": {ends}", timeout=30_000)
    text = await result.text_content()
    assert text is not None and text.startswith("task "), text
    return text.removeprefix("task ").split(":", 1)[0]


@pytest.fixture
def mas_up_with(tmp_path: Path) -> Iterator[Any]:
    """`mas_up_with(*agents)`: the dashboard URL (with the token) of `mas up --agents ...`."""
    processes: list[MasProcess] = []

    def start(*agents: str) -> str:
        env = clean_environment(MAS_AUTH__JWT_SECRET="b" * 40)
        args = ["up", "--port", "0"]
        for agent in agents:
            args += ["--agents", f"tests.integration.work_agents:{agent}"]
        process = MasProcess(args, env, tmp_path)
        processes.append(process)
        line = process.wait_for(lambda line: line.strip().startswith("dashboard:"))
        process.wait_for(lambda line: "Ctrl-C stops" in line)
        token = (tmp_path / ".mas" / "dev-token").read_text().strip()
        return f"{line.split(':', 1)[1].split()[0]}#token={token}"

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()


async def test_the_task_table_filters_by_status(chromium: str, mas_up_with: Any) -> None:
    url = mas_up_with("Verdict")
    async with async_playwright() as playwright:
        browser, page, refused = await _open(playwright, chromium, url)
        try:
            failed = await _submit(page, "verdict", '{"refuse": "no budget"}', "failed")
            succeeded = await _submit(page, "verdict", '{"fine": 1}', "succeeded")
            tasks = page.locator("#tasks tr[data-task-id]")
            await expect(tasks).to_have_count(2, timeout=5_000)  # the snapshot's recent list

            status = page.locator("#task-filters select[name=status]")
            await status.select_option("failed")
            await expect(page.locator("#tasks-title")).to_contain_text("matching")
            await expect(tasks).to_have_count(1)
            await expect(page.locator(f"#tasks tr[data-task-id='{failed}']")).to_contain_text(
                "Refused: no budget"
            )
            await status.select_option("succeeded")
            await expect(page.locator(f"#tasks tr[data-task-id='{succeeded}']")).to_be_visible()
            await expect(tasks).to_have_count(1)

            # The filtered list follows the snapshot events: a new failure shows up in it.
            await status.select_option("failed")
            await expect(tasks).to_have_count(1)
            again = await _submit(page, "verdict", '{"refuse": "still no"}', "failed")
            await expect(page.locator(f"#tasks tr[data-task-id='{again}']")).to_contain_text(
                "still no", timeout=10_000
            )
            await expect(tasks).to_have_count(2)
            await expect(page.locator("#tasks tr[data-status=succeeded]")).to_have_count(0)

            # A refusal shows its reason and leaves the page working.
            await page.fill("#task-filters input[name=parent]", "ghost")
            await expect(page.locator("#tasks-note")).to_contain_text("'ghost'")
            await expect(tasks).to_have_count(0)
            await page.click("#clear-filters")
            await expect(page.locator("#tasks-title")).to_have_text("Recent tasks")
            await expect(tasks).to_have_count(3)
            await expect(page.locator("#status")).to_contain_text("live")
            assert refused == [], refused
        finally:
            await browser.close()


async def test_a_clicked_task_shows_its_payload_result_and_message_log(
    chromium: str, mas_up_with: Any
) -> None:
    url = mas_up_with()
    async with async_playwright() as playwright:
        browser, page, refused = await _open(playwright, chromium, url)
        try:
            task_id = await _submit(page, "echo", '{"text": "look closer"}', "succeeded")
            await (
                page.locator(f"#tasks tr[data-task-id='{task_id}']")
                .get_by_role("button", name=task_id)
                .click()
            )
            detail = page.locator("#task-detail")
            await expect(detail).to_be_visible()
            await expect(page.locator("#detail-id")).to_have_text(task_id)
            await expect(page.locator("#detail-fields dd[data-field=status]")).to_have_text(
                "succeeded"
            )
            await expect(page.locator("#detail-fields dd[data-field=target]")).to_have_text(
                "type:echo"
            )
            await expect(page.locator("#detail-payload")).to_contain_text('"text": "look closer"')
            await expect(page.locator("#detail-outcome-title")).to_have_text("Result")
            await expect(page.locator("#detail-outcome")).to_contain_text('"text": "look closer"')
            await expect(page.locator("#detail-fields dd[data-field=finished]")).to_contain_text(
                "ran"
            )
            # Its message log: the task's message, handled by the echo agent.
            message = page.locator(f"#detail-messages tr[data-message-id='{task_id}']")
            await expect(message).to_contain_text("echo")
            await expect(message).to_contain_text('"text":"look closer"')
            await expect(page.locator("#detail-children-note")).to_have_text("none")

            # What the gateway refuses, or the page cannot read, says so in its place; the
            # rest of the detail shows as before.
            async def messages_refused(route: Any) -> None:
                problem = {"title": "Service Unavailable", "status": 503, "detail": "db away"}
                await route.fulfill(
                    status=503, content_type="application/problem+json", json=problem
                )

            async def odd_tree(route: Any) -> None:
                response = await route.fetch()
                tree = await response.json()
                tree["task"]["created_at"] = {"not": "a time"}
                tree["children"] = [{"id": "odd", "unreadable": "ValueError: from the future"}]
                await route.fulfill(response=response, json=tree)

            await page.route("**/tasks/*/messages", messages_refused)
            await page.route("**/tasks/*/tree", odd_tree)
            await page.click("#detail-refresh")
            await expect(page.locator("#detail-messages-note")).to_contain_text("db away")
            await expect(page.locator("#detail-messages tr")).to_have_count(0)
            await expect(page.locator("#detail-children")).to_contain_text(
                "odd — cannot show this row (unreadable: ValueError: from the future)"
            )
            await expect(page.locator("#detail-fields dd[data-field=created]")).to_contain_text(
                '{"not":"a time"}'
            )
            await expect(page.locator("#detail-payload")).to_contain_text('"text": "look closer"')
            await page.click("#detail-close")
            await expect(detail).to_be_hidden()
            assert refused == [], refused
        finally:
            await browser.close()


async def test_a_workflow_tasks_detail_shows_its_children_and_steps(
    chromium: str, mas_up_with: Any
) -> None:
    url = mas_up_with("LongAsk", "EffectEcho")
    async with async_playwright() as playwright:
        browser, page, refused = await _open(playwright, chromium, url)
        try:
            task_id = await _submit(page, "long_ask", '{"delay": 0}', "succeeded")
            await (
                page.locator(f"#tasks tr[data-task-id='{task_id}']")
                .get_by_role("button", name=task_id)
                .click()
            )
            await expect(page.locator("#detail-outcome")).to_contain_text('"answer": 7')
            steps = page.locator("#detail-steps tr[data-seq]")
            await expect(steps).to_have_count(3)
            await expect(steps.nth(0)).to_contain_text("step 1")
            await expect(steps.nth(1)).to_contain_text("ask")
            await expect(steps.nth(1)).to_contain_text("type:effect_echo")
            await expect(steps.nth(2)).to_contain_text("step 2")
            children = page.locator("#detail-children tr[data-task-id]")
            await expect(children).to_have_count(1)
            await expect(children).to_contain_text("type:effect_echo")
            await expect(children).to_contain_text("succeeded")
            child_id = await children.get_attribute("data-task-id")
            assert child_id is not None
            # The trace's messages: the task's, the ask's (a child task's) and its answer.
            own = page.locator(f"#detail-messages tr[data-message-id='{task_id}']")
            await expect(own).to_contain_text("long_ask")
            ask = page.locator("#detail-messages tr[data-message-type=q]")
            await expect(ask).to_contain_text(child_id)
            await expect(ask).to_contain_text("effect_echo")
            await expect(
                page.locator("#detail-messages tr[data-message-type='q.reply']")
            ).to_have_count(1)

            # A child opens as a task of its own, whose parent leads back.
            await children.get_by_role("button", name=child_id).click()
            await expect(page.locator("#detail-id")).to_have_text(child_id)
            await expect(page.locator("#detail-payload")).to_contain_text('"i": 7')
            parent = page.locator("#detail-fields dd[data-field=parent]")
            await parent.get_by_role("button", name=task_id).click()
            await expect(page.locator("#detail-id")).to_have_text(task_id)
            await expect(steps).to_have_count(3)
            assert refused == [], refused
        finally:
            await browser.close()
