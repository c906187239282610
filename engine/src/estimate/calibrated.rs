//! An estimator that learns from the provider's own counts.
//!
//! For each model and script it fits a small linear model of the actual input tokens
//! (`usageMetadata.promptTokenCount`) over features of the prompt — ASCII words and letters,
//! digits, punctuation and punctuation runs, line breaks, indentation runs,
//! non-ASCII characters and runs, full-width marks — by ridge least squares on the relative
//! error, over the last [`WINDOW`] settled requests. Code is where this pays: its token count
//! follows its words, digits and punctuation, not its length (a single characters-per-token
//! ratio misses by 40 % on code, the fit by 3 %).
//!
//! The safety margin is the `quantile` of the fit's leave-one-out errors over the same window
//! (computed exactly from the hat matrix, not from the optimistic in-sample errors), so about
//! `1 - quantile` of requests are under-estimated and the margin is exactly as wide as the
//! observed spread. Before [`WARM_UP`] observations a conservative prior ratio per script
//! applies. Memory is fixed: one window per (model, script).
//!
//! With [`Base::Tiktoken`] tiktoken's o200k count joins the features; prompts known only by
//! their length learn a ratio to characters.

use std::sync::Mutex;

use super::{Estimator, Prompt, Script};

/// Observations kept per (model, script).
pub const WINDOW: usize = 256;
/// Observations before the fit replaces the prior.
pub const WARM_UP: usize = 16;
/// Realized errors kept per (model, script): fewer than observations, so the margin
/// follows the fit as it improves.
const ERRORS: usize = 128;
/// Refit after this many new observations.
const REFRESH: usize = 8;
/// Features of a prompt.
const F: usize = 12;
/// Ridge penalty per observation: keeps the fit defined while a feature never varies (a
/// Chinese prompt has no ASCII words) and tames it on few observations.
const RIDGE: f64 = 3e-4;

/// What the model is fitted over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Base {
    /// Features of the text itself: cheap (one pass over the characters).
    #[default]
    Features,
    /// The text's features plus tiktoken's o200k token count (a BPE pass, so dearer;
    /// feature `tiktoken`).
    #[cfg(feature = "tiktoken")]
    Tiktoken,
}

impl crate::Setting for Base {
    const ALL: &'static [Self] = &[
        Self::Features,
        #[cfg(feature = "tiktoken")]
        Self::Tiktoken,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Features => "features",
            #[cfg(feature = "tiktoken")]
            Self::Tiktoken => "tiktoken",
        }
    }
}

/// Tokens per character before anything is learned: on the high side of what common
/// tokenizers produce for each script.
fn prior(script: Option<Script>) -> f64 {
    match script {
        Some(Script::Latin) => 0.32,
        Some(Script::Cyrillic) => 0.45,
        Some(Script::Arabic) => 0.55,
        Some(Script::Cjk) => 1.25,
        Some(Script::Code) => 0.45,
        Some(Script::Other) | None => 0.6,
    }
}

// Byte classes for [`Shape::of`].
const LETTER: u8 = 0;
const DIGIT: u8 = 1;
const PUNCT: u8 = 2;
const SPACE: u8 = 3;
const NEWLINE: u8 = 4;
const WIDE: u8 = 5;
const OTHER: u8 = 6;
const CONTINUATION: u8 = 7;

/// The class of each byte: ASCII by kind, UTF-8 lead bytes as other, continuation bytes apart.
const CLASS: [u8; 256] = {
    let mut t = [PUNCT; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' => LETTER,
            b'0'..=b'9' => DIGIT,
            b'\n' => NEWLINE,
            b' ' | b'\t' | b'\r' => SPACE,
            0x80..=0xBF => CONTINUATION,
            0xC0.. => OTHER,
            _ => PUNCT,
        };
        b += 1;
    }
    t
};

