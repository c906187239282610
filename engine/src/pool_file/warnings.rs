//! The `[warnings]` table.

use super::fields::{Ctx, Table};
use std::path::Path;

use super::model::{PemFile, WarningsDef, WebhookDef};
use crate::warn::{WarnConfig, WarnMode};

const KEYS: &[&str] = &[
    "mode",
    "warn_at",
    "clear_below",
    "for",
    "forecast",
    "trend_window",
    "evaluate_every",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "send_resolved",
    "inhibit",
    "health_alerts",
    "lost_keys_share",
    "storm_refusals",
    "storm_share",
    "storm_window",
    "limit_changed_for",
    "log",
    "webhook",
    "risk",
    "horizon",
    "lookback",
    "risk_at",
    "risk_clear_below",
    "keep_firing_for",
    "busy_at",
    "remind_every",
    "project_alerts",
];

/// Reads `[warnings]`: `Some(None)` when `mode = "off"`, `None` on errors.
pub(super) fn parse(ctx: &mut Ctx, t: &Table<'_, '_>, base: Option<&Path>) -> Option<Option<WarningsDef>> {
    t.allow(ctx, KEYS);
    let before = ctx.diags.len();
    let mut c = WarnConfig::default();
    let modes = [("pipeline", Some(WarnMode::Pipeline)), ("naive", Some(WarnMode::Naive)), ("off", None)];
    let mode = if t.has("mode") { t.choice(ctx, "mode", &modes)? } else { Some(WarnMode::Pipeline) };
    if let Some(m) = mode {
        c.mode = m;
    }
    if let Some(x) = t.fraction(ctx, "warn_at", 0.01, 1.0) {
        c.rule.warn_at = x;
        c.rule.clear_below = c.rule.clear_below.min(x);
    }
    if let Some(x) = t.fraction(ctx, "clear_below", 0.0, 1.0) {
        if x > c.rule.warn_at {
            let span = t.raw("clear_below").map_or(0..0, |v| v.span());
            ctx.error(span, format!("`clear_below` ({x}) must not be above `warn_at` ({})", c.rule.warn_at));
        }
        c.rule.clear_below = x;
    }
    if let Some((ms, _)) = t.duration(ctx, "for") {
        c.rule.for_ms = ms;
    }
    if let Some(f) = t.boolean(ctx, "forecast") {
        c.rule.forecast = f;
    }
    if let Some((ms, span)) = t.duration(ctx, "trend_window") {
        if ms < 60_000 {
            ctx.error(span, "`trend_window` must be at least a minute");
        }
        c.trend_window_ms = ms;
    }
    if let Some((ms, span)) = t.duration(ctx, "evaluate_every") {
        if !(1_000..=3_600_000).contains(&ms) {
            ctx.error(span, "`evaluate_every` must be between 1s and 1h");
        }
        c.evaluate_every_ms = ms;
    }
    if let Some(b) = t.boolean(ctx, "health_alerts") {
        c.health.enabled = b;
    }
    if let Some(x) = t.fraction(ctx, "lost_keys_share", 0.01, 1.0) {
        c.health.lost_keys_share = x;
    }
    if let Some((n, span)) = t.uint(ctx, "storm_refusals") {
        if n == 0 {
            ctx.error(span, "`storm_refusals` must be at least 1");
        }
        c.health.storm_refusals = n;
    }
    if let Some(x) = t.fraction(ctx, "storm_share", 0.0, 1.0) {
        c.health.storm_share = x;
    }
    if let Some((ms, span)) = t.duration(ctx, "storm_window") {
        if ms < 1_000 {
            ctx.error(span, "`storm_window` must be at least a second");
        }
        c.health.storm_window_ms = ms;
    }
    if let Some((ms, span)) = t.duration(ctx, "limit_changed_for") {
        if ms == 0 {
            ctx.error(span, "`limit_changed_for` must be longer than 0");
        }
        c.health.limit_changed_for_ms = ms;
    }
    if let Some(labels) = t.strings(ctx, "group_by") {
        let known = ["alertname", "model", "dimension", "project", "key", "limit", "severity"];
        for (l, span) in &labels {
            if !known.contains(&l.as_str()) {
                ctx.error_help(
                    span.clone(),
                    format!("unknown label '{l}' in `group_by`"),
                    format!("alerts carry {}", super::fields::quoted(&known)),
                );
            }
        }
        c.route.group_by = labels.into_iter().map(|(l, _)| l).collect();
    }
    for (key, slot) in [
        ("group_wait", &mut c.route.group_wait_ms),
        ("group_interval", &mut c.route.group_interval_ms),
        ("repeat_interval", &mut c.route.repeat_interval_ms),
    ] {
        if let Some((ms, _)) = t.duration(ctx, key) {
            *slot = ms;
        }
    }
    if c.route.group_interval_ms == 0 {
        let span = t.raw("group_interval").map_or(0..0, |v| v.span());
        ctx.error(span, "`group_interval` must be longer than zero");
    }
    if c.rule.forecast && c.trend_window_ms < 2 * c.evaluate_every_ms {
        let span = t.raw("trend_window").or_else(|| t.raw("evaluate_every")).map_or(0..0, |v| v.span());
        ctx.error_help(
            span,
            "the forecast needs at least two evaluations within `trend_window`",
            "make `trend_window` at least twice `evaluate_every`",
        );
    }
    if let Some(b) = t.boolean(ctx, "send_resolved") {
        c.route.send_resolved = b;
    }
    if let Some(b) = t.boolean(ctx, "inhibit") {
        c.inhibit = b;
    }
    risk(ctx, t, &mut c);
    if let Some(b) = t.boolean(ctx, "project_alerts") {
        c.project_alerts = b;
    }
    let log = t.boolean(ctx, "log").unwrap_or(true);
    let webhook = webhook(ctx, t, base);
    if ctx.diags.len() > before {
        return None;
    }
    Some(mode.map(|_| WarningsDef { config: c, log, webhook }))
}

