//! Command-line configuration for the load generator.
//!
//! Every flag can also come from an environment variable (`LOADGEN_*`), so CI scripts and
//! humans drive the same binary. This module also holds the checks that keep a run on this
//! machine: gateway URLs must point at loopback (127.0.0.0/8, `localhost`, `[::1]`) unless
//! `--allow-remote` is given.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use rand::Rng;
use serde::Serialize;
use tokio_tungstenite::tungstenite::http::Uri;

/// Longest run we accept, so `Duration` maths can never overflow and a typo cannot keep a
/// load generator running for days.
const MAX_SECS: f64 = 24.0 * 3600.0;
/// Upper bound of the connect phase: it must fit, with drain and close, inside the hard
/// deadline of `warmup + duration + 30 s`.
pub(crate) const MAX_CONNECT_TIMEOUT_SECS: f64 = 20.0;
/// Protocol limit on project ids.
const MAX_PROJECT_ID_LEN: usize = 128;

/// Raw command-line flags.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    version,
    about = "Drives a canvas gateway over its public WebSocket protocol and prints a JSON report."
)]
pub(crate) struct Args {
    /// Gateway base URL (ws://host:port); repeat the flag (or comma-separate the env var) to
    /// spread clients round-robin over several gateways.
    #[arg(
        long = "url",
        env = "LOADGEN_URL",
        value_delimiter = ',',
        required = true
    )]
    pub urls: Vec<String>,

    /// Number of projects.
    #[arg(long, env = "LOADGEN_PROJECTS", default_value_t = 1)]
    pub projects: u32,

    /// Clients per project.
    #[arg(long, env = "LOADGEN_CLIENTS", default_value_t = 10)]
    pub clients: u32,

    /// Edits per second per client; 0 = idle connections that only hold the socket.
    #[arg(long, env = "LOADGEN_RATE", default_value_t = 10.0)]
    pub rate: f64,

    /// Measured duration in seconds (after warmup).
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10.0)]
    pub duration: f64,

    /// Objects per project, created at start by the first client of each project.
    #[arg(long, env = "LOADGEN_OBJECTS", default_value_t = 10)]
    pub objects: u32,

    /// JWT sent as `?token=` on the upgrade request.
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Project ids are `{prefix}-{n}`; default: a random prefix so runs never collide.
    #[arg(long, env = "LOADGEN_PROJECT_PREFIX")]
    pub project_prefix: Option<String>,

    /// How many connection attempts may be in flight at once.
    #[arg(long, env = "LOADGEN_CONNECT_CONCURRENCY", default_value_t = 200)]
    pub connect_concurrency: usize,

    /// Seconds allowed for connecting every client (and creating the objects) before the run
    /// starts anyway; clients not ready by then count as connect failures. At most 20.
    #[arg(long, env = "LOADGEN_CONNECT_TIMEOUT", default_value_t = 15.0)]
    pub connect_timeout: f64,

    /// Also write the JSON report to this file.
    #[arg(long, env = "LOADGEN_OUT")]
    pub out: Option<PathBuf>,

    /// Seconds of load before measuring starts (excluded from the statistics).
    #[arg(long, env = "LOADGEN_WARMUP", default_value_t = 1.0)]
    pub warmup: f64,

    /// Allow gateway URLs that are not loopback addresses.
    #[arg(long, env = "LOADGEN_ALLOW_REMOTE")]
    pub allow_remote: bool,

    /// Seconds: each client drops its socket about this often (at random times) while the load runs and
    /// reconnects with `?since=` its last seq; the report counts resumes and snapshots. 0 = never.
    #[arg(long, env = "LOADGEN_DROP_EVERY", default_value_t = 0.0)]
    pub drop_every: f64,
}

/// Validated configuration used by the rest of the program.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Normalised base URLs (`ws://host:port`, no trailing slash).
    pub urls: Vec<String>,
    pub projects: u32,
    pub clients: u32,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub objects: u32,
    pub token: Option<String>,
    pub prefix: String,
    /// Random tag written into every patch (`lg.c`) so receipts from another run are ignored.
    pub run_id: String,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub out: Option<PathBuf>,
    pub allow_remote: bool,
    /// Mean time between a client's socket drops (then a reconnect with `since`); `None`: never.
    pub drop_every: Option<Duration>,
}

/// The part of the configuration echoed in the report (never the token itself).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigEcho {
    pub urls: Vec<String>,
    pub projects: u32,
    pub clients_per_project: u32,
    pub total_clients: u64,
    pub rate_per_client: f64,
    pub target_edits_per_sec: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub objects_per_project: u32,
    pub token_provided: bool,
    pub project_prefix: String,
    pub run_id: String,
    pub connect_concurrency: usize,
    pub connect_timeout_secs: f64,
    pub out: Option<String>,
    pub allow_remote: bool,
    pub drop_every_secs: f64,
}