/// A prompt as the fit sees it: its features and its size for the prior.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    x: [f64; F],
    /// Characters, each whitespace run counted once.
    size: u64,
}

impl Shape {
    /// One feature: a count the tokens are roughly proportional to.
    fn count(n: u64) -> Self {
        let mut x = [0.0; F];
        x[0] = n as f64;
        Self { x, size: n }
    }

    /// The features of a text, in one branch-free pass over its bytes: per-class counts are
    /// kept a byte each in packed registers, flushed every 255 bytes.
    fn of(text: &str) -> Self {
        let (mut chars, mut runs) = ([0u64; 8], [0u64; 8]);
        let mut indent = 0u64;
        let (mut prev, mut prev2) = (NEWLINE, NEWLINE);
        let bytes = text.as_bytes();
        for (k, chunk) in bytes.chunks(255).enumerate() {
            let (mut packed_chars, mut packed_runs) = (0u64, 0u64);
            for (j, &b) in chunk.iter().enumerate() {
                let mut raw = CLASS[usize::from(b)];
                // Full-width marks: U+3000..U+303F (E3 80 xx) and U+FF00.. (EF BC..BF xx).
                if b == 0xE3 || b == 0xEF {
                    let next = bytes.get(k * 255 + j + 1).copied().unwrap_or(0);
                    if (b == 0xE3 && next == 0x80) || (b == 0xEF && (0xBC..=0xBF).contains(&next)) {
                        raw = WIDE;
                    }
                }
                // A continuation byte continues its character's class (and run).
                let class = if raw == CONTINUATION { prev } else { raw };
                let starts = u64::from(class != prev);
                packed_chars += 1 << (8 * raw);
                packed_runs += starts << (8 * class);
                indent += u64::from((class == SPACE) & (prev == SPACE) & (prev2 != SPACE));
                prev2 = prev;
                prev = class;
            }
            for c in 0..8 {
                chars[c] += (packed_chars >> (8 * c)) & 0xFF;
                runs[c] += (packed_runs >> (8 * c)) & 0xFF;
            }
        }
        let (c, r) = (|k: u8| chars[usize::from(k)] as f64, |k: u8| runs[usize::from(k)] as f64);
        let x = [
            r(LETTER),
            c(LETTER),
            c(DIGIT),
            c(PUNCT),
            r(PUNCT),
            c(NEWLINE),
            indent as f64,
            c(OTHER),
            r(OTHER),
            c(WIDE),
            1.0,
            0.0,
        ];
        let all: u64 = chars[..usize::from(CONTINUATION)].iter().sum();
        let size = all - (chars[usize::from(SPACE)] - runs[usize::from(SPACE)]);
        Self { x, size }
    }

    /// The features of a text plus a tokenizer's count of it.
    fn with_count(text: &str, tokens: u64) -> Self {
        let mut s = Self::of(text);
        s.x[11] = tokens as f64;
        s
    }
}

/// A learned model: weights and the multiplier that covers `quantile` of its errors.
#[derive(Clone, Copy, Debug)]
struct Fit {
    w: [f64; F],
    margin: f64,
}

impl Fit {
    /// Point estimate, or `None` where the fit says nothing sensible (outside what it saw).
    fn point(&self, x: &[f64; F]) -> Option<f64> {
        let p: f64 = self.w.iter().zip(x).map(|(w, x)| w * x).sum();
        (p > 0.0).then_some(p)
    }

    fn estimate(&self, x: &[f64; F]) -> Option<f64> {
        let p = self.point(x)?;
        Some(p * self.margin)
    }
}

#[derive(Debug)]
struct State {
    /// (features, actual tokens), a ring of at most [`WINDOW`].
    seen: Vec<([f32; F], f32)>,
    /// `actual / point estimate` of each observation under the fit of its time: the errors
    /// the estimator really made, a ring of at most [`WINDOW`].
    errors: Vec<f64>,
    next: usize,
    next_error: usize,
    since_refresh: usize,
    fit: Option<Fit>,
}

