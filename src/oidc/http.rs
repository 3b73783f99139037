//! Reading a provider's answers within a bound. Every body the operator
//! reads from a provider (discovery, JWKS, token, userinfo) is read chunk by
//! chunk and refused as soon as it passes [`MAX_BODY_BYTES`]: a token
//! endpoint streaming hundreds of megabytes costs the broker one megabyte,
//! not its memory limit and every tenant's logins with it.

use std::{future::Future, pin::Pin};

use oauth2::{HttpClientError, HttpRequest, HttpResponse};

/// Largest body read from a provider: discovery document, JWKS, token
/// response or userinfo.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// It announced or sent more than the bound.
    TooLarge,
    /// The connection failed or timed out while reading.
    Read(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => write!(f, "larger than {} KiB", MAX_BODY_BYTES / 1024),
            BodyError::Read(e) => write!(f, "{}", super::discovery::error_chain(e)),
        }
    }
}

/// Reads a response body, at most `max` bytes, as it streams. A
/// `Content-Length` above the bound is refused before any byte is read.
pub async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `oauth2` crate's HTTP client with a bounded body: its own reqwest
/// adapter reads the whole answer into memory.
pub struct Bounded<'a>(pub &'a reqwest::Client);

impl<'c> oauth2::AsyncHttpClient<'c> for Bounded<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(Box::new)?;
            let response = self.0.execute(request).await.map_err(Box::new)?;
            let mut builder = http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = match read_body(response, MAX_BODY_BYTES).await {
                Ok(body) => body,
                Err(BodyError::Read(e)) => return Err(HttpClientError::Reqwest(Box::new(e))),
                Err(e @ BodyError::TooLarge) => {
                    return Err(HttpClientError::Other(format!("the answer is {e}")));
                }
            };
            builder.body(body).map_err(HttpClientError::Http)
        })
    }
}
