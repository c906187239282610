//! What the proxy answers with: upstream answers passed on (hop-by-hop headers and
//! credentials dropped, a key in an error body hidden), and its own errors in the shape of
//! the surface a request came in on.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::Body;

/// Which API a request came in on: errors are written in its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Gemini's REST API.
    Gemini,
    /// The OpenAI-compatible one under `/v1beta/openai/`.
    OpenAi,
}

impl Surface {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Gemini => "gemini",
            Self::OpenAi => "openai",
        }
    }
}

/// Headers not passed on: hop-by-hop ones, lengths (recomputed), credentials, compression
/// (usage is read off the answer, which must arrive as it is).
pub(super) fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "x-goog-api-key"
            | "authorization"
            | "accept-encoding"
            // Google's offer of QUIC on its own host, not the proxy's.
            | "alt-svc"
            // A field mask could strip the usage a request is settled from; an override
            // could change the method; a user project could bill another project.
            | "x-goog-fieldmask"
            | "x-http-method-override"
            | "x-goog-user-project"
    )
}

/// An upstream body with the key it was sent with, should it appear, shown redacted.
pub(super) fn hide(body: &[u8], key: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    if key.len() >= 4 && text.contains(key) {
        Bytes::from(text.replace(key, &crate::engine::redact::redact(key)))
    } else {
        Bytes::copy_from_slice(body)
    }
}

/// The upstream answer `status`, `headers`, `body`, passed on.
pub(super) fn passthrough(status: u16, headers: &HeaderMap, body: Bytes) -> hyper::Response<Body> {
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        if passes(k) {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
    resp
}

pub(super) fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// Any body, as the proxy's own.
pub(crate) fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    b.map_err(|e| std::io::Error::other(e.into())).boxed_unsync()
}

/// Whether `headers` say the body is JSON.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"))
}

/// An error answer in the surface's shape.
pub fn error(surface: Surface, status: u16, code: &str, message: &str) -> hyper::Response<Body> {
    error_with(surface, status, code, message, Value::Null)
}

pub(super) fn error_with(
    surface: Surface,
    status: u16,
    code: &str,
    message: &str,
    details: Value,
) -> hyper::Response<Body> {
    let mut e = json!({"code": status, "message": message, "status": code});
    if !details.is_null() {
        e["details"] = details;
    }
    if surface == Surface::OpenAi {
        e["type"] = json!(code.to_ascii_lowercase());
        e["param"] = Value::Null;
    }
    let mut resp = hyper::Response::new(full(Bytes::from(json!({ "error": e }).to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json; charset=UTF-8"));
    resp
}