impl State {
    fn new() -> Self {
        Self { seen: Vec::new(), errors: Vec::new(), next: 0, next_error: 0, since_refresh: 0, fit: None }
    }

    fn push(&mut self, x: &[f64; F], actual: u64, quantile: f64) {
        if let Some(p) = self.fit.and_then(|f| f.point(x)) {
            // Bounded as the leave-one-out ratios are: one wild extrapolation must not set
            // the margin of a whole script.
            let e = (actual as f64 / p).clamp(0.05, 20.0);
            if self.errors.len() < ERRORS {
                self.errors.push(e);
            } else {
                self.errors[self.next_error] = e;
            }
            self.next_error = (self.next_error + 1) % ERRORS;
        }
        let row = (x.map(|v| v as f32), actual as f32);
        if self.seen.len() < WINDOW {
            self.seen.push(row);
        } else {
            self.seen[self.next] = row;
        }
        self.next = (self.next + 1) % WINDOW;
        self.since_refresh += 1;
        if self.seen.len() >= WARM_UP && (self.since_refresh >= REFRESH || self.fit.is_none()) {
            self.fit = refit(&self.seen, quantile).or(self.fit);
            // Once enough estimates were made, their real errors set the margin: on traffic
            // that repeats prompts they are smaller than the leave-one-out ones.
            if let (Some(fit), true) = (&mut self.fit, self.errors.len() >= WARM_UP) {
                fit.margin = quantile_of(&mut self.errors.clone(), quantile);
            }
            self.since_refresh = 0;
        }
    }
}

/// Ridge least squares of `a·w = 1` with `a = x / actual` (so the error minimised is
/// relative), then the `quantile` of `actual / leave-one-out prediction` as the margin.
fn refit(seen: &[([f32; F], f32)], quantile: f64) -> Option<Fit> {
    let rows: Vec<[f64; F]> = seen.iter().map(|(x, y)| x.map(|v| f64::from(v) / f64::from(*y))).collect();
    let mut m = [[0.0; F]; F];
    let mut b = [0.0; F];
    for a in &rows {
        for i in 0..F {
            b[i] += a[i];
            for j in 0..=i {
                m[i][j] += a[i] * a[j];
            }
        }
    }
    let lambda = RIDGE * rows.len() as f64;
    for (i, row) in m.iter_mut().enumerate() {
        row[i] += lambda;
    }
    let l = cholesky(&m)?;
    let w = solve(&l, &b);
    let mut ratios: Vec<f64> = rows
        .iter()
        .map(|a| {
            let r: f64 = a.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() - 1.0;
            let h: f64 = a.iter().zip(&solve(&l, a)).map(|(a, z)| a * z).sum();
            let loo = 1.0 + r / (1.0 - h).max(1e-3);
            1.0 / loo.max(0.05)
        })
        .collect();
    Some(Fit { w, margin: quantile_of(&mut ratios, quantile) })
}

