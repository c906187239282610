//! What a tuning writes: `tune.csv` (one row per point), `tune.json`, the
//! precision–recall–lead picture (`plots/tune-warnings.{svg,png}`) and `report.html` with the
//! `[warnings]` block to paste.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::goal::{Goal, Measure};
use super::{block, Point};
use crate::report::chart::{colour, Figure, Marks, Panel, Shape, XY};
use crate::report::html;

/// A finished tuning, ready to write.
pub(crate) struct Tuned<'a> {
    /// The scenario's name and file.
    pub(crate) name: &'a str,
    /// See `name`.
    pub(crate) file: &'a str,
    /// The goal.
    pub(crate) goal: &'a Goal,
    /// Every point, in grid order.
    pub(crate) points: &'a [Point],
    /// The best one.
    pub(crate) best: Option<usize>,
    /// Threads and wall time.
    pub(crate) jobs: usize,
    /// See `jobs`.
    pub(crate) wall_s: f64,
}

#[derive(Serialize)]
struct Json<'a> {
    scenario: &'a str,
    goal: String,
    points: &'a [Point],
    meeting: usize,
    best: Option<&'a Point>,
    block: Option<String>,
    jobs: usize,
    wall_s: f64,
}

impl Tuned<'_> {
    /// Points meeting the goal.
    pub(crate) fn meeting(&self) -> usize {
        self.points.iter().filter(|p| p.meets).count()
    }

    /// The result in a sentence.
    pub(crate) fn sentence(&self) -> String {
        let n = self.points.len();
        match self.best.map(|b| &self.points[b]) {
            Some(p) => {
                let f = &p.figures;
                let what = if p.meets {
                    format!("{} of {n} settings meet the goal; the best", self.meeting())
                } else {
                    format!(
                        "none of {n} settings meets the goal; the closest ({} of {} clauses)",
                        p.clauses_met,
                        self.goal.len()
                    )
                };
                format!(
                    "{what}: {} — recall {}, precision {}, median lead {:.0} s, {} notification{} ({:.1} an hour) for {} spell{}",
                    settings(p),
                    f.recall.map_or("-".to_owned(), |r| format!("{r:.2}")),
                    f.precision.map_or("-".to_owned(), |r| format!("{r:.2}")),
                    f.lead_p50_s,
                    f.notifications,
                    if f.notifications == 1 { "" } else { "s" },
                    f.per_hour,
                    f.spells,
                    if f.spells == 1 { "" } else { "s" },
                )
            }
            None => "no point was simulated".to_owned(),
        }
    }

    /// Writes everything into `dir`; returns `tune.json`'s text.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating output folder {}", dir.display()))?;
        self.write_csv(dir)?;
        let best = self.best.map(|b| &self.points[b]);
        let json = serde_json::to_string_pretty(&Json {
            scenario: self.name,
            goal: self.goal.text(),
            points: self.points,
            meeting: self.meeting(),
            best,
            block: best.map(|p| block(p, self.file)),
            jobs: self.jobs,
            wall_s: self.wall_s,
        })
        .context("encoding tune.json")?;
        std::fs::write(dir.join("tune.json"), format!("{json}\n")).context("writing tune.json")?;
        let drawn = crate::report::plots::write(dir, vec![self.figure()])?;
        std::fs::write(dir.join("report.html"), self.page(&drawn)).context("writing report.html")?;
        Ok(json)
    }

    fn write_csv(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join("tune.csv");
        let mut out = csv::Writer::from_path(&path).with_context(|| format!("creating {}", path.display()))?;
        let keys: Vec<String> =
            self.points.first().map(|p| p.settings.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
        let mut head = keys.clone();
        head.extend(
            [
                "notifications",
                "spells",
                "warned_in_advance",
                "warned_while_firing",
                "missed",
                "missed_first_burst",
                "precision",
                "recall",
                "lead_p50_s",
                "lead_min_s",
                "notifications_per_hour",
                "notifications_per_spell",
                "meets_goal",
            ]
            .map(String::from),
        );
        out.write_record(&head)?;
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        for p in self.points {
            let f = &p.figures;
            let mut rec: Vec<String> = p.settings.iter().map(|(_, v)| v.clone()).collect();
            rec.extend([
                f.notifications.to_string(),
                f.spells.to_string(),
                f.advance.to_string(),
                f.while_firing.to_string(),
                f.missed.to_string(),
                f.missed_first_burst.to_string(),
                opt(f.precision),
                opt(f.recall),
                format!("{:.3}", f.lead_p50_s),
                format!("{:.3}", f.lead_min_s),
                format!("{:.6}", f.per_hour),
                format!("{:.6}", f.per_spell),
                p.meets.to_string(),
            ]);
            out.write_record(&rec)?;
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Precision against recall (lead time by colour) above lead against notifications an
    /// hour; the goal's targets ruled, the best point ringed.
    fn figure(&self) -> Figure {
        let buckets: [(&str, f64, f64); 4] = [
            ("lead under 60 s", f64::MIN, 60.0),
            ("lead 60 s – 5 min", 60.0, 300.0),
            ("lead 5 – 15 min", 300.0, 900.0),
            ("lead 15 min or more", 900.0, f64::MAX),
        ];
        let mut pr = Vec::new();
        let mut lead = Vec::new();
        for (i, (label, lo, hi)) in buckets.iter().enumerate() {
            let inside: Vec<&Point> =
                self.points.iter().filter(|p| p.figures.lead_p50_s >= *lo && p.figures.lead_p50_s < *hi).collect();
            let xy = |p: &&Point| (p.figures.precision.unwrap_or(1.0), p.figures.recall.unwrap_or(1.0));
            for (meets, shape, suffix) in [(true, Shape::Dot, ", meets the goal"), (false, Shape::Cross, "")] {
                let these: Vec<&&Point> = inside.iter().filter(|p| p.meets == meets).collect();
                if these.is_empty() {
                    continue;
                }
                pr.push(Marks {
                    label: format!("{label}{suffix}"),
                    colour: colour(i),
                    shape,
                    points: these.iter().map(|p| xy(p)).collect(),
                });
                lead.push(Marks {
                    label: format!("{label}{suffix}"),
                    colour: colour(i),
                    shape,
                    points: these.iter().map(|p| (p.figures.per_hour, p.figures.lead_p50_s)).collect(),
                });
            }
        }
        if let Some(b) = self.best.map(|b| &self.points[b]) {
            let f = &b.figures;
            let label = "chosen".to_owned();
            pr.push(Marks {
                label: label.clone(),
                colour: colour(5),
                shape: Shape::Ring,
                points: vec![(f.precision.unwrap_or(1.0), f.recall.unwrap_or(1.0))],
            });
            lead.push(Marks { label, colour: colour(5), shape: Shape::Ring, points: vec![(f.per_hour, f.lead_p50_s)] });
        }
        let rule =
            |m: Measure, what: &str| self.goal.floor(m).map(|v| (v, format!("{what} {v}"))).into_iter().collect();
        let max_hour = self.points.iter().map(|p| p.figures.per_hour).fold(1.0, f64::max) * 1.1;
        // Zoomed on the points: most settings crowd near the top right.
        let low = |f: &dyn Fn(&Point) -> f64| {
            let min = self.points.iter().map(f).fold(1.0, f64::min);
            ((min - 0.05) * 20.0).floor().max(0.0) / 20.0
        };
        let x_low = low(&|p: &Point| p.figures.precision.unwrap_or(1.0));
        let y_low = low(&|p: &Point| p.figures.recall.unwrap_or(1.0));
        let max_lead = self.points.iter().map(|p| p.figures.lead_p50_s).fold(60.0, f64::max) * 1.1;
        Figure {
            name: "tune-warnings".into(),
            title: "Precision, recall and lead of every setting".into(),
            caption: format!(
                "Each mark is one simulated run of {} with one [warnings] setting: above, its precision (x) against \
                 recall (y); below, its notifications an hour (x) against the median lead of the spells it warned in \
                 advance (y). Colour: that lead. Dots meet the goal ({}), crosses do not; the ring is the setting \
                 chosen.",
                self.name,
                self.goal.text()
            ),
            width: 900,
            panel_height: 380,
            panels: vec![
                Panel::XY(XY {
                    title: "precision against recall".into(),
                    x_label: "precision".into(),
                    y_label: "recall".into(),
                    x_range: Some((x_low, 1.02)),
                    y_range: Some((y_low, 1.02)),
                    marks: pr,
                    rules_x: rule(Measure::Precision, "precision"),
                    rules_y: rule(Measure::Recall, "recall"),
                    ..XY::default()
                }),
                Panel::XY(XY {
                    title: "lead against notifications an hour".into(),
                    x_label: "notifications an hour".into(),
                    y_label: "median lead (s)".into(),
                    x_range: Some((0.0, max_hour)),
                    y_range: Some((0.0, max_lead)),
                    marks: lead,
                    rules_y: rule(Measure::LeadP50, "lead"),
                    ..XY::default()
                }),
            ],
        }
    }

    fn page(&self, drawn: &[(Figure, String)]) -> String {
        let mut b = format!("<h1>{} — warnings tuned</h1>", html::esc(self.name));
        let _ = write!(
            b,
            "<p class=\"meta\">{} settings simulated on {} threads in {:.1} s · goal: {}</p>",
            self.points.len(),
            self.jobs,
            self.wall_s,
            html::esc(&self.goal.text())
        );
        let _ = write!(b, "<div class=\"story\"><p>{}</p></div>", html::esc(&self.sentence()));
        if let Some(p) = self.best.map(|i| &self.points[i]) {
            let _ = write!(
                b,
                "<h2>The [warnings] block to paste</h2><pre id=\"block\">{}</pre>",
                html::esc(&block(p, self.file))
            );
        }
        b.push_str("<h2>Every setting</h2>");
        for (f, svg) in drawn {
            b.push_str(&html::figure(f, svg));
        }
        let keys: Vec<String> =
            self.points.first().map(|p| p.settings.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
        let mut head: Vec<&str> = keys.iter().map(String::as_str).collect();
        head.extend([
            "notifications",
            "spells",
            "in advance",
            "while firing",
            "missed (first burst)",
            "precision",
            "recall",
            "lead p50",
            "an hour",
            "goal",
        ]);
        let mut order: Vec<usize> = (0..self.points.len()).collect();
        order.sort_by_key(|&i| (!self.points[i].meets, std::cmp::Reverse(self.points[i].clauses_met), i));
        let pct = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{:.0}%", 100.0 * v));
        let rows: Vec<Vec<String>> = order
            .iter()
            .map(|&i| {
                let p = &self.points[i];
                let f = &p.figures;
                let mut cells: Vec<String> = p.settings.iter().map(|(_, v)| html::esc(v)).collect();
                cells.extend([
                    f.notifications.to_string(),
                    f.spells.to_string(),
                    f.advance.to_string(),
                    f.while_firing.to_string(),
                    format!("{} ({})", f.missed, f.missed_first_burst),
                    pct(f.precision),
                    pct(f.recall),
                    format!("{:.0} s", f.lead_p50_s),
                    format!("{:.1}", f.per_hour),
                    if p.meets {
                        "<span class=\"ok\">meets</span>".into()
                    } else {
                        format!("<span class=\"fail\">{} of {}</span>", p.clauses_met, self.goal.len())
                    },
                ]);
                cells
            })
            .collect();
        b.push_str(&html::table(&head, &rows));
        html::page(&format!("keysim tune-warnings — {}", self.name), &b)
    }
}

/// A point's settings in words: `horizon = 30m, risk_at = 0.5`.
pub(crate) fn settings(p: &Point) -> String {
    p.settings.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}
