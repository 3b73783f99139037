//! One programmed provider as the broker runs it: the authorization URL,
//! the code exchange, ID-token verification with a JWKS cache that refetches
//! (rate-limited) on an unknown `kid`, and userinfo.
//!
//! Signature cryptography is openidconnect's (`JsonWebKey::verify_signature`);
//! the header and claim checks are written out here so each refusal carries
//! its own reason, and so one sloppy non-security claim from an IdP (a
//! string where a boolean belongs) cannot make a whole token unparseable.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use oauth2::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, StandardRevocableToken,
    StandardTokenResponse, TokenResponse as _, TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};
use openidconnect::{
    JsonWebKey as _, JsonWebKeyAlgorithm, JsonWebKeyId, JsonWebKeyUse as _, JwsSigningAlgorithm,
    core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use url::Url;

use super::{
    claims,
    error::{Reason, Refusal},
};
use crate::{
    api::ClientAuthMethod,
    config::ProgrammedProvider,
    oidc::{
        assertion::{ASSERTION_TYPE, ClientKey},
        discovery::{self, HttpSettings, is_allowed_alg},
    },
};

/// Clock skew tolerated on `exp` and `iat`.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Keys are refetched at least this often even when every `kid` is known,
/// so a key the IdP retired stops verifying.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// At most one refetch for an unknown `kid` per provider in this interval,
/// so forged tokens with random `kid`s cannot make the broker hammer the
/// IdP.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Largest ID token accepted.
const MAX_ID_TOKEN_LEN: usize = 64 * 1024;

/// Token endpoint answer fields beyond OAuth 2.0's: the raw ID token.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type TokenClient = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What the token endpoint returned for an authorization code.
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// What the token endpoint returned for a refresh token. The ID token is
/// optional on refresh (OpenID Connect Core 12.2).
pub struct RefreshedTokens {
    pub id_token: Option<String>,
    pub access_token: String,
    /// A new refresh token when the IdP rotates them.
    pub refresh_token: Option<String>,
}

/// Why a refresh did not succeed.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The IdP refused the grant (`invalid_grant`: revoked, expired, user
    /// disabled): the session is over.
    Revoked(Refusal),
    /// The IdP could not be asked or answered something else: the session
    /// keeps serving until its own expiry and the refresh is retried later.
    Unavailable(Refusal),
}

/// A failed refresh attempt backs off this long per provider, so an IdP
/// outage costs one token request per interval, not one per request.
pub const REFRESH_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
struct JwksState {
    keys: Option<CoreJsonWebKeySet>,
    fetched_at: Option<Instant>,
    /// Last refetch forced by an unknown `kid`.
    last_forced: Option<Instant>,
    fetches: u64,
}

/// The provider's signing keys, fetched on demand and shared across config
/// reloads while the JWKS URL and CA stay the same.
pub struct JwksCache {
    uri: String,
    state: Mutex<JwksState>,
}

impl JwksCache {
    pub fn new(uri: String) -> Self {
        Self {
            uri,
            state: Mutex::new(JwksState::default()),
        }
    }

    /// How many times the JWKS was fetched.
    pub async fn fetches(&self) -> u64 {
        self.state.lock().await.fetches
    }
}

/// A provider ready to serve logins.
pub struct ProviderRuntime {
    pub cfg: ProgrammedProvider,
    http: reqwest::Client,
    settings: HttpSettings,
    pub jwks: Arc<JwksCache>,
    /// The key that signs client assertions (`private_key_jwt`).
    client_key: Option<ClientKey>,
    /// When the last refresh found the IdP unavailable.
    refresh_failed_at: std::sync::Mutex<Option<Instant>>,
}

/// Fresh random URL-safe text of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    B64.encode(buf)
}

impl ProviderRuntime {
    /// Builds the runtime; `previous` donates its JWKS cache when the key
    /// source is unchanged.
    pub fn new(
        cfg: ProgrammedProvider,
        settings: &HttpSettings,
        previous: Option<&ProviderRuntime>,
    ) -> Result<Self, String> {
        let http =
            discovery::http_client(settings, cfg.ca_bundle.as_deref()).map_err(|f| f.message)?;
        let jwks = match previous {
            Some(p)
                if p.cfg.endpoints.jwks_uri == cfg.endpoints.jwks_uri
                    && p.cfg.ca_bundle == cfg.ca_bundle =>
            {
                p.jwks.clone()
            }
            _ => Arc::new(JwksCache::new(cfg.endpoints.jwks_uri.clone())),
        };
        let client_key = match cfg.client_auth_method {
            ClientAuthMethod::PrivateKeyJwt => {
                let pem = cfg.client_secret.as_deref().ok_or(
                    "clientAuthMethod private_key_jwt without a private key in the config",
                )?;
                Some(ClientKey::from_pem(pem).map_err(|e| format!("client private key: {e}"))?)
            }
            _ => None,
        };
        Ok(Self {
            cfg,
            http,
            settings: settings.clone(),
            jwks,
            client_key,
            refresh_failed_at: std::sync::Mutex::new(None),
        })
    }