/// The `q` quantile of non-empty `v` (reorders it).
fn quantile_of(v: &mut [f64], q: f64) -> f64 {
    let k = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// Lower-triangular `l` with `l·lᵀ = m` (only `m`'s lower triangle is read).
fn cholesky(m: &[[f64; F]; F]) -> Option<[[f64; F]; F]> {
    let mut l = [[0.0; F]; F];
    for i in 0..F {
        for j in 0..=i {
            let s = m[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

/// `z` with `l·lᵀ·z = b`.
fn solve(l: &[[f64; F]; F], b: &[f64; F]) -> [f64; F] {
    let mut y = [0.0; F];
    for i in 0..F {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut z = [0.0; F];
    for i in (0..F).rev() {
        z[i] = (y[i] - (i + 1..F).map(|k| l[k][i] * z[k]).sum::<f64>()) / l[i][i];
    }
    z
}

/// The calibrated estimator.
pub struct Calibrated {
    quantile: f64,
    base: Base,
    /// A token count to fit over, with [`Base::Tiktoken`].
    counter: Option<Box<dyn Estimator>>,
    /// Per model: one state per script, plus one for prompts known only by length.
    states: Vec<[Mutex<State>; 7]>,
}

impl Calibrated {
    /// An estimator for `models` models aiming at `quantile` (0.5 to 0.999) of observed
    /// errors: about `1 - quantile` of requests will be under-estimated.
    pub fn new(models: usize, quantile: f64) -> Self {
        Self::with_base(models, quantile, Base::Features)
    }

    /// As [`Calibrated::new`], fitting over `base`.
    pub fn with_base(models: usize, quantile: f64, base: Base) -> Self {
        let quantile = quantile.clamp(0.5, 0.999);
        let counter: Option<Box<dyn Estimator>> = match base {
            Base::Features => None,
            #[cfg(feature = "tiktoken")]
            Base::Tiktoken => Some(Box::new(super::Cached::new(super::Tiktoken, 4096))),
        };
        Self {
            quantile,
            base,
            counter,
            states: (0..models.max(1)).map(|_| std::array::from_fn(|_| Mutex::new(State::new()))).collect(),
        }
    }

    fn state(&self, model: usize, script: Option<Script>) -> &Mutex<State> {
        let per_model = &self.states[model.min(self.states.len() - 1)];
        &per_model[script.map_or(6, Script::index)]
    }

    fn classify(&self, model: usize, prompt: &Prompt<'_>) -> (Option<Script>, Shape) {
        match (prompt, &self.counter) {
            (Prompt::Text(t), Some(tk)) => (Some(Script::of(t)), Shape::with_count(t, tk.estimate(model, prompt))),
            (Prompt::Text(t), None) => (Some(Script::of(t)), Shape::of(t)),
            (Prompt::Chars(n), _) => (None, Shape::count(*n)),
        }
    }

    fn fit(&self, model: usize, script: Option<Script>) -> Option<Fit> {
        self.state(model, script).lock().unwrap_or_else(|p| p.into_inner()).fit
    }

    /// Whether `model` has learned enough about `script` to leave the prior.
    pub fn warmed_up(&self, model: usize, script: Option<Script>) -> bool {
        self.fit(model, script).is_some()
    }
}

impl std::fmt::Debug for Calibrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calibrated").field("quantile", &self.quantile).field("base", &self.base).finish()
    }
}

impl Estimator for Calibrated {
    fn name(&self) -> &str {
        match self.base {
            Base::Features => "calibrated",
            #[cfg(feature = "tiktoken")]
            Base::Tiktoken => "calibrated/tiktoken",
        }
    }

    fn estimate(&self, model: usize, prompt: &Prompt<'_>) -> u64 {
        let (script, shape) = self.classify(model, prompt);
        let guess = shape.size as f64 * prior(script);
        // Where the fit extrapolates to next to nothing, it knows nothing: fall back.
        let tokens = match self.fit(model, script).and_then(|f| f.estimate(&shape.x)) {
            Some(t) if t >= 0.05 * guess => t,
            _ => guess,
        };
        // The small allowance keeps float noise from rounding an exact count up a token.
        (tokens - 1e-6).ceil().max(0.0) as u64
    }

    fn learns(&self) -> bool {
        true
    }

    fn warmed_up(&self, model: usize, prompt: &Prompt<'_>) -> bool {
        let script = match prompt {
            Prompt::Text(t) => Some(Script::of(t)),
            Prompt::Chars(_) => None,
        };
        self.fit(model, script).is_some()
    }

    fn observe(&self, model: usize, prompt: &Prompt<'_>, actual: u64) {
        let (script, shape) = self.classify(model, prompt);
        if shape.size == 0 || actual == 0 {
            return;
        }
        self.state(model, script).lock().unwrap_or_else(|p| p.into_inner()).push(&shape.x, actual, self.quantile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_conservative_then_learns_the_quantile() {
        let c = Calibrated::new(1, 0.95);
        let text = "a".repeat(1000);
        assert_eq!(c.estimate(0, &Prompt::Text(&text)), 320, "latin prior");
        // Actual counts 200 .. 299 spread evenly for one text: the 95th percentile is about 295.
        for i in 0..200 {
            c.observe(0, &Prompt::Text(&text), 200 + (i % 100));
        }
        let est = c.estimate(0, &Prompt::Text(&text));
        assert!((290..=300).contains(&est), "{est}");
    }

    #[test]
    fn scripts_and_models_learn_apart() {
        let c = Calibrated::new(2, 0.9);
        let latin = "word ".repeat(100);
        let cjk = "汉字".repeat(100);
        for _ in 0..50 {
            c.observe(0, &Prompt::Text(&latin), 100);
            c.observe(0, &Prompt::Text(&cjk), 150);
        }
        // Within a token: the ridge penalty shrinks the fit a hair and the margin restores it.
        assert!((100..=101).contains(&c.estimate(0, &Prompt::Text(&latin))));
        assert!((150..=151).contains(&c.estimate(0, &Prompt::Text(&cjk))));
        assert!(c.warmed_up(0, Some(Script::Cjk)) && !c.warmed_up(1, Some(Script::Cjk)));
        assert_eq!(c.estimate(1, &Prompt::Text(&latin)), 160, "model 1 still on the prior");
    }

    #[test]
    fn the_fit_follows_features_not_length() {
        // Tokens = words + punctuation marks exactly: one ratio to length cannot express it,
        // the fit can, so it estimates unseen mixes within a token.
        let c = Calibrated::new(1, 0.95);
        let text = |words: usize, marks: usize| format!("{}{}", "ab ".repeat(words), ",".repeat(marks));
        for i in 0..64 {
            let (w, m) = (5 + i % 13, 3 + (i * 7) % 29);
            c.observe(0, &Prompt::Text(&text(w, m)), (w + m) as u64);
        }
        for (w, m) in [(40, 2), (2, 60), (17, 17)] {
            let est = c.estimate(0, &Prompt::Text(&text(w, m)));
            assert!(est.abs_diff((w + m) as u64) <= 1, "{w} words, {m} marks: {est}");
        }
    }

    #[test]
    fn features_count_words_marks_lines_and_runs() {
        let s = Shape::of("fn main() {\n    let x_1 = 42;\n}");
        // words fn main let x; marks ( ) { _ = ; }; runs of marks "() {" counts "()" and "{".
        assert_eq!(s.x[0], 4.0, "words");
        assert_eq!(s.x[2], 3.0, "digits 1 4 2");
        assert_eq!(s.x[3], 7.0, "marks");
        assert_eq!(s.x[5], 2.0, "line breaks");
        assert_eq!(s.x[6], 1.0, "indentation runs");
        assert_eq!(Shape::of("請，謝謝").x[9], 1.0, "full-width comma");
        assert_eq!(Shape::of("مرحبا بالعالم").x[8], 2.0, "non-ASCII runs");
    }

    #[test]
    fn under_estimates_stay_near_one_minus_the_quantile() {
        let c = Calibrated::new(1, 0.96);
        let text = "x".repeat(400);
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 1000) as f64 / 1000.0
        };
        let (mut under, mut n) = (0, 0);
        for i in 0..5_000 {
            let actual = (100.0 * (0.9 + 0.2 * next())).round() as u64;
            if i > 500 {
                n += 1;
                under += u32::from(c.estimate(0, &Prompt::Text(&text)) < actual);
            }
            c.observe(0, &Prompt::Text(&text), actual);
        }
        let rate = f64::from(under) / f64::from(n);
        assert!(rate <= 0.06, "under-estimate rate {rate}");
    }
}
