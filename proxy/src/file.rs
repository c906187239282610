//! The proxy's config file: a pool (the engine's pool sections: `[[models]]`, `[[projects]]`,
//! `[engine]`, `[warnings]`, read by the same parser as the lab's scenario files, with the
//! same diagnostics) and `[proxy]`: where it listens, what it forwards to, who may use it and
//! where the real keys come from.

use std::path::Path;

use toml::Spanned;

use crate::engine::pool_file::{self, Ctx, Diagnostics, EngineDef, ModelDef, ProjectDef, Table, WarningsDef};

/// The root sections of a proxy config.
const ROOT_KEYS: &[&str] = &["scenario", "pool", "models", "projects", "engine", "warnings", "proxy"];

/// The pool a proxy serves, with its engine's and warnings' settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Its name (`[pool] name`, "proxy" if none), in log lines.
    pub name: String,
    /// Models and their default limits.
    pub models: Vec<ModelDef>,
    /// Projects, their keys and resolved limits.
    pub projects: Vec<ProjectDef>,
    /// The engine's settings.
    pub engine: EngineDef,
    /// Early warnings, if turned on.
    pub warnings: Option<WarningsDef>,
}

/// Parses and validates a proxy config: every problem is reported with its place. `origin`
/// names the text in diagnostics; `base` is the folder relative paths resolve against.
pub fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<(PoolConfig, ProxyDef), Diagnostics> {
    let fail = |items| Diagnostics { origin: origin.to_owned(), source: text.to_owned(), items };
    let root = pool_file::document(text).map_err(fail)?;
    let root = Spanned::new(0..text.len(), root);
    let table = Table::new(&root, "the proxy config");
    let mut ctx = Ctx::default();
    table.allow(&mut ctx, ROOT_KEYS);
    // `[pool]` names the pool; `[scenario]` is the same table under a lab file's name, so that
    // a scenario's pool sections can be served as they are.
    let head = match (table.table(&mut ctx, "pool"), table.table(&mut ctx, "scenario")) {
        (Some(p), Some(_)) => {
            ctx.error(p.span.clone(), "give either [pool] or [scenario], not both");
            None
        }
        (p, s) => p.or(s),
    };
    let (mut name, mut seed) = ("proxy".to_owned(), 0);
    if let Some(t) = &head {
        // A scenario's run settings (`duration`, `start`, `timeline`) mean nothing to a
        // proxy: allowed, so that a scenario file serves as it is.
        t.allow(&mut ctx, &["name", "description", "seed", "duration", "start", "timeline"]);
        if let Some((n, _)) = t.string(&mut ctx, "name") {
            name = n;
        }
        let _ = t.string(&mut ctx, "description");
        if let Some((s, _)) = t.uint(&mut ctx, "seed") {
            seed = s;
        }
    }
    let sections = pool_file::sections(&mut ctx, &table, seed, base, None, &[]);
    let proxy = match table.table(&mut ctx, "proxy") {
        Some(t) => parse_proxy(&mut ctx, &t),
        None => Some(ProxyDef::default()),
    };
    ctx.finish(origin, text)?;
    match (sections.engine, sections.warnings, proxy) {
        (Some(engine), Some(warnings), Some(proxy)) => {
            Ok((PoolConfig { name, models: sections.models, projects: sections.projects, engine, warnings }, proxy))
        }
        // Every `None` comes with a diagnostic, so `finish` has returned them.
        _ => Err(fail(Vec::new())),
    }
}

const KEYS: &[&str] = &[
    "listen",
    "upstream",
    "client_tokens",
    "client_tokens_env",
    "admin_token",
    "admin_token_env",
    "keys",
    "keys_file",
    "timeout",
    "connect_timeout",
    "retries",
    "drain",
    "shutdown_delay",
    "store",
    "store_prefix",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "traffic_log",
];