    /// The authorization request URL.
    pub fn authorize_url(&self, state: &str, nonce: &str, pkce_challenge: Option<&str>) -> Url {
        let mut url = Url::parse(&self.cfg.endpoints.authorization_endpoint)
            .expect("authorization endpoint was validated as a URL");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &self.cfg.client_id);
            q.append_pair("redirect_uri", &self.cfg.redirect_uri);
            q.append_pair("scope", &self.cfg.scopes.join(" "));
            q.append_pair("state", state);
            q.append_pair("nonce", nonce);
            if let Some(challenge) = pkce_challenge {
                q.append_pair("code_challenge", challenge);
                q.append_pair("code_challenge_method", "S256");
            }
            for (k, v) in &self.cfg.authorize_params {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// The RP-initiated logout URL, when the provider has an end-session
    /// endpoint.
    pub fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: &str,
        state: &str,
    ) -> Option<Url> {
        let mut url = Url::parse(self.cfg.endpoints.end_session_endpoint.as_deref()?).ok()?;
        {
            let mut q = url.query_pairs_mut();
            match id_token_hint {
                Some(hint) => {
                    q.append_pair("id_token_hint", hint);
                }
                None => {
                    q.append_pair("client_id", &self.cfg.client_id);
                }
            }
            q.append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
            q.append_pair("state", state);
        }
        Some(url)
    }

    fn token_client(&self) -> Result<TokenClient, Refusal> {
        let token_url = TokenUrl::new(self.cfg.endpoints.token_endpoint.clone()).map_err(|e| {
            Refusal::new(
                Reason::TokenInvalidResponse,
                format!("token endpoint URL: {e}"),
            )
        })?;
        let redirect = RedirectUrl::new(self.cfg.redirect_uri.clone())
            .map_err(|e| Refusal::new(Reason::InvalidRequest, format!("redirect URI: {e}")))?;
        let mut client = oauth2::Client::new(ClientId::new(self.cfg.client_id.clone()))
            .set_token_uri(token_url)
            .set_redirect_uri(redirect);
        client = match self.cfg.client_auth_method {
            ClientAuthMethod::ClientSecretBasic => client.set_auth_type(AuthType::BasicAuth),
            _ => client.set_auth_type(AuthType::RequestBody),
        };
        // With private_key_jwt the Secret holds the private key, which
        // signs an assertion (see `client_assertion`) and is never sent.
        let sends_secret = matches!(
            self.cfg.client_auth_method,
            ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost
        );
        if sends_secret && let Some(secret) = &self.cfg.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(client)
    }

    /// A fresh signed client assertion for the token endpoint when the
    /// provider uses `private_key_jwt`.
    fn client_assertion(&self) -> Result<Option<String>, Refusal> {
        let Some(key) = &self.client_key else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now().as_second();
        key.assertion(&self.cfg.client_id, &self.cfg.endpoints.token_endpoint, now)
            .map(Some)
            .map_err(|e| Refusal::new(Reason::TokenError, format!("client assertion: {e}")))
    }

    /// Exchanges the authorization code at the token endpoint.
    pub async fn exchange(&self, code: &str, verifier: Option<String>) -> Result<Tokens, Refusal> {
        let client = self.token_client()?;
        let mut request = client.exchange_code(AuthorizationCode::new(code.to_string()));
        if let Some(v) = verifier {
            request = request.set_pkce_verifier(PkceCodeVerifier::new(v));
        }
        if let Some(a) = self.client_assertion()? {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| self.token_failure(e))?;
        let id_token = response.extra_fields().id_token.clone().ok_or_else(|| {
            Refusal::new(
                Reason::MissingIdToken,
                "the token response has no id_token (is \"openid\" among the scopes the provider granted?)",
            )
        })?;
        Ok(Tokens {
            id_token,
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        })
    }

