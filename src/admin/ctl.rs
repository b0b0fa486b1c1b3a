//! The `flockmq ctl` client: a minimal blocking HTTP/1.1 GET / POST against the admin endpoint,
//! and the text the commands print. No async runtime, no dependencies beyond std and serde.
//!
//! It only talks to the admin endpoint; it never reads node state any other way.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// How long a ctl command waits for the node.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted (the client list of a big node fits easily).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Why a ctl request failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Nothing answered at the admin address.
    #[error("cannot reach the admin endpoint at {addr}: {source} (is the node running?)")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The connection broke mid-request.
    #[error("admin request failed: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP we understand.
    #[error("bad response from the admin endpoint: {0}")]
    BadResponse(&'static str),
    /// The endpoint answered with an error status.
    #[error("admin endpoint answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The JSON did not have the expected shape.
    #[error("unexpected JSON from the admin endpoint: {0}")]
    Json(#[from] serde_json::Error),
    /// `admin.bind = off` and no `--admin` given.
    #[error("the admin endpoint is disabled (admin.bind = off); pass --admin ADDR")]
    AdminDisabled,
}

/// The address a ctl command should call for this config: `admin.bind`, with an unspecified
/// IP (0.0.0.0 / ::) replaced by loopback.
pub fn admin_target(config: &Config) -> Result<SocketAddr, CtlError> {
    let bind = config.admin.bind.ok_or(CtlError::AdminDisabled)?;
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, bind.port()))
}

/// `GET path` on the admin endpoint; the body of a 200 answer.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<String, CtlError> {
    request(addr, "GET", path, None, token)
}

/// `POST path` with a JSON body on the admin endpoint; the body of a 200 answer.
pub fn post(
    addr: SocketAddr,
    path: &str,
    json: &serde_json::Value,
    token: Option<&str>,
) -> Result<String, CtlError> {
    request(addr, "POST", path, Some(json.to_string()), token)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<String, CtlError> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| CtlError::Connect { addr, source })?;
    // A join waits for the link to come up, so allow it longer than a plain query.
    stream.set_read_timeout(Some(TIMEOUT * 4))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body_headers = body.as_ref().map_or_else(String::new, |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{body_headers}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let (status, body) = parse_response(&raw)?;
    let body = String::from_utf8(body).map_err(|_| CtlError::BadResponse("body is not UTF-8"))?;
    if status != 200 {
        return Err(CtlError::Status {
            status,
            body: body.trim_end().to_owned(),
        });
    }
    Ok(body)
}

/// Splits a whole `Connection: close` response into status and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), CtlError> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(CtlError::BadResponse("no end of headers"))?;
    let head = std::str::from_utf8(raw.get(..head_end).unwrap_or_default())
        .map_err(|_| CtlError::BadResponse("headers are not UTF-8"))?;
    let body = raw.get(head_end + 4..).unwrap_or_default();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or(CtlError::BadResponse("no status line"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, CtlError> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(CtlError::BadResponse("bad chunk size"))?;
        let size_text =
            std::str::from_utf8(data.get(..line_end).unwrap_or_default()).unwrap_or_default();
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| CtlError::BadResponse("bad chunk size"))?;
        let start = line_end + 2;
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(start..start + size)
            .ok_or(CtlError::BadResponse("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data
            .get(start + size + 2..)
            .ok_or(CtlError::BadResponse("truncated chunk"))?;
    }
}

/// One client as `ctl clients list` reads it from `GET /api/v1/clients`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ClientRow {
    pub client_id: String,
    pub connected: bool,
    pub protocol: u8,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
}

/// Parses the body of `GET /api/v1/clients`.
pub fn parse_clients(json: &str) -> Result<Vec<ClientRow>, CtlError> {
    Ok(serde_json::from_str(json)?)
}

fn protocol_name(level: u8) -> String {
    match level {
        3 => "3.1".into(),
        4 => "3.1.1".into(),
        5 => "5.0".into(),
        other => other.to_string(),
    }
}

/// The table `ctl clients list` prints: `client_id  connected  proto  subs  inflight  queued`.
pub fn clients_table(rows: &[ClientRow]) -> String {
    let header = [
        "client_id",
        "connected",
        "proto",
        "subs",
        "inflight",
        "queued",
    ]
    .map(String::from);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.client_id.clone(),
                r.connected.to_string(),
                protocol_name(r.protocol),
                r.subscriptions.to_string(),
                r.inflight.to_string(),
                r.queued.to_string(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Parses `GET /api/v1/cluster/status`.
pub fn parse_cluster_status(json: &str) -> Result<crate::cluster::ClusterStatus, CtlError> {
    Ok(serde_json::from_str(json)?)
}

/// Parses `GET /api/v1/routes`.
pub fn parse_routes(json: &str) -> Result<Vec<crate::cluster::RouteEntry>, CtlError> {
    Ok(serde_json::from_str(json)?)
}

/// The text `ctl routes list` prints: one `FILTER -> node1,node2` line per filter.
pub fn routes_table(routes: &[crate::cluster::RouteEntry]) -> String {
    routes
        .iter()
        .map(|r| format!("{} -> {}\n", r.filter, r.nodes.join(",")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_target_replaces_unspecified_with_loopback() {
        let c =
            Config::from_pairs(&[("admin.bind", "0.0.0.0:18084"), ("admin.token", "t")]).unwrap();
        assert_eq!(
            admin_target(&c).unwrap(),
            "127.0.0.1:18084".parse().unwrap()
        );
        let c = Config::from_pairs(&[("admin.bind", "127.0.0.5:1"), ("admin.token", "t")]).unwrap();
        assert_eq!(admin_target(&c).unwrap(), "127.0.0.5:1".parse().unwrap());
        let c = Config::from_pairs(&[("admin.bind", "off")]).unwrap();
        assert!(matches!(admin_target(&c), Err(CtlError::AdminDisabled)));
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, b"hello".to_vec()));
        let chunked = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (401, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
        );
    }

    #[test]
    fn clients_table_aligns_columns() {
        let json = r#"[{"client_id":"sensor-0001","connected":true,"protocol":5,"clean_start":true,
            "keep_alive":60,"session_expiry_interval":0,"subscriptions":2,"inflight":0,"queued":0},
            {"client_id":"c","connected":false,"protocol":4,"clean_start":false,"keep_alive":0,
            "session_expiry_interval":3600,"subscriptions":10,"inflight":3,"queued":120}]"#;
        let rows = parse_clients(json).unwrap();
        assert_eq!(
            clients_table(&rows),
            "client_id    connected  proto  subs  inflight  queued\n\
             sensor-0001  true       5.0    2     0         0\n\
             c            false      3.1.1  10    3         120\n"
        );
        assert_eq!(
            clients_table(&[]),
            "client_id  connected  proto  subs  inflight  queued\n"
        );
    }
}
