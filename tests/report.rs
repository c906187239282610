//! Plots and report.html: every example scenario draws every figure, and the report renders in
//! headless Chromium without console errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{keysim, root, temp_dir};

/// The figures a simulated run of `sc` draws.
fn expected_figures(sc: &keysim::scenario::Scenario) -> Vec<String> {
    let mut names: Vec<String> =
        sc.models.iter().map(|m| format!("usage-{}", keysim::report::plots::slug(&m.name))).collect();
    names.insert(0, "outcomes".to_owned());
    names.extend(["breaches", "overhead", "queue-wait", "capacity", "warnings"].map(String::from));
    names
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Checks a run folder's plots and report; returns the report's path.
fn check_run_folder(dir: &Path, figures: &[String]) -> PathBuf {
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html");
    for f in figures {
        let svg = std::fs::read_to_string(dir.join("plots").join(format!("{f}.svg")))
            .unwrap_or_else(|e| panic!("{}: {f}.svg: {e}", dir.display()));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{f}.svg is an SVG document");
        assert!(svg.matches("<polyline").count() + svg.matches("<path").count() + svg.matches("<text").count() > 10);
        let png = std::fs::read(dir.join("plots").join(format!("{f}.png"))).expect("png");
        let (w, h) = png_size(&png);
        assert!(w == 960 && h >= 300 && h % 300 == 0, "{f}.png is {w}×{h}");
        assert!(html.contains(&format!("<figure id=\"{f}\">")), "report.html shows {f}");
    }
    assert_eq!(html.matches("<svg").count(), figures.len(), "every figure inline, nothing else");
    // Self-contained: nothing is fetched (the SVG namespace is a name, not a fetch).
    let stripped = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for needle in ["src=", "href=", "url(", "@import", "http://", "https://", "<script", "<link"] {
        assert!(!stripped.contains(needle), "{}: report.html holds {needle}", dir.display());
    }
    dir.join("report.html")
}

/// Runs headless Chromium on `page`: its console messages (there must be none) and the DOM.
fn chromium(page: &Path, browser: &Path) -> (Vec<String>, String) {
    let profile = temp_dir("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    (console, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian's Chromium, if installed; in CI it must be.
fn browser() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium (apt-get install -y chromium)");
        eprintln!("skipped the browser check: chromium is not installed (apt-get install -y chromium)");
    }
    found
}

#[test]
fn every_example_scenario_draws_every_plot_and_its_report_renders_in_chromium() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the example scenarios");
    let out = temp_dir("reports");
    // Two at a time: the machine has two cores.
    let reports: Vec<PathBuf> = std::thread::scope(|s| {
        let chunks: Vec<Vec<PathBuf>> = (0..2).map(|i| files.iter().skip(i).step_by(2).cloned().collect()).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let out = out.clone();
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|f| {
                            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
                            let dir = out.join(&name);
                            let st = keysim().arg("run").arg(f).arg("--out").arg(&dir).arg("-q").status().unwrap();
                            assert!(st.success(), "keysim run {name}");
                            let sc = keysim::scenario::load(f, &[]).expect("loads");
                            check_run_folder(&dir, &expected_figures(&sc))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a runner thread")).collect()
    });
    assert_eq!(reports.len(), files.len());

    let Some(browser) = browser() else { return };
    // The check can fail: a page with a script error is caught.
    let bad = out.join("bad.html");
    std::fs::write(&bad, "<!DOCTYPE html><p>x</p><script>console.error('marker'); missing();</script>").unwrap();
    let (console, _) = chromium(&bad, &browser);
    assert!(console.iter().any(|l| l.contains("missing is not defined")), "console errors are seen: {console:?}");
    for page in &reports {
        let (console, dom) = chromium(page, &browser);
        assert!(console.is_empty(), "{}: console messages {console:?}", page.display());
        let html = std::fs::read_to_string(page).unwrap();
        assert_eq!(
            dom.matches("<svg").count(),
            html.matches("<svg").count(),
            "{}: every plot in the DOM",
            page.display()
        );
        assert!(dom.contains("class=\"story\""), "the story rendered");
    }
}

#[test]
fn no_plots_skips_them_and_a_failing_expectation_shows_in_the_report() {
    let dir = temp_dir("no-plots");
    let st = keysim().args(["run", "scenarios/race.toml", "--no-plots", "-q", "--out"]).arg(&dir).status().unwrap();
    assert!(st.success());
    assert!(dir.join("summary.json").exists() && !dir.join("report.html").exists() && !dir.join("plots").exists());

    let dir = temp_dir("failing");
    let st = keysim()
        .args(["run", "scenarios/race.toml", "-q", "--set", "engine.admission=check-then-act", "--out"])
        .arg(&dir)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "failed expectations exit 1, the report written all the same");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("expectation(s) fail") && html.contains("<span class=\"fail\">FAIL</span>"), "fail shown");
    let breaches = std::fs::read_to_string(dir.join("plots/breaches.svg")).unwrap();
    assert!(!breaches.contains("no breaches"), "the breach plot has breaches to show");
    let dir = temp_dir("passing");
    assert!(keysim().args(["run", "scenarios/race.toml", "-q", "--out"]).arg(&dir).status().unwrap().success());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("expectations pass") && !html.contains("FAIL"));
    assert!(std::fs::read_to_string(dir.join("plots/breaches.svg")).unwrap().contains("no breaches"));
}

