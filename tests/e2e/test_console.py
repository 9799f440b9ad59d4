"""The console over plain HTTP against a running gateway: sign-in and sessions, roles,
CSRF, the security headers, and each page answering with real data. The browser tests are
in test_console_browser.py."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.console_gateway import MASTER_KEY, console_gateway, csrf_of, make_key, sign_in
from tests.fakes.openai_server import FakeOpenAIState
from tests.harness import Gateway

pytestmark = pytest.mark.e2e

ROOT = "/ai-api"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory,
            fake_openai: tuple[str, FakeOpenAIState]) -> Iterator[Gateway]:
    with console_gateway(tmp_path_factory.mktemp("console"), fake_openai[0], ROOT) as gw:
        yield gw


def _client(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.base_url, timeout=15)


def _chat(gateway: Gateway, key: str, text: str = "hello console") -> httpx.Response:
    return httpx.post(gateway.base_url + "/v1/chat/completions", timeout=15,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": text}]})


def test_a_page_without_a_session_goes_to_sign_in_and_the_cookie_is_locked_down(
        gateway: Gateway) -> None:
    with _client(gateway) as client:
        r = client.get(f"{ROOT}/ui/keys")
        assert r.status_code == 303 and r.headers["location"] == f"{ROOT}/ui/login"
        landing = sign_in(client, MASTER_KEY, ROOT)
        assert landing.status_code == 200 and "Overview" in landing.text
        cookie = next(h for h in landing.history[0].headers.get_list("set-cookie")
                      if h.startswith("aigw_console="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert f"Path={ROOT}/ui" in cookie
        assert MASTER_KEY not in cookie
        csp = landing.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        # Behind TLS (a proxy saying so) both cookies are Secure too.
        https = {"x-forwarded-proto": "https"}
        login = httpx.get(f"{gateway.base_url}{ROOT}/ui/login", headers=https, timeout=15)
        assert "Secure" in login.headers["set-cookie"]
        token = login.text.split('name="login_token" value="')[1].split('"')[0]
        secured = httpx.post(f"{gateway.base_url}{ROOT}/ui/login", timeout=15,
                             data={"login_token": token, "key": MASTER_KEY},
                             headers={**https, "cookie": f"aigw_console_login={token}"})
        assert secured.status_code == 303
        assert any("Secure" in h for h in secured.headers.get_list("set-cookie")
                   if h.startswith("aigw_console="))


def test_a_wrong_key_is_refused_and_a_forged_login_form_too(gateway: Gateway) -> None:
    with _client(gateway) as client:
        r = sign_in(client, "sk-not-a-key", ROOT)
        assert r.status_code == 401 and "not accepted" in r.text
        forged = client.post(f"{ROOT}/ui/login", data={"login_token": "x", "key": MASTER_KEY})
        assert forged.status_code == 403
        assert "aigw_console=" not in forged.headers.get("set-cookie", "")


def test_every_page_renders_for_the_master_key(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="pages")
    assert _chat(gateway, secret).status_code == 200
    with _client(gateway) as client:
        sign_in(client, MASTER_KEY, ROOT)
        for path in ("", "/keys", "/teams", "/logs", "/models", "/batches", "/playground"):
            r = client.get(f"{ROOT}/ui{path}")
            assert r.status_code == 200, (path, r.text[:500])
            assert "Sign out" in r.text
        assert key_id in client.get(f"{ROOT}/ui/keys").text
        assert "gpt-4o-mini" in client.get(f"{ROOT}/ui/models").text


def test_a_key_is_created_edited_rotated_and_revoked_in_the_console(gateway: Gateway) -> None:
    with _client(gateway) as client:
        page = sign_in(client, MASTER_KEY, ROOT)
        csrf = csrf_of(page.text)
        made = client.post(f"{ROOT}/ui/keys", data={
            "csrf": csrf, "alias": "from-console", "team_id": "", "allowed_models": "",
            "rpm": "100", "tpm": "", "max_parallel": "", "daily_budget_usd": "1.50",
            "monthly_budget_usd": ""})
        assert made.status_code == 200, made.text
        secret = made.text.split('id="secret" class="secret" readonly value="')[1].split('"')[0]
        assert secret.startswith("sk-aigw-")
        assert _chat(gateway, secret).status_code == 200
        listed = httpx.get(gateway.base_url + "/admin/keys", timeout=10,
                           headers={"authorization": f"Bearer {MASTER_KEY}"}).json()["data"]
        key = next(k for k in listed if k["alias"] == "from-console")
        assert key["limits"]["rpm"] == 100 and key["limits"]["daily_budget_usd"] == "1.50"
        # The secret is never shown again: not in the list, nor on the edit page.
        assert secret not in client.get(f"{ROOT}/ui/keys").text
        edit = client.get(f"{ROOT}/ui/keys/{key['id']}")
        assert secret not in edit.text
        saved = client.post(f"{ROOT}/ui/keys/{key['id']}", data={
            "csrf": csrf, "alias": "renamed", "team_id": "", "allowed_models": "gpt-4o-mini",
            "rpm": "", "tpm": "", "max_parallel": "", "daily_budget_usd": "",
            "monthly_budget_usd": ""})
        assert saved.status_code == 303
        bad = client.post(f"{ROOT}/ui/keys/{key['id']}", data={
            "csrf": csrf, "alias": "renamed", "rpm": "-3"})
        assert bad.status_code == 400 and "rpm" in bad.text
        rotated = client.post(f"{ROOT}/ui/keys/{key['id']}/rotate",
                              data={"csrf": csrf, "grace_seconds": "0"})
        new_secret = rotated.text.split('readonly value="')[1].split('"')[0]
        assert new_secret != secret
        assert _chat(gateway, secret).status_code == 401
        assert _chat(gateway, new_secret).status_code == 200
        revoked = client.post(f"{ROOT}/ui/keys/{key['id']}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        assert _chat(gateway, new_secret).status_code == 401


def test_a_form_post_without_its_csrf_token_is_refused(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="csrf-target")
    with _client(gateway) as client:
        sign_in(client, MASTER_KEY, ROOT)
        for data in ({}, {"csrf": "forged"}):
            r = client.post(f"{ROOT}/ui/keys/{key_id}/revoke", data=data)
            assert r.status_code == 403 and "security token" in r.text
        r = client.post(f"{ROOT}/ui/playground/chat", json={"model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 403
    assert _chat(gateway, secret).status_code == 200  # not revoked


def test_a_plain_key_sees_only_its_own_and_cannot_reach_admin_pages(gateway: Gateway) -> None:
    _, mine = make_key(gateway, alias="plain-viewer")
    other_id, other = make_key(gateway, alias="someone-else")
    assert _chat(gateway, mine, "mine mine").status_code == 200
    assert _chat(gateway, other, "theirs theirs").status_code == 200
    with _client(gateway) as client:
        page = sign_in(client, mine, ROOT)
        assert "plain-viewer (key)" in page.text and 'href="/ai-api/ui/keys"' not in page.text
        csrf = csrf_of(page.text)
        for path in ("/keys", "/teams", "/models", f"/keys/{other_id}"):
            assert client.get(f"{ROOT}/ui{path}").status_code == 403, path
        for path, data in ((f"/keys/{other_id}/revoke", {"csrf": csrf}),
                           ("/keys", {"csrf": csrf, "alias": "sneaky"}),
                           ("/teams", {"csrf": csrf, "alias": "sneaky"})):
            assert client.post(f"{ROOT}/ui{path}", data=data).status_code == 403, path
        assert _chat(gateway, other).status_code == 200  # not revoked
        deadline = time.monotonic() + 20
        while True:
            logs = client.get(f"{ROOT}/ui/logs")
            if logs.text.count("gpt-4o-mini") >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert logs.status_code == 200 and "gpt-4o-mini" in logs.text
        # Even asking for another key's logs shows only this key's.
        spy = client.get(f"{ROOT}/ui/logs", params={"key_id": other_id})
        assert other_id not in spy.text
        assert other_id not in client.get(f"{ROOT}/ui").text


def test_revoking_a_key_ends_its_console_sessions_at_once(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="short-lived")
    with _client(gateway) as client:
        sign_in(client, secret, ROOT)
        assert client.get(f"{ROOT}/ui").status_code == 200
        r = httpx.delete(f"{gateway.base_url}/admin/keys/{key_id}", timeout=10,
                         headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert r.status_code == 200
        deadline = time.monotonic() + 5
        while client.get(f"{ROOT}/ui").status_code == 200:
            assert time.monotonic() < deadline, "the revoked key's session goes on"
            time.sleep(0.1)
        assert client.get(f"{ROOT}/ui").headers["location"] == f"{ROOT}/ui/login"


def test_signing_out_ends_the_session(gateway: Gateway) -> None:
    with _client(gateway) as client:
        page = sign_in(client, MASTER_KEY, ROOT)
        stolen = client.cookies.get("aigw_console")
        out = client.post(f"{ROOT}/ui/logout", data={"csrf": csrf_of(page.text)})
        assert out.status_code == 303
    # The old session id, replayed, opens nothing.
    with httpx.Client(base_url=gateway.base_url, timeout=15,
                      cookies={"aigw_console": stolen or ""}) as replay:
        assert replay.get(f"{ROOT}/ui").status_code == 303


def test_the_playground_streams_an_answer_through_the_gateway(gateway: Gateway) -> None:
    key_id, secret = make_key(gateway, alias="player")
    with _client(gateway) as client:
        page = sign_in(client, secret, ROOT)
        csrf = csrf_of(page.text)
        with client.stream("POST", f"{ROOT}/ui/playground/chat",
                           headers={"x-csrf-token": csrf},
                           json={"model": "gpt-4o-mini", "stream": True,
                                 "stream_options": {"include_usage": True},
                                 "messages": [{"role": "user", "content": "play"}]}) as r:
            assert r.status_code == 200
            body = "".join(r.iter_text())
        assert body.rstrip().endswith("data: [DONE]") and '"usage"' in body
        # Accounted to the signed-in key, as any call.
        deadline = time.monotonic() + 20
        while True:
            rows = httpx.get(gateway.base_url + "/v1/usage/logs", timeout=10,
                             headers={"authorization": f"Bearer {secret}"}).json()["data"]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert rows and rows[0]["key_id"] == key_id


def test_static_files_and_unknown_names(gateway: Gateway) -> None:
    with _client(gateway) as client:
        css = client.get(f"{ROOT}/ui/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert client.get(f"{ROOT}/ui/static/../app.py").status_code == 404
        assert client.get(f"{ROOT}/ui/static/nothing.js").status_code == 404


def test_the_console_stays_out_of_the_openapi_document(gateway: Gateway) -> None:
    r = httpx.get(gateway.base_url + "/openapi.json", timeout=10,
                  headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200
    assert not [p for p in r.json()["paths"] if p.startswith("/ui")]


def test_console_actions_and_sign_ins_are_in_the_audit_log_without_secrets(
        gateway: Gateway) -> None:
    with _client(gateway) as client:
        assert sign_in(client, "sk-wrong-guess-123456", ROOT).status_code == 401
        page = sign_in(client, MASTER_KEY, ROOT)
        csrf = csrf_of(page.text)
        made = client.post(f"{ROOT}/ui/keys", data={"csrf": csrf, "alias": "audited"})
        secret = made.text.split('readonly value="')[1].split('"')[0]
        key_id = next(k["id"] for k in httpx.get(
            gateway.base_url + "/admin/keys", timeout=10,
            headers={"authorization": f"Bearer {MASTER_KEY}"}).json()["data"]
            if k["alias"] == "audited")
        client.post(f"{ROOT}/ui/keys/{key_id}", data={"csrf": csrf, "alias": "audited",
                                                        "rpm": "42"})
        client.post(f"{ROOT}/ui/keys/{key_id}/revoke", data={"csrf": csrf})
        deadline = time.monotonic() + 20
        while True:
            events = httpx.get(gateway.base_url + "/admin/audit", timeout=10,
                               params={"target_id": key_id},
                               headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
            actions = sorted(e["action"] for e in events["data"])
            if len(actions) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert actions == ["key.create", "key.revoke", "key.update"]
        assert all(e["actor"] == "master" for e in events["data"])
        update = next(e for e in events["data"] if e["action"] == "key.update")
        assert update["changes"]["limits.rpm"] == {"before": None, "after": 42}
        page = client.get(f"{ROOT}/ui/audit", params={"target_id": key_id})
        assert page.status_code == 200 and "key.revoke" in page.text
        everything = client.get(f"{ROOT}/ui/audit").text
        assert "console.sign_in_failed" in everything and "console.sign_in" in everything
        for leaked in (secret, MASTER_KEY, "sk-wrong-guess-123456"):
            assert leaked not in everything
            assert leaked not in json_text(gateway)


def json_text(gateway: Gateway) -> str:
    return httpx.get(gateway.base_url + "/admin/audit", timeout=10, params={"limit": 1000},
                     headers={"authorization": f"Bearer {MASTER_KEY}"}).text
