//! Malformed scenarios: every problem reported at once, with file, line and column; exit
//! code 2; never a panic, whatever the input.

use std::path::Path;

use keysim::scenario;
use proptest::prelude::*;

use crate::common::{keysim, root};

fn bad_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("tests/bad-scenarios"))
        .expect("bad-scenarios folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn diagnostics_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("fixture");
    let origin = format!("tests/bad-scenarios/{}", path.file_name().unwrap().to_string_lossy());
    match scenario::parse(&text, &origin, path.parent(), &[]) {
        Ok(_) => panic!("{origin} should be rejected"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn each_malformed_scenario_gets_a_precise_diagnostic() {
    let files = bad_files();
    assert!(files.len() >= 10, "at least ten malformed scenarios");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let rendered = diagnostics_of(&path);
        assert!(rendered.contains("--> tests/bad-scenarios/"), "{name}: no location:\n{rendered}");
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn several_problems_are_reported_at_once() {
    let rendered = diagnostics_of(&root().join("tests/bad-scenarios/11-several-problems.toml"));
    assert!(rendered.ends_with("5 problems in tests/bad-scenarios/11-several-problems.toml"), "{rendered}");
}

#[test]
fn the_binary_exits_2_on_every_malformed_scenario() {
    for path in bad_files() {
        for cmd in ["validate", "run"] {
            let out = keysim().arg(cmd).arg(&path).output().expect("keysim runs");
            assert_eq!(out.status.code(), Some(2), "{cmd} {}", path.display());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("error:"), "{stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn a_missing_file_and_a_bad_override_exit_2() {
    let out = keysim().args(["validate", "scenarios/no-such-file.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file.toml"));
    let out =
        keysim().args(["validate", "scenarios/quickstart.toml", "--set", "engine.strategy=fastest"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown strategy 'fastest'"), "{stderr}");
    assert!(stderr.contains("engine.strategy = \"fastest\""), "the override is shown: {stderr}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random edits of a valid scenario never make parsing panic; whatever parses also runs.
    #[test]
    fn no_input_makes_parsing_panic(edits in prop::collection::vec((0usize..4000, 0usize..8, "[\\x20-\\x7e\\n]{0,6}"), 1..6)) {
        let mut text = std::fs::read_to_string(root().join("scenarios/quickstart.toml")).unwrap();
        for (at, cut, insert) in edits {
            let at = at % (text.len() + 1);
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (at + cut).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            text.replace_range(at..end, &insert);
        }
        if let Ok(mut sc) = scenario::parse(&text, "fuzz.toml", None, &[]) {
            sc.duration_ms = sc.duration_ms.min(120_000);
            for t in &mut sc.traffic {
                t.end_ms = t.end_ms.min(sc.duration_ms);
            }
            let _ = keysim::sim::simulate(&sc, keysim::sim::Outputs::default());
        }
    }
}