/// The `PoolAtRisk` settings: `risk`, `horizon`, `lookback`, `risk_at`, `risk_clear_below`,
/// `keep_firing_for`, `busy_at`, `remind_every`.
fn risk(ctx: &mut Ctx, t: &Table<'_, '_>, c: &mut WarnConfig) {
    let r = &mut c.risk;
    if let Some(b) = t.boolean(ctx, "risk") {
        r.enabled = b;
    }
    if let Some((ms, span)) = t.duration(ctx, "horizon") {
        if !(60_000..=3_600_000).contains(&ms) {
            ctx.error(
                span,
                "`horizon` must be between 1m and 1h (a minute window's risk is told at most an hour ahead)",
            );
        }
        r.horizon_ms = ms;
    }
    if let Some((ms, span)) = t.duration(ctx, "lookback") {
        if !(10 * 60_000..=24 * 3_600_000).contains(&ms) {
            ctx.error(span, "`lookback` must be between 10m and 24h (the trend and reminders look at ten minutes)");
        }
        r.lookback_ms = ms;
    }
    if let Some(x) = t.fraction(ctx, "risk_at", 0.01, 1.0) {
        r.fire_at = x;
        r.clear_below = r.clear_below.min(x);
    }
    if let Some(x) = t.fraction(ctx, "risk_clear_below", 0.0, 1.0) {
        let span = t.raw("risk_clear_below").map_or(0..0, |v| v.span());
        if x > r.fire_at {
            ctx.error(span, format!("`risk_clear_below` ({x}) must not be above `risk_at` ({})", r.fire_at));
        } else if x <= 0.0 {
            ctx.error(span, "`risk_clear_below` must be above 0 (at 0 the alert never clears)");
        }
        r.clear_below = x;
    }
    if let Some((ms, span)) = t.duration(ctx, "keep_firing_for") {
        if ms < c.evaluate_every_ms {
            ctx.error(span, "`keep_firing_for` must be at least `evaluate_every` (shorter, the alert flaps)");
        }
        r.keep_firing_ms = ms;
    }
    if let Some(x) = t.fraction(ctx, "busy_at", 0.05, 1.0) {
        r.busy_at = x;
    }
    if let Some((ms, _)) = t.duration(ctx, "remind_every") {
        r.remind_every_ms = ms;
    }
    if r.enabled && c.evaluate_every_ms > 60_000 {
        let span = t.raw("evaluate_every").map_or(0..0, |v| v.span());
        ctx.error_help(
            span,
            "`PoolAtRisk` needs an evaluation a minute at least (it keeps each minute's busiest moment)",
            "make `evaluate_every` at most 1m, or set `risk = false`",
        );
    }
}

