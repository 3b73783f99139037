//! One programmed provider as the broker runs it: the OAuth client (the
//! authorization URL, the code exchange and refresh), ID-token verification
//! through its JWKS cache ([`crate::oidc::jwks`]; the checks themselves are
//! [`crate::oidc::verify`]), and userinfo.

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
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
        discovery::{self, HttpSettings},
        http::{BodyError, Bounded, MAX_BODY_BYTES, read_body},
        jwks::{Fetch, JwksCache},
        verify::{Jws, check_claims},
    },
};

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
    /// The access token's lifetime in seconds, when the IdP said.
    pub expires_in: Option<u64>,
}

/// What the token endpoint returned for a refresh token. The ID token is
/// optional on refresh (OpenID Connect Core 12.2).
pub struct RefreshedTokens {
    pub id_token: Option<String>,
    pub access_token: String,
    /// A new refresh token when the IdP rotates them.
    pub refresh_token: Option<String>,
    /// The access token's lifetime in seconds, when the IdP said.
    pub expires_in: Option<u64>,
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

/// HTTP clients by CA bundle (`None`: the system roots only).
#[derive(Default)]
pub struct HttpClients(std::collections::HashMap<Option<String>, reqwest::Client>);

impl HttpClients {
    /// Seeds the map with a runtime's client, to be reused.
    pub fn keep(&mut self, p: &ProviderRuntime) {
        self.0
            .entry(p.cfg.ca_bundle.clone())
            .or_insert_with(|| p.http.clone());
    }

    /// The client for `ca_bundle`, built once.
    pub fn get(
        &mut self,
        settings: &HttpSettings,
        ca_bundle: Option<&str>,
    ) -> Result<reqwest::Client, String> {
        let key = ca_bundle.map(str::to_string);
        if let Some(c) = self.0.get(&key) {
            return Ok(c.clone());
        }
        let c = discovery::http_client(settings, ca_bundle).map_err(|f| f.message)?;
        self.0.insert(key, c.clone());
        Ok(c)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
    /// source is unchanged. `clients` holds the HTTP clients already built
    /// for this config, by CA bundle: providers with the same trust (most
    /// have none beyond the system's) share one client, its TLS roots and
    /// its connection pool, instead of paying for them once each.
    pub fn new(
        cfg: ProgrammedProvider,
        settings: &HttpSettings,
        previous: Option<&ProviderRuntime>,
        clients: &mut HttpClients,
    ) -> Result<Self, String> {
        let http = clients.get(settings, cfg.ca_bundle.as_deref())?;
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
    /// The authorization request; `login_hint` (the address the user
    /// typed on the login page) replaces one set in `authorizeParams`.
    pub fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_challenge: Option<&str>,
        login_hint: Option<&str>,
    ) -> Url {
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
                if !(login_hint.is_some() && k == "login_hint") {
                    q.append_pair(k, v);
                }
            }
            if let Some(hint) = login_hint {
                q.append_pair("login_hint", hint);
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
        // An IP literal the egress rule refuses is never asked; names are
        // judged when they resolve.
        if let Err(denied) = self
            .settings
            .egress
            .check_url(&self.cfg.endpoints.token_endpoint)
        {
            return Err(Refusal::new(
                Reason::TokenUnreachable,
                "the provider's token endpoint could not be reached; try again later",
            )
            .with_detail(denied.to_string()));
        }
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
    fn client_assertion(&self, now: i64) -> Result<Option<String>, Refusal> {
        let Some(key) = &self.client_key else {
            return Ok(None);
        };
        key.assertion(&self.cfg.client_id, &self.cfg.endpoints.token_endpoint, now)
            .map(Some)
            .map_err(|e| Refusal::new(Reason::TokenError, format!("client assertion: {e}")))
    }

    /// Exchanges the authorization code at the token endpoint.
    /// `now` (Unix seconds) dates a client assertion.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: Option<String>,
        now: i64,
    ) -> Result<Tokens, Refusal> {
        let client = self.token_client()?;
        let mut request = client.exchange_code(AuthorizationCode::new(code.to_string()));
        if let Some(v) = verifier {
            request = request.set_pkce_verifier(PkceCodeVerifier::new(v));
        }
        if let Some(a) = self.client_assertion(now)? {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        let response = request
            .request_async(&Bounded(&self.http))
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
            expires_in: response.expires_in().map(|d| d.as_secs()),
        })
    }