/// Where the real value of each key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable named by the key's id (`proj-1-key-a`), or by its shell-safe
    /// form (`PROJ_1_KEY_A`).
    Env,
    /// A TOML file of `"key id" = "value"` lines, relative to the config's folder.
    File(std::path::PathBuf),
    /// The id is the key (only for a fake upstream, whose keys are their ids).
    Ids,
}

/// The `[proxy]` table, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyDef {
    /// Address to listen on (`127.0.0.1:8090`).
    pub listen: String,
    /// Base URL of the Gemini API (or a compatible one) requests go to.
    pub upstream: String,
    /// Tokens clients may present (inline, and from `client_tokens_env`, comma-separated).
    pub client_tokens: Vec<String>,
    /// The environment variable holding more client tokens, if any.
    pub client_tokens_env: Option<String>,
    /// The admin API's token (inline).
    pub admin_token: Option<String>,
    /// The environment variable holding the admin token, if any.
    pub admin_token_env: Option<String>,
    /// Where key values come from.
    pub keys: KeySource,
    /// Upstream answer timeout (whole answer, streams included), ms.
    pub timeout_ms: u64,
    /// Upstream connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Further attempts on another project after a quota 429.
    pub retries: u32,
    /// How long shutdown waits for requests in flight, ms.
    pub drain_ms: u64,
    /// How long it keeps accepting after a stop signal, reporting not ready, ms.
    pub shutdown_delay_ms: u64,
    /// The shared quota store (`redis://…`), if not in memory.
    pub store: Option<String>,
    /// The first part of the store's key names.
    pub store_prefix: String,
    /// How long a client may take to send a request's headers, ms (then the connection closes).
    pub header_timeout_ms: u64,
    /// The longest wait for the next piece of a request's body, ms (then 408).
    pub body_timeout_ms: u64,
    /// Client connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// The traffic log, if on (its path as written; the config's folder resolves it).
    pub traffic_log: Option<crate::traffic::TrafficLogDef>,
}

impl Default for ProxyDef {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".into(),
            upstream: "https://generativelanguage.googleapis.com".into(),
            client_tokens: Vec::new(),
            client_tokens_env: None,
            admin_token: None,
            admin_token_env: None,
            keys: KeySource::Env,
            timeout_ms: 300_000,
            connect_timeout_ms: 10_000,
            retries: 2,
            drain_ms: 30_000,
            shutdown_delay_ms: 0,
            store: None,
            store_prefix: "keysim".into(),
            header_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            max_connections: 10_000,
            traffic_log: None,
        }
    }
}