    /// Redeems a refresh token. Only `invalid_grant` ends the session; every
    /// other failure (IdP down, 5xx, garbage, `invalid_client` after a
    /// botched secret rotation) keeps it, and further attempts for this
    /// provider pause for [`REFRESH_BACKOFF`].
    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshedTokens, RefreshFailure> {
        if self
            .refresh_failed_at
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| t.elapsed() < REFRESH_BACKOFF)
        {
            return Err(RefreshFailure::Unavailable(Refusal::new(
                Reason::TokenUnreachable,
                "a refresh for this provider failed moments ago; backing off",
            )));
        }
        let client = self.token_client().map_err(RefreshFailure::Unavailable)?;
        let token = oauth2::RefreshToken::new(refresh_token.to_string());
        let mut request = client.exchange_refresh_token(&token);
        if let Some(a) = self
            .client_assertion()
            .map_err(RefreshFailure::Unavailable)?
        {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        let result = request.request_async(&self.http).await;
        match result {
            Ok(response) => {
                *self.refresh_failed_at.lock().expect("not poisoned") = None;
                Ok(RefreshedTokens {
                    id_token: response.extra_fields().id_token.clone(),
                    access_token: response.access_token().secret().clone(),
                    refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                })
            }
            Err(RequestTokenError::ServerResponse(err))
                if *err.error() == oauth2::basic::BasicErrorResponseType::InvalidGrant =>
            {
                Err(RefreshFailure::Revoked(Refusal::new(
                    Reason::SessionRevoked,
                    self.token_failure(RequestTokenError::ServerResponse(err))
                        .message,
                )))
            }
            Err(e) => {
                self.note_refresh_unavailable();
                Err(RefreshFailure::Unavailable(self.token_failure(e)))
            }
        }
    }

    /// Starts the refresh back-off for this provider.
    pub fn note_refresh_unavailable(&self) {
        *self.refresh_failed_at.lock().expect("not poisoned") = Some(Instant::now());
    }

    fn token_failure(
        &self,
        e: RequestTokenError<oauth2::HttpClientError<reqwest::Error>, BasicErrorResponse>,
    ) -> Refusal {
        let endpoint = &self.cfg.endpoints.token_endpoint;
        match e {
            RequestTokenError::ServerResponse(err) => Refusal::new(
                Reason::TokenError,
                format!(
                    "the token endpoint answered error \"{}\"{}",
                    err.error().as_ref(),
                    err.error_description()
                        .map(|d| format!(": {}", clip(d, 300)))
                        .unwrap_or_default()
                ),
            ),
            RequestTokenError::Request(err) => Refusal::new(
                Reason::TokenUnreachable,
                format!(
                    "the token endpoint {endpoint} could not be reached: {}",
                    discovery::error_chain(&err)
                ),
            ),
            RequestTokenError::Parse(err, body) => Refusal::new(
                Reason::TokenInvalidResponse,
                format!(
                    "the token endpoint {endpoint} answered something that is not a token response ({err}); it began: {}",
                    clip(&String::from_utf8_lossy(&body), 120)
                ),
            ),
            RequestTokenError::Other(msg) => Refusal::new(
                Reason::TokenInvalidResponse,
                format!("the token endpoint {endpoint} answered unexpectedly: {msg}"),
            ),
        }
    }

    async fn fetch_jwks(&self) -> Result<CoreJsonWebKeySet, Refusal> {
        let doc = discovery::get_json(&self.http, "JWKS", &self.jwks.uri, &self.settings)
            .await
            .map_err(|f| Refusal::new(Reason::JwksUnavailable, f.message))?;
        serde_json::from_value(doc).map_err(|e| {
            Refusal::new(
                Reason::JwksUnavailable,
                format!("JWKS at {} is not a valid key set: {e}", self.jwks.uri),
            )
        })
    }

