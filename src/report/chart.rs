//! Charts: a few data-only figure kinds, each drawn by plotters to SVG (for `report.html`)
//! and PNG (to open or paste anywhere).
//!
//! Text is drawn with DejaVu Sans, embedded in the binary and registered with plotters'
//! `ab_glyph` font backend, so nothing depends on the machine's font libraries. A figure is
//! one or more panels stacked vertically.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The embedded font (DejaVu Sans; its licence is beside it).
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Tableau 10: distinct, colour-blind-friendly, in the order series take them.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];
/// Breaches, misses, failures.
pub const BAD: RGBColor = RGBColor(214, 39, 40);
/// Warned, passed.
pub const GOOD: RGBColor = RGBColor(44, 160, 44);
/// Limits, resets, pool events.
pub const MUTED: RGBColor = RGBColor(110, 110, 110);

/// The `i`-th series colour.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FAMILY, style, FONT).is_err() {
                unreachable!("the embedded font parses");
            }
        }
    });
}

/// A line of `(x, y)` points.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Colour.
    pub colour: RGBColor,
    /// Points, by x.
    pub points: Vec<(f64, f64)>,
    /// Drawn as steps (counts per interval) rather than straight segments.
    pub steps: bool,
}

/// How a marker is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// ×
    Cross,
    /// ▲
    Triangle,
    /// ●
    Dot,
    /// ○
    Ring,
}

/// Points drawn as marks, with one legend entry.
#[derive(Clone, Debug)]
pub struct Marks {
    /// Legend label.
    pub label: String,
    /// Colour.
    pub colour: RGBColor,
    /// Shape.
    pub shape: Shape,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// An x–y panel: lines, marks, vertical rules (resets, pool events), horizontal rules (limits).
#[derive(Clone, Debug, Default)]
pub struct XY {
    /// Panel title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// x range (computed from the data when `None`).
    pub x_range: Option<(f64, f64)>,
    /// y range (computed from the data when `None`).
    pub y_range: Option<(f64, f64)>,
    /// Lines.
    pub lines: Vec<Line>,
    /// Marks.
    pub marks: Vec<Marks>,
    /// Vertical rules at x, labelled.
    pub rules_x: Vec<(f64, String)>,
    /// Horizontal rules at y, labelled.
    pub rules_y: Vec<(f64, String)>,
    /// The x axis is a percentile axis: x = log10(1 / (1 − q)).
    pub percentile_x: bool,
    /// Names of integer y values (lanes), instead of numbers.
    pub y_names: Vec<String>,
    /// A note written in the panel (for example why it is empty).
    pub note: Option<String>,
}

/// A grid of values, coloured from low to high.
#[derive(Clone, Debug, Default)]
pub struct Heat {
    /// Panel title.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// Column names.
    pub columns: Vec<String>,
    /// Row names (bottom to top).
    pub rows: Vec<String>,
    /// `cells[row][column]`, in 0..=1 (or `None`: not run).
    pub cells: Vec<Vec<Option<f64>>>,
    /// Text written in each cell.
    pub text: Vec<Vec<String>>,
    /// Cells outlined (the recommendation).
    pub outlined: Vec<(usize, usize)>,
}

/// Bars, one per name.
#[derive(Clone, Debug, Default)]
pub struct Bars {
    /// Panel title.
    pub title: String,
    /// y axis label.
    pub y_label: String,
    /// (name, value), left to right.
    pub bars: Vec<(String, f64)>,
}

/// One panel of a figure.
#[derive(Clone, Debug)]
pub enum Panel {
    /// An x–y chart.
    XY(XY),
    /// A heatmap.
    Heat(Heat),
    /// A bar chart.
    Bars(Bars),
}

/// A figure: panels stacked top to bottom.
#[derive(Clone, Debug)]
pub struct Figure {
    /// File stem (`usage-gemini-2.5-flash`).
    pub name: String,
    /// Title shown above it in the report.
    pub title: String,
    /// How to read it, shown under it in the report.
    pub caption: String,
    /// Width in pixels.
    pub width: u32,
    /// Height of one panel in pixels.
    pub panel_height: u32,
    /// The panels.
    pub panels: Vec<Panel>,
}

/// A drawn figure.
#[derive(Clone, Debug)]
pub struct Drawn {
    /// The figure's SVG document.
    pub svg: String,
    /// The figure as a PNG file.
    pub png: Vec<u8>,
}

/// Why a figure could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {figure}: {message}")]
pub struct DrawError {
    figure: String,
    message: String,
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        (self.width, self.panel_height * self.panels.len().max(1) as u32)
    }

