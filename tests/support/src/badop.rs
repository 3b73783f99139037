//! A misbehaving OpenID provider the tests control: each `Fault` breaks one
//! thing (one ID-token check, the token endpoint, userinfo, the
//! authorization response) and nothing else, so the broker must refuse for
//! that thing's own reason. `/authorize` answers at once with a code (no
//! login form): logins through it are fast and browserless.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    BadSignature,
    UnknownKid,
    /// Signed with a key the JWKS publishes only from its second fetch on.
    UnknownKidPublishedOnRefetch,
    NoKidOneKey,
    NoKidTwoKeys,
    AlgNone,
    Hs256ClientSecret,
    Hs256PublicKey,
    WrongIssuer,
    IssuerTrailingSlash,
    AudienceMissingClient,
    MultipleAudNoAzp,
    MultipleAudWrongAzp,
    WrongAzp,
    Expired,
    IssuedInFuture,
    /// `nbf` ten minutes ahead.
    NotYetValid,
    NonceMismatch,
    NonceMissing,
    SubMissing,
    UserinfoSubMismatch,
    EmailUnverified,
    EmailVerifiedAbsent,
    EmailVerifiedString,
    TokenEndpointError,
    TokenEndpointServerError,
    TokenResponseNotJson,
    NoIdToken,
    AuthorizeError,
    AuthorizeWrongIssuer,
    MalformedIdToken,
    /// The token endpoint answers after 5 s (beyond the broker's timeout).
    TokenEndpointSlow,
    /// Refresh answers carry no ID token.
    RefreshWithoutIdToken,
    /// The token endpoint streams an endless JSON string (up to 1 GiB, no
    /// `Content-Length`).
    TokenEndpointEndless,
    /// Userinfo streams an endless JSON string the same way.
    UserinfoEndless,
}

/// Most an endless answer sends before it ends on its own.
pub const ENDLESS_BYTES: usize = 1 << 30;

/// An answer of `{"access_token":"aaaa…` streamed in 64 KiB chunks until
/// the client stops reading or [`ENDLESS_BYTES`] went out; `sent` counts
/// the bytes the connection took.
fn endless(sent: Arc<AtomicUsize>) -> Response {
    let chunk = bytes_of(64 * 1024);
    let head = axum::body::Bytes::from_static(b"{\"access_token\":\"");
    let stream = futures::stream::unfold(0usize, move |n| {
        let (chunk, head, sent) = (chunk.clone(), head.clone(), sent.clone());
        async move {
            if n >= ENDLESS_BYTES {
                return None;
            }
            let next = if n == 0 { head } else { chunk };
            sent.fetch_add(next.len(), Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(next.clone()), n + next.len()))
        }
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b'a'; n])
}

struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Key {
            kid: kid.into(),
            pair,
        }
    }

    fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65]),
        })
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), input)
            .unwrap()
            .as_ref()
            .to_vec()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub authorize: Vec<HashMap<String, String>>,
    pub token: Vec<HashMap<String, String>>,
    /// `Authorization` headers seen at the token endpoint.
    pub token_auth: Vec<Option<String>>,
    pub jwks_fetches: usize,
    pub userinfo_calls: usize,
    /// Bytes the endless answers got out before the client hung up.
    pub endless_sent: Arc<AtomicUsize>,
}

struct Grant {
    nonce: Option<String>,
    challenge: Option<String>,
    redirect_uri: String,
}

struct Inner {
    issuer: String,
    client_id: String,
    /// Secrets the token endpoint accepts (several during a rotation).
    secrets: Vec<String>,
    fault: Fault,
    user: serde_json::Map<String, Value>,
    /// Claims left out of the ID token (then only userinfo has them).
    omit_from_id_token: Vec<String>,
    main: Key,
    second: Key,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, String>,
    /// Live refresh tokens and their subject.
    refresh: HashMap<String, String>,
    /// Issue a new refresh token on each refresh (the old one is spent).
    rotate_refresh: bool,
    rec: Recorded,
}

