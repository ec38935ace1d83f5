//! Text encodings: `source.encoding` is any label of the WHATWG Encoding
//! Standard (what `encoding_rs` implements: `utf-8`, `windows-1251`,
//! `iso-8859-2`, `shift_jis`, `gbk`, `big5`, `utf-16le`, …) or `auto`.
//!
//! Each line is decoded on its own, from the bytes the source stage split at
//! line ends (so offsets stay byte offsets of the file). Nothing is replaced:
//! bytes that are not text in the file's encoding make the line an error,
//! since a mangled name would bill the wrong account.
//!
//! `auto` decides once per file, from its first bytes: a BOM (UTF-8,
//! UTF-16LE/BE) at offset 0; else, while every line is ASCII, nothing needs
//! deciding (ASCII reads the same in every encoding offered); at the first
//! line that is not, UTF-8 if the file so far is valid UTF-8, otherwise
//! chardetng's guess from the file's lines up to that one. The choice is
//! kept for the rest of the file and depends only on the file's own first
//! bytes, so a re-read after a restart decides the same.

use std::borrow::Cow;
use std::str::FromStr;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};
use serde::Deserialize;

/// The configured encoding of a source's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    Fixed(&'static Encoding),
    /// Detected per file from its first bytes (and logged).
    Auto,
}

impl Default for TextEncoding {
    fn default() -> Self {
        TextEncoding::Fixed(UTF_8)
    }
}

/// Labels to suggest in errors.
pub const SOME_LABELS: &str = "\"auto\", \"windows-1252\", \"windows-1251\", \"windows-1250\", \
     \"iso-8859-2\", \"shift_jis\", \"gbk\", \"big5\", \"utf-16le\" or any WHATWG label";

impl FromStr for TextEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(TextEncoding::Auto);
        }
        match Encoding::for_label(t.as_bytes()) {
            // The "replacement" encoding decodes everything to U+FFFD.
            Some(e) if e != encoding_rs::REPLACEMENT => Ok(TextEncoding::Fixed(e)),
            _ => Err(format!(
                "{s:?} is not a known text encoding (use {SOME_LABELS})"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for TextEncoding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl TextEncoding {
    /// The label to write in a config (`auto`, `windows-1251`, `utf-8`…).
    pub fn label(self) -> String {
        match self {
            TextEncoding::Auto => "auto".into(),
            TextEncoding::Fixed(e) => e.name().to_ascii_lowercase(),
        }
    }
}

/// Per-file decoding state.
pub struct Decoder {
    configured: TextEncoding,
    /// For `auto`: the encoding decided for this file, once decided.
    decided: Option<&'static Encoding>,
    detector: Option<Box<chardetng::EncodingDetector>>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("configured", &self.configured)
            .field("decided", &self.decided)
            .finish_non_exhaustive()
    }
}

/// What a line's bytes start with at offset 0 of a file.
fn bom(bytes: &[u8]) -> Option<(&'static Encoding, usize)> {
    Encoding::for_bom(bytes)
}

impl Decoder {
    pub fn new(configured: TextEncoding) -> Decoder {
        Decoder {
            configured,
            decided: None,
            detector: None,
        }
    }

    /// The encoding decided for this file (`None`: `auto` and only ASCII
    /// seen so far).
    pub fn encoding(&self) -> Option<&'static Encoding> {
        match (self.decided, self.configured) {
            (Some(e), _) | (None, TextEncoding::Fixed(e)) => Some(e),
            (None, TextEncoding::Auto) => None,
        }
    }

    /// Whether the configuration says `auto`.
    pub fn is_auto(&self) -> bool {
        self.configured == TextEncoding::Auto
    }

    /// The line's content bytes without a BOM at offset 0 of the file, and
    /// its text. The content (what the charge id is made of) never
    /// includes the BOM.
    pub fn decode<'a>(
        &mut self,
        bytes: &'a [u8],
        at_start: bool,
    ) -> (&'a [u8], Result<Cow<'a, str>, String>, bool) {
        let mut newly = false;
        let mut content = bytes;
        if at_start {
            if let Some((enc, len)) = bom(bytes) {
                // A BOM says what the file is, whatever the label (as the
                // WHATWG decode algorithm has it).
                content = &bytes[len..];
                if self.decided.is_none() {
                    self.decided = Some(enc);
                    newly = self.is_auto();
                }
            }
        }
        let enc = match self.encoding() {
            Some(e) => e,
            None => {
                // `auto`, undecided.
                if content.is_ascii() {
                    let det = self
                        .detector
                        .get_or_insert_with(|| Box::new(chardetng::EncodingDetector::new()));
                    det.feed(content, false);
                    det.feed(b"\n", false);
                    // ASCII is the same text in every encoding offered.
                    return (
                        content,
                        Ok(Cow::Borrowed(std::str::from_utf8(content).unwrap_or(""))),
                        false,
                    );
                }
                let enc = if std::str::from_utf8(content).is_ok() {
                    UTF_8
                } else {
                    let mut det = self
                        .detector
                        .take()
                        .unwrap_or_else(|| Box::new(chardetng::EncodingDetector::new()));
                    det.feed(content, true);
                    det.guess(None, true)
                };
                self.decided = Some(enc);
                self.detector = None;
                newly = true;
                enc
            }
        };
        (content, decode_with(content, enc, self.is_auto()), newly)
    }
}

