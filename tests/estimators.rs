//! Estimators against the real Gemini (Gemma) tokenizer. The tokenizer file is fetched by
//! `.ci/fetch-gemini-tokenizer.sh`; without it these tests say so and pass, except in CI.

use std::path::PathBuf;
use std::sync::OnceLock;

use keysim::engine::estimate::{Calibrated, HfTokenizer, Tiktoken};
use keysim::engine::{Chars4, Estimator, Prompt};

use crate::common::root;

fn tokenizer_path() -> PathBuf {
    std::env::var_os("KEYSIM_GEMINI_TOKENIZER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tokenizers/gemini/tokenizer.json"))
}

/// The Gemini tokenizer, or `None` (with the reason printed) where it was not fetched.
pub(crate) fn gemini() -> Option<&'static HfTokenizer> {
    static T: OnceLock<Option<HfTokenizer>> = OnceLock::new();
    T.get_or_init(|| {
        let path = tokenizer_path();
        match std::fs::read(&path) {
            Ok(bytes) => Some(HfTokenizer::from_bytes(&bytes).expect("the fetched tokenizer.json loads")),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must fetch the Gemini tokenizer (.ci/fetch-gemini-tokenizer.sh): {}: {e}",
                    path.display()
                );
                eprintln!(
                    "skipped: no Gemini tokenizer at {} ({e}); run .ci/fetch-gemini-tokenizer.sh",
                    path.display()
                );
                None
            }
        }
    })
    .as_ref()
}

const SAMPLES: [(&str, &str); 4] = [
    ("english", "Rate limits apply per project, not per API key: several keys of one project share one quota."),
    ("arabic", "تنطبق حدود المعدل على كل مشروع وليس على كل مفتاح، لذلك تتشارك مفاتيح المشروع الواحد حصة واحدة."),
    ("chinese", "速率限制按项目而不是按密钥计算，同一项目的多个密钥共享同一配额。"),
    ("code", "fn admit(&self, req: &Request<'_>, now: Timestamp) -> Result<Decision, AdmitError> {\n    let tokens = self.estimator.estimate(req.model, &req.prompt);\n}"),
];

#[test]
fn the_gemini_tokenizer_counts_like_gemini() {
    let Some(g) = gemini() else { return };
    assert_eq!(g.count("Hello world"), 2, "Hello ▁world");
    for (lang, text) in SAMPLES {
        let truth = g.count(text);
        let chars4 = Chars4.estimate(0, &Prompt::Text(text));
        let tiktoken = Tiktoken.estimate(0, &Prompt::Text(text));
        eprintln!("{lang:8} gemini {truth:4}  chars4 {chars4:4}  tiktoken {tiktoken:4}");
        assert!(truth > 0);
    }
    // The rule of thumb holds for English and fails for Chinese, where a token is about a
    // character or two, not four.
    let zh = SAMPLES[2].1;
    assert!(Chars4.estimate(0, &Prompt::Text(zh)) * 2 < g.count(zh), "chars4 badly under-estimates Chinese");
}

#[test]
fn calibrated_learns_the_gemini_ratio_per_script() {
    let Some(g) = gemini() else { return };
    let c = Calibrated::new(1, 0.96);
    for (_, text) in SAMPLES {
        for _ in 0..20 {
            c.observe(0, &Prompt::Text(text), g.count(text));
        }
    }
    for (lang, text) in SAMPLES {
        let (est, truth) = (c.estimate(0, &Prompt::Text(text)), g.count(text));
        assert!(est >= truth && est <= truth + truth / 20 + 1, "{lang}: estimated {est}, true {truth}");
    }
}
