//! The `healthcheck` subcommand's client: one HTTP/1.1 `GET` over a plain TCP socket, for
//! container health checks in an image that has no `curl`.
//!
//! ```text
//!  producer-service healthcheck ──TCP──► GET /health HTTP/1.1 ──► status line ──► exit 0 / 1
//! ```
//!
//! Only `http://` (the check runs inside the container, against loopback); only the status
//! line is read.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// The URL checked when none is given: `/health` on the loopback address of `listen`'s port
/// (an unspecified listen address such as `0.0.0.0` is reached through loopback).
pub fn default_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        match listen {
            SocketAddr::V4(_) => "127.0.0.1".to_owned(),
            SocketAddr::V6(_) => "[::1]".to_owned(),
        }
    } else {
        match listen {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("http://{ip}:{}/health", listen.port())
}

/// Sends `GET url` and returns the answer's status code, all within `timeout`.
///
/// # Errors
/// [`Error::InvalidUrl`] for anything but `http://host[:port][/path]`;
/// [`Error::Healthcheck`] when connecting, writing or reading fails, the answer is not
/// HTTP, or `timeout` passes.
pub async fn check(url: &str, timeout: Duration) -> Result<u16, Error> {
    let invalid = |reason| Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // A bracketed IPv6 literal connects without its brackets.
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: producer-service-healthcheck\r\nConnection: close\r\n\r\n"
    );
    let exchange = async move {
        let mut stream = TcpStream::connect((connect_host.as_str(), port)).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        // The status line is all we need; stop at its end.
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        parse_status(&head).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(Error::Healthcheck),
        Err(_) => Err(Error::Healthcheck(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))),
    }
}

/// The code of a status line `HTTP/1.x NNN reason`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\nx"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn default_urls_use_loopback_for_unspecified_addresses() {
        assert_eq!(
            default_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            default_url("[::]:9000".parse().unwrap()),
            "http://[::1]:9000/health"
        );
        assert_eq!(
            default_url("10.0.0.5:81".parse().unwrap()),
            "http://10.0.0.5:81/health"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_refused() {
        for url in ["https://localhost/health", "localhost:8080", "not a url"] {
            assert!(
                matches!(
                    check(url, Duration::from_secs(1)).await,
                    Err(Error::InvalidUrl { .. })
                ),
                "{url}"
            );
        }
    }
}
