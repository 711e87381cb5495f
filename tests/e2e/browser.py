"""Browser journeys against the local deployment, in a real browser: Debian's chromium driven
by PyPI playwright (never `playwright install`: the machine's own chromium). Each journey ends
in checks of what the page shows; a screenshot of each is kept in SHOTS.

    python3 tests/e2e/browser.py BASE_URL USER PASSWORD NAMESPACE ENVIRONMENT SHOTS

BASE_URL is the API prefix (`http://host:port/conda-store/`). Prints `ok   NAME` or
`FAIL NAME: why` per check and exits non-zero when one failed.
"""

import sys
import traceback
from datetime import datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

BASE, USER, PASSWORD, NAMESPACE, ENVIRONMENT, SHOTS = sys.argv[1:7]
BASE = BASE.rstrip("/") + "/"
SHOTS = Path(SHOTS)
SHOTS.mkdir(parents=True, exist_ok=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
failed = 0


def check(name, fn):
    global failed
    try:
        fn()
        print(f"ok   browser: {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        failed += 1
        print(f"FAIL browser: {name}: {e}", flush=True)
        traceback.print_exc(limit=2)


def session_cookies(context):
    return [c for c in context.cookies() if c["name"] == "conda-store-auth" and c["value"]]


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)

    # An anonymous visitor is sent to sign in, and comes back to the page asked for.
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    page = ctx.new_page()

    def anonymous_is_sent_to_sign_in():
        page.goto(BASE + "ui/")
        assert "/login/" in page.url, page.url
        page.get_by_role("heading", name="Sign in to conda-store").wait_for()
        page.screenshot(path=str(SHOTS / "01-sign-in.png"))
    check("an anonymous visitor of the UI is sent to the sign-in page", anonymous_is_sent_to_sign_in)

    def wrong_password_is_refused():
        page.fill("#username", USER)
        page.fill("#password", PASSWORD + "-wrong")
        page.click("button[type=submit]")
        page.get_by_role("alert").wait_for()
        assert not session_cookies(ctx), "a session cookie was set"
    check("a wrong password shows an error and makes no session", wrong_password_is_refused)

    def signs_in_and_sees_namespaces():
        page.fill("#username", USER)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.get_by_role("button", name="Log out").wait_for(timeout=30000)
        assert "/ui" in page.url, page.url
        assert session_cookies(ctx), "no session cookie"
        page.get_by_text(NAMESPACE, exact=True).first.wait_for(timeout=30000)
        page.screenshot(path=str(SHOTS / "02-namespaces.png"))
    check(f"signed in with the users file, the UI lists namespace {NAMESPACE}", signs_in_and_sees_namespaces)

    def opens_the_environment():
        page.get_by_text(NAMESPACE, exact=True).first.click()
        page.get_by_text(ENVIRONMENT, exact=True).first.click()
        page.get_by_text("Status: Completed").wait_for(timeout=30000)
        page.get_by_text("Installed Packages").wait_for()
        assert page.url.endswith(f"/ui/{NAMESPACE}/{ENVIRONMENT}"), page.url
        page.screenshot(path=str(SHOTS / "03-environment.png"))
    check(f"the environment {ENVIRONMENT} opens with its completed build and installed packages",
          opens_the_environment)

    def the_build_shows_its_time():
        env = page.request.get(f"{BASE}api/v1/environment/{NAMESPACE}/{ENVIRONMENT}/").json()["data"]
        build = page.request.get(f"{BASE}api/v1/build/{env['current_build_id']}/").json()["data"]
        ended = datetime.fromisoformat(build["ended_on"])  # naive UTC, as conda-store serves it
        assert ended.tzinfo is None, build["ended_on"]
        hour = ended.hour % 12 or 12
        want = f"{hour}:{ended.minute:02d} {'AM' if ended.hour < 12 else 'PM'} - Active"
        page.get_by_text(want).first.wait_for(timeout=10000)
    check("the build's end time is shown as the API gives it (UTC, no offset)", the_build_shows_its_time)

    def a_viewer_cannot_edit():
        assert page.get_by_role("button", name="Edit").is_disabled(), "Edit is enabled for a viewer"
    check("for a viewer the UI's Edit button is disabled", a_viewer_cannot_edit)

    def a_sub_path_is_the_ui():
        resp = page.goto(BASE + "ui/" + NAMESPACE + "/" + ENVIRONMENT)
        assert resp.status == 200, resp.status
        assert "condaStoreConfig" in page.content()
    check("a sub-path of ui/ is answered with the UI's page (the browser router)", a_sub_path_is_the_ui)

    def signs_out():
        page.goto(BASE + "logout/")
        page.click("button[type=submit]")
        page.wait_for_url("**/login/**")
        assert not session_cookies(ctx), "the session cookie is still there"
        page.screenshot(path=str(SHOTS / "04-signed-out.png"))
    check("the sign-out page ends the session and goes back to sign in", signs_out)
    ctx.close()

    # Bad input: an off-site `next`, a forged CSRF token; no session either way.
    ctx = browser.new_context()
    page = ctx.new_page()

    def off_site_next_is_refused():
        resp = page.goto(BASE + "login/?next=https://evil.example/steal")
        assert resp.status == 400, resp.status
        assert "another site" in page.content()
        assert not session_cookies(ctx)
    check("a next pointing off-site is refused with a page", off_site_next_is_refused)

    def forged_csrf_is_refused():
        page.goto(BASE + "login/")
        page.evaluate("document.querySelector('input[name=_csrf]').value = 'forged'")
        page.fill("#username", USER)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.get_by_role("alert").wait_for()
        assert "expired or came from another page" in page.content()
        assert not session_cookies(ctx), "a session cookie was set"
    check("a forged CSRF token is refused, no session made", forged_csrf_is_refused)

    def cross_site_form_post_is_refused():
        # What another site's page can do: post the form without the cookie it cannot read.
        resp = ctx.request.post(BASE + "login/", form={"username": USER, "password": PASSWORD,
                                                        "_csrf": "x", "next": "/"},
                                headers={"Cookie": ""}, max_redirects=0)
        assert resp.status == 403, resp.status
        assert not any(h for h in resp.headers_array if h["name"].lower() == "set-cookie"
                       and h["value"].startswith("conda-store-auth=") and "Max-Age=0" not in h["value"])
    check("a form post from another site (no CSRF cookie) is refused", cross_site_form_post_is_refused)
    ctx.close()
    browser.close()

sys.exit(1 if failed else 0)
