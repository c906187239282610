//! Tokens of the parts of a request that are not text, as Gemini counts them: an image is
//! 258 tokens (one 768×768 tile; a larger image one per tile), a PDF 258 a page, audio 32 a
//! second and video 263 a second. Text estimators never see these parts; without this count
//! an image prompt would be admitted as a few tokens and refused by the provider's TPM.
//!
//! [`media_tokens`] reads a request body of either surface: Gemini's `contents[].parts[]`
//! (`inlineData`, `fileData`, `videoMetadata`, `functionCall`, `functionResponse`, in camel
//! or snake case) and OpenAI's content parts (`image_url`, `input_audio`, `file`). Inline data
//! is measured where its format says how: image dimensions (PNG, JPEG, GIF, WebP), PDF pages,
//! WAV and MP3 durations, MP4/QuickTime durations; otherwise by its size at a low bit rate,
//! which errs high. Data behind a URI (`fileData`, an image URL) is counted as one image,
//! page or second — or the span its `videoMetadata` states — since its size is not known here.

use base64::Engine as _;
use serde_json::Value;

/// Tokens of one image tile (an image up to 384 pixels a side is one tile).
pub const IMAGE_TOKENS: u64 = 258;
/// Tokens of one PDF page.
pub const PAGE_TOKENS: u64 = 258;
/// Tokens of one second of audio.
pub const AUDIO_TOKENS_PER_S: u64 = 32;
/// Tokens of one second of video.
pub const VIDEO_TOKENS_PER_S: u64 = 263;

/// Tiles are this many pixels a side.
const TILE: u64 = 768;
/// Audio of unknown format is taken to run at this many bytes a second (32 kbit/s: low, so
/// that its length errs high).
const AUDIO_BYTES_PER_S: u64 = 4_000;
/// Video of unknown format: 250 kbit/s.
const VIDEO_BYTES_PER_S: u64 = 31_250;

/// Tokens of the request body `body`'s parts that are not text.
pub fn media_tokens(body: &Value) -> u64 {
    let mut total = 0u64;
    walk(body, &mut total);
    total
}

fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn walk(v: &Value, total: &mut u64) {
    match v {
        Value::Object(m) => {
            if let Some(blob) = get(v, "inlineData", "inline_data") {
                let mime = get(blob, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or_default();
                let data = blob.get("data").and_then(Value::as_str).unwrap_or_default();
                *total = total.saturating_add(blob_tokens(mime, Some(data), stated_seconds(v)));
            }
            if let Some(file) = get(v, "fileData", "file_data").filter(|f| f.is_object()) {
                let mime = get(file, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or_default();
                *total = total.saturating_add(blob_tokens(mime, None, stated_seconds(v)));
            }
            let calls = [get(v, "functionCall", "function_call"), get(v, "functionResponse", "function_response")];
            for c in calls.into_iter().flatten() {
                *total = total.saturating_add((c.to_string().len() as u64).div_ceil(4));
            }
            // OpenAI's content parts.
            match v.get("type").and_then(Value::as_str) {
                Some("image_url") => {
                    let url = v.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                    let (mime, data) = url.and_then(data_url).unwrap_or(("image/*", None));
                    *total = total.saturating_add(blob_tokens(mime, data, None));
                }
                Some("input_audio") => {
                    let a = v.get("input_audio");
                    let data = a.and_then(|a| a.get("data")).and_then(Value::as_str);
                    let format = a.and_then(|a| a.get("format")).and_then(Value::as_str).unwrap_or("wav");
                    *total = total.saturating_add(blob_tokens(&format!("audio/{format}"), data, None));
                }
                Some("file") => {
                    let url = v.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str);
                    let (mime, data) = url.and_then(data_url).unwrap_or(("application/pdf", None));
                    *total = total.saturating_add(blob_tokens(mime, data, None));
                }
                _ => {}
            }
            for (k, x) in m {
                let counted = matches!(
                    k.as_str(),
                    "inlineData"
                        | "inline_data"
                        | "fileData"
                        | "file_data"
                        | "functionCall"
                        | "function_call"
                        | "functionResponse"
                        | "function_response"
                        | "image_url"
                        | "input_audio"
                        | "file"
                );
                if !counted {
                    walk(x, total);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| walk(x, total)),
        _ => {}
    }
}

/// `data:<mime>;base64,<data>` → its type and data; a plain URL → `None`.
fn data_url(url: &str) -> Option<(&str, Option<&str>)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    Some((head.split(';').next().unwrap_or_default(), Some(data)))
}

/// The seconds a part's `videoMetadata` states (`endOffset` − `startOffset`), if any.
fn stated_seconds(part: &Value) -> Option<u64> {
    let m = get(part, "videoMetadata", "video_metadata")?;
    let at = |camel, snake| {
        get(m, camel, snake).and_then(Value::as_str).and_then(|s| s.trim_end_matches('s').parse::<f64>().ok())
    };
    let end = at("endOffset", "end_offset")?;
    let start = at("startOffset", "start_offset").unwrap_or(0.0);
    Some((end - start).clamp(1.0, 86_400.0).ceil() as u64)
}

/// Tokens of one blob of type `mime`, with its base64 `data` when it is inline.
fn blob_tokens(mime: &str, data: Option<&str>, stated: Option<u64>) -> u64 {
    let bytes = data.and_then(decode);
    let kind = mime.split('/').next().unwrap_or_default();
    match (kind, mime) {
        (_, "application/pdf") => PAGE_TOKENS * bytes.as_deref().map_or(1, pdf_pages),
        ("image", _) => bytes.as_deref().and_then(image_size).map_or(IMAGE_TOKENS, |(w, h)| image_tokens(w, h)),
        ("audio", _) => {
            let seconds = stated
                .or_else(|| bytes.as_deref().and_then(audio_seconds))
                .or_else(|| bytes.as_ref().map(|b| (b.len() as u64).div_ceil(AUDIO_BYTES_PER_S)))
                .unwrap_or(1);
            AUDIO_TOKENS_PER_S * seconds.max(1)
        }
        ("video", _) => {
            let seconds = stated
                .or_else(|| bytes.as_deref().and_then(mp4_seconds))
                .or_else(|| bytes.as_ref().map(|b| (b.len() as u64).div_ceil(VIDEO_BYTES_PER_S)))
                .unwrap_or(1);
            VIDEO_TOKENS_PER_S * seconds.max(1)
        }
        // Text documents are read as text by the provider: four characters a token.
        ("text", _) => bytes.map_or(IMAGE_TOKENS, |b| (b.len() as u64).div_ceil(4)),
        _ => IMAGE_TOKENS,
    }
}

fn decode(data: &str) -> Option<Vec<u8>> {
    let data = data.trim();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(data))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(data))
        .ok()
}

/// An image of `w`×`h` pixels: one tile up to 384 a side, else one per 768×768 tile.
pub fn image_tokens(w: u64, h: u64) -> u64 {
    if w <= 384 && h <= 384 {
        return IMAGE_TOKENS;
    }
    IMAGE_TOKENS * w.div_ceil(TILE).max(1) * h.div_ceil(TILE).max(1)
}

/// Width and height of a PNG, GIF, JPEG or WebP image.
fn image_size(b: &[u8]) -> Option<(u64, u64)> {
    let be32 = |i: usize| Some(u64::from(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)));
    let be16 = |i: usize| Some(u64::from(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?)));
    let le16 = |i: usize| Some(u64::from(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?)));
    let le24 =
        |i: usize| Some(u64::from(*b.get(i)?) | u64::from(*b.get(i + 1)?) << 8 | u64::from(*b.get(i + 2)?) << 16);
    if b.starts_with(b"\x89PNG") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return match b.get(12..16)? {
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = u64::from(u32::from_le_bytes(b.get(21..25)?.try_into().ok()?));
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        // Markers until a start of frame (SOF0..SOF15 but DHT, JPG and DAC).
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xff {
                return None;
            }
            let marker = b[i + 1];
            let len = be16(i + 2)? as usize;
            if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

/// Pages of a PDF: its `/Type /Page` objects (not `/Pages`), at least one.
fn pdf_pages(b: &[u8]) -> u64 {
    let mut pages = 0u64;
    let mut i = 0;
    while let Some(at) = find(&b[i..], b"/Type") {
        let mut j = i + at + 5;
        while b.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
            j += 1;
        }
        if b[j..].starts_with(b"/Page") && !b.get(j + 5).is_some_and(|c| c.is_ascii_alphanumeric()) {
            pages += 1;
        }
        i = j;
    }
    pages.max(1)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Seconds of a WAV (its data size over its byte rate) or an MP3 (its size over the first
/// frame's bit rate), rounded up.
fn audio_seconds(b: &[u8]) -> Option<u64> {
    let le32 = |i: usize| Some(u64::from(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)));
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WAVE") {
        let rate = le32(28).filter(|&r| r > 0)?;
        let data = find(b, b"data").and_then(|i| le32(i + 4)).unwrap_or(b.len() as u64);
        return Some(data.div_ceil(rate));
    }
    // MP3: skip an ID3 tag, then the first frame header's bit rate (MPEG-1 layer III).
    let mut i = 0;
    if b.starts_with(b"ID3") {
        let size = b.get(6..10)?.iter().fold(0usize, |s, &x| (s << 7) | usize::from(x & 0x7f));
        i = 10 + size;
    }
    let h = b.get(i..i + 4)?;
    if h[0] == 0xff && h[1] & 0xe0 == 0xe0 {
        const KBPS: [u64; 16] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0];
        let kbps = KBPS[usize::from(h[2] >> 4)];
        if kbps > 0 {
            return Some(((b.len() - i) as u64 * 8).div_ceil(kbps * 1000));
        }
    }
    None
}