    /// Redeems a refresh token. Only `invalid_grant` ends the session; every
    /// other failure (IdP down, 5xx, garbage, `invalid_client` after a
    /// botched secret rotation) keeps it, and further attempts for this
    /// provider pause for [`REFRESH_BACKOFF`].
    pub async fn refresh(
        &self,
        refresh_token: &str,
        now: i64,
    ) -> Result<RefreshedTokens, RefreshFailure> {
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
            .client_assertion(now)
            .map_err(RefreshFailure::Unavailable)?
        {
            request = request
                .add_extra_param("client_assertion_type", ASSERTION_TYPE)
                .add_extra_param("client_assertion", a);
        }
        let result = request.request_async(&Bounded(&self.http)).await;
        match result {
            Ok(response) => {
                *self.refresh_failed_at.lock().expect("not poisoned") = None;
                Ok(RefreshedTokens {
                    id_token: response.extra_fields().id_token.clone(),
                    access_token: response.access_token().secret().clone(),
                    refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                    expires_in: response.expires_in().map(|d| d.as_secs()),
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
            RequestTokenError::Request(oauth2::HttpClientError::Other(too_large)) => Refusal::new(
                Reason::TokenInvalidResponse,
                format!("the token endpoint's {too_large}"),
            )
            .with_detail(format!("token endpoint {endpoint}")),
            RequestTokenError::Request(err) => Refusal::new(
                Reason::TokenUnreachable,
                "the provider's token endpoint could not be reached; try again later",
            )
            .with_detail(format!(
                "token endpoint {endpoint}: {}",
                discovery::error_chain(&err)
            )),
            RequestTokenError::Parse(err, body) => Refusal::new(
                Reason::TokenInvalidResponse,
                "the token endpoint answered something that is not a token response",
            )
            .with_detail(format!(
                "token endpoint {endpoint} ({err}); it began: {}",
                clip(&String::from_utf8_lossy(&body), 120)
            )),
            RequestTokenError::Other(msg) => Refusal::new(
                Reason::TokenInvalidResponse,
                "the token endpoint answered unexpectedly",
            )
            .with_detail(format!("token endpoint {endpoint}: {msg}")),
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
        let expected = self.cfg.expected(nonce);
        jws.check_alg(expected.algs)?;
        let key = self.cfg.key();
        let fetch = Fetch {
            http: &self.http,
            settings: &self.settings,
            provider: &key,
        };
        let keys = self.jwks.keys(&fetch).await?;
        match jws.verify(&keys) {
            Err(r) if r.reason == Reason::UnknownKey => {
                match self.jwks.refetch_for_unknown_kid(&fetch).await {
                    Some(fresh) => jws.verify(&fresh)?,
                    None => return Err(r),
                }
            }
            other => other?,
        }
        check_claims(jws.claims(), &expected, now)?;
        Ok(jws.into_claims())
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
        // The page says what failed; where and how is for the log.
        let fail = |public: String, detail: String| {
            Refusal::new(Reason::UserinfoError, public)
                .with_detail(format!("userinfo at {endpoint}: {detail}"))
        };
        if let Err(denied) = self.settings.egress.check_url(endpoint) {
            return Err(fail(
                "the provider's userinfo endpoint could not be reached".into(),
                denied.to_string(),
            ));
        }
        let response = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                fail(
                    "the provider's userinfo endpoint could not be reached".into(),
                    discovery::error_chain(&e),
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(
                "the provider's userinfo endpoint answered an error".into(),
                format!("HTTP {status}"),
            ));
        }
        let is_jwt = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/jwt"));
        if is_jwt {
            return Err(fail(
                "userinfo answered a signed JWT; only JSON userinfo is supported".into(),
                "application/jwt".into(),
            ));
        }
        let body = read_body(response, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => fail(format!("the userinfo answer is {e}"), e.to_string()),
                BodyError::Read(_) => fail(
                    "the userinfo answer could not be read".into(),
                    e.to_string(),
                ),
            })?;
        let claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| fail("userinfo is not a JSON object".into(), e.to_string()))?;
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

/// `s` without control characters, cut at `max` characters: a provider's
/// text as it may appear on a page or in a log line.
pub fn clip(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