/// Reads `[proxy]`; `None` on errors (reported in `ctx`).
fn parse_proxy(ctx: &mut Ctx, t: &Table<'_, '_>) -> Option<ProxyDef> {
    t.allow(ctx, KEYS);
    let before = ctx.diags.len();
    let mut p = ProxyDef::default();
    if let Some((s, _)) = t.string(ctx, "listen") {
        p.listen = s;
    }
    if let Some((s, span)) = t.string(ctx, "upstream") {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            ctx.error(span, "`upstream` in [proxy] must be an http:// or https:// URL");
        }
        p.upstream = s.trim_end_matches('/').to_owned();
    }
    if let Some(tokens) = t.strings(ctx, "client_tokens") {
        for (tok, span) in tokens {
            if tok.len() < 16 {
                ctx.error(span, "a client token must be at least 16 characters");
            }
            p.client_tokens.push(tok);
        }
    }
    p.client_tokens_env = t.string(ctx, "client_tokens_env").map(|(s, _)| s);
    p.admin_token = t.string(ctx, "admin_token").map(|(s, span)| {
        if s.len() < 16 {
            ctx.error(span, "`admin_token` must be at least 16 characters");
        }
        s
    });
    p.admin_token_env = t.string(ctx, "admin_token_env").map(|(s, _)| s);
    let source = if t.has("keys") {
        t.choice(ctx, "keys", &[("env", 0u8), ("file", 1), ("ids", 2)])
    } else if t.has("keys_file") {
        Some(1)
    } else {
        Some(0)
    };
    let file = t.string(ctx, "keys_file");
    p.keys = match (source, file) {
        (Some(1), Some((f, _))) => KeySource::File(f.into()),
        (Some(1), None) => {
            ctx.error(t.span.clone(), "`keys = \"file\"` in [proxy] needs `keys_file`");
            KeySource::Env
        }
        (Some(2), _) => KeySource::Ids,
        _ => KeySource::Env,
    };
    for (key, slot) in [("timeout", &mut p.timeout_ms), ("connect_timeout", &mut p.connect_timeout_ms)] {
        if let Some((ms, span)) = t.duration(ctx, key) {
            if ms == 0 {
                ctx.error(span, format!("`{key}` in [proxy] must be longer than zero"));
            }
            *slot = ms;
        }
    }
    for (key, slot) in [("header_timeout", &mut p.header_timeout_ms), ("body_timeout", &mut p.body_timeout_ms)] {
        if let Some((ms, span)) = t.duration(ctx, key) {
            if !(1..=3_600_000).contains(&ms) {
                ctx.error(span, format!("`{key}` in [proxy] must be between 1ms and 1h"));
            }
            *slot = ms;
        }
    }
    if let Some((n, span)) = t.uint(ctx, "max_connections") {
        if !(1..=1_000_000).contains(&n) {
            ctx.error(span, "`max_connections` in [proxy] must be between 1 and 1000000");
        }
        p.max_connections = n.clamp(1, 1_000_000) as usize;
    }
    if let Some((ms, _)) = t.duration(ctx, "drain") {
        p.drain_ms = ms;
    }
    if let Some((ms, _)) = t.duration(ctx, "shutdown_delay") {
        p.shutdown_delay_ms = ms;
    }
    if let Some((n, span)) = t.uint(ctx, "retries") {
        if n > 16 {
            ctx.error(span, "`retries` in [proxy] must be at most 16");
        }
        p.retries = n.min(16) as u32;
    }
    p.traffic_log = traffic_log(ctx, t);
    p.store = t.string(ctx, "store").map(|(s, _)| s);
    if let Some((s, _)) = t.string(ctx, "store_prefix") {
        p.store_prefix = s;
    }
    (ctx.diags.len() == before).then_some(p)
}

/// `traffic_log = "path"`, or `traffic_log = { path = "…", max_size_mb = 100, files = 5,
/// queue = 65536 }`.
fn traffic_log(ctx: &mut Ctx, t: &Table<'_, '_>) -> Option<crate::traffic::TrafficLogDef> {
    let raw = t.raw("traffic_log")?;
    let queue = crate::traffic::QUEUE;
    let mut def = crate::traffic::TrafficLogDef { path: Default::default(), max_bytes: 100 << 20, files: 5, queue };
    if matches!(raw.get_ref(), toml::de::DeValue::String(_)) {
        def.path = t.string(ctx, "traffic_log")?.0.into();
        return Some(def);
    }
    let l = t.table(ctx, "traffic_log")?;
    l.allow(ctx, &["path", "max_size_mb", "files", "queue"]);
    def.path = l.required(l.string(ctx, "path"), ctx, "path")?.0.into();
    if let Some((mb, span)) = l.uint(ctx, "max_size_mb") {
        if !(1..=1 << 20).contains(&mb) {
            ctx.error(span, "`max_size_mb` of `traffic_log` must be between 1 and 1048576");
        }
        def.max_bytes = mb.clamp(1, 1 << 20) << 20;
    }
    if let Some((n, span)) = l.uint(ctx, "files") {
        if !(1..=1000).contains(&n) {
            ctx.error(span, "`files` of `traffic_log` must be between 1 and 1000");
        }
        def.files = n.clamp(1, 1000) as u32;
    }
    if let Some((n, span)) = l.uint(ctx, "queue") {
        if !(1..=1 << 24).contains(&n) {
            ctx.error(span, "`queue` of `traffic_log` must be between 1 and 16777216");
        }
        def.queue = n.clamp(1, 1 << 24) as usize;
    }
    Some(def)
}
