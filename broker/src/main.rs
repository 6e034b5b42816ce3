//! `convoke`: run a broker node, mint tokens, print the default configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use convoke_broker::config::{self, Config, FlagSetting, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// Convoke: a realtime group-chat broker over QUIC.
#[derive(Debug, Parser)]
#[command(name = "convoke", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker node (single node: embedded store, self-signed dev certificate and an app
    /// secret generated into the data dir on first start).
    Serve {
        /// TOML configuration file (see `convoke generate-config`).
        #[arg(long, env = "CONVOKE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (store, certificate, secret). Overrides server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// QUIC listen address, e.g. 0.0.0.0:4433. Overrides server.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Metrics/health listen address ("" disables). Overrides metrics.listen.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Any setting, as section.field=value (repeatable), e.g. --set limits.server_max_users=5000.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Join a cluster as a gateway through this core member's cluster address (host:port;
        /// repeatable). Sets cluster.join, cluster.enabled = true and cluster.role = gateway.
        #[arg(long, value_name = "HOST:PORT")]
        join: Vec<String>,
    },
    /// Print a token for a user, signed with the app secret of the data dir (or config).
    Token {
        /// TOML configuration file (for auth.secret and server.data_dir).
        #[arg(long, env = "CONVOKE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory holding auth/secret. Overrides server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The user id the token acts as.
        #[arg(long)]
        user: String,
        /// Grant the app-admin claim (may do what an owner may, in every group).
        #[arg(long)]
        admin: bool,
        /// Lifetime: seconds, or a number with s, m, h or d (`90m`, `24h`). Default 24h, and
        /// 1h with --admin: an app-admin token opens every group and cannot be revoked
        /// before it expires. The broker ends a session when its token expires.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
    },
    /// Print the commented default configuration file.
    GenerateConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateConfig => {
            print!("{}", config::default_toml());
            ExitCode::SUCCESS
        }
        Command::Token {
            config,
            data_dir,
            user,
            admin,
            ttl,
        } => {
            let flags = data_dir
                .map(|d| FlagSetting::new("--data-dir", "server.data_dir", d.to_string_lossy()));
            let cfg = match load(config.as_deref(), flags) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let ttl = ttl.unwrap_or(if admin {
                ADMIN_TOKEN_TTL_SECS
            } else {
                USER_TOKEN_TTL_SECS
            });
            match token(&cfg, &user, admin, ttl) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("convoke token: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            data_dir,
            listen,
            metrics_listen,
            set,
            join,
        } => {
            let mut flags = Vec::new();
            if let Some(d) = data_dir {
                flags.push(FlagSetting::new(
                    "--data-dir",
                    "server.data_dir",
                    d.to_string_lossy(),
                ));
            }
            if let Some(l) = listen {
                flags.push(FlagSetting::new("--listen", "server.listen", l));
            }
            if let Some(m) = metrics_listen {
                flags.push(FlagSetting::new("--metrics-listen", "metrics.listen", m));
            }
            for s in &set {
                match FlagSetting::parse_set(s) {
                    Ok(f) => flags.push(f),
                    Err(e) => {
                        eprintln!("convoke: invalid configuration: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if !join.is_empty() {
                let seeds = join.join(",");
                flags.push(FlagSetting::new("--join", "cluster.join", seeds));
                flags.push(FlagSetting::new("--join", "cluster.enabled", "true"));
                flags.push(FlagSetting::new("--join", "cluster.role", "gateway"));
            }
            let cfg = match load(config.as_deref(), flags) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("convoke: {e:#}");
                    // A drifted or unsupported cluster setting, or a data dir another
                    // process uses, is a usage error.
                    if e.downcast_ref::<convoke_broker::cluster::Refused>()
                        .is_some()
                    {
                        ExitCode::from(convoke_broker::cluster::Refused::EXIT_CODE)
                    } else if e
                        .downcast_ref::<convoke_broker::server::DataDirInUse>()
                        .is_some()
                    {
                        ExitCode::from(convoke_broker::server::DataDirInUse::EXIT_CODE)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// Default lifetime of a user token: a day.
const USER_TOKEN_TTL_SECS: u64 = 86_400;
/// Default lifetime of an app-admin token: an hour (it may do anything in any group).
const ADMIN_TOKEN_TTL_SECS: u64 = 3_600;

/// `--ttl`: seconds, or a number with a unit (s, m, h, d).
fn parse_ttl(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime: use seconds or e.g. 90m, 24h, 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use s, m, h or d"
            ))
        }
    };
    match n.checked_mul(unit) {
        Some(0) | None => Err(format!("{text:?}: the lifetime must be at least 1 s")),
        Some(secs) => Ok(secs),
    }
}

fn load(
    file: Option<&std::path::Path>,
    flags: impl IntoIterator<Item = FlagSetting>,
) -> Result<Config, ExitCode> {
    Config::load_layered(file, config::env_vars(), flags).map_err(|e| {
        eprintln!("convoke: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn token(cfg: &Config, user: &str, admin: bool, ttl: u64) -> anyhow::Result<String> {
    convoke_protocol::ids::check_user_id("--user", user).map_err(|e| anyhow::anyhow!(e.message))?;
    let (secret, generated) = convoke_broker::auth::app_secret(&cfg.auth, &cfg.server.data_dir)
        .with_context(|| {
            format!(
                "reading the app secret in {}",
                cfg.server.data_dir.display()
            )
        })?;
    if generated {
        eprintln!(
            "convoke token: generated a new app secret in {}; a broker using this data dir will accept the token",
            cfg.server.data_dir.join("auth").display()
        );
    }
    let expires = convoke_broker::clock::now_secs().saturating_add(ttl);
    Ok(convoke_broker::auth::mint(&secret, user, admin, expires))
}

fn init_logs(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    // Colours only on a terminal: a log file or journald gets plain text to grep.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    init_logs(&cfg);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let data_dir = cfg.server.data_dir.clone();
        let broker = convoke_broker::start(cfg).await?;
        if broker.cert_generated {
            eprintln!(
                "convoke: generated a self-signed certificate: {} (public-key pin {}; set tls.allow_generated = false to refuse this in production)",
                broker.cert_path.display(),
                broker.public_key_pin
            );
        }
        if broker.secret_generated {
            eprintln!(
                "convoke: generated an app secret in {}; mint tokens with: convoke token --data-dir {} --user alice",
                data_dir.join("auth").display(),
                data_dir.display()
            );
        }
        if let Some(wt) = &broker.webtransport {
            // Before the ready line, so that a harness that waits for it has this too.
            println!(
                "convoke webtransport={} path={} cert_sha256={}",
                wt.addr,
                wt.path,
                wt.cert_sha256.as_deref().unwrap_or("none")
            );
            // The development certificate is renewed a day before it expires: the same
            // line again with the new hash, which pages must pin to connect again.
            if let Some(mut renewals) = wt.cert_renewals.clone() {
                let (addr, path) = (wt.addr, wt.path.clone());
                renewals.mark_unchanged();
                tokio::spawn(async move {
                    while renewals.changed().await.is_ok() {
                        let sha256 = renewals.borrow_and_update().clone();
                        println!("convoke webtransport={addr} path={path} cert_sha256={sha256}");
                    }
                });
            }
        }
        // One machine-readable line: test harnesses and scripts read the real addresses here.
        println!(
            "convoke ready quic={} metrics={} cert={}",
            broker.quic_addr,
            broker.metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            broker.cert_path.display()
        );
        broker.run_until_signal().await
    })
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_takes_seconds_and_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90m"), Ok(5_400));
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in ["", "h", "0", "0h", "5y", "-1", "99999999999999999999d"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) || e.contains("unit"),
                "{bad}: {e}"
            );
        }
    }
}
