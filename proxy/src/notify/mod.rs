//! Where warning notifications go: a log line (tracing, target `keysim::warnings`), JSON
//! lines in the run's output folder, and a webhook that posts the Alertmanager version-4
//! payload from a thread of its own, so a slow or dead receiver never holds up a run.

pub mod webhook;

use std::io::Write;

use crate::engine::warn::payload::alertmanager_v4;
use crate::engine::warn::Notification;
use crate::engine::Timestamp;

/// A destination for notifications.
pub trait Sink {
    /// Hands over `n`, sent at `at`. Only local I/O may fail here (a webhook queues).
    fn send(&mut self, n: &Notification, at: Timestamp) -> std::io::Result<()>;
}

/// One JSON object a line: `at` (when it was sent) and `payload` (the webhook body).
pub struct JsonLines<W: Write> {
    out: W,
    receiver: String,
}

impl<W: Write> JsonLines<W> {
    /// Lines into `out`, payloads naming `receiver`.
    pub fn new(out: W, receiver: impl Into<String>) -> Self {
        Self { out, receiver: receiver.into() }
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Sink for JsonLines<W> {
    fn send(&mut self, n: &Notification, at: Timestamp) -> std::io::Result<()> {
        let line = serde_json::json!({ "at": at.to_rfc3339(), "payload": alertmanager_v4(n, &self.receiver) });
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")
    }
}

/// A tracing event per notification: `warn` while firing, `info` once resolved.
#[derive(Debug, Default)]
pub struct LogLine;

impl Sink for LogLine {
    fn send(&mut self, n: &Notification, at: Timestamp) -> std::io::Result<()> {
        let group: Vec<String> = n.group_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut summaries: Vec<&str> =
            n.alerts.iter().filter_map(|a| a.annotations.get("summary").map(String::as_str)).collect();
        // Alerts of one forecast (PoolAtRisk on RPM and TPM) share their summary: said once.
        summaries.dedup();
        let (group, at, alerts, summary) = (group.join(","), at.to_rfc3339(), n.alerts.len(), summaries.join("; "));
        if n.firing {
            tracing::warn!(target: "keysim::warnings", %at, %group, alerts, "{summary}");
        } else {
            tracing::info!(target: "keysim::warnings", %at, %group, alerts, "resolved: {summary}");
        }
        Ok(())
    }
}

/// Several sinks, in order.
#[derive(Default)]
pub struct Fanout<'a>(pub Vec<&'a mut dyn Sink>);

impl Sink for Fanout<'_> {
    fn send(&mut self, n: &Notification, at: Timestamp) -> std::io::Result<()> {
        for s in &mut self.0 {
            s.send(n, at)?;
        }
        Ok(())
    }
}