/// `webhook = "http://…"` or `webhook = { url, timeout, retries, receiver, ca_file }`.
fn webhook(ctx: &mut Ctx, t: &Table<'_, '_>, base: Option<&Path>) -> Option<WebhookDef> {
    let mut w =
        WebhookDef { url: String::new(), timeout_ms: 2_000, retries: 3, receiver: "keysim".into(), ca_file: None };
    let (url, span) = if let Some(v) = t.raw("webhook").filter(|v| v.get_ref().as_str().is_some()) {
        (v.get_ref().as_str().unwrap_or_default().to_owned(), v.span())
    } else {
        let h = t.table(ctx, "webhook")?;
        h.allow(ctx, &["url", "timeout", "retries", "receiver", "ca_file"]);
        if let Some((file, span)) = h.string(ctx, "ca_file") {
            let path = super::resolve(base, &file);
            match std::fs::read(&path) {
                Ok(pem) if String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") => {
                    w.ca_file = Some(PemFile { path: file, pem })
                }
                Ok(_) => ctx.error(span, format!("webhook `ca_file` '{file}' holds no PEM certificate")),
                Err(e) => ctx.error(
                    span,
                    format!("cannot read webhook `ca_file` '{file}' (paths are relative to this file's folder): {e}"),
                ),
            }
        }
        if let Some((ms, span)) = h.duration(ctx, "timeout") {
            if !(1..=60_000).contains(&ms) {
                ctx.error(span, "webhook `timeout` must be between 1ms and 60s");
            }
            w.timeout_ms = ms;
        }
        if let Some((n, span)) = h.uint(ctx, "retries") {
            if n > 10 {
                ctx.error(span, "webhook `retries` must be at most 10");
            }
            w.retries = n.min(10) as u32;
        }
        if let Some((r, _)) = h.string(ctx, "receiver") {
            w.receiver = r;
        }
        h.required(h.string(ctx, "url"), ctx, "url")?
    };
    if let Err(e) = check_url(&url) {
        ctx.error(span, format!("webhook url: {e}"));
        return None;
    }
    w.url = url;
    Some(w)
}

/// Whether `url` can be posted to: http or https, a host, no credentials, no spaces.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("expected http://host:port/path or https://host/path")?;
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the url has spaces or control characters".into());
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err("credentials in the url are not supported".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').ok_or("an IPv6 host needs its closing ']'")?.0,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err("the url has no host".into());
    }
    if let Some((_, port)) = authority.rsplit_once(':').filter(|_| !authority.ends_with(']')) {
        port.parse::<u16>().map_err(|_| "the url's port is not a number from 0 to 65535")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn webhook_urls_are_checked_without_quoting_a_token() {
        for ok in
            ["http://127.0.0.1:9093/api/v2/alerts?token=s3cret", "https://hooks.slack.com/x", "http://[::1]:9000/hook"]
        {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in
            ["ftp://x", "http://:80/", "http://a:notaport/", "http://h/a b", "http://h/a\r\nX: y", "http://u:p@h/"]
        {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(!check_url("http://host:8080x?token=s3cret").unwrap_err().contains("s3cret"));
    }
}
