//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use keysim::report::summary::Summary;
use keysim::scenario::{self, Scenario};
use keysim::sim::{simulate, Outputs};

/// The repository root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Loads `scenarios/<name>.toml` with overrides.
pub(crate) fn scenario(name: &str, overrides: &[&str]) -> Scenario {
    let path = root().join("scenarios").join(format!("{name}.toml"));
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    scenario::load(&path, &overrides).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs a scenario in memory and returns its summary and timeline CSV.
pub(crate) fn run(sc: &Scenario) -> (Summary, String) {
    let mut timeline = Vec::new();
    let outputs = Outputs { timeline: Some(&mut timeline), ..Outputs::default() };
    let result = simulate(sc, outputs).expect("simulation runs");
    (
        Summary::new(sc, keysim::report::summary::RunMode::Sim, &result.aggregate, &result.engine),
        String::from_utf8(timeline).expect("utf-8"),
    )
}

/// A fresh, empty folder under the system's temporary folder.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "keysim-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The keysim binary.
pub(crate) fn keysim() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keysim"));
    c.current_dir(root());
    c
}

/// Held by a test that needs the machine to itself: a real-time run on a scaled clock (where a
/// stall of the process reads as seconds of the pool's time), or a command that keeps every
/// core busy (a plan's grid, a tuning sweep). Tests that hold it never overlap.
pub(crate) fn machine() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
