//! The proxy's config: a pool (the pool sections) and `[proxy]`; the keys' values from
//! the environment or a file, the tokens; and what a reload changes in the pool.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::engine::redact::redact;
use crate::engine::redis_store::RedisTime;
use crate::engine::{AnyStore, RedisConfig, RedisStore, StoreError};
use crate::file::{KeySource, PoolConfig, ProxyDef};

/// Why the proxy cannot start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The config (file, keys, tokens) is wrong: exit code 2.
    #[error("{0}")]
    Config(String),
    /// Something else stopped it (the address, the store).
    #[error("{0}")]
    Start(String),
}

/// A config read and resolved: what the handlers read.
#[derive(Clone)]
pub struct Loaded {
    /// The pool and its engine and warnings settings.
    pub pool: PoolConfig,
    /// `[proxy]`.
    pub proxy: ProxyDef,
    /// Key values by key id.
    pub keys: HashMap<String, String>,
    /// Client tokens.
    pub client_tokens: Vec<String>,
    /// The admin token.
    pub admin_token: Option<String>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("pool", &self.pool.name)
            .field("keys", &self.keys.len())
            .field("client_tokens", &self.client_tokens.len())
            .field("admin_token", &self.admin_token.is_some())
            .finish()
    }
}

/// Reads and resolves the config at `path`.
pub fn load(path: &Path) -> Result<Loaded, ProxyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProxyError::Config(format!("cannot read proxy config {}: {e}", path.display())))?;
    let (pool, proxy) = crate::file::parse(&text, &path.display().to_string(), path.parent())
        .map_err(|d| ProxyError::Config(d.to_string()))?;
    resolve(pool, proxy, path.parent().unwrap_or(Path::new(".")))
}

/// The variable a key's value may also be read from: its id in capitals, `_` for the rest.
pub fn env_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// Resolves the keys' values and the tokens of a parsed config.
pub fn resolve(pool: PoolConfig, mut proxy: ProxyDef, base: &Path) -> Result<Loaded, ProxyError> {
    if let Some(log) = &mut proxy.traffic_log {
        log.path = base.join(&log.path);
    }
    let ids: Vec<&String> = pool.projects.iter().flat_map(|p| p.keys.iter()).collect();
    let mut keys = HashMap::new();
    match &proxy.keys {
        KeySource::Ids => keys.extend(ids.iter().map(|k| ((*k).clone(), (*k).clone()))),
        KeySource::Env => {
            let mut missing = Vec::new();
            for id in ids {
                let value = std::env::var(id).ok().filter(|v| !v.is_empty());
                match value.or_else(|| std::env::var(env_name(id)).ok().filter(|v| !v.is_empty())) {
                    Some(v) => drop(keys.insert(id.clone(), v)),
                    None => missing.push(env_name(id)),
                }
            }
            if !missing.is_empty() {
                return Err(ProxyError::Config(format!(
                    "no value in the environment for the keys {} (set each, or name a `keys_file` in [proxy])",
                    missing.join(", ")
                )));
            }
        }
        KeySource::File(f) => {
            let path = base.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ProxyError::Config(format!("cannot read keys file {}: {e}", path.display())))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                // The parser quotes the offending line, which may hold a key: only its place.
                let at = e.span().map_or(String::new(), |s| format!(" at byte {}", s.start));
                ProxyError::Config(format!("keys file {}: not a TOML table of \"id\" = \"key\"{at}", path.display()))
            })?;
            for id in ids {
                match table.get(id.as_str()).and_then(|v| v.as_str()) {
                    Some(v) if !v.is_empty() => drop(keys.insert(id.clone(), v.to_owned())),
                    _ => {
                        return Err(ProxyError::Config(format!("keys file {}: no value for key {id}", path.display())))
                    }
                }
            }
        }
    }
    let mut client_tokens = proxy.client_tokens.clone();
    if let Some(var) = &proxy.client_tokens_env {
        let v = std::env::var(var).map_err(|_| ProxyError::Config(format!("client_tokens_env: {var} is not set")))?;
        client_tokens.extend(v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned));
    }
    if client_tokens.iter().any(|t| t.len() < 16) {
        return Err(ProxyError::Config("every client token must be at least 16 characters".into()));
    }
    let admin_token = match (&proxy.admin_token, &proxy.admin_token_env) {
        (_, Some(var)) => {
            Some(std::env::var(var).map_err(|_| ProxyError::Config(format!("admin_token_env: {var} is not set")))?)
        }
        (t, None) => t.clone(),
    };
    if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(ProxyError::Config("the admin token must be at least 16 characters".into()));
    }
    Ok(Loaded { pool, proxy, keys, client_tokens, admin_token })
}