    /// The current keys; fetched when absent or older than
    /// [`JWKS_MAX_AGE`]. A failed periodic refresh keeps the old keys.
    async fn keys(&self) -> Result<CoreJsonWebKeySet, Refusal> {
        let mut st = self.jwks.state.lock().await;
        let stale = st.fetched_at.is_none_or(|t| t.elapsed() >= JWKS_MAX_AGE);
        if stale {
            st.fetches += 1;
            match self.fetch_jwks().await {
                Ok(keys) => {
                    st.keys = Some(keys);
                    st.fetched_at = Some(Instant::now());
                }
                Err(e) if st.keys.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(provider = %self.cfg.key(), error = %e, "JWKS refresh failed; keeping the previous keys")
                }
            }
        }
        Ok(st.keys.clone().expect("keys present"))
    }

    /// Refetches for an unknown `kid`, at most once per
    /// [`JWKS_REFETCH_INTERVAL`]. Returns the new keys when it refetched.
    async fn refetch_for_unknown_kid(&self) -> Option<CoreJsonWebKeySet> {
        let mut st = self.jwks.state.lock().await;
        if st
            .last_forced
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            return None;
        }
        st.last_forced = Some(Instant::now());
        st.fetches += 1;
        match self.fetch_jwks().await {
            Ok(keys) => {
                st.keys = Some(keys.clone());
                st.fetched_at = Some(Instant::now());
                Some(keys)
            }
            Err(e) => {
                tracing::warn!(provider = %self.cfg.key(), error = %e, "JWKS refetch for an unknown kid failed");
                None
            }
        }
    }

    /// Verifies an ID token: header, signature, then every claim check.
    /// `nonce` is what the login sent; `None` for an ID token from a
    /// refresh, which carries no fresh nonce (OpenID Connect Core 12.2).
    /// Returns the token's claims.
    pub async fn verify_id_token(
        &self,
        raw: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<Map<String, Value>, Refusal> {
        let jws = Jws::parse(raw)?;
        let keys = self.keys().await?;
        match jws.verify(&keys) {
            Err(r) if r.reason == Reason::UnknownKey => {
                match self.refetch_for_unknown_kid().await {
                    Some(fresh) => jws.verify(&fresh)?,
                    None => return Err(r),
                }
            }
            other => other?,
        }
        check_claims(&jws.claims, &self.cfg, nonce, now)?;
        Ok(jws.claims)
    }

    /// Calls userinfo; its `sub` must equal the ID token's.
    pub async fn userinfo(
        &self,
        access_token: &str,
        sub: &str,
    ) -> Result<Option<Map<String, Value>>, Refusal> {
        let Some(endpoint) = &self.cfg.endpoints.userinfo_endpoint else {
            return Ok(None);
        };
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                Refusal::new(
                    Reason::UserinfoError,
                    format!(
                        "userinfo at {endpoint} could not be reached: {}",
                        discovery::error_chain(&e)
                    ),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Refusal::new(
                Reason::UserinfoError,
                format!("userinfo at {endpoint} answered HTTP {status}"),
            ));
        }
        let is_jwt = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/jwt"));
        if is_jwt {
            return Err(Refusal::new(
                Reason::UserinfoError,
                format!(
                    "userinfo at {endpoint} answered a signed JWT; only JSON userinfo is supported"
                ),
            ));
        }
        let body = response.bytes().await.map_err(|e| {
            Refusal::new(
                Reason::UserinfoError,
                format!("userinfo at {endpoint}: {e}"),
            )
        })?;
        if body.len() > discovery::MAX_BODY_BYTES {
            return Err(Refusal::new(
                Reason::UserinfoError,
                format!("userinfo at {endpoint} is larger than 1 MiB"),
            ));
        }
        let claims: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(
                Reason::UserinfoError,
                format!("userinfo at {endpoint} is not a JSON object: {e}"),
            )
        })?;
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if s == sub => Ok(Some(claims)),
            other => Err(Refusal::new(
                Reason::UserinfoSubMismatch,
                format!(
                    "userinfo is for subject {:?}, the ID token for {sub:?}; refusing (OpenID Connect Core 5.3.2)",
                    other.unwrap_or("(none)")
                ),
            )),
        }
    }
}

impl ProviderRuntime {
    /// From a token response to a checked identity: the ID token's checks,
    /// userinfo when the token lacks mapped claims (its `sub` must match),
    /// claim mapping, the verified-email rule and the access rules. On a
    /// refresh `nonce` is `None` and `same_sub` is the session's subject,
    /// which the new ID token must repeat (OpenID Connect Core 12.2).
    pub async fn identity(
        &self,
        id_token: &str,
        access_token: &str,
        nonce: Option<&str>,
        same_sub: Option<&str>,
        now: i64,
    ) -> Result<claims::Identity, Refusal> {
        let mut id_claims = self.verify_id_token(id_token, nonce, now).await?;
        let sub = id_claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if let Some(expected) = same_sub
            && sub != expected
        {
            return Err(Refusal::new(
                Reason::InvalidSubject,
                format!(
                    "the refreshed ID token is for subject {sub:?}, the session for {expected:?}"
                ),
            ));
        }
        if claims::needs_userinfo(&id_claims, &self.cfg.claims)
            && let Some(info) = self.userinfo(access_token, &sub).await?
        {
            claims::merge_userinfo(&mut id_claims, info);
        }
        let identity = claims::map_claims(&id_claims, &self.cfg.claims)?;
        claims::check_verified_email(&identity, &self.cfg)?;
        claims::check_access(
            &identity.user,
            identity.email.as_deref(),
            &identity.groups,
            &self.cfg,
        )?;
        Ok(identity)
    }
}

