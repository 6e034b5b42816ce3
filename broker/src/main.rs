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
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
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
            let cfg = match load(config.as_deref(), flags) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("convoke: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
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
    let (secret, generated) = convoke_broker::auth::load_or_create_secret(
        &cfg.server.data_dir,
        cfg.auth.secret.as_deref(),
    )
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
            eprintln!("convoke: generated a self-signed certificate: {}", broker.cert_path.display());
        }
        if broker.secret_generated {
            eprintln!(
                "convoke: generated an app secret in {}; mint tokens with: convoke token --data-dir {} --user alice",
                data_dir.join("auth").display(),
                data_dir.display()
            );
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
