"""The console in a real browser: headless Chromium driven by Selenium against a running
gateway. Screenshots of every page land in ``AIGW_TEST_ARTIFACTS`` (default
``tests/artifacts/console``)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.console_gateway import MASTER_KEY, console_gateway, make_key
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver: Any = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("Chromium or chromedriver is not installed (Debian: chromium, chromium-driver)",
                allow_module_level=True)

from selenium.common.exceptions import NoSuchElementException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ARTIFACTS = Path(os.environ.get("AIGW_TEST_ARTIFACTS",
                                Path(__file__).parents[1] / "artifacts")) / "console"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[Gateway]:
    with console_gateway(tmp_path_factory.mktemp("console-browser"), fake_openai[0]) as gw:
        yield gw


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _until(driver: Any, check: Callable[[Any], Any], within: float = 15) -> Any:
    return WebDriverWait(driver, within, poll_frequency=0.1).until(check)


def _sign_in(driver: Any, gateway: Gateway, key: str) -> None:
    driver.get(gateway.base_url + "/ui/login")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.XPATH, "//button[text()='Sign in']").click()
    _until(driver, lambda d: d.find_elements(By.ID, "signed-in-as"))


def _chat(gateway: Gateway, key: str) -> int:
    return httpx.post(gateway.base_url + "/v1/chat/completions", timeout=15,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": "from the browser test"}]}
                      ).status_code


def test_create_a_key_use_it_see_the_call_and_revoke_it(browser: Any, gateway: Gateway) -> None:
    _sign_in(browser, gateway, MASTER_KEY)
    _shot(browser, "overview-empty")
    browser.get(gateway.base_url + "/ui/keys")
    if not browser.find_element(By.ID, "alias").is_displayed():
        browser.find_element(By.XPATH, "//summary[text()='New key']").click()
    browser.find_element(By.ID, "alias").send_keys("made-in-browser")
    browser.find_element(By.ID, "rpm").send_keys("60")
    browser.find_element(By.XPATH, "//button[text()='Create key']").click()
    secret_field = _until(browser, lambda d: d.find_element(By.ID, "secret"))
    secret = secret_field.get_attribute("value")
    assert secret.startswith("sk-aigw-")
    browser.find_element(By.XPATH, "//button[text()='Copy secret']").click()
    _shot(browser, "key-created")
    assert _chat(gateway, secret) == 200

    browser.get(gateway.base_url + "/ui/logs")
    deadline = time.monotonic() + 20
    while not browser.find_elements(By.CSS_SELECTOR, "#logs tbody tr"):
        assert time.monotonic() < deadline, "the call never showed in the logs page"
        time.sleep(0.5)
        browser.refresh()
    _shot(browser, "logs")
    browser.find_element(By.CSS_SELECTOR, "#logs tbody tr a").click()
    _until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "section.attempt"))
    assert "gpt-4o-mini" in browser.page_source
    _shot(browser, "log-detail")

    browser.get(gateway.base_url + "/ui/keys")
    row = browser.find_element(By.XPATH, "//tr[td[text()='made-in-browser']]")
    row.find_element(By.XPATH, ".//button[text()='Revoke']").click()
    browser.switch_to.alert.accept()
    _until(browser, lambda d: d.find_element(
        By.XPATH, "//tr[td[text()='made-in-browser']]/td[7]").text == "revoked")
    _shot(browser, "keys")
    assert _chat(gateway, secret) == 401


def test_every_page_renders_and_is_saved(browser: Any, gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="for-charts")
    for _ in range(3):
        assert _chat(gateway, secret) == 200
    _sign_in(browser, gateway, MASTER_KEY)
    deadline = time.monotonic() + 20
    while not browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar"):
        assert time.monotonic() < deadline, "no chart on the overview"
        time.sleep(0.5)
        browser.refresh()
    _shot(browser, "overview")
    for page in ("teams", "models", "batches", "playground", "audit"):
        browser.get(gateway.base_url + f"/ui/{page}")
        assert browser.find_elements(By.TAG_NAME, "h1"), page
        assert "Not allowed" not in browser.page_source
        _shot(browser, page)
    # The sign-in that opened this session is in the audit log, as is the key made above.
    deadline = time.monotonic() + 20
    browser.get(gateway.base_url + "/ui/audit")
    while "console.sign_in" not in browser.page_source or "key.create" not in (
            browser.page_source):
        assert time.monotonic() < deadline, "no audit entries on the audit page"
        time.sleep(0.5)
        browser.refresh()
    _shot(browser, "audit")
    browser.find_element(By.XPATH, "//button[text()='Switch theme']").click()
    assert browser.execute_script("return document.documentElement.dataset.theme") == "dark"
    browser.get(gateway.base_url + "/ui")
    _until(browser, lambda d: d.find_elements(By.ID, "signed-in-as"))
    _shot(browser, "overview-dark")


def test_the_playground_streams_an_answer_with_tokens_and_cost(
        browser: Any, gateway: Gateway) -> None:
    _, secret = make_key(gateway, alias="playground-user")
    _sign_in(browser, gateway, secret)
    browser.get(gateway.base_url + "/ui/playground")
    Select(browser.find_element(By.ID, "pg-model")).select_by_value("gpt-4o-mini")
    browser.find_element(By.ID, "pg-message").send_keys("Say something")
    browser.find_element(By.XPATH, "//button[text()='Send']").click()
    _until(browser, lambda d: "tokens in" in d.find_element(By.ID, "pg-usage").text)
    assert browser.find_element(By.ID, "pg-answer").text.strip()
    assert "cost $" in browser.find_element(By.ID, "pg-usage").text
    assert browser.find_element(By.ID, "pg-error").get_attribute("hidden") is not None
    _shot(browser, "playground-answer")


def test_a_plain_key_gets_no_admin_pages_and_a_forged_form_is_refused(
        browser: Any, gateway: Gateway) -> None:
    target_id, target = make_key(gateway, alias="target")
    _, secret = make_key(gateway, alias="plain")
    _sign_in(browser, gateway, secret)
    nav = browser.find_element(By.TAG_NAME, "nav").text
    assert "Keys" not in nav and "Teams" not in nav and "Logs" in nav
    browser.get(gateway.base_url + "/ui/keys")
    assert "Not allowed" in browser.page_source
    _shot(browser, "plain-key-denied")
    # The master key's form, with its token removed, posted from the page: refused.
    browser.get(gateway.base_url + "/ui/login")
    _sign_in(browser, gateway, MASTER_KEY)
    browser.get(gateway.base_url + "/ui/keys")
    row = browser.find_element(By.XPATH, "//tr[td[text()='target']]")
    form = row.find_element(By.XPATH, ".//form[contains(@action, '/revoke')]")
    browser.execute_script("arguments[0].querySelector('[name=csrf]').remove();"
                           "arguments[0].removeAttribute('data-confirm');"
                           "HTMLFormElement.prototype.submit.call(arguments[0]);", form)
    _until(browser, lambda d: "security token" in d.page_source)
    assert _chat(gateway, target) == 200
    del target_id


def test_it_works_on_a_phone_width_screen(browser: Any, gateway: Gateway) -> None:
    browser.set_window_size(390, 844)
    _sign_in(browser, gateway, MASTER_KEY)
    for page in ("", "/keys", "/logs"):
        browser.get(gateway.base_url + "/ui" + page)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (page, overflow)
        _shot(browser, "phone" + (page.replace("/", "-") or "-overview"))
    try:
        browser.find_element(By.XPATH, "//button[text()='Sign out']").click()
    except NoSuchElementException:
        pytest.fail("no sign-out button on a phone-width page")
    _until(browser, lambda d: d.find_elements(By.ID, "key"))


def test_a_team_admin_sees_and_touches_only_its_own_team(browser: Any, gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {MASTER_KEY}"}

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(gateway.base_url + "/admin" + path, json=body, headers=headers,
                       timeout=10)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    mine = post("/teams", {"alias": "browser-team"})["id"]
    theirs = post("/teams", {"alias": "other-team"})["id"]
    admin = post("/keys", {"alias": "browser-team-admin", "team_id": mine, "role": "team_admin"})
    ours = post("/keys", {"alias": "ours", "team_id": mine})
    other = post("/keys", {"alias": "not-ours", "team_id": theirs})
    _sign_in(browser, gateway, admin["secret"])
    assert "team admin" in browser.find_element(By.ID, "signed-in-as").text
    browser.get(gateway.base_url + "/ui/keys")
    listed = browser.find_element(By.ID, "keys").text
    assert "ours" in listed and "not-ours" not in listed and other["id"] not in listed
    _shot(browser, "team-admin-keys")
    browser.get(gateway.base_url + f"/ui/keys/{other['id']}")
    assert "Not allowed" in browser.page_source
    browser.get(gateway.base_url + "/ui/teams")
    assert "Not allowed" in browser.page_source
    # A key made here lands in the admin's team, whatever the form is made to say.
    browser.get(gateway.base_url + "/ui/keys")
    options = [o.get_attribute("value") for o in
               Select(browser.find_element(By.ID, "team_id")).options]
    assert options == [mine]
    browser.find_element(By.XPATH, "//summary[text()='New key']").click()
    browser.find_element(By.ID, "alias").send_keys("made-by-team-admin")
    browser.find_element(By.XPATH, "//button[text()='Create key']").click()
    _until(browser, lambda d: d.find_element(By.ID, "secret"))
    keys = httpx.get(gateway.base_url + "/admin/keys", headers=headers, timeout=10).json()
    made = next(k for k in keys["data"] if k["alias"] == "made-by-team-admin")
    assert made["team_id"] == mine and made["role"] == "user"
    assert _chat(gateway, ours["secret"]) == 200 and _chat(gateway, other["secret"]) == 200