/// Seconds of an MP4 or QuickTime file, from its movie header (`mvhd`), rounded up.
fn mp4_seconds(b: &[u8]) -> Option<u64> {
    let at = find(b, b"mvhd")? + 4;
    let be32 = |i: usize| Some(u64::from(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?)));
    let be64 = |i: usize| Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let (scale, duration) = match b.get(at)? {
        0 => (be32(at + 12)?, be32(at + 16)?),
        1 => (be32(at + 20)?, be64(at + 24)?),
        _ => return None,
    };
    (scale > 0).then(|| duration.div_ceil(scale))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 2, 0, 0, 0]);
        b
    }

    #[test]
    fn images_count_by_their_tiles_on_both_surfaces() {
        let small = json!({"contents": [{"parts": [{"text": "what is this?"},
            {"inlineData": {"mimeType": "image/png", "data": b64(&png(300, 200))}}]}]});
        assert_eq!(media_tokens(&small), 258);
        let large = json!({"contents": [{"parts": [{"inline_data": {"mime_type": "image/png", "data": b64(&png(1600, 900))}}]}]});
        assert_eq!(media_tokens(&large), 258 * 3 * 2);
        let openai = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(&png(100, 100)))}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]});
        assert_eq!(media_tokens(&openai), 2 * 258);
        assert_eq!(media_tokens(&json!({"contents": [{"parts": [{"text": "only text"}]}]})), 0);
    }

    #[test]
    fn documents_audio_and_video_count_by_their_length() {
        let pdf = b"%PDF-1.4\n1 0 obj << /Type /Pages /Kids [2 0 R 3 0 R] >>\n2 0 obj << /Type /Page >>\n3 0 obj <</Type/Page>>";
        let body =
            json!({"contents": [{"parts": [{"inlineData": {"mimeType": "application/pdf", "data": b64(pdf)}}]}]});
        assert_eq!(media_tokens(&body), 2 * 258);
        let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0".to_vec();
        wav.extend(32_000u32.to_le_bytes()); // byte rate: 16 kHz, 16-bit mono
        wav.extend([2, 0, 16, 0]);
        wav.extend(b"data");
        wav.extend(320_000u32.to_le_bytes()); // ten seconds
        let body = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "audio/wav", "data": b64(&wav)}}]}]});
        assert_eq!(media_tokens(&body), 10 * 32);
        let mut mp4 = b"\0\0\0\x6cmvhd\0\0\0\0".to_vec();
        mp4.extend([0; 8]);
        mp4.extend(1_000u32.to_be_bytes());
        mp4.extend(42_500u32.to_be_bytes()); // 42.5 s
        let body = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "video/mp4", "data": b64(&mp4)}}]}]});
        assert_eq!(media_tokens(&body), 43 * 263);
        let clip = json!({"contents": [{"parts": [{"fileData": {"mimeType": "video/mp4", "fileUri": "files/abc"},
            "videoMetadata": {"startOffset": "10s", "endOffset": "40s"}}]}]});
        assert_eq!(media_tokens(&clip), 30 * 263);
    }
}
