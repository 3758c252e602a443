//! Secrets in URLs (`scheme://user:password@host/…`) are never printed or stored: every URL
//! that reaches an error, a log line, the ledger or JSON output goes through here first.

/// `url` without its user info (`https://user:pass@host/x` → `https://host/x`); anything
/// that is not such a URL is returned unchanged.
pub fn url(url: &str) -> String {
    text(url)
}

/// `s` with the user info of every `scheme://user[:password]@` in it removed.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_info_is_removed() {
        assert_eq!(super::url("http://u:p@h:1/m.json"), "http://h:1/m.json");
        assert_eq!(super::url("https://h/m.json?a=b"), "https://h/m.json?a=b");
        assert_eq!(
            super::text("manifest http://user:pa@ss@h/x: HTTP 404; file:///a@b"),
            "manifest http://h/x: HTTP 404; file:///a@b"
        );
        assert_eq!(super::text("no url here"), "no url here");
    }
}
