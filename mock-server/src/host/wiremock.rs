//! The fake mounted in a wiremock `MockServer` (feature `wiremock`).

use std::sync::Arc;

use super::{ask, pairs, Clock, MAX_BODY};
use crate::fake::{Answer, Fake};

/// The fake as a wiremock responder.
pub struct Responder {
    fake: Arc<Fake>,
    clock: Clock,
}

impl wiremock::Respond for Responder {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        let headers = pairs(&req.headers);
        if req.body.len() > MAX_BODY {
            let a = crate::body::payload_too_large();
            return wiremock::ResponseTemplate::new(a.status).set_body_json(a.body);
        }
        let (path, query) = (req.url.path(), req.url.query().unwrap_or_default());
        let mut answer = ask(&self.fake, &self.clock, req.method.as_str(), path, query, &headers, &req.body);
        if answer.drop {
            answer = Answer { drop: false, ..Answer::error(crate::body::overloaded(), answer.delay_ms) };
        }
        wiremock::ResponseTemplate::new(answer.status)
            .insert_header("content-type", answer.content_type())
            .set_body_bytes(answer.body_bytes())
            .set_delay(self.clock.real(answer.delay_ms))
    }
}

/// Starts a wiremock server serving `fake` (on `listener`, or on a free loopback port).
pub async fn start_wiremock(
    fake: Arc<Fake>,
    clock: Clock,
    listener: Option<std::net::TcpListener>,
) -> wiremock::MockServer {
    let mut builder = wiremock::MockServer::builder().disable_request_recording();
    if let Some(l) = listener {
        builder = builder.listener(l);
    }
    let server = builder.start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(Responder { fake, clock })
        .named("keysim fake Gemini API")
        .mount(&server)
        .await;
    server
}