/// Decode without replacement: malformed bytes are an error naming them.
fn decode_with<'a>(
    bytes: &'a [u8],
    enc: &'static Encoding,
    auto: bool,
) -> Result<Cow<'a, str>, String> {
    if enc == UTF_8 {
        return std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
            let at = e.valid_up_to();
            let hint = if auto {
                String::new()
            } else {
                format!(
                    "; if the file is in another encoding, set encoding = \"auto\" \
                     or its label ({SOME_LABELS})"
                )
            };
            format!(
                "invalid UTF-8 at byte {} of the line (0x{:02X}){hint}",
                at + 1,
                bytes.get(at).copied().unwrap_or(0)
            )
        });
    }
    if (enc == UTF_16LE || enc == UTF_16BE) && bytes.len() % 2 == 1 {
        return Err(format!(
            "the line has an odd number of bytes ({}): not {}",
            bytes.len(),
            enc.name()
        ));
    }
    match enc.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok(text),
        None => {
            // Find the first bad place for the message.
            let mut dec = enc.new_decoder_without_bom_handling();
            let mut out = String::with_capacity(bytes.len() * 3 + 16);
            let (_, read) = dec.decode_to_string_without_replacement(bytes, &mut out, true);
            let _ = read;
            Err(format!(
                "bytes that are not {} text in the line (after {:?})",
                enc.name(),
                out.chars()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for (label, name) in [
            ("utf-8", "UTF-8"),
            ("UTF8", "UTF-8"),
            ("windows-1251", "windows-1251"),
            ("cp1251", "windows-1251"),
            ("windows-1250", "windows-1250"),
            ("windows-1253", "windows-1253"),
            ("windows-1254", "windows-1254"),
            ("latin1", "windows-1252"),
            ("iso-8859-2", "ISO-8859-2"),
            ("iso-8859-5", "ISO-8859-5"),
            ("shift_jis", "Shift_JIS"),
            ("sjis", "Shift_JIS"),
            ("gbk", "GBK"),
            ("big5", "Big5"),
            ("utf-16le", "UTF-16LE"),
            ("utf-16be", "UTF-16BE"),
        ] {
            match label.parse::<TextEncoding>().unwrap() {
                TextEncoding::Fixed(e) => assert_eq!(e.name(), name, "{label}"),
                TextEncoding::Auto => panic!("{label}"),
            }
        }
        assert_eq!("Auto".parse::<TextEncoding>(), Ok(TextEncoding::Auto));
        let e = "klingon".parse::<TextEncoding>().unwrap_err();
        assert!(e.contains("auto") && e.contains("windows-1251"), "{e}");
        assert!("replacement".parse::<TextEncoding>().is_err());
        assert!("iso-2022-kr".parse::<TextEncoding>().is_err());
    }

    fn dec(enc: &str, bytes: &[u8]) -> Result<String, String> {
        let mut d = Decoder::new(enc.parse().unwrap());
        d.decode(bytes, false).1.map(|c| c.into_owned())
    }

    #[test]
    fn legacy_code_pages() {
        let (b, _, _) = encoding_rs::WINDOWS_1251.encode("Иванов,Печать");
        assert_eq!(dec("windows-1251", &b).unwrap(), "Иванов,Печать");
        let (b, _, _) = encoding_rs::WINDOWS_1250.encode("Łódź,Žluťoučký");
        assert_eq!(dec("windows-1250", &b).unwrap(), "Łódź,Žluťoučký");
        let (b, _, _) = encoding_rs::WINDOWS_1253.encode("Παπαδόπουλος");
        assert_eq!(dec("windows-1253", &b).unwrap(), "Παπαδόπουλος");
        let (b, _, _) = encoding_rs::WINDOWS_1254.encode("Şükrü Yılmaz");
        assert_eq!(dec("windows-1254", &b).unwrap(), "Şükrü Yılmaz");
        let (b, _, _) = encoding_rs::SHIFT_JIS.encode("山田太郎,印刷");
        assert_eq!(dec("shift_jis", &b).unwrap(), "山田太郎,印刷");
        let (b, _, _) = encoding_rs::GBK.encode("张伟,打印");
        assert_eq!(dec("gbk", &b).unwrap(), "张伟,打印");
        let (b, _, _) = encoding_rs::BIG5.encode("陳大文,列印");
        assert_eq!(dec("big5", &b).unwrap(), "陳大文,列印");
        // Bytes that are no text in the encoding are an error, not U+FFFD.
        assert!(dec("shift_jis", b"ab\x82").is_err());
        // UTF-8 errors name auto and the labels.
        let e = dec("utf-8", b"x\xC8y").unwrap_err();
        assert!(e.contains("invalid UTF-8 at byte 2"), "{e}");
        assert!(e.contains("\"auto\"") && e.contains("windows-1251"), "{e}");
    }

    #[test]
    fn utf16_lines() {
        let le: Vec<u8> = "Zoë,上"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(dec("utf-16le", &le).unwrap(), "Zoë,上");
        let be: Vec<u8> = "Zoë".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        assert_eq!(dec("utf-16be", &be).unwrap(), "Zoë");
        assert!(dec("utf-16le", &le[..3]).is_err());
        // A lone surrogate is no text.
        assert!(dec("utf-16le", &[0x00, 0xD8, 0x41, 0x00]).is_err());
    }

    #[test]
    fn auto_decides_once_from_the_first_bytes() {
        let mut d = Decoder::new(TextEncoding::Auto);
        let (_, t, newly) = d.decode(b"Time,User,Pages", true);
        assert_eq!((t.unwrap().as_ref(), newly), ("Time,User,Pages", false));
        assert_eq!(d.encoding(), None);
        let (b, _, _) = encoding_rs::WINDOWS_1251
            .encode("2026-11-20 09:00:00,Иванов Пётр,3,1,Бухгалтерия,Отчёт за ноябрь.docx");
        let (_, t, newly) = d.decode(&b, false);
        assert!(newly);
        assert_eq!(d.encoding(), Some(encoding_rs::WINDOWS_1251));
        assert!(t.unwrap().contains("Иванов Пётр"));
        // Decided for good: a later line is read the same way.
        let (_, _, newly) = d.decode("Пётр".as_bytes(), false);
        assert!(!newly);
        // A BOM decides at once and is not content.
        let mut d = Decoder::new(TextEncoding::Auto);
        let line = [&[0xFF, 0xFE][..], &[b'a', 0]].concat();
        let (content, t, newly) = d.decode(&line, true);
        assert_eq!(
            (content, t.unwrap().as_ref(), newly),
            (&[b'a', 0][..], "a", true)
        );
        assert_eq!(d.encoding(), Some(UTF_16LE));
        // Valid UTF-8 non-ASCII: UTF-8.
        let mut d = Decoder::new(TextEncoding::Auto);
        let _ = d.decode("Zoë Résumé".as_bytes(), false);
        assert_eq!(d.encoding(), Some(UTF_8));
    }
}
