//! Text from outside (a plugin's message, a cloud's or a directory's error) cut to a size fit
//! for an error message, a log line or a status field.

/// The most bytes kept.
pub const TEXT_CAP: usize = 1024;

/// `text`, cut to [`TEXT_CAP`] bytes at a character boundary, marked when cut.
pub fn cap(mut text: String) -> String {
    if text.len() > TEXT_CAP {
        let mut cut = TEXT_CAP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("… (truncated)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(cap("short".into()), "short");
        let long = "é".repeat(TEXT_CAP);
        let capped = cap(long);
        assert!(capped.ends_with("… (truncated)"));
        assert!(capped.len() <= TEXT_CAP + "… (truncated)".len());
        assert_eq!(
            cap("x".repeat(TEXT_CAP)).len(),
            TEXT_CAP,
            "at the cap: kept whole"
        );
    }
}
