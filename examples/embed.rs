//! Embedding keysim's engine in a service: every Gemini call takes a permit from the engine
//! (waiting in the fair queue when the pool is full), is sent with the key the permit names,
//! and settles from the answer — `usageMetadata` on success, the 429 body on a rate limit.
//!
//! ```sh
//! keysim mock --scenario scenarios/quickstart.toml --port 8080 &
//! cargo run --example embed -- http://127.0.0.1:8080 8
//! ```
//!
//! Key ids are labels; a key's secret is read from the environment variable of the same name
//! when it is set (the fake accepts the ids themselves).

use std::error::Error;
use std::time::Duration;

use keysim_engine::redact::redact;
use keysim_engine::{
    parse_quota_error, Engine, KeySpec, Limits, ModelSpec, Outcome, PoolSpec, ProjectSpec, Prompt, Request,
};
use serde_json::{json, Value};

const MODEL: &str = "gemini-2.5-flash";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let requests: usize = args.next().map_or(Ok(8), |n| n.parse())?;

    // Free-tier Flash limits; two projects with two keys each (the quickstart's first two).
    let flash = Limits { rpm: 10, tpm: 250_000, rpd: 250, tpd: None };
    let projects = ["proj-1", "proj-2"];
    let engine = Engine::builder(PoolSpec {
        models: vec![ModelSpec { name: MODEL.into(), limits: flash }],
        projects: projects.iter().map(|p| ProjectSpec { id: (*p).into(), limits: vec![Some(flash)] }).collect(),
        keys: projects
            .iter()
            .flat_map(|p| ["a", "b"].map(|k| KeySpec { id: format!("{p}-key-{k}"), project: (*p).into() }))
            .collect(),
    })
    .build()?;
    let model = engine.model(MODEL).expect("the pool serves it");
    let http = reqwest::Client::new();

    for i in 0..requests {
        let prompt = format!("Request {i}: explain in one sentence why quotas are counted per project.");
        let mut permit = engine.acquire(&Request::new(model, Prompt::Text(&prompt)), Duration::from_secs(30)).await?;
        let key_id = permit.key_id();
        let secret = std::env::var(&key_id).unwrap_or_else(|_| key_id.clone());
        // From here a dropped permit (this task cancelled mid-call) keeps the request counted.
        permit.mark_sent();
        let sent = http
            .post(format!("{base}/v1beta/models/{MODEL}:generateContent"))
            .header("x-goog-api-key", secret)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}))
            .send()
            .await;
        let (status, outcome) = match sent {
            Ok(answer) => {
                let status = answer.status().as_u16();
                let body = answer.text().await.unwrap_or_default();
                (status, outcome_of(status, &body))
            }
            Err(_) => (0, Outcome::Failed),
        };
        println!("request {i}: key {} → {status} {outcome:?}", redact(&key_id));
        permit.settle(outcome)?;
    }
    let capacity = engine.capacity(model, engine.clock().now());
    println!("{MODEL}: {} of {} requests left this minute", capacity.remaining[0], capacity.usable[0]);
    Ok(())
}

/// What an answer says happened, for settlement.
fn outcome_of(status: u16, body: &str) -> Outcome {
    match status {
        200 => {
            let v: Value = serde_json::from_str(body).unwrap_or_default();
            let u = &v["usageMetadata"];
            let count = |k: &str| u[k].as_u64().unwrap_or(0);
            Outcome::Success {
                input_tokens: count("promptTokenCount"),
                output_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
            }
        }
        429 => Outcome::RateLimited(parse_quota_error(body)),
        _ => Outcome::Failed,
    }
}