impl Config {
    /// Checks the flags and resolves defaults. Host names other than literal loopback
    /// addresses and `localhost` are refused unless `allow_remote`.
    pub(crate) fn from_args(args: Args) -> anyhow::Result<Self> {
        if args.urls.is_empty() {
            bail!("at least one --url is required");
        }
        let mut urls = Vec::with_capacity(args.urls.len());
        for raw in &args.urls {
            urls.push(normalize_url(raw, args.allow_remote)?);
        }
        if args.projects == 0 || args.clients == 0 {
            bail!("--projects and --clients must be at least 1");
        }
        let total = u64::from(args.projects) * u64::from(args.clients);
        if total > 1_000_000 {
            bail!("{total} clients is more than this tool supports (1,000,000)");
        }
        if !args.rate.is_finite() || args.rate < 0.0 || args.rate > 100_000.0 {
            bail!("--rate must be between 0 and 100000 edits/s per client");
        }
        let duration = secs("--duration", args.duration)?;
        if duration.is_zero() {
            bail!("--duration must be positive");
        }
        let warmup = secs("--warmup", args.warmup)?;
        let connect_timeout = secs("--connect-timeout", args.connect_timeout)?;
        if connect_timeout.is_zero() || args.connect_timeout > MAX_CONNECT_TIMEOUT_SECS {
            bail!("--connect-timeout must be in (0, {MAX_CONNECT_TIMEOUT_SECS}] seconds");
        }
        if args.rate > 0.0 && (args.objects == 0 || args.objects > 10_000) {
            bail!("--objects must be between 1 and 10000 when --rate > 0");
        }
        if args.connect_concurrency == 0 {
            bail!("--connect-concurrency must be at least 1");
        }
        let prefix = match args.project_prefix {
            Some(p) => p,
            None => format!("lg{:08x}", rand::rng().random::<u32>()),
        };
        let longest = format!("{prefix}-{}", args.projects - 1);
        if prefix.is_empty() || longest.len() > MAX_PROJECT_ID_LEN || !is_id_charset(&prefix) {
            bail!(
                "--project-prefix must be [A-Za-z0-9_.:-] and leave room for '-<n>' within \
                 {MAX_PROJECT_ID_LEN} chars"
            );
        }
        Ok(Self {
            urls,
            projects: args.projects,
            clients: args.clients,
            rate: args.rate,
            duration,
            warmup,
            objects: args.objects,
            token: args.token.filter(|t| !t.is_empty()),
            prefix,
            run_id: format!("{:08x}", rand::rng().random::<u32>()),
            connect_concurrency: args.connect_concurrency,
            connect_timeout,
            out: args.out,
            allow_remote: args.allow_remote,
            drop_every: (args.drop_every > 0.0)
                .then(|| secs("--drop-every", args.drop_every))
                .transpose()?,
        })
    }

    /// Total number of clients over all projects.
    pub(crate) fn total_clients(&self) -> u64 {
        u64::from(self.projects) * u64::from(self.clients)
    }

    /// Project id of project `p`.
    pub(crate) fn project_id(&self, p: u32) -> String {
        format!("{}-{p}", self.prefix)
    }

    /// WebSocket URL for the client with global index `idx` (round-robin over `urls`).
    pub(crate) fn ws_url(&self, idx: u64, project: u32) -> String {
        let base = &self.urls[(idx % self.urls.len() as u64) as usize];
        let mut url = format!("{base}/ws/projects/{}", self.project_id(project));
        if let Some(token) = &self.token {
            url.push_str("?token=");
            percent_encode_into(token, &mut url);
        }
        url
    }

