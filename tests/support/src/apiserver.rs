//! The kube-rs mock apiserver (tower-test): each `expect` takes the next
//! request the code under test makes, checks it, and answers.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};

/// A client wired to a fresh mock apiserver.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The apiserver side of the mock: each `expect` takes the next request,
/// checks it, and answers.
pub struct ApiServer(pub Handle);

pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub body: Value,
}

impl ApiServer {
    pub async fn next(&mut self) -> (Seen, tower_test::mock::SendResponse<Response<Body>>) {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the controller made no further request")
            .expect("mock service closed");
        let method = req.method().clone();
        let uri = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (Seen { method, uri, body }, send)
    }

    /// Expects `method` on a URI starting with `path`; answers `status` with `answer`.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        answer: Value,
    ) -> Seen {
        let (seen, send) = self.next().await;
        assert_eq!(seen.method, method, "{} {}", seen.method, seen.uri);
        assert!(
            seen.uri.starts_with(path),
            "expected {method} {path}…, got {} {}",
            seen.method,
            seen.uri
        );
        let resp = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap();
        send.send_response(resp);
        seen
    }

    /// Asserts that no request arrives within a short while.
    pub async fn expect_silence(&mut self) {
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.0.next_request()).await
        {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

pub fn not_found(kind: &str, name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{kind} \"{name}\" not found")})
}
