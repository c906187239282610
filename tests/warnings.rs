//! Early warnings: the storm, spiky and daily-exhaustion stories, notifications.jsonl, and
//! the webhook against real HTTP and HTTPS receivers on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{keysim, run, scenario, temp_dir};

fn warnings(name: &str, overrides: &[&str]) -> keysim::report::summary::Warnings {
    run(&scenario(name, overrides)).0.warnings
}

#[test]
fn a_storm_of_ten_keys_is_one_grouped_notification_with_lead_time() {
    let w = warnings("warn-storm", &[]);
    assert!(w.enabled);
    assert_eq!(w.mode, "pipeline");
    assert_eq!(w.notifications, 1, "{w:?}");
    assert_eq!((w.true_positive, w.false_positive), (1, 0));
    // The pool truly runs out of RPD, and was warned well before.
    assert_eq!((w.exhaustions, w.warned, w.missed), (1, 1, 0));
    assert!(w.lead_time_s.min > 30.0 * 60.0, "lead time {:?}", w.lead_time_s);
}

#[test]
fn the_naive_reference_sends_one_notification_per_key() {
    let w = warnings("warn-storm", &["warnings.mode=naive"]);
    assert_eq!(w.mode, "naive");
    assert!(w.notifications >= 10, "{w:?}");
    assert_eq!(w.missed, 0);
}

#[test]
fn spikes_that_recover_at_the_window_reset_do_not_warn() {
    let pipeline = warnings("warn-spiky", &[]);
    assert_eq!(pipeline.notifications, 0, "{pipeline:?}");
    assert_eq!(pipeline.exhaustions, 0, "nothing ever ran out");
    let naive = warnings("warn-spiky", &["warnings.mode=naive"]);
    assert!(naive.notifications > 50 && naive.false_positive > 25, "{naive:?}");
}

#[test]
fn warnings_off_reports_nothing() {
    let w = warnings("warn-storm", &["warnings.mode=off"]);
    assert!(!w.enabled);
    assert_eq!(w.notifications, 0);
}

/// A loopback HTTP receiver: answers each request with the next status of `statuses` (the
/// last one repeats; `0` means hold the connection without answering), and hands every
/// request body to the returned channel.
fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, Value)>) {
    receiver_on(statuses, None)
}

/// The same receiver over TLS, with the test certificate of `tests/tls` (for 127.0.0.1).
fn tls_receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, Value)>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_file_iter("tests/tls/server.pem").unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file("tests/tls/server.key").unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    receiver_on(statuses, Some(std::sync::Arc::new(config)))
}

fn receiver_on(
    statuses: Vec<u16>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/hook/alerts", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held: Vec<Box<dyn Send>> = Vec::new();
        let mut answered = 0;
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { return };
            let mut stream: Box<dyn ReadWrite> = match &tls {
                Some(config) => {
                    let Ok(server) = rustls::ServerConnection::new(config.clone()) else { continue };
                    Box::new(rustls::StreamOwned::new(server, tcp))
                }
                None => Box::new(tcp),
            };
            // A client that gave up on the handshake (an untrusted certificate) sends nothing.
            let Some((request_line, body)) = read_request(&mut stream) else { continue };
            let status = *statuses.get(answered).or(statuses.last()).unwrap();
            answered += 1;
            let _ = tx.send((request_line, serde_json::from_slice(&body).expect("a JSON body")));
            if status == 0 {
                held.push(Box::new(stream));
                continue;
            }
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.flush();
        }
    });
    (url, rx)
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// One request's line and body.
fn read_request(stream: &mut dyn ReadWrite) -> Option<(String, Vec<u8>)> {
    let mut r = BufReader::new(stream);
    let mut request_line = String::new();
    r.read_line(&mut request_line).ok()?;
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((request_line, body))
}

fn warnings_json(name: &str, sets: &[String]) -> (Value, std::path::PathBuf) {
    let out = temp_dir(name);
    let mut cmd = keysim();
    cmd.args(["run", &format!("scenarios/{name}.toml"), "--quiet", "--out"]).arg(&out);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().expect("keysim runs");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    (summary["warnings"].clone(), out)
}

