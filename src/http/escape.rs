//! Percent-encoding of keys in URL paths, and the few query parameters the API takes.
//!
//! Keys are arbitrary bytes carried in a catch-all path segment, so `/` stays literal and
//! every byte outside the RFC 3986 unreserved set is escaped.

/// Percent-encodes `key` for a catch-all route: unreserved characters and `/` stay as they
/// are, every other byte becomes `%XX`.
pub fn encode_path(key: &[u8]) -> String {
    encode(key, true)
}

/// Percent-encodes `key` as one path segment: like [`encode_path`], but `/` is escaped too.
pub fn encode_segment(key: &[u8]) -> String {
    encode(key, false)
}

fn encode(bytes: &[u8], keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/');
        if plain {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes `%XX` escapes into bytes. A `%` not followed by two hex digits is kept literally,
/// as most servers do, rather than refusing the request.
pub fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&h| hex_value(h)),
                bytes.get(i + 2).and_then(|&l| hex_value(l)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Every value given for `name` in a query string, decoded (`+` counts as a space there).
pub fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = String::from_utf8_lossy(&decode(&k.replace('+', " "))).into_owned();
            (k == name).then(|| String::from_utf8_lossy(&decode(&v.replace('+', " "))).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_only_what_must_be() {
        assert_eq!(encode_path(b"a/b c"), "a/b%20c");
        assert_eq!(encode_segment(b"a/b"), "a%2Fb");
        assert_eq!(encode_path("é?#%".as_bytes()), "%C3%A9%3F%23%25");
        assert_eq!(encode_path(b"Az09-._~"), "Az09-._~");
    }

    #[test]
    fn decodes_escapes_and_keeps_stray_percent_signs() {
        assert_eq!(decode("a%2Fb%2fc"), b"a/b/c");
        assert_eq!(decode("100%"), b"100%");
        assert_eq!(decode("%zz%4"), b"%zz%4");
        assert_eq!(decode("+"), b"+", "a path keeps '+' literally");
    }

    #[test]
    fn finds_query_values() {
        assert_eq!(query_values(Some("w=2&r=1"), "w"), ["2"]);
        assert_eq!(query_values(Some("w=1&w=3"), "w"), ["1", "3"]);
        assert_eq!(query_values(Some("w"), "w"), [""]);
        assert_eq!(query_values(Some("%77=%32"), "w"), ["2"]);
        assert!(query_values(Some("x=1&&"), "w").is_empty());
        assert!(query_values(None, "w").is_empty());
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode_path(&key)), key.clone());
            prop_assert_eq!(decode(&encode_segment(&key)), key);
        }
    }
}
