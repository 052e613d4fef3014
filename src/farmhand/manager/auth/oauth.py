"""Sign-in with OAuth 2 / OpenID Connect providers: Google, Discord, any OIDC issuer.

Authlib's OAuth 2 client builds the authorization request (with `state` and a PKCE
S256 challenge) and redeems the code; joserfc (Authlib's JOSE library) checks the
OIDC id_token's RS256/ES256 signature against the issuer's JWKS, and its issuer,
audience, expiry and nonce. Google and the generic provider are OpenID Connect (their
endpoints come from the issuer's discovery document); Discord is plain OAuth 2 and
says who someone is at its `users/@me` endpoint.

What must survive the round trip through the provider (state, PKCE verifier, nonce,
where to go afterwards) travels in a short-lived signed cookie rather than in server
memory, so the callback may land on any manager sharing the data dir's session key.
"""

from __future__ import annotations

import hmac
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth2.rfc6749.errors import OAuth2Error

# Authlib >= 1.7 warns at import that its httpx integration will move to "httpx2", and
# forces its warnings to always show: every `farmhand` command and manager start printed
# it. The integration works with the httpx we use; silence only that one import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from farmhand.manager.auth.accounts import AccountError
from farmhand.manager.settings import AuthSettings

STATE_COOKIE = "farmhand_oauth"
STATE_PURPOSE = "oauth-state"
STATE_TTL_SECONDS = 600
HTTP_TIMEOUT = 10.0
ID_TOKEN_ALGORITHMS = ["RS256", "ES256", "PS256"]


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    client_id: str
    client_secret: str | None
    redirect_url: str | None
    """None: this manager's own callback URL, as the request reached it."""
    scope: str
    issuer: str | None = None
    """OIDC: endpoints from `<issuer>/.well-known/openid-configuration`."""
    authorize_url: str | None = None
    token_url: str | None = None
    userinfo_url: str | None = None
    """OAuth 2 without OIDC (Discord): where to ask who the token belongs to."""


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    subject: str
    email: str | None
    email_verified: bool
    nickname: str | None


def providers(settings: AuthSettings) -> dict[str, Provider]:
    """The providers whose client id is configured, by key (the path segment)."""
    found: dict[str, Provider] = {}
    if settings.google_client_id:
        found["google"] = Provider(
            key="google",
            label="Google",
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            redirect_url=settings.google_redirect_url,
            scope="openid email profile",
            issuer=settings.google_issuer,
        )
    if settings.discord_client_id:
        found["discord"] = Provider(
            key="discord",
            label="Discord",
            client_id=settings.discord_client_id,
            client_secret=settings.discord_client_secret,
            redirect_url=settings.discord_redirect_url,
            scope="identify email",
            authorize_url=settings.discord_authorize_url,
            token_url=settings.discord_token_url,
            userinfo_url=settings.discord_userinfo_url,
        )
    if settings.oidc_client_id and settings.oidc_issuer:
        found["oidc"] = Provider(
            key="oidc",
            label=settings.oidc_name,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            redirect_url=settings.oidc_redirect_url,
            scope="openid email profile",
            issuer=settings.oidc_issuer,
        )
    return found


def _provider_error(message: str) -> AccountError:
    return AccountError(502, message, code="provider-down")


def _get_json(url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    try:
        answer = httpx.get(url, headers=headers, timeout=HTTP_TIMEOUT)
        answer.raise_for_status()
        body = answer.json()
    except (httpx.HTTPError, ValueError) as error:
        raise _provider_error(f"the sign-in provider did not answer properly ({url})") from error
    if not isinstance(body, dict):
        raise _provider_error(f"the sign-in provider sent no JSON object ({url})")
    return body


def discover(provider: Provider) -> dict[str, Any]:
    """The provider's endpoints: its OIDC discovery document, or the configured URLs.

    Fetched on each sign-in rather than cached: two small requests per sign-in, and a
    provider's key rotation is never missed.
    """
    if provider.issuer is None:
        return {
            "authorization_endpoint": provider.authorize_url,
            "token_endpoint": provider.token_url,
        }
    meta = _get_json(provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
    if meta.get("issuer") != provider.issuer:
        raise _provider_error("the provider's discovery document names another issuer")
    for needed in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(meta.get(needed), str):
            raise _provider_error(f"the provider's discovery document has no {needed}")
    return meta


def _client(provider: Provider, redirect_uri: str) -> OAuth2Client:
    return OAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=provider.scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT,
    )


def begin(provider: Provider, redirect_uri: str, next_path: str) -> tuple[str, dict[str, object]]:
    """The provider URL to send the browser to, and what the callback must get back."""
    meta = discover(provider)
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    extra = {"nonce": nonce} if provider.issuer else {}
    with _client(provider, redirect_uri) as client:
        url, state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, **extra
        )
    remembered: dict[str, object] = {
        "p": provider.key,
        "s": state,
        "v": verifier,
        "n": nonce,
        "r": redirect_uri,
        "next": next_path,
    }
    return url, remembered


def finish(
    provider: Provider, remembered: Mapping[str, object], params: Mapping[str, str]
) -> Identity:
    """Check the callback against what `begin` remembered, redeem the code, say who it is."""
    state = params.get("state", "")
    if remembered.get("p") != provider.key or not hmac.compare_digest(
        str(remembered.get("s", "")).encode(), state.encode()
    ):
        raise AccountError(400, "the sign-in state does not match; start the sign-in again")
    if params.get("error"):
        raise AccountError(400, f"the provider refused the sign-in: {params['error'][:200]}")
    code = params.get("code")
    if not code:
        raise AccountError(400, "the provider sent no authorization code")
    meta = discover(provider)
    with _client(provider, str(remembered["r"])) as client:
        try:
            token = client.fetch_token(
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=str(remembered["v"]),
            )
        except (OAuthError, OAuth2Error) as error:
            raise AccountError(
                400, f"the provider refused the code: {error.error or 'error'}"
            ) from error
        except httpx.HTTPError as error:
            raise _provider_error("could not reach the sign-in provider") from error
    if provider.issuer is not None:
        return _id_token_identity(provider, meta, token, str(remembered["n"]))
    return _userinfo_identity(provider, token)


def _id_token_identity(
    provider: Provider, meta: Mapping[str, Any], token: Mapping[str, Any], nonce: str
) -> Identity:
    raw = token.get("id_token")
    if not isinstance(raw, str):
        raise AccountError(400, "the provider sent no id_token")
    keys = KeySet.import_key_set(_get_json(meta["jwks_uri"]))  # type: ignore[arg-type]
    try:
        decoded = jwt.decode(raw, keys, algorithms=ID_TOKEN_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": provider.issuer or ""},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as error:
        raise AccountError(400, f"the provider's id_token is not valid: {error}") from error
    claims = decoded.claims
    email = claims.get("email")
    return Identity(
        subject=str(claims["sub"]),
        email=email if isinstance(email, str) else None,
        email_verified=claims.get("email_verified") is True,
        nickname=claims.get("preferred_username") or claims.get("name"),
    )


def _userinfo_identity(provider: Provider, token: Mapping[str, Any]) -> Identity:
    assert provider.userinfo_url is not None
    access = token.get("access_token")
    if not isinstance(access, str):
        raise AccountError(400, "the provider sent no access token")
    info = _get_json(provider.userinfo_url, {"Authorization": f"Bearer {access}"})
    if not info.get("id"):
        raise _provider_error("the provider did not say who signed in")
    email = info.get("email")
    return Identity(
        subject=str(info["id"]),
        email=email if isinstance(email, str) else None,
        email_verified=info.get("verified") is True,
        nickname=info.get("username"),
    )
