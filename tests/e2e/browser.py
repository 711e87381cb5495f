"""Browser journeys against the local deployment, in a real browser: Debian's chromium driven
by PyPI playwright (never `playwright install`: the machine's own chromium). Each journey ends
in checks of what the page shows; a screenshot of each is kept in SHOTS.

    python3 tests/e2e/browser.py BASE_URL USER PASSWORD NAMESPACE ENVIRONMENT SHOTS

BASE_URL is the API prefix (`http://host:port/conda-store/`). Prints `ok   NAME` or
`FAIL NAME: why` per check and exits non-zero when one failed.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
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
# Which journeys run: a comma-separated list of groups (password, sso, editor).
ONLY = set(os.environ.get("BROWSER_JOURNEYS", "password,sso").split(","))
# The gateway's signing key (to make an expired session, as time would), when given.
SECRET_KEY_FILE = os.environ.get("CONDA_STORE_E2E_SECRET_KEY_FILE", "")
# The editor journeys build from this channel (with python) and PyPI-like index.
EDITOR_CHANNEL = os.environ.get("EDITOR_CHANNEL", "")
EDITOR_INDEX = os.environ.get("EDITOR_INDEX", "")
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

    def an_expired_session_is_told_so():
        # The session cookie a day-old sign-in left: signed by the gateway, past its `exp`.
        def b64(b):
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64(json.dumps({"sub": USER, "exp": int(time.time()) - 60, "primary_namespace": USER,
                               "session": True, "src": "users", "jti": "expired-e2e"}).encode())
        key = open(SECRET_KEY_FILE, "rb").read()
        sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        host = BASE.split("/")[2].split(":")[0]
        ctx.add_cookies([{"name": "conda-store-auth", "value": f"{head}.{body}.{sig}",
                          "domain": host, "path": "/"}])
        page.goto(BASE + "ui/")
        assert "/login/" in page.url, page.url
        page.get_by_text("Your session has ended").wait_for()
        assert not session_cookies(ctx), "the expired cookie stayed"
    if SECRET_KEY_FILE:
        check("an expired session is sent to sign in and told it ended", an_expired_session_is_told_so)
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


def api(page, path):
    return page.request.get(BASE + "api/v1/" + path)


def build_of(page, build_id):
    return api(page, f"build/{build_id}/").json()["data"]


def env_of(page, ns, name):
    r = api(page, f"environment/{ns}/{name}/")
    return r.json()["data"] if r.ok else None


def until(what, fn, timeout=300, reload=None):
    """Polls fn until it returns a true value; `reload` (a page) is reloaded every 15 s, as a
    person would."""
    start = time.time()
    last = start
    while time.time() - start < timeout:
        v = fn()
        if v:
            return v
        if reload is not None and time.time() - last > 15:
            reload.reload()
            last = time.time()
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s")


def type_yaml(page, text):
    """Into conda-store-ui's YAML editor (CodeMirror): replaces its text."""
    page.get_by_text("YAML", exact=True).click()
    page.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


def name_it(page, name):
    """The editor's name field (after its YAML: the editor settles its fields from the text)."""
    page.wait_for_timeout(500)
    field = page.get_by_label("Environment name")
    field.fill(name)
    page.wait_for_timeout(300)
    assert field.input_value() == name, field.input_value()


def sign_in_with_password(page):
    page.goto(BASE + "login/")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.get_by_role("button", name="Log out").wait_for(timeout=30000)