    /// Draws the figure as SVG and PNG.
    pub fn draw(&self) -> Result<Drawn, DrawError> {
        fonts();
        let err = |message: String| DrawError { figure: self.name.clone(), message };
        let (w, h) = self.size();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            self.draw_on(&root).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))?;
        }
        let mut rgb = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw_on(&root).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))?;
        }
        let mut png = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().map_err(|e| err(e.to_string()))?;
            writer.write_image_data(&rgb).map_err(|e| err(e.to_string()))?;
        }
        Ok(Drawn { svg, png })
    }

    fn draw_on<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
        root.fill(&WHITE).map_err(e)?;
        let areas = root.split_evenly((self.panels.len().max(1), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            match panel {
                Panel::XY(p) => xy(area, p).map_err(e)?,
                Panel::Heat(p) => heat(area, p).map_err(e)?,
                Panel::Bars(p) => bars(area, p).map_err(e)?,
            }
        }
        Ok(())
    }
}

type Res<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

/// A range that plotters can draw: finite, with some width.
fn span(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    if hi - lo > 1e-9 {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

fn data_range(p: &XY) -> ((f64, f64), (f64, f64)) {
    let pts = p.lines.iter().flat_map(|l| l.points.iter()).chain(p.marks.iter().flat_map(|m| m.points.iter()));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    for (x, _) in &p.rules_x {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
    }
    for (y, _) in &p.rules_y {
        y1 = y1.max(*y);
    }
    let x = p.x_range.unwrap_or_else(|| span(x0, x1));
    let y = p.y_range.unwrap_or_else(|| {
        let (lo, hi) = span(y0, y1);
        (lo, hi + (hi - lo) * 0.08)
    });
    (span(x.0, x.1), span(y.0, y.1))
}

/// `q` as a percentile label: x = log10(1 / (1 − q)).
fn percentile_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    if q < 99.0 {
        format!("{q:.0}%")
    } else {
        let digits = (x - 2.0).ceil().clamp(0.0, 4.0) as usize;
        format!("{q:.digits$}%")
    }
}

fn number_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || (v.fract() == 0.0) {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A panel's chart area: its title, margins and label areas.
fn frame<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x_labels: u32,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, DB> {
    let mut b = ChartBuilder::on(area);
    b.caption(title, font(15)).margin(10).margin_right(30).x_label_area_size(x_labels).y_label_area_size(y_labels);
    b
}

/// The name of a segment's centre (labels of heatmap rows and columns, and of bars).
fn segment_name(names: &[String], v: &SegmentValue<i32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

fn xy<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &XY) -> Res<DB> {
    let ((x0, x1), (y0, y1)) = data_range(p);
    let mut chart =
        frame(area, &p.title, 34, if p.y_names.is_empty() { 56 } else { 150 }).build_cartesian_2d(x0..x1, y0..y1)?;
    let x_fmt = |x: &f64| if p.percentile_x { percentile_label(*x) } else { number_label(*x) };
    let y_fmt = |y: &f64| {
        if p.y_names.is_empty() {
            number_label(*y)
        } else {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                p.y_names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style(font(11))
        .axis_desc_style(font(12))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215));
    if !p.y_names.is_empty() {
        mesh.y_labels(p.y_names.len() * 2 + 1);
    }
    if p.percentile_x {
        // One label per decade of the tail: 0 %, 90 %, 99 %, 99.9 % …
        mesh.x_labels((x1 - x0).round() as usize + 1);
    }
    mesh.draw()?;
    for (y, label) in &p.rules_y {
        chart.draw_series(std::iter::once(PathElement::new(vec![(x0, *y), (x1, *y)], MUTED.stroke_width(1))))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (x1 - (x1 - x0) * 0.005, *y),
            font(10).color(&MUTED).pos(Pos::new(HPos::Right, VPos::Bottom)),
        )))?;
    }
    for (i, (x, label)) in p.rules_x.iter().enumerate() {
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(*x, y0), (*x, y1)], MUTED.mix(0.6).stroke_width(1))))?;
        // Labels alternate in height so that neighbours do not overwrite each other.
        let y = y1 - (y1 - y0) * (0.04 + 0.06 * (i % 3) as f64);
        chart.draw_series(std::iter::once(Text::new(label.clone(), (*x, y), font(10).color(&MUTED))))?;
    }
    for l in &p.lines {
        let c = l.colour;
        let pts: Vec<(f64, f64)> = if l.steps { steps(&l.points) } else { l.points.clone() };
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(l.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    for m in &p.marks {
        let c = m.colour;
        let shape = m.shape;
        let pts = m.points.iter().copied();
        match shape {
            Shape::Cross => chart.draw_series(pts.map(|pt| Cross::new(pt, 4, c.stroke_width(2))))?,
            Shape::Triangle => chart.draw_series(pts.map(|pt| TriangleMarker::new(pt, 5, c.filled())))?,
            Shape::Dot => chart.draw_series(pts.map(|pt| Circle::new(pt, 4, c.filled())))?,
            Shape::Ring => chart.draw_series(pts.map(|pt| Circle::new(pt, 4, c.stroke_width(2))))?,
        }
        .label(m.label.clone())
        .legend(move |(x, y)| -> DynElement<'static, DB, (i32, i32)> {
            match shape {
                Shape::Cross => Cross::new((x + 8, y), 4, c.stroke_width(2)).into_dyn(),
                Shape::Triangle => TriangleMarker::new((x + 8, y), 5, c.filled()).into_dyn(),
                Shape::Dot => Circle::new((x + 8, y), 4, c.filled()).into_dyn(),
                Shape::Ring => Circle::new((x + 8, y), 4, c.stroke_width(2)).into_dyn(),
            }
        });
    }
    if let Some(note) = &p.note {
        chart.draw_series(std::iter::once(Text::new(
            note.clone(),
            ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
            font(13).color(&MUTED).pos(Pos::new(HPos::Center, VPos::Center)),
        )))?;
    }
    if p.lines.iter().any(|l| !l.label.is_empty()) || p.marks.iter().any(|m| !m.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(font(11))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    Ok(())
}

/// A step line through counts per interval: each value holds until the next point.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for w in points.windows(2) {
        out.push(w[0]);
        out.push((w[1].0, w[0].1));
    }
    if let Some(&last) = points.last() {
        out.push(last);
    }
    out
}