#[derive(Clone)]
pub struct BadOp {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
    pub issuer: String,
}

fn random() -> String {
    sso_operator::broker::provider::random_token(16)
}

impl BadOp {
    /// Starts with client `client`/`secret` and user `alice`.
    pub async fn start() -> BadOp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let user = json!({
            "sub": "alice", "preferred_username": "alice", "name": "Alice",
            "email": "alice@example.com", "email_verified": true, "groups": ["staff"],
        });
        let inner = Arc::new(Mutex::new(Inner {
            issuer: issuer.clone(),
            client_id: "client".into(),
            secrets: vec!["secret".into()],
            fault: Fault::None,
            user: user.as_object().unwrap().clone(),
            omit_from_id_token: Vec::new(),
            main: Key::new("main-key"),
            second: Key::new("rotated-key"),
            codes: HashMap::new(),
            tokens: HashMap::new(),
            refresh: HashMap::new(),
            rotate_refresh: false,
            rec: Recorded::default(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        BadOp {
            inner,
            addr,
            issuer,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub fn set_fault(&self, f: Fault) {
        let mut i = self.lock();
        i.fault = f;
        i.rec.jwks_fetches = 0;
    }

    /// Revokes every refresh token issued so far.
    pub fn revoke_refresh_tokens(&self) {
        self.lock().refresh.clear();
    }

    /// Rotate refresh tokens on use.
    pub fn rotate_refresh_tokens(&self, on: bool) {
        self.lock().rotate_refresh = on;
    }

    /// Refresh requests seen at the token endpoint.
    pub fn refresh_calls(&self) -> usize {
        self.lock()
            .rec
            .token
            .iter()
            .filter(|f| f.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .count()
    }

    pub fn set_secrets(&self, secrets: &[&str]) {
        self.lock().secrets = secrets.iter().map(|s| s.to_string()).collect();
    }

    /// Rotates the signing key: a new key (new `kid`) signs from now on and
    /// the JWKS publishes only it.
    pub fn rotate_keys(&self) {
        let mut i = self.lock();
        i.main = Key::new(&format!("main-key-{}", random()));
    }

    pub fn set_claim(&self, name: &str, value: Value) {
        self.lock().user.insert(name.into(), value);
    }

    pub fn omit_from_id_token(&self, names: &[&str]) {
        self.lock().omit_from_id_token = names.iter().map(|s| s.to_string()).collect();
    }

    pub fn recorded(&self) -> Recorded {
        self.lock().rec.clone()
    }
}

async fn discovery(State(s): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let i = s.lock().unwrap();
    let iss = &i.issuer;
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(State(s): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let mut i = s.lock().unwrap();
    i.rec.jwks_fetches += 1;
    let mut keys = vec![i.main.jwk()];
    let publish_second = match i.fault {
        Fault::UnknownKidPublishedOnRefetch => i.rec.jwks_fetches >= 2,
        Fault::NoKidTwoKeys => true,
        _ => false,
    };
    if publish_second {
        keys.push(i.second.jwk());
    }
    Json(json!({ "keys": keys }))
}

async fn authorize(
    State(s): State<Arc<Mutex<Inner>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut i = s.lock().unwrap();
    i.rec.authorize.push(q.clone());
    if q.get("client_id") != Some(&i.client_id)
        || q.get("response_type").map(String::as_str) != Some("code")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let state = q.get("state").cloned().unwrap_or_default();
    let mut target = url::Url::parse(&redirect_uri).unwrap();
    match i.fault {
        Fault::AuthorizeError => {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair("error_description", "User cancelled the login")
                .append_pair("state", &state);
        }
        _ => {
            let code = random();
            i.codes.insert(
                code.clone(),
                Grant {
                    nonce: q.get("nonce").cloned(),
                    challenge: q.get("code_challenge").cloned(),
                    redirect_uri: redirect_uri.clone(),
                },
            );
            let iss = if i.fault == Fault::AuthorizeWrongIssuer {
                "https://attacker.example".to_string()
            } else {
                i.issuer.clone()
            };
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state)
                .append_pair("iss", &iss);
        }
    }
    Redirect::to(target.as_str()).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> (Option<String>, Option<String>) {
    if let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return (Some(unescape(id)), Some(unescape(secret)));
    }
    (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    )
}

fn jws(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(header).unwrap()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    )
}

fn hs256(key: &[u8], input: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    B64.encode(ring::hmac::sign(&k, input.as_bytes()).as_ref())
}

fn id_token(i: &Inner, nonce: Option<&str>) -> String {
    let now = jiff::Timestamp::now().as_second();
    let mut claims = i.user.clone();
    for name in &i.omit_from_id_token {
        claims.remove(name);
    }
    claims.insert("iss".into(), json!(i.issuer));
    claims.insert("aud".into(), json!(i.client_id));
    claims.insert("exp".into(), json!(now + 300));
    claims.insert("iat".into(), json!(now));
    if let Some(n) = nonce {
        claims.insert("nonce".into(), json!(n));
    }
    match i.fault {
        Fault::WrongIssuer => {
            claims.insert("iss".into(), json!("https://other-issuer.example"));
        }
        Fault::IssuerTrailingSlash => {
            claims.insert("iss".into(), json!(format!("{}/", i.issuer)));
        }
        Fault::AudienceMissingClient => {
            claims.insert("aud".into(), json!("someone-else"));
        }
        Fault::MultipleAudNoAzp => {
            claims.insert("aud".into(), json!([i.client_id, "other"]));
        }
        Fault::MultipleAudWrongAzp => {
            claims.insert("aud".into(), json!([i.client_id, "other"]));
            claims.insert("azp".into(), json!("other"));
        }
        Fault::WrongAzp => {
            claims.insert("azp".into(), json!("other"));
        }
        Fault::Expired => {
            claims.insert("exp".into(), json!(now - 600));
            claims.insert("iat".into(), json!(now - 900));
        }
        Fault::IssuedInFuture => {
            claims.insert("iat".into(), json!(now + 600));
            claims.insert("exp".into(), json!(now + 900));
        }
        Fault::NotYetValid => {
            claims.insert("nbf".into(), json!(now + 600));
        }
        Fault::NonceMismatch => {
            claims.insert("nonce".into(), json!("not-the-nonce"));
        }
        Fault::NonceMissing => {
            claims.remove("nonce");
        }
        Fault::SubMissing => {
            claims.remove("sub");
        }
        Fault::EmailUnverified => {
            claims.insert("email_verified".into(), json!(false));
        }
        Fault::EmailVerifiedAbsent => {
            claims.remove("email_verified");
        }
        Fault::EmailVerifiedString => {
            claims.insert("email_verified".into(), json!("true"));
        }
        _ => {}
    }
    let claims = Value::Object(claims);
    let (key, header) = match i.fault {
        Fault::UnknownKid | Fault::UnknownKidPublishedOnRefetch => (
            &i.second,
            json!({"alg": "ES256", "typ": "JWT", "kid": i.second.kid}),
        ),
        Fault::NoKidOneKey | Fault::NoKidTwoKeys => {
            (&i.main, json!({"alg": "ES256", "typ": "JWT"}))
        }
        _ => (
            &i.main,
            json!({"alg": "ES256", "typ": "JWT", "kid": i.main.kid}),
        ),
    };
    match i.fault {
        Fault::AlgNone => format!("{}.", jws(&json!({"alg": "none", "typ": "JWT"}), &claims)),
        Fault::Hs256ClientSecret => {
            let input = jws(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
            let sig = hs256(i.secrets[0].as_bytes(), &input);
            format!("{input}.{sig}")
        }
        Fault::Hs256PublicKey => {
            let input = jws(
                &json!({"alg": "HS256", "typ": "JWT", "kid": i.main.kid}),
                &claims,
            );
            let sig = hs256(i.main.pair.public_key().as_ref(), &input);
            format!("{input}.{sig}")
        }
        Fault::MalformedIdToken => "not-a-jwt".into(),
        _ => {
            let input = jws(&header, &claims);
            let mut sig = key.sign(input.as_bytes());
            if i.fault == Fault::BadSignature {
                sig[10] ^= 0x01;
            }
            format!("{input}.{}", B64.encode(sig))
        }
    }
}

async fn token(
    State(s): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let slow = {
        let mut i = s.lock().unwrap();
        i.rec.token.push(form.clone());
        i.rec.token_auth.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        i.fault == Fault::TokenEndpointSlow
    };
    if slow {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        return (StatusCode::GATEWAY_TIMEOUT, "too late").into_response();
    }
    let mut i = s.lock().unwrap();
    let (id, secret) = client_credentials(&headers, &form);
    // A public client sends no secret: accepted when "" is among the secrets.
    if id.as_deref() != Some(i.client_id.as_str())
        || !i.secrets.contains(&secret.unwrap_or_default())
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    match i.fault {
        Fault::TokenEndpointError => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The code was already used",
            );
        }
        Fault::TokenEndpointServerError => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<html><body>Internal error</body></html>",
            )
                .into_response();
        }
        Fault::TokenResponseNotJson => {
            return (StatusCode::OK, "this is not json").into_response();
        }
        Fault::TokenEndpointEndless => return endless(i.rec.endless_sent.clone()),
        _ => {}
    }
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        return refresh_grant(&mut i, &form);
    }
    let Some(code) = form.get("code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "code missing");
    };
    let Some(grant) = i.codes.remove(code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri mismatch",
        );
    }
    match (&grant.challenge, form.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
            if &B64.encode(digest.as_ref()) != challenge {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "PKCE verification failed",
                );
            }
        }
        (Some(_), None) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "code_verifier required",
            );
        }
        (None, Some(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "code_verifier without challenge",
            );
        }
        (None, None) => {}
    }
    let (access, sub) = new_access_token(&mut i);
    let refresh = random();
    i.refresh.insert(refresh.clone(), sub);
    let mut body = json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 300,
        "refresh_token": refresh,
    });
    if i.fault != Fault::NoIdToken {
        body["id_token"] = json!(id_token(&i, grant.nonce.as_deref()));
    }
    Json(body).into_response()
}