fn clip(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// A parsed, not yet verified, compact JWS.
struct Jws {
    alg: CoreJwsSigningAlgorithm,
    kid: Option<JsonWebKeyId>,
    signing_input: String,
    signature: Vec<u8>,
    claims: Map<String, Value>,
}

fn malformed(msg: impl Into<String>) -> Refusal {
    Refusal::new(Reason::MalformedIdToken, msg)
}

impl Jws {
    fn parse(raw: &str) -> Result<Self, Refusal> {
        if raw.len() > MAX_ID_TOKEN_LEN {
            return Err(malformed("the ID token is larger than 64 KiB"));
        }
        let parts: Vec<&str> = raw.split('.').collect();
        if parts.len() != 3 {
            return Err(malformed(format!(
                "the ID token has {} parts; a signed JWT has 3 (encrypted ID tokens are not supported)",
                parts.len()
            )));
        }
        let decode = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|_| malformed(format!("the ID token {what} is not base64url")))
        };
        let header: Map<String, Value> = serde_json::from_slice(&decode("header", parts[0])?)
            .map_err(|_| malformed("the ID token header is not a JSON object"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&decode("payload", parts[1])?)
            .map_err(|_| malformed("the ID token payload is not a JSON object"))?;
        let signature = decode("signature", parts[2])?;
        let alg_text = header.get("alg").and_then(Value::as_str).unwrap_or("");
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(Value::String(alg_text.to_string())).map_err(|_| {
                Refusal::new(
                    Reason::DisallowedAlg,
                    format!("the ID token is signed with unknown algorithm {alg_text:?}"),
                )
            })?;
        if !is_allowed_alg(&alg) {
            return Err(Refusal::new(
                Reason::DisallowedAlg,
                format!(
                    "the ID token uses alg {alg_text:?}; only asymmetric signatures (RS*, PS*, ES*, EdDSA) are accepted, never \"none\" or HMAC"
                ),
            ));
        }
        if header.contains_key("crit") {
            return Err(malformed("the ID token has critical header parameters"));
        }
        if let Some(typ) = header.get("typ") {
            let ok = typ.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt")
            });
            if !ok {
                return Err(malformed(format!(
                    "the token's typ {typ} is not an ID token"
                )));
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(JsonWebKeyId::new(k.clone())),
            Some(_) => return Err(malformed("the ID token kid is not a string")),
        };
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        Ok(Self {
            alg,
            kid,
            signing_input,
            signature,
            claims,
        })
    }

    /// Keys that may verify this token: matching `kid` (when the token has
    /// one), a key type for the alg, signature use, and a compatible alg.
    fn candidates<'a>(&self, keys: &'a CoreJsonWebKeySet) -> Vec<&'a CoreJsonWebKey> {
        keys.keys()
            .iter()
            .filter(|k| self.kid.is_none() || k.key_id() == self.kid.as_ref())
            .filter(|k| k.key_use().is_none_or(|u| u.allows_signature()))
            .filter(|k| self.alg.key_type().as_ref() == Some(k.key_type()))
            .filter(|k| match k.signing_alg() {
                JsonWebKeyAlgorithm::Unspecified => true,
                JsonWebKeyAlgorithm::Algorithm(a) => *a == self.alg,
                JsonWebKeyAlgorithm::Unsupported => false,
            })
            .collect()
    }

    fn verify(&self, keys: &CoreJsonWebKeySet) -> Result<(), Refusal> {
        let candidates = self.candidates(keys);
        let key = match candidates.as_slice() {
            [] => {
                return Err(Refusal::new(
                    Reason::UnknownKey,
                    match &self.kid {
                        Some(kid) => format!(
                            "no key with kid {:?} for {} in the provider's JWKS, even after refetching it",
                            kid.as_str(),
                            alg_name(&self.alg)
                        ),
                        None => format!(
                            "the ID token names no kid and no {} key in the provider's JWKS fits",
                            alg_name(&self.alg)
                        ),
                    },
                ));
            }
            [one] => *one,
            many => {
                return Err(Refusal::new(
                    Reason::AmbiguousKey,
                    format!(
                        "the ID token names no kid and {} keys in the provider's JWKS fit; refusing to guess",
                        many.len()
                    ),
                ));
            }
        };
        key.verify_signature(&self.alg, self.signing_input.as_bytes(), &self.signature)
            .map_err(|e| {
                Refusal::new(
                    Reason::InvalidSignature,
                    format!("the ID token signature does not verify: {e}"),
                )
            })
    }
}