#[test]
fn compare_reports_side_by_side_and_plan_and_compare_pages_render_in_chromium() {
    let dir = temp_dir("compare");
    let out = keysim().args(["compare", "scenarios/race.toml", "--quiet", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 2, "the [compare] table's two variants");
    assert_eq!((rows[0]["variant"].as_str(), rows[0]["breaches"].as_u64()), (Some("atomic"), Some(0)));
    assert_eq!(rows[1]["variant"], "check-then-act");
    assert!(rows[1]["breaches"].as_u64().unwrap() > 0, "the racy variant breaches");
    assert_eq!(std::fs::read_to_string(dir.join("compare.csv")).unwrap().lines().count(), 3);
    // Same scenario and seed: the same files.
    let again = temp_dir("compare-again");
    assert!(keysim().args(["compare", "scenarios/race.toml", "-q", "--out"]).arg(&again).status().unwrap().success());
    for f in ["compare.csv", "compare.json", "atomic/summary.json"] {
        let (a, b) = (std::fs::read_to_string(dir.join(f)).unwrap(), std::fs::read_to_string(again.join(f)).unwrap());
        if f.ends_with("summary.json") {
            // Engine time on the real clock is the one figure allowed to differ.
            let strip = |s: &str| {
                let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
                v.as_object_mut().unwrap().remove("overhead_ns");
                v
            };
            assert_eq!(strip(&a), strip(&b), "{f}");
        } else {
            assert_eq!(a, b, "{f}");
        }
    }
    for f in ["compare-outcomes", "compare-breaches", "compare-latency"] {
        assert!(dir.join(format!("plots/{f}.svg")).exists() && dir.join(format!("plots/{f}.png")).exists(), "{f}");
    }
    let sc = keysim::scenario::load(&root().join("scenarios/race.toml"), &[]).unwrap();
    for v in ["atomic", "check-then-act"] {
        check_run_folder(&dir.join(v), &expected_figures(&sc));
    }
    // Variants on the command line replace the table; bad ones are bad input.
    let out = keysim()
        .args([
            "compare",
            "scenarios/race.toml",
            "-q",
            "--variant",
            "as-written",
            "--variant",
            "no-reserve=engine.reserve=0",
        ])
        .arg("--out")
        .arg(temp_dir("compare-cli"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for bad in [vec!["--variant", "x=engine.nonsense=1", "--variant", "y"], vec!["--variant", "alone"]] {
        let out = keysim().args(["compare", "scenarios/capacity.toml", "-q"]).args(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }

    let plan = temp_dir("plan-page");
    let st = keysim()
        .args(["plan", "scenarios/capacity.toml", "--sweep", "projects=1..4", "--sweep", "rate=0.3,0.6", "-q", "--out"])
        .arg(&plan)
        .status()
        .unwrap();
    assert!(st.success());
    let Some(browser) = browser() else { return };
    for page in [dir.join("report.html"), plan.join("report.html")] {
        let (console, dom) = chromium(&page, &browser);
        assert!(console.is_empty(), "{}: {console:?}", page.display());
        assert!(dom.contains("<svg") && dom.contains("class=\"story\""), "{}", page.display());
    }
}

#[test]
fn secret_shaped_key_ids_never_reach_reports_or_plots() {
    // Built at run time, so that no literal in the repository looks like a real key.
    let secret = |n: u32| format!("AIza{}{n:04}", "Q".repeat(31));
    let dir = temp_dir("secrets");
    let scenario = dir.join("secret.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"[scenario]
name = "secret"
duration = "20m"
[[models]]
name = "gemini-2.5-flash"
rpm = 5
tpm = 250000
rpd = 250
[[projects]]
id = "proj-a"
keys = ["{}", "{}"]
[engine]
on_exhausted = "queue"
max_wait = "30s"
[[traffic]]
name = "t"
arrival = {{ kind = "poisson", rate = "8/min" }}
prompt_tokens = 100
output_tokens = 10
[[events]]
at = "5m"
revoke = "{}"
[[events]]
at = "6m"
add = {{ key = "{}", project = "proj-a" }}
"#,
            secret(1),
            secret(2),
            secret(1),
            secret(3)
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let st = keysim().arg("run").arg(&scenario).args(["-q", "--requests-csv", "--out"]).arg(&out).status().unwrap();
    assert!(st.success());
    let cmp = keysim()
        .arg("compare")
        .arg(&scenario)
        .args(["-q", "--variant", "a", "--variant", "b=engine.strategy=round-robin", "--out"])
        .arg(dir.join("cmp"))
        .status()
        .unwrap();
    assert!(cmp.success());
    let mut checked = 0;
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p != scenario {
                let bytes = std::fs::read(&p).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                for n in 1..=3 {
                    assert!(!text.contains(&secret(n)), "{} holds a key", p.display());
                    assert!(!text.contains(&secret(n)[4..30]), "{} holds part of a key", p.display());
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "reports, CSVs and plots were written and read ({checked} files)");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("AIza…0002"), "keys are shown redacted");
}

#[test]
fn a_daily_token_limit_gets_its_own_panels() {
    let dir = temp_dir("tpd");
    let text = std::fs::read_to_string(root().join("scenarios/capacity.toml")).unwrap();
    let text = text.replace("rpd = 250\n", "rpd = 250\ntpd = 400_000\n");
    assert!(text.contains("tpd = 400_000"));
    std::fs::write(dir.join("tpd.toml"), text).unwrap();
    let st = keysim().arg("run").arg(dir.join("tpd.toml")).args(["-q", "--out"]).arg(dir.join("out")).status().unwrap();
    assert!(st.success());
    let usage = std::fs::read_to_string(dir.join("out/plots/usage-gemini-2.5-flash.svg")).unwrap();
    assert!(usage.contains("TPD — tokens so far today"));
    assert!(std::fs::read_to_string(dir.join("out/plots/capacity.svg")).unwrap().contains("gemini-2.5-flash TPD"));
    let (w, h) = png_size(&std::fs::read(dir.join("out/plots/usage-gemini-2.5-flash.png")).unwrap());
    assert_eq!((w, h), (960, 4 * 300), "four panels");
    // Without one, three.
    let quick = temp_dir("no-tpd");
    keysim().args(["run", "scenarios/capacity.toml", "-q", "--out"]).arg(&quick).status().unwrap();
    let (_, h) = png_size(&std::fs::read(quick.join("plots/usage-gemini-2.5-flash.png")).unwrap());
    assert_eq!(h, 3 * 300);
}

/// `keysim tune-warnings` sweeps the `[warnings]` settings on a real-traffic scenario, picks
/// the settings that meet the goal, and writes a page that renders in Chromium; the block it
/// prints, pasted into the scenario, gives the figures it reported.
#[test]
fn tune_warnings_finds_settings_that_meet_the_goal_and_its_page_renders_in_chromium() {
    let dir = temp_dir("tune");
    let machine = crate::common::machine();
    let out = keysim()
        .args(["tune-warnings", "scenarios/warn-real-tpm400k.toml", "--quiet", "--json", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    drop(machine);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tune.json on stdout");
    let points = j["points"].as_array().expect("points");
    assert_eq!(points.len(), 3 * 3 * 4 * 2 * 3, "the default grid");
    assert!(j["meeting"].as_u64().unwrap() > 0, "some setting meets the default goal");
    assert!(points.iter().any(|p| !p["meets"].as_bool().unwrap()), "and some do not: the sweep discriminates");
    let best = &j["best"];
    assert_eq!(best["meets"], true);
    assert!(
        best["figures"]["recall"].as_f64().unwrap() >= 0.9 && best["figures"]["lead_p50_s"].as_f64().unwrap() >= 60.0
    );
    // The block, pasted in place of the scenario's [warnings], reproduces the figures.
    let block = j["block"].as_str().expect("block");
    let text = std::fs::read_to_string(root().join("scenarios/warn-real-tpm400k.toml")).unwrap();
    let start = text.find("[warnings]").unwrap();
    let end = start + text[start..].find("\n[[traffic]]").unwrap();
    let pasted = format!("{}{}{}", &text[..start], block, &text[end..]);
    let file = dir.join("pasted.toml");
    std::fs::write(&file, pasted.replace("traces/", &format!("{}/scenarios/traces/", root().display()))).unwrap();
    let run = dir.join("pasted");
    let st = keysim().arg("run").arg(&file).args(["-q", "--no-plots", "--out"]).arg(&run).status().unwrap();
    assert!(st.success(), "the pasted block meets the scenario's [expect]");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["warnings"]["recall"], best["figures"]["recall"]);
    assert_eq!(s["warnings"]["notifications"], best["figures"]["notifications"]);
    // The files and the page.
    let csv = std::fs::read_to_string(dir.join("tune.csv")).unwrap();
    assert_eq!(csv.lines().count(), points.len() + 1);
    for ext in ["svg", "png"] {
        assert!(dir.join(format!("plots/tune-warnings.{ext}")).exists());
    }
    let (w, h) = png_size(&std::fs::read(dir.join("plots/tune-warnings.png")).unwrap());
    assert!(w >= 640 && h >= 600, "{w}×{h}");
    let page = dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<pre id=\"block\">[warnings]") && html.contains("<figure id=\"tune-warnings\">"));
    assert!(!html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "").contains("http"), "nothing fetched");
    let Some(browser) = browser() else { return };
    let (console, dom) = chromium(&page, &browser);
    assert!(console.is_empty(), "console messages {console:?}");
    assert_eq!(dom.matches("<svg").count(), 1, "the picture in the DOM");
    assert!(dom.contains("id=\"block\"") && dom.contains("meets"));
}

#[test]
fn tune_warnings_reports_bad_input_with_exit_2() {
    for args in [
        vec!["--goal", "recall >= 0.9, speed > 3"],
        vec!["--sweep", "horizon=2h"],
        vec!["--sweep", "nonsense"],
        vec!["--sweep", "horizon=10m", "--sweep", "horizon=20m"],
    ] {
        let out = keysim()
            .args(["tune-warnings", "scenarios/warn-real-trace.toml", "--quiet", "--out"])
            .arg(temp_dir("tune-bad"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}