/// Whether a config with these tokens may listen on `addr`: without a client or an admin
/// token only on a loopback address.
pub fn check_exposure(addr: &std::net::SocketAddr, client_tokens: usize, admin_token: bool) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    let missing = match (client_tokens > 0, admin_token) {
        (true, true) => return Ok(()),
        (false, false) => "client tokens and an admin token",
        (false, true) => "client tokens",
        (true, false) => "an admin token",
    };
    Err(format!("refusing to listen on {addr} without {missing}: set them in [proxy], or listen on a loopback address"))
}

/// The store `proxy` names: Redis, or memory.
/// `scaled`: the engine's clock is not real time, so Redis counts by the callers' clock.
pub fn store(proxy: &ProxyDef, scaled: bool) -> Result<AnyStore, ProxyError> {
    let Some(spec) = &proxy.store else { return Ok(AnyStore::Memory(Default::default())) };
    let bad = |e: crate::engine::StoreError| ProxyError::Config(format!("store: {e}"));
    let config = RedisConfig::parse(spec).map_err(bad)?;
    redis_store(config, &proxy.store_prefix, scaled).map_err(|e| ProxyError::Start(format!("store: {e}")))
}

/// A Redis store shared by engines whose keys start with `prefix`. On a scaled clock
/// (`scaled`) it counts by the callers' (shared) clock; at real speed, by the server's.
pub fn redis_store(mut config: RedisConfig, prefix: &str, scaled: bool) -> Result<AnyStore, StoreError> {
    config.prefix = prefix.to_owned();
    if scaled {
        config.time = RedisTime::Caller;
    }
    Ok(AnyStore::Redis(Box::new(RedisStore::new(config)?)))
}

