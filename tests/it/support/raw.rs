//! Raw TCP exchanges, for requests an HTTP client will not send (absolute form, CONNECT,
//! malformed heads, slow or silent clients). Every read is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{KEY, Resp};

/// `Authorization: Zoho-oauthtoken KEY\r\n`, the tenant-A key as a raw header line.
pub fn auth_line() -> String {
    format!("Authorization: Zoho-oauthtoken {KEY}\r\n")
}

/// Writes `request` on a new connection and reads one response (head, then a
/// `Content-Length` body), bounded by 5 s.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    read_response(&mut s).await
}

/// Reads one response (head, then a `Content-Length` body) from `s`, bounded by 5 s.
pub async fn read_response(s: &mut TcpStream) -> Resp {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let (status, headers) = parse_head(&head);
                let len = headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Resp {
                        status,
                        headers,
                        body: Bytes::copy_from_slice(&buf[end + 4..end + 4 + len]),
                    };
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!(
                    "connection ended before a whole response: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("raw response within 5 s")
}

/// The status and headers of an HTTP/1.1 response head.
fn parse_head(head: &str) -> (StatusCode, HeaderMap) {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("not a header line: {line:?}"));
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(v.trim()).expect("header value"),
        );
    }
    (status, headers)
}

/// What the server did with a connection we stopped writing to.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Closed it (EOF or reset) without a response.
    Closed,
    /// Answered with this status first (0: no HTTP/1 status line).
    Answered(u16),
}

/// Reads until the server closes the connection or answers; `None` when neither happened
/// within `bound`.
pub async fn wait_for_close(s: &mut TcpStream, bound: Duration) -> Option<Ended> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return if buf.is_empty() {
                        Ended::Closed
                    } else {
                        let text = String::from_utf8_lossy(&buf);
                        Ended::Answered(
                            text.split_whitespace()
                                .nth(1)
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0),
                        )
                    };
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(bound, read).await.ok()
}
