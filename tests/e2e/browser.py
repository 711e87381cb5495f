"""Browser journeys against the local deployment, in a real browser: Debian's chromium driven
by PyPI playwright (never `playwright install`: the machine's own chromium). Each journey ends
in checks of what the page shows; a screenshot of each is kept in SHOTS.

    python3 tests/e2e/browser.py BASE_URL USER PASSWORD NAMESPACE ENVIRONMENT SHOTS

BASE_URL is the API prefix (`http://host:port/conda-store/`). Prints `ok   NAME` or
`FAIL NAME: why` per check and exits non-zero when one failed.
"""

import os
import sys
import traceback
from datetime import datetime
from pathlib import Path

from playwright.sync_api import sync_playwright

BASE, USER, PASSWORD, NAMESPACE, ENVIRONMENT, SHOTS = sys.argv[1:7]
# With CONDA_STORE_E2E_SSO set, the gateway signs people in with npm's oidc-provider ("Test
# IdP": any user name; carol is in data-team) and a JupyterHub (dana, HUB_PASSWORD, in
# data-team), groups mapped by `*:{group}/*=editor` (tests/support/identity-providers.sh).
SSO = bool(os.environ.get("CONDA_STORE_E2E_SSO"))
HUB_PASSWORD = os.environ.get("HUB_PASSWORD", "hub-pw")
# Which journeys run: all, or a comma-separated list of groups (password, sso), for working
# on one.
ONLY = set(os.environ.get("BROWSER_JOURNEYS", "password,sso").split(","))
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


def named_cookie(context, name):
    return next((c for c in context.cookies() if c["name"] == name and c["value"]), None)


def permission(page):
    """What the gateway says of the page's session: (primary namespace, entity roles)."""
    d = page.request.get(BASE + "api/v1/permission/").json()["data"]
    return d["primary_namespace"], d["entity_roles"]


def password_journeys(browser):
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


def sso_journeys(browser):
    # Sign-in with the OpenID Connect provider: its own pages, back to the UI, groups mapped.
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    page = ctx.new_page()
    seen = {}
    page.on("request", lambda r: seen.setdefault("callback", r.url) if "/oauth_callback/" in r.url else None)

    def signs_in_with_the_issuer():
        page.goto(BASE + "ui/")
        page.get_by_role("link", name="Sign in with Test IdP").click()
        page.locator("input[name=login]").wait_for()
        assert not page.url.startswith(BASE), page.url
        seen["flow"] = named_cookie(ctx, "conda-store-oauth")
        assert seen["flow"], "no sign-in flow cookie"
        page.screenshot(path=str(SHOTS / "05-oidc-provider.png"))
        page.fill("input[name=login]", "carol")
        page.fill("input[name=password]", "anything")
        page.click("button[type=submit]")
        page.get_by_role("button", name="Continue").click()  # the provider's consent page
        page.get_by_role("button", name="Log out").wait_for(timeout=30000)
        assert page.url.startswith(BASE + "ui"), page.url
        primary, roles = permission(page)
        assert primary == "carol", primary
        assert roles.get("data-team/*") == ["editor"], roles
        assert not named_cookie(ctx, "conda-store-oauth"), "the flow cookie outlived the sign-in"
        page.screenshot(path=str(SHOTS / "06-signed-in-with-oidc.png"))
    check("signed in with the OpenID Connect provider: back in the UI as carol, the group data-team "
          "mapped to editor", signs_in_with_the_issuer)

    def a_replayed_answer_is_refused():
        other = browser.new_context()
        other.add_cookies([seen["flow"]])
        p2 = other.new_page()
        resp = p2.goto(seen["callback"])
        assert resp.status == 400, resp.status
        p2.get_by_text("already used").wait_for()
        assert not session_cookies(other), "a session was made"
        p2.screenshot(path=str(SHOTS / "07-replayed-sign-in.png"))
        other.close()
    check("the provider's answer replayed (with its flow cookie) is refused, no session", a_replayed_answer_is_refused)

    def an_ended_session_is_told_so():
        other = browser.new_context()
        other.add_cookies(session_cookies(ctx))
        p2 = other.new_page()
        p2.goto(BASE + "ui/")
        p2.get_by_role("button", name="Log out").wait_for(timeout=30000)  # the copy works...
        page.goto(BASE + "logout/")
        page.click("button[type=submit]")  # ... until the session is signed out
        page.wait_for_url("**/login/**")
        p2.goto(BASE + "ui/")
        assert "/login/" in p2.url, p2.url
        p2.get_by_text("Your session has ended").wait_for()
        assert not session_cookies(other), "the ended session's cookie stayed"
        p2.screenshot(path=str(SHOTS / "08-session-ended.png"))
        other.close()
    check("a session signed out elsewhere is sent to sign in and told it ended", an_ended_session_is_told_so)
    ctx.close()

    def a_forged_state_is_refused():
        other = browser.new_context()
        p2 = other.new_page()
        p2.goto(BASE + "login/")
        p2.get_by_role("link", name="Sign in with Test IdP").click()
        p2.locator("input[name=login]").wait_for()
        # An attacker's answer (their own code) sent to this browser's callback.
        resp = p2.goto(BASE + "oauth_callback/?code=attackers-code&state=forged")
        assert resp.status == 400, resp.status
        p2.get_by_text("its state differs").wait_for()
        assert not session_cookies(other), "a session was made"
        other.close()
    check("an answer with a forged state is refused with a page, no session", a_forged_state_is_refused)

    # JupyterHub as the provider (conda-store's JupyterHubOAuthAuthentication).
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    page = ctx.new_page()

    def signs_in_through_jupyterhub():
        page.goto(BASE + "ui/")
        page.get_by_role("link", name="Sign in with JupyterHub").click()
        page.locator("#username_input").wait_for()
        page.screenshot(path=str(SHOTS / "09-jupyterhub.png"))
        page.fill("#username_input", "dana")
        page.fill("#password_input", HUB_PASSWORD)
        page.click("#login_submit")
        page.get_by_role("button", name="Log out").wait_for(timeout=30000)
        primary, roles = permission(page)
        assert primary == "dana", primary
        assert roles.get("data-team/*") == ["editor"], roles
        page.screenshot(path=str(SHOTS / "10-signed-in-with-jupyterhub.png"))
    check("signed in through JupyterHub: back in the UI as dana, data-team mapped to editor",
          signs_in_through_jupyterhub)
    ctx.close()


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
    if "password" in ONLY:
        password_journeys(browser)
    if SSO and "sso" in ONLY:
        sso_journeys(browser)
    browser.close()

sys.exit(1 if failed else 0)