/// What a reload changed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Changes {
    /// Keys added (redacted ids).
    pub keys_added: Vec<String>,
    /// Keys removed (redacted ids).
    pub keys_removed: Vec<String>,
    /// Projects added.
    pub projects_added: Vec<String>,
    /// Limits changed, as `project/model`.
    pub limits_changed: Vec<String>,
    /// Settings that differ but need a restart to apply.
    pub needs_restart: Vec<String>,
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} keys added, {} removed, {} projects added, {} limits changed",
            self.keys_added.len(),
            self.keys_removed.len(),
            self.projects_added.len(),
            self.limits_changed.len()
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; needing a restart (not applied): {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

/// Applies `next` to the running proxy: new key values and tokens first, then the new pool
/// through the engine's reconciliation (all of it or none; admissions under way finish on the
/// pool they started with), then tokens and settings.
pub fn apply(state: &super::State, next: Loaded) -> Result<Changes, ProxyError> {
    let current = state.loaded.load();
    let mut changes = Changes::default();
    if next.pool.engine != current.pool.engine {
        changes.needs_restart.push("[engine]".into());
    }
    if next.pool.warnings != current.pool.warnings {
        changes.needs_restart.push("[warnings]".into());
    }
    let (a, b) = (&current.proxy, &next.proxy);
    if a.listen != b.listen || a.upstream != b.upstream || a.store != b.store || a.timeout_ms != b.timeout_ms {
        changes.needs_restart.push("[proxy] listen, upstream, store or timeouts".into());
    }
    if let Some(addr) = state.bound.get() {
        check_exposure(addr, next.client_tokens.len(), next.admin_token.is_some()).map_err(ProxyError::Config)?;
    }
    // The values of added keys first (a key added is admitted as soon as the pool changes);
    // values of removed keys stay (requests sent with them are still being answered); new
    // values for kept keys only once the pool changed.
    let mut keys = current.keys.clone();
    for (id, value) in &next.keys {
        keys.entry(id.clone()).or_insert_with(|| value.clone());
    }
    state.loaded.store(std::sync::Arc::new(Loaded { keys: keys.clone(), ..Loaded::clone(&current) }));
    let spec = crate::engine::pool_file::build::pool_spec(&next.pool.models, &next.pool.projects);
    let applied = state.engine.reconcile_pool(&spec).map_err(|e| {
        ProxyError::Config(format!("the new pool: {e} (nothing applied; tokens and settings unchanged)"))
    })?;
    changes.keys_added = applied.keys_added.iter().map(|k| redact(k)).collect();
    changes.keys_removed = applied.keys_removed.iter().map(|k| redact(k)).collect();
    changes.projects_added = applied.projects_added;
    changes.limits_changed = applied.limits_changed.into_iter().map(|(p, m)| format!("{p}/{m}")).collect();
    // Then tokens and settings; those that need a restart keep their running values.
    let mut pool = next.pool;
    pool.engine = current.pool.engine.clone();
    pool.warnings = current.pool.warnings.clone();
    let mut proxy = next.proxy;
    proxy.upstream = current.proxy.upstream.clone();
    keys.extend(next.keys);
    state.loaded.store(std::sync::Arc::new(Loaded {
        pool,
        proxy,
        keys,
        client_tokens: next.client_tokens,
        admin_token: next.admin_token,
    }));
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str =
        "[[models]]\nname = \"m\"\nrpm = 10\ntpm = 1000\nrpd = 100\n\n[[projects]]\nid = \"p\"\nkeys = [\"k-1\"]\n";

    fn parse(text: &str) -> Result<(PoolConfig, ProxyDef), String> {
        crate::file::parse(text, "proxy.toml", None).map_err(|d| d.to_string())
    }

    #[test]
    fn a_proxy_config_is_a_pool_and_a_proxy_table() {
        let (sc, p) =
            parse(&format!("{POOL}\n[proxy]\nupstream = \"http://127.0.0.1:1/\"\nretries = 3\nkeys = \"ids\"\n"))
                .unwrap();
        assert_eq!((sc.name.as_str(), sc.projects.len()), ("proxy", 1));
        assert_eq!((p.upstream.as_str(), p.retries, &p.keys), ("http://127.0.0.1:1", 3, &KeySource::Ids));
        let (_, p) = parse(POOL).unwrap();
        assert_eq!(p, ProxyDef::default());
    }

    #[test]
    fn the_example_config_loads_as_it_ships() {
        let loaded =
            load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/proxy.toml")).expect("deploy/proxy.toml loads");
        assert_eq!((loaded.pool.projects.len(), loaded.keys.len()), (4, 8));
        assert_eq!(loaded.proxy.upstream, "http://127.0.0.1:8080", "in front of `keysim mock`");
        assert!(!loaded.client_tokens.is_empty() && loaded.admin_token.is_some());
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let err = parse(&format!("{POOL}\n[proxy]\nretries = \"two\"\nupstrem = \"x\"\n")).unwrap_err();
        assert!(err.contains("proxy.toml:12:11") && err.contains("`retries` in [proxy] must be an integer"), "{err}");
        assert!(err.contains("unknown field `upstrem`") && err.contains("did you mean `upstream`?"), "{err}");
        let err = parse(&format!("{POOL}\n[[traffic]]\nname = \"x\"\n")).unwrap_err();
        assert!(err.contains("unknown field `traffic` in the proxy config"), "{err}");
        let err = parse(&format!("{POOL}\n[proxy]\nclient_tokens = [\"short\"]\nkeys = \"file\"\n")).unwrap_err();
        assert!(err.contains("at least 16 characters") && err.contains("needs `keys_file`"), "{err}");
    }

    #[test]
    fn key_values_come_from_a_file_and_are_never_quoted() {
        let dir = std::env::temp_dir().join(format!("keysim-proxy-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (sc, mut p) = parse(POOL).unwrap();
        p.keys = KeySource::File("keys.toml".into());
        let key = format!("AIza{}", "SyFileKey".to_owned() + &"Z".repeat(26));
        std::fs::write(dir.join("keys.toml"), format!("\"k-1\" = \"{key}\"\n")).unwrap();
        let loaded = resolve(sc.clone(), p.clone(), &dir).unwrap();
        assert_eq!(loaded.keys["k-1"], key);
        assert!(!format!("{loaded:?}").contains("AIza"));
        std::fs::write(dir.join("keys.toml"), format!("\"k-1\" = {key}\n")).unwrap();
        let err = resolve(sc.clone(), p.clone(), &dir).unwrap_err().to_string();
        assert!(err.contains("not a TOML table") && !err.contains("FileKey"), "{err}");
        std::fs::write(dir.join("keys.toml"), "\"k-2\" = \"x\"\n").unwrap();
        let err = resolve(sc, p, &dir).unwrap_err().to_string();
        assert!(err.contains("no value for key k-1"), "{err}");
        assert_eq!(env_name("proj-1-key.a"), "PROJ_1_KEY_A");
    }
}