#[test]
fn the_webhook_posts_the_alertmanager_payload_and_retries() {
    // The first attempt gets a 503; the retry is accepted.
    let (url, bodies) = receiver(vec![503, 200]);
    let (w, out) = warnings_json("warn-storm", &[format!("warnings.webhook={url:?}")]);
    let (line, first) = bodies.recv_timeout(Duration::from_secs(5)).expect("a first attempt");
    let (_, second) = bodies.recv_timeout(Duration::from_secs(5)).expect("a retry");
    assert_eq!(line.trim_end(), "POST /hook/alerts HTTP/1.1");
    assert_eq!(first, second, "the retry carries the same payload");
    assert_eq!(w["webhook"]["delivered"], 1);
    assert_eq!(w["webhook"]["retries"], 1);
    assert_eq!(w["webhook"]["failed"], 0);

    // Field by field, as Alertmanager's version-4 webhook.
    let p = &first;
    assert_eq!(p["version"], "4");
    assert_eq!(p["status"], "firing");
    assert_eq!(p["receiver"], "keysim");
    assert_eq!(p["groupKey"], "{}:{alertname=\"PoolNearLimit\",model=\"gemini-2.5-flash\"}");
    assert_eq!(p["truncatedAlerts"], 0);
    assert_eq!(p["externalURL"], "");
    assert_eq!(p["groupLabels"], serde_json::json!({"alertname": "PoolNearLimit", "model": "gemini-2.5-flash"}));
    assert_eq!(
        p["commonLabels"],
        serde_json::json!({"alertname": "PoolNearLimit", "model": "gemini-2.5-flash", "dimension": "rpd"})
    );
    let alerts = p["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["dimension"], "rpd");
    let summary = a["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("the gemini-2.5-flash pool at 80% of RPD; exhausts in"), "{summary}");
    assert_eq!(p["commonAnnotations"]["summary"], a["annotations"]["summary"]);
    assert_eq!(a["startsAt"], "2026-11-25T17:20:00.000Z", "when it fired");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["generatorURL"], "");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);

    // The same notification is in notifications.jsonl, with the time it went out.
    let lines = std::fs::read_to_string(out.join("notifications.jsonl")).unwrap();
    let lines: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["payload"], first);
    assert_eq!(lines[0]["at"], "2026-11-25T17:20:30.000Z", "after the group wait");
}

