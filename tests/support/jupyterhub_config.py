"""A JupyterHub on loopback for the browser sign-in journeys: DummyAuthenticator (a shared
password), this gateway registered as an OAuth client service, one group. Settings from the
environment tests/support/identity-providers.sh sets."""

import os

c = get_config()  # noqa: F821 - JupyterHub's config loader provides it
env = os.environ
state = env["HUB_STATE"]
c.JupyterHub.bind_url = f"http://127.0.0.1:{env['HUB_PORT']}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env["HUB_INTERNAL_PORT"])
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env['HUB_PROXY_API_PORT']}"
c.ConfigurableHTTPProxy.command = [env["CONDA_STORE_CHP"]]
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = env["HUB_PASSWORD"]
c.Authenticator.allow_all = True
c.JupyterHub.db_url = f"sqlite:///{state}/hub.sqlite"
c.JupyterHub.cookie_secret_file = f"{state}/cookie_secret"
c.JupyterHub.pid_file = f"{state}/hub.pid"
c.JupyterHub.load_groups = {"data-team": {"users": ["dana"]}}
# People may use the service (Nebari grants the same).
c.JupyterHub.load_roles = [
    {"name": "user", "scopes": ["self", "access:services!service=conda-store"]}
]
c.JupyterHub.services = [
    {
        "name": "conda-store",
        "oauth_client_id": "service-conda-store",
        "api_token": env["HUB_SERVICE_TOKEN"],
        "oauth_redirect_uri": env["HUB_REDIRECT_URI"],
        "oauth_no_confirm": True,
        # The groups come with the user (conda-store maps them to namespaces).
        "oauth_client_allowed_scopes": ["read:users:groups!user"],
    }
]