/// White to deep blue.
fn heat_colour(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

fn heat<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Heat) -> Res<DB> {
    let (nx, ny) = (p.columns.len().max(1) as i32, p.rows.len().max(1) as i32);
    let mut chart =
        frame(area, &p.title, 40, 70).build_cartesian_2d((0..nx - 1).into_segmented(), (0..ny - 1).into_segmented())?;
    let (cols, rows) = (&p.columns, &p.rows);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .label_style(font(11))
        .axis_desc_style(font(12))
        .x_labels(nx as usize)
        .y_labels(ny as usize)
        .x_label_formatter(&|v| segment_name(cols, v))
        .y_label_formatter(&|v| segment_name(rows, v))
        .draw()?;
    for (r, row) in p.cells.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let (x, y) = (c as i32, r as i32);
            let corners = [
                (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
            ];
            let fill = v.map_or(RGBColor(225, 225, 225), heat_colour);
            chart.draw_series(std::iter::once(Rectangle::new(corners, fill.filled())))?;
            let text = p.text.get(r).and_then(|t| t.get(c)).cloned().unwrap_or_default();
            if !text.is_empty() {
                let ink = if v.unwrap_or(0.0) > 0.55 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    font(10).color(&ink).pos(Pos::new(HPos::Center, VPos::Center)),
                )))?;
            }
        }
    }
    for &(r, c) in &p.outlined {
        let (x, y) = (c as i32, r as i32);
        let corners = [
            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
        ];
        chart.draw_series(std::iter::once(Rectangle::new(corners, BAD.stroke_width(3))))?;
    }
    Ok(())
}

