"""A small but real OpenID Connect provider for tests, built on Authlib's server side.

Run as a process: `python -m tests.oidc_provider <config.json>`; it prints
`READY <port>` once it listens on 127.0.0.1 (port 0 in the config: a free one).
Tests start it with `start_provider()`, which also knows the test users and how to
point a manager's `AuthSettings` at it.

It does what Google, Keycloak and friends do in the authorization-code flow: a
discovery document, a JWKS with a fresh RSA key, an authorization endpoint with a
login form, a token endpoint (client_secret_basic or _post, PKCE S256 required) that
returns an RS256-signed id_token, and a userinfo endpoint. It also answers Discord's
`GET /api/users/@me` shape, so Discord's plain-OAuth 2 code path can be pointed at it.

Config: {"port": 0, "clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
"users": [{"username", "password", "sub", "email", "email_verified"}]}.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NotRequired, TypedDict
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from joserfc.jwk import RSAKey

from farmhand.manager.settings import AuthSettings


@dataclass
class Client:
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "email", "profile", "identify"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: dict[str, Any]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class Provider:
    def __init__(self, config: dict[str, Any]) -> None:
        self.issuer = ""
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig"})
        self.clients = {c["client_id"]: Client(**c) for c in config["clients"]}
        self.users = {u["username"]: u for u in config["users"]}
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.server = self._server()

    def _server(self) -> AuthorizationServer:
        provider = self

        class Server(AuthorizationServer):  # type: ignore[misc]
            def query_client(self, client_id: str) -> Client | None:
                return provider.clients.get(client_id)

            def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
                provider.access_tokens[token["access_token"]] = request.user

            def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
                pass

            def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
                return request  # the handler builds it already

            def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
                return status, body, headers

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                provider.codes[code] = AuthCode(
                    code=code,
                    client_id=request.client.client_id,
                    redirect_uri=data.get("redirect_uri", ""),
                    scope=request.payload.scope or "",
                    user=request.user,
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: AuthCode) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: AuthCode) -> dict[str, Any]:
                return authorization_code.user

        class IdToken(OpenIDCode):  # type: ignore[misc]
            def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.client_id]}

            def get_encode_header(self, client: Client) -> dict[str, str]:
                return {"alg": "RS256", "kid": "test-key"}

            def generate_user_info(self, user: dict[str, Any], scope: str) -> UserInfo:
                return provider.user_claims(user)

        server = Server()
        server.register_token_generator(
            "default", BearerTokenGenerator(lambda *args, **kwargs: secrets.token_urlsafe(32))
        )
        server.register_grant(
            CodeGrant, [CodeChallenge(required=True), IdToken(require_nonce=False)]
        )
        return server

    def user_claims(self, user: dict[str, Any]) -> UserInfo:
        return UserInfo(
            sub=user["sub"],
            email=user.get("email"),
            email_verified=bool(user.get("email_verified", True)),
            preferred_username=user["username"],
            name=user["username"],
        )

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": base + "/authorize",
            "token_endpoint": base + "/token",
            "userinfo_endpoint": base + "/userinfo",
            "jwks_uri": base + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
        }


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """Authlib's request, with the query and form fields it reads (`args`, `form`)."""

    def __init__(self, method: str, url: str, headers: Any, data: dict[str, str]) -> None:
        super().__init__(method, url, headers=headers)
        self.payload = BasicOAuth2Payload(data)
        self._fields = data

    @property
    def args(self) -> dict[str, str]:
        return self._fields

    @property
    def form(self) -> dict[str, str]:
        return self._fields


def make_request(method: str, url: str, headers: Any, data: dict[str, str]) -> OAuth2Request:
    return FormRequest(method, url, headers, data)


class Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("provider: " + (format % args) + "\n")

    def _send(
        self, status: int, body: Any, headers: Any = (), content_type: str = "application/json"
    ) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else (body if isinstance(body, str) else json.dumps(body)).encode()
        )
        self.send_response(status)
        header_names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        if "content-type" not in header_names:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        return dict(parse_qsl(self.rfile.read(length).decode()))

    def _url(self) -> str:
        return self.provider.issuer + self.path

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        provider = self.provider
        if parts.path == "/.well-known/openid-configuration":
            return self._send(200, provider.discovery())
        if parts.path == "/jwks":
            return self._send(200, {"keys": [provider.key.as_dict(private=False)]})
        if parts.path == "/authorize":
            request = make_request("GET", self._url(), dict(self.headers), query)
            try:
                provider.server.get_consent_grant(request=request, end_user=None)
            except OAuth2Error as error:
                return self._send(
                    400, {"error": error.error, "error_description": error.description}
                )
            return self._send(200, login_form(query), content_type="text/html; charset=utf-8")
        if parts.path in ("/userinfo", "/api/users/@me"):
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            user = provider.access_tokens.get(token)
            if user is None:
                return self._send(401, {"error": "invalid_token"})
            if parts.path == "/userinfo":
                return self._send(200, dict(provider.user_claims(user)))
            return self._send(200, {
                "id": user["sub"], "username": user["username"], "email": user.get("email"),
                "verified": bool(user.get("email_verified", True)),
            })  # fmt: skip
        self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        form = self._form()
        provider = self.provider
        if parts.path == "/authorize":
            query = dict(parse_qsl(form.pop("query", "")))
            user = provider.users.get(form.get("username", ""))
            if user is None or not secrets.compare_digest(
                user["password"], form.get("password", "")
            ):
                return self._send(401, login_form(query, "Wrong user name or password."),
                                  content_type="text/html; charset=utf-8")  # fmt: skip
            url = provider.issuer + "/authorize?" + urlencode(query)
            request = make_request("POST", url, dict(self.headers), query)
            status, body, headers = provider.server.create_authorization_response(
                request=request, grant_user=user
            )
            return self._send(status, body or b"", headers)
        if parts.path == "/token":
            provider.token_requests.append({k: v for k, v in form.items() if k != "client_secret"})
            request = make_request("POST", self._url(), dict(self.headers), form)
            status, body, headers = provider.server.create_token_response(request=request)
            return self._send(status, body, headers)
        self._send(404, {"error": "not found"})


def login_form(query: dict[str, str], error: str | None = None) -> str:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    return f"""<!doctype html><html><head><title>Test provider sign-in</title>
<style>body{{font-family:sans-serif;max-width:24rem;margin:4rem auto}}
input,button{{display:block;width:100%;margin:.4rem 0;padding:.4rem}}.error{{color:#b00}}</style>
</head><body><h1>Test identity provider</h1>{message}
<form method="post" action="/authorize">
<input type="hidden" name="query" value="{escape(urlencode(query))}">
<label>User name <input name="username" id="username" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""


# ------------------------------------------------------------- for the tests


ROOT = Path(__file__).resolve().parents[1]


class TestUser(TypedDict):
    username: str
    password: str
    sub: str
    email: str
    email_verified: NotRequired[bool]


USERS: list[TestUser] = [
    {"username": "alice", "password": "alice-pw", "sub": "sub-alice", "email": "alice@example.com"},
    {"username": "bob", "password": "bob-pw", "sub": "sub-bob", "email": "bob@studio.example"},
    {"username": "eve", "password": "eve-pw", "sub": "sub-eve", "email": "eve@studio.example",
     "email_verified": False},
    # The real owner of the address eve typed without verifying it.
    {"username": "realeve", "password": "realeve-pw", "sub": "sub-realeve",
     "email": "eve@studio.example"},
]  # fmt: skip


@dataclass
class IdentityProvider:
    url: str
    process: subprocess.Popen[str]

    def auth_settings(self, **overrides: object) -> AuthSettings:
        values: dict[str, object] = dict(
            oidc_issuer=self.url, oidc_client_id="farmhand-oidc", oidc_client_secret="s-oidc",
            oidc_name="Test SSO",
            google_client_id="farmhand-google", google_client_secret="s-google",
            google_issuer=self.url,
            discord_client_id="farmhand-discord", discord_client_secret="s-discord",
            discord_authorize_url=self.url + "/authorize", discord_token_url=self.url + "/token",
            discord_userinfo_url=self.url + "/api/users/@me",
        )  # fmt: skip
        values.update(overrides)
        return AuthSettings(**values)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_provider(tmp: Path, redirect_base: str) -> IdentityProvider:
    config = {
        "port": 0,
        "clients": [
            {
                "client_id": f"farmhand-{key}",
                "client_secret": f"s-{key}",
                "redirect_uris": [f"{redirect_base}/api/auth/{key}/callback"],
            }
            for key in ("oidc", "google", "discord")
        ],
        "users": USERS,
    }
    path = tmp / "provider.json"
    path.write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_provider", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp / "provider.log").open("w"),
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError("the test provider did not start: " + (tmp / "provider.log").read_text())
    return IdentityProvider(f"http://127.0.0.1:{int(line.split()[1])}", process)


def main() -> None:
    # A test provider on plain http at 127.0.0.1; Authlib refuses http unless told.
    os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    provider = Provider(config)
    Handler.provider = provider
    httpd = ThreadingHTTPServer(("127.0.0.1", int(config.get("port", 0))), Handler)
    port = httpd.server_address[1]
    provider.issuer = f"http://127.0.0.1:{port}"
    print(f"READY {port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