    /// The report's echo of this configuration.
    pub(crate) fn echo(&self) -> ConfigEcho {
        ConfigEcho {
            urls: self.urls.clone(),
            projects: self.projects,
            clients_per_project: self.clients,
            total_clients: self.total_clients(),
            rate_per_client: self.rate,
            target_edits_per_sec: self.rate * self.total_clients() as f64,
            duration_secs: self.duration.as_secs_f64(),
            warmup_secs: self.warmup.as_secs_f64(),
            objects_per_project: self.objects,
            token_provided: self.token.is_some(),
            project_prefix: self.prefix.clone(),
            run_id: self.run_id.clone(),
            connect_concurrency: self.connect_concurrency,
            connect_timeout_secs: self.connect_timeout.as_secs_f64(),
            out: self.out.as_ref().map(|p| p.display().to_string()),
            allow_remote: self.allow_remote,
            drop_every_secs: self.drop_every.map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Host names (not literal IPs) among the URLs; they are resolved at start and must
    /// resolve to loopback only, unless `allow_remote`.
    pub(crate) fn named_hosts(&self) -> Vec<(String, u16)> {
        self.urls
            .iter()
            .filter_map(|u| u.parse::<Uri>().ok())
            .filter_map(|uri| {
                let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
                if host.parse::<IpAddr>().is_ok() {
                    return None;
                }
                Some((host.to_string(), uri.port_u16().unwrap_or(80)))
            })
            .collect()
    }
}

/// Checks every address a named host resolves to (defence against a `localhost` that
/// resolves elsewhere). Call before connecting.
pub(crate) async fn check_resolved_hosts(cfg: &Config) -> anyhow::Result<()> {
    if cfg.allow_remote {
        return Ok(());
    }
    for (host, port) in cfg.named_hosts() {
        let addrs = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?;
        for addr in addrs {
            if !is_loopback_ip(addr.ip()) {
                bail!(
                    "{host} resolves to {} which is not loopback (use --allow-remote)",
                    addr.ip()
                );
            }
        }
    }
    Ok(())
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    if !v.is_finite() || !(0.0..=MAX_SECS).contains(&v) {
        bail!("{flag} must be between 0 and {MAX_SECS} seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Validates one `--url` and returns it as `ws://host[:port]` without a trailing slash.
pub(crate) fn normalize_url(raw: &str, allow_remote: bool) -> anyhow::Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .with_context(|| format!("--url {raw:?} is not a valid URL"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => bail!("--url {raw:?}: wss:// is not supported (no TLS in this tool)"),
        _ => bail!("--url {raw:?} must start with ws://"),
    }
    let host = uri
        .host()
        .with_context(|| format!("--url {raw:?} has no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        bail!("--url {raw:?} must be a base URL without a path (the tool adds /ws/projects/..)");
    }
    if uri.query().is_some() {
        bail!("--url {raw:?} must not have a query (use --token)");
    }
    if !allow_remote && !is_loopback_host(host) {
        bail!("--url {raw:?}: only loopback targets are allowed here (use --allow-remote)");
    }
    Ok(trimmed.to_string())
}

/// `localhost`, any 127.0.0.0/8 address, or `::1` (with or without brackets).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>().map(is_loopback_ip).unwrap_or(false)
}

fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn is_id_charset(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Percent-encodes everything outside RFC 3986 "unreserved" (JWTs only use unreserved
/// characters and '.', so this is usually a plain copy).
fn percent_encode_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(urls: &[&str]) -> Args {
        Args::parse_from(
            std::iter::once("loadgen".to_string()).chain(
                urls.iter()
                    .flat_map(|u| ["--url".to_string(), u.to_string()]),
            ),
        )
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1",
            "127.5.6.7",
            "localhost",
            "LOCALHOST",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "192.168.1.1",
            "example.com",
            "[::2]",
            "0.0.0.0",
            "8.8.8.8",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn urls_are_checked_and_normalised() {
        assert_eq!(
            normalize_url("ws://127.0.0.1:8080/", false).ok().as_deref(),
            Some("ws://127.0.0.1:8080")
        );
        assert!(normalize_url("ws://[::1]:8080", false).is_ok());
        assert!(normalize_url("ws://10.1.2.3:8080", false).is_err());
        assert!(normalize_url("ws://10.1.2.3:8080", true).is_ok());
        assert!(normalize_url("http://127.0.0.1:8080", false).is_err());
        assert!(normalize_url("wss://127.0.0.1:8080", false).is_err());
        assert!(normalize_url("ws://127.0.0.1:8080/ws/projects/x", false).is_err());
    }

    #[test]
    fn config_builds_urls_round_robin() {
        let mut a = args(&["ws://127.0.0.1:1", "ws://localhost:2/"]);
        a.project_prefix = Some("pre".into());
        a.token = Some("a.b+c".into());
        let cfg = Config::from_args(a).expect("valid config");
        assert_eq!(
            cfg.ws_url(0, 3),
            "ws://127.0.0.1:1/ws/projects/pre-3?token=a.b%2Bc"
        );
        assert_eq!(
            cfg.ws_url(1, 0),
            "ws://localhost:2/ws/projects/pre-0?token=a.b%2Bc"
        );
        assert_eq!(cfg.named_hosts(), vec![("localhost".to_string(), 2)]);
    }

    #[test]
    fn bad_prefix_and_remote_rejected() {
        let mut a = args(&["ws://127.0.0.1:1"]);
        a.project_prefix = Some("bad/prefix".into());
        assert!(Config::from_args(a).is_err());
        assert!(Config::from_args(args(&["ws://1.2.3.4:1"])).is_err());
        let cfg = Config::from_args(args(&["ws://127.0.0.1:1"])).expect("valid");
        assert!(cfg.prefix.starts_with("lg"));
    }
}
