//! Small helpers shared by the REST and WebSocket sides: server addresses and ids.

use crate::error::ClientError;

/// Percent-encode everything but RFC 3986 unreserved characters, so that usernames and tokens can
/// go into paths and query strings whatever they contain.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Split a server address into `host[:port]` and a path prefix, accepting `http://`, `ws://` or no
/// scheme at all, so that one address can serve both REST and WebSocket.
fn split_server(server: &str) -> Result<(String, String), ClientError> {
    let trimmed = server.trim();
    let rest = if let Some(rest) = trimmed.strip_prefix("http://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("ws://") {
        rest
    } else if trimmed.starts_with("https://") || trimmed.starts_with("wss://") {
        return Err(ClientError::Config(format!(
            "`{server}`: TLS is not supported, use http:// or ws://"
        )));
    } else if trimmed.contains("://") {
        return Err(ClientError::Config(format!(
            "`{server}`: unknown scheme, use http:// or ws://"
        )));
    } else {
        trimmed
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(ClientError::Config(format!("`{server}`: no host")));
    }
    Ok((
        authority.to_string(),
        path.trim_end_matches('/').to_string(),
    ))
}

/// The base URL for REST calls, like `http://127.0.0.1:8080`, without a trailing slash.
pub fn http_base(server: &str) -> Result<String, ClientError> {
    let (authority, path) = split_server(server)?;
    Ok(format!("http://{authority}{path}"))
}

/// The WebSocket URL of a server: `ws://host/v1/ws?token=…`. A server address that already ends
/// in `/v1/ws` is kept as is.
pub fn ws_url(server: &str, token: &str) -> Result<String, ClientError> {
    let (authority, path) = split_server(server)?;
    let path = if path.ends_with("/v1/ws") {
        path
    } else {
        format!("{path}/v1/ws")
    };
    Ok(format!(
        "ws://{authority}{path}?token={}",
        percent_encode(token)
    ))
}

/// A fresh `client_msg_id`, 32 hex digits: the time in milliseconds (12 digits), then 80 random
/// bits, so that ids never collide across devices or restarts without any state. Ids that grow
/// with time land next to the sender's previous ones in the server's dedupe index, which makes a
/// send cheaper for the server than a wholly random id (protocol.md §9.3).
pub fn new_client_msg_id() -> String {
    let time = now_ms() & 0xffff_ffff_ffff;
    let random = rand::random::<u128>() & ((1 << 80) - 1);
    format!("{time:012x}{random:020x}")
}

/// Milliseconds since the Unix epoch (0 on a clock set before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(percent_encode("abc-_.~09"), "abc-_.~09");
        assert_eq!(percent_encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }

    #[test]
    fn server_addresses_in_any_form_give_the_same_urls() {
        for server in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "ws://127.0.0.1:8080",
            "127.0.0.1:8080",
        ] {
            assert_eq!(http_base(server).unwrap(), "http://127.0.0.1:8080");
            assert_eq!(
                ws_url(server, "t+k").unwrap(),
                "ws://127.0.0.1:8080/v1/ws?token=t%2Bk"
            );
        }
        assert_eq!(
            ws_url("ws://h:1/v1/ws", "t").unwrap(),
            "ws://h:1/v1/ws?token=t"
        );
        assert_eq!(
            http_base("http://h:1/prefix/").unwrap(),
            "http://h:1/prefix"
        );
    }

    #[test]
    fn tls_and_empty_hosts_are_refused() {
        assert!(http_base("https://h").is_err());
        assert!(ws_url("wss://h", "t").is_err());
        assert!(http_base("ftp://h").is_err());
        assert!(http_base("http://").is_err());
    }

    #[test]
    fn client_msg_ids_are_the_time_and_random_digits() {
        let before = now_ms();
        let a = new_client_msg_id();
        let after = now_ms();
        let b = new_client_msg_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let time = u64::from_str_radix(&a[..12], 16).unwrap();
        assert!(
            (before..=after).contains(&time),
            "{time} not in {before}..={after}"
        );
    }
}
