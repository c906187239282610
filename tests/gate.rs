//! `keysim gate`: expectations and the committed baseline, exit codes and JUnit XML.

use crate::common::{keysim, temp_dir};

#[test]
fn the_committed_baseline_passes_and_a_worse_engine_fails_with_junit() {
    let dir = temp_dir("gate");
    let ok = keysim()
        .args(["gate", "scenarios/race.toml", "scenarios/shared-project.toml"])
        .args(["--baseline", "scenarios/gate-baseline.json", "--quiet", "--junit"])
        .arg(dir.join("ok.xml"))
        .status()
        .unwrap();
    assert_eq!(ok.code(), Some(0));
    let junit = std::fs::read_to_string(dir.join("ok.xml")).unwrap();
    assert!(junit.contains("failures=\"0\"") && !junit.contains("<failure"), "{junit}");

    // The reference mistake, check-then-act, breaks the race story.
    let bad = keysim()
        .args(["gate", "scenarios/race.toml", "--set", "engine.admission=check-then-act"])
        .args(["--baseline", "scenarios/gate-baseline.json", "--junit"])
        .arg(dir.join("reports/bad.xml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let table = String::from_utf8_lossy(&bad.stdout);
    assert!(table.contains("FAIL  expected breaches == 0, got 20"), "{table}");
    let junit = std::fs::read_to_string(dir.join("reports/bad.xml")).expect("its folder is created");
    assert!(junit.contains("<testcase classname=\"race\" name=\"expect breaches == 0\">"), "{junit}");
    assert!(junit.contains("<failure message=\"expected breaches == 0, got 20\">"), "{junit}");
    assert!(junit.contains("<failure message=\"breaches: baseline 0, now 20"), "{junit}");
}

#[test]
fn a_baseline_can_be_written_and_a_broken_one_is_bad_input() {
    let dir = temp_dir("gate-base");
    let base = dir.join("base.json");
    let w = keysim()
        .args(["gate", "scenarios/midnight.toml", "--quiet", "--update-baseline", "--baseline"])
        .arg(&base)
        .status();
    assert_eq!(w.unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&base).unwrap();
    assert!(text.contains("\"midnight\"") && text.contains("\"breaches\": 0.0"), "{text}");
    let again = keysim().args(["gate", "scenarios/midnight.toml", "--quiet", "--baseline"]).arg(&base).status();
    assert_eq!(again.unwrap().code(), Some(0), "a run matches the baseline it wrote");
    std::fs::write(&base, "{\"scenarios\": [}").unwrap();
    let broken = keysim().args(["gate", "scenarios/midnight.toml", "--baseline"]).arg(&base).output().unwrap();
    assert_eq!(broken.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&broken.stderr).contains("line 1, column"));
    let missing = keysim().args(["gate", "scenarios/quickstart.toml", "--baseline"]).arg(&base).output().unwrap();
    assert_eq!(missing.status.code(), Some(2), "a broken baseline is bad input before anything runs");
}