def editor_journeys(browser):
    """As USER, an editor of NAMESPACE: an environment with a pip section made, watched,
    downloaded, changed, switched back, deleted in conda-store-ui's editor."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, timezone_id="UTC")
    page = ctx.new_page()
    env = "ui-flask"
    seen = {}
    spec = (f"channels:\n- {EDITOR_CHANNEL}\ndependencies:\n- python\n- pip:\n"
            f"  - --index-url {EDITOR_INDEX}\n  - flask\n")

    def creates():
        sign_in_with_password(page)
        page.get_by_label(f"Create a new environment in the {NAMESPACE} namespace").click()
        type_yaml(page, spec)
        name_it(page, env)
        with page.expect_response("**/api/v1/specification/") as answer:
            page.get_by_role("button", name="Create", exact=True).click()
        assert answer.value.ok, answer.value.text()
        seen["first"] = answer.value.json()["data"]["build_id"]
        page.wait_for_url(f"**/ui/{NAMESPACE}/{env}", timeout=60000)
    check("the editor creates an environment with a pip section (YAML), the UI opens it", creates)

    def log_while_running():
        # The link's address read in the page at once (the list re-renders as the build goes).
        href = page.wait_for_function(
            "t => { const a = [...document.querySelectorAll('a')]"
            ".find(a => a.textContent.includes(t)); return a && a.href; }",
            arg=f"Show Conda environment {seen['first']} log", timeout=60000).json_value()
        assert build_of(page, seen["first"])["status"] == "BUILDING", "the build ended first"
        page.screenshot(path=str(SHOTS / "11-building.png"))
        r = page.request.get(href)
        assert r.ok and "solve" in r.text(), (r.status, r.text()[:300])
    check("while it builds, its log is linked and opens", log_while_running)

    def completes():
        until("the build completed",
              lambda: build_of(page, seen["first"])["status"] in ("COMPLETED", "FAILED"))
        assert build_of(page, seen["first"])["status"] == "COMPLETED", build_of(page, seen["first"])
        page.reload()
        page.get_by_text("Status: Completed").first.wait_for(timeout=30000)
        page.get_by_text("python", exact=True).first.wait_for()
        page.screenshot(path=str(SHOTS / "12-completed.png"))
    check("it reaches Completed, python among its installed packages", completes)

    def downloads():
        lock = page.get_by_role("link", name="Show lockfile").get_attribute("href")
        r = page.request.get(lock)
        assert r.ok, r.status
        pip = [p["name"] for p in r.json()["package"] if p["manager"] == "pip"]
        assert "flask" in pip, pip
        archive = page.get_by_role("link", name="Download archive").get_attribute("href")
        r = page.request.get(archive)
        assert r.ok and r.body()[:2] == b"\x1f\x8b", (r.status, r.body()[:20])
    check("its lockfile (pip entries) and archive download from the UI's links", downloads)

    def edits():
        page.get_by_role("button", name="Edit").click()
        type_yaml(page, spec.replace("- python\n", "- python\n- click\n"))
        page.get_by_role("button", name="Save").click()
        until("a second build completed", lambda: (
            (e := env_of(page, NAMESPACE, env))["current_build_id"] not in (None, seen["first"])
            and build_of(page, e["current_build_id"])["status"] == "COMPLETED"))
        seen["second"] = env_of(page, NAMESPACE, env)["current_build_id"]
    check("an edit saved in the editor builds again and becomes current", edits)

    def switches_back():
        page.reload()
        page.get_by_role("button", name="Edit").click()
        page.get_by_role("combobox").first.click()
        page.get_by_role("option").filter(has_text="Available").first.click()
        page.get_by_role("button", name="Change environment version").click()
        until("the first build current again",
              lambda: env_of(page, NAMESPACE, env)["current_build_id"] == seen["first"])
        page.reload()
        page.get_by_text("Active").first.wait_for()
        page.screenshot(path=str(SHOTS / "13-switched-back.png"))
    check("the environment is switched back to its older build", switches_back)

    def deletes():
        page.get_by_role("button", name="Edit").click()
        page.get_by_text("Delete environment", exact=True).click()
        page.get_by_role("button", name="Delete").click()
        until("the environment gone", lambda: env_of(page, NAMESPACE, env) is None, timeout=60)
        page.goto(BASE + "ui/")
        page.get_by_role("button", name="Log out").wait_for()
        assert page.get_by_role("link", name=env).count() == 0
    check("the environment is deleted from the editor", deletes)

    def made_again():
        # The same name again: a new environment, built (not held by the deleted one's state).
        r = page.request.post(BASE + "api/v1/specification/", data={
            "namespace": NAMESPACE, "specification": spec + f"name: {env}\n"})
        assert r.ok, r.text()
        bid = r.json()["data"]["build_id"]
        until("the new build completed", lambda: build_of(page, bid)["status"] == "COMPLETED")
    check("an environment made again under the deleted one's name builds", made_again)

    def a_viewer_is_refused():
        page.goto(BASE + "ui/Demo/new-environment")  # alice only views Demo
        type_yaml(page, spec)
        name_it(page, "not-mine")
        page.get_by_role("button", name="Create", exact=True).click()
        page.get_by_text("may not environment:create on Demo/not-mine").wait_for(timeout=30000)
        assert env_of(page, "Demo", "not-mine") is None
        page.screenshot(path=str(SHOTS / "14-viewer-refused.png"))
    check("a viewer's create is refused, the UI showing the gateway's message", a_viewer_is_refused)
    ctx.close()


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS, headless=True)
    if "password" in ONLY:
        password_journeys(browser)
    if SSO and "sso" in ONLY:
        sso_journeys(browser)
    if "editor" in ONLY:
        editor_journeys(browser)
    browser.close()

sys.exit(1 if failed else 0)