/// The whole ID-token path with no network: parse, verify against `keys`,
/// then every claim check. For the fuzz targets; the broker itself goes
/// through [`ProviderRuntime::verify_id_token`], which also refetches keys.
#[doc(hidden)]
pub fn verify_id_token_offline(
    raw: &str,
    keys: &CoreJsonWebKeySet,
    cfg: &ProgrammedProvider,
    nonce: Option<&str>,
    now: i64,
) -> Result<Map<String, Value>, Refusal> {
    let jws = Jws::parse(raw)?;
    jws.verify(keys)?;
    check_claims(&jws.claims, cfg, nonce, now)?;
    Ok(jws.claims)
}

fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{alg:?}"))
}

fn num(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    match claims.get(name)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

/// The claim checks of OpenID Connect Core 3.1.3.7, in order, each with its
/// own reason.
pub fn check_claims(
    claims: &Map<String, Value>,
    cfg: &ProgrammedProvider,
    nonce: Option<&str>,
    now: i64,
) -> Result<(), Refusal> {
    // iss: exactly the issuer, byte for byte.
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == cfg.issuer => {}
        other => {
            return Err(Refusal::new(
                Reason::InvalidIssuer,
                format!(
                    "the ID token's iss is {:?}; expected exactly {:?}",
                    other.unwrap_or("(none)"),
                    cfg.issuer
                ),
            ));
        }
    }
    // aud: contains the client ID.
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !auds.contains(&cfg.client_id.as_str()) {
        return Err(Refusal::new(
            Reason::InvalidAudience,
            format!(
                "the ID token is for audience {:?}, not this client {:?}",
                auds, cfg.client_id
            ),
        ));
    }
    // azp: required with several audiences, and when present it must be us.
    let azp = claims.get("azp").and_then(Value::as_str);
    if auds.len() > 1 && azp.is_none() {
        return Err(Refusal::new(
            Reason::InvalidAzp,
            format!(
                "the ID token has {} audiences and no azp claim saying it was issued to this client",
                auds.len()
            ),
        ));
    }
    if let Some(azp) = azp
        && azp != cfg.client_id
    {
        return Err(Refusal::new(
            Reason::InvalidAzp,
            format!(
                "the ID token was issued to {azp:?} (azp), not this client {:?}",
                cfg.client_id
            ),
        ));
    }
    // exp, iat: bounded skew.
    let Some(exp) = num(claims, "exp") else {
        return Err(malformed("the ID token has no numeric exp claim"));
    };
    // Saturating: `exp` and `iat` are whatever the IdP sent, to i64's ends.
    if now.saturating_sub(CLOCK_SKEW_SECS) >= exp {
        return Err(Refusal::new(
            Reason::TokenExpired,
            format!(
                "the ID token expired {} s ago (clock skew allowed: {CLOCK_SKEW_SECS} s)",
                now.saturating_sub(exp)
            ),
        ));
    }
    let Some(iat) = num(claims, "iat") else {
        return Err(malformed("the ID token has no numeric iat claim"));
    };
    if iat > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Refusal::new(
            Reason::IssuedInFuture,
            format!(
                "the ID token was issued {} s in the future (clock skew allowed: {CLOCK_SKEW_SECS} s); check the clocks",
                iat.saturating_sub(now)
            ),
        ));
    }
    // nonce: what this login sent.
    match (nonce, claims.get("nonce").and_then(Value::as_str)) {
        (None, _) => {}
        (Some(sent), Some(n)) if n == sent => {}
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                Reason::InvalidNonce,
                "the ID token's nonce is not the one this login sent (a replayed or injected token)",
            ));
        }
        (Some(_), None) => {
            return Err(Refusal::new(
                Reason::InvalidNonce,
                "the ID token has no nonce; this login sent one",
            ));
        }
    }
    // sub: present.
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(Refusal::new(
            Reason::MissingSub,
            "the ID token has no sub claim",
        )),
    }
}