fn bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Bars) -> Res<DB> {
    let n = p.bars.len().max(1) as i32;
    let top = p.bars.iter().map(|(_, v)| *v).fold(0.0f64, f64::max);
    let (_, hi) = span(0.0, if top > 0.0 { top * 1.15 } else { 1.0 });
    let mut chart = frame(area, &p.title, 34, 56).build_cartesian_2d((0..n - 1).into_segmented(), 0.0..hi)?;
    let names: Vec<String> = p.bars.iter().map(|(n, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&p.y_label)
        .label_style(font(11))
        .axis_desc_style(font(12))
        .x_labels(n as usize)
        .x_label_formatter(&|v| segment_name(&names, v))
        .y_label_formatter(&|y| number_label(*y))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, (_, v)) in p.bars.iter().enumerate() {
        let x = i as i32;
        let mut bar =
            Rectangle::new([(SegmentValue::Exact(x), 0.0), (SegmentValue::Exact(x + 1), *v)], colour(i).filled());
        bar.set_margin(0, 0, 12, 12);
        chart.draw_series(std::iter::once(bar))?;
        chart.draw_series(std::iter::once(Text::new(
            number_label(*v),
            (SegmentValue::CenterOf(x), *v + hi * 0.02),
            font(11).pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    Ok(())
}

/// How far into the tail a histogram's count resolves: log10 of its count, within 1..=5.
pub fn percentile_reach(h: &hdrhistogram::Histogram<u64>) -> f64 {
    (h.len() as f64).log10().clamp(1.0, 5.0)
}

/// A percentile line of a histogram: x = log10(1 / (1 − q)) from 0 up to what its count
/// resolves (at most 99.999 %), y = the value at q divided by `scale`.
pub fn percentile_points(h: &hdrhistogram::Histogram<u64>, scale: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let top = percentile_reach(h);
    let n = 100;
    (0..=n)
        .map(|i| {
            let x = top * i as f64 / n as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / scale)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(panels: Vec<Panel>) -> Figure {
        Figure { name: "t".into(), title: "t".into(), caption: String::new(), width: 400, panel_height: 200, panels }
    }

    #[test]
    fn every_panel_kind_draws_to_svg_and_png() {
        let line = Line { label: "a".into(), colour: colour(0), points: vec![(0.0, 1.0), (1.0, 3.0)], steps: true };
        let marks = Marks { label: "m".into(), colour: BAD, shape: Shape::Cross, points: vec![(0.5, 2.0)] };
        let xy = XY {
            title: "xy".into(),
            lines: vec![line],
            marks: vec![marks],
            rules_x: vec![(0.5, "reset".into())],
            rules_y: vec![(2.0, "limit".into())],
            ..XY::default()
        };
        let heat = Heat {
            title: "heat".into(),
            columns: vec!["1".into(), "2".into()],
            rows: vec!["a".into()],
            cells: vec![vec![Some(0.2), None]],
            text: vec![vec!["20%".into(), String::new()]],
            outlined: vec![(0, 0)],
            ..Heat::default()
        };
        let bars = Bars { title: "bars".into(), y_label: "n".into(), bars: vec![("x".into(), 3.0), ("y".into(), 0.0)] };
        let d = figure(vec![Panel::XY(xy), Panel::Heat(heat), Panel::Bars(bars)]).draw().expect("draws");
        assert!(d.svg.starts_with("<svg") && d.svg.contains("reset") && d.svg.contains("20%"), "{}", &d.svg[..200]);
        assert_eq!(&d.png[1..4], b"PNG");
        // Text reached the bitmap: it is not all white.
        assert!(d.png.len() > 2_000);
    }

    #[test]
    fn an_empty_panel_still_draws() {
        let xy = XY { title: "nothing".into(), note: Some("no requests waited".into()), ..XY::default() };
        let d = figure(vec![Panel::XY(xy)]).draw().expect("draws");
        assert!(d.svg.contains("no requests waited"));
    }

    #[test]
    fn percentile_labels_read_as_percentiles() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }
}