#[test]
fn a_receiver_that_never_answers_costs_its_timeout_not_the_run() {
    let (url, bodies) = receiver(vec![0]);
    let set = format!("warnings.webhook={{ url = {url:?}, timeout = \"200ms\", retries = 1 }}");
    let started = std::time::Instant::now();
    let (w, _) = warnings_json("warn-storm", &[set]);
    assert!(bodies.recv_timeout(Duration::from_secs(1)).is_ok(), "it was tried");
    assert_eq!(w["webhook"]["delivered"], 0);
    assert_eq!(w["webhook"]["failed"], 1);
    assert_eq!(w["webhook"]["retries"], 1);
    assert_eq!(w["notifications"], 1, "scoring does not depend on delivery");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_webhook_url_that_cannot_work_is_bad_input() {
    let o = keysim()
        .args(["validate", "scenarios/warn-storm.toml", "--set", "warnings.webhook=\"ftp://hooks.example/x\""])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("expected http://host:port/path or https://host/path"), "{err}");
    let set = "warnings.webhook={ url = \"https://hooks.example/x\", ca_file = \"no-such-ca.pem\" }";
    let o = keysim().args(["validate", "scenarios/warn-storm.toml", "--set", set]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot read webhook `ca_file` 'no-such-ca.pem'"), "{err}");
}

#[test]
fn the_webhook_reaches_an_https_receiver_it_trusts() {
    let ca = std::fs::canonicalize("tests/tls/ca.pem").unwrap();
    let (url, rx) = tls_receiver(vec![200]);
    let set = format!("warnings.webhook={{ url = {url:?}, ca_file = {:?} }}", ca.display().to_string());
    let (w, _) = warnings_json("warn-storm", &[set]);
    assert_eq!((w["webhook"]["delivered"].as_u64(), w["webhook"]["failed"].as_u64()), (Some(1), Some(0)), "{w}");
    let (line, body) = rx.recv_timeout(Duration::from_secs(5)).expect("the receiver got the payload");
    assert!(line.starts_with("POST /hook/alerts "), "{line}");
    assert_eq!(body["version"], "4");
    // Without the test CA the certificate is not trusted: nothing is delivered.
    let (url, _rx) = tls_receiver(vec![200]);
    let set = format!("warnings.webhook={{ url = {url:?}, timeout = \"500ms\", retries = 1 }}");
    let (w, _) = warnings_json("warn-storm", &[set]);
    assert_eq!((w["webhook"]["delivered"].as_u64(), w["webhook"]["failed"].as_u64()), (Some(0), Some(1)), "{w}");
}

#[test]
fn a_forecast_without_history_is_bad_input() {
    let o = keysim()
        .args(["validate", "scenarios/warn-storm.toml", "--set", "warnings.trend_window=\"1m\""])
        .args(["--set", "warnings.evaluate_every=\"45s\""])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least two evaluations") && err.contains("warn-storm.toml"), "{err}");
}

/// `PoolAtRisk` settings that could not work are bad input, each with its reason.
#[test]
fn risk_settings_that_cannot_work_are_bad_input() {
    for (set, says) in [
        ("warnings.horizon=\"2h\"", "between 1m and 1h"),
        ("warnings.risk_clear_below=0", "never clears"),
        ("warnings.keep_firing_for=\"1s\"", "flaps"),
        ("warnings.busy_at=0", "between 0.05 and 1"),
        ("warnings.lookback=\"5m\"", "between 10m and 24h"),
        ("warnings.evaluate_every=\"2m\"", "an evaluation a minute"),
    ] {
        let o = keysim().args(["validate", "scenarios/warn-real-trace.toml", "--set", set]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{set}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{set}: {err}");
    }
    let ok = keysim().args(["validate", "scenarios/warn-real-trace.toml", "--set", "warnings.risk=false"]).output();
    assert_eq!(ok.unwrap().status.code(), Some(0), "off is fine");
}

/// Real, bursty demand (the Azure hour through a pool below its peaks): `PoolAtRisk` foretells
/// the dry spells from the busiest minutes, once per busy period and between bursts; the level
/// and trend rules alone stay silent.
#[test]
fn real_bursty_demand_is_warned_ahead_without_spam() {
    for name in ["warn-real-trace", "warn-real-tpm400k", "warn-real-tpm250k"] {
        let w = warnings(name, &[]);
        assert!(w.exhaustions >= 4, "{name}: {w:?}");
        assert!(w.recall.is_some_and(|r| r >= 0.9), "{name}: {w:?}");
        assert!(w.precision.is_some_and(|p| p >= 0.9), "{name}: {w:?}");
        assert!(w.lead_time_s.p50 >= 60.0, "{name}: {:?}", w.lead_time_s);
        assert!(w.notifications <= w.exhaustions && w.notifications_per_hour <= 12.0, "{name}: {w:?}");
        assert_eq!(w.missed, w.missed_first_burst, "{name}: only the first burst is missed: {w:?}");
        assert_eq!(w.spells.len() as u64, w.exhaustions);
        let advance = w.spells.iter().filter(|s| s.foretold == "advance").count() as u64;
        assert_eq!(advance, w.warned_in_advance);
        assert!(w.spells.iter().filter(|s| s.foretold == "advance").all(|s| s.lead_s.is_some()));
    }
    let w = warnings("warn-real-tpm400k", &["warnings.risk=false"]);
    assert!(w.recall.is_some_and(|r| r < 0.5), "the old rules miss most of them: {w:?}");
}