/// A fresh access token for the current user (userinfo answers for it);
/// with the user's subject.
fn new_access_token(i: &mut Inner) -> (String, String) {
    let access = random();
    let sub = i
        .user
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    i.tokens.insert(access.clone(), sub.clone());
    (access, sub)
}

/// `grant_type=refresh_token`: a new access token and ID token (no nonce)
/// for the token's subject, as the user's claims are now.
fn refresh_grant(i: &mut Inner, form: &HashMap<String, String>) -> Response {
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    if !i.refresh.contains_key(&presented) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "refresh token revoked or unknown",
        );
    }
    let (access, sub) = new_access_token(i);
    let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": 300});
    if i.rotate_refresh {
        i.refresh.remove(&presented);
        let next = random();
        i.refresh.insert(next.clone(), sub);
        body["refresh_token"] = json!(next);
    }
    if i.fault != Fault::NoIdToken && i.fault != Fault::RefreshWithoutIdToken {
        body["id_token"] = json!(id_token(i, None));
    }
    Json(body).into_response()
}

async fn userinfo(State(s): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let mut i = s.lock().unwrap();
    i.rec.userinfo_calls += 1;
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !i.tokens.contains_key(token) {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    }
    if i.fault == Fault::UserinfoEndless {
        return endless(i.rec.endless_sent.clone());
    }
    let mut claims = i.user.clone();
    if i.fault == Fault::UserinfoSubMismatch {
        claims.insert("sub".into(), json!("mallory"));
    }
    Json(Value::Object(claims)).into_response()
}
