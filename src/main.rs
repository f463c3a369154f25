//! The `ember` command: `serve`, `doctor`, `version`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ember::config::Config;

#[derive(Parser)]
#[command(name = "ember", version, about = "Storage-node agent speaking the OpenStack Cinder v3 API")]
struct Cli {
    /// Log lines as text or as JSON objects [default: json under systemd's
    /// journal (JOURNAL_STREAM set), text otherwise].
    #[arg(long, global = true, env = "EMBER_LOG_FORMAT", value_enum)]
    log_format: Option<ember::logging::Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Cinder v3 API (the embedded default needs no configuration).
    Serve {
        /// TOML configuration file; flags override it.
        #[arg(long, env = "EMBER_CONFIG")]
        config: Option<PathBuf>,
        /// Where the store, volumes and snapshots live [default: /var/lib/ember].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address of the API [default: 127.0.0.1:8776].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve noauth on a non-loopback address anyway (anyone reaching it is admin).
        #[arg(long)]
        allow_remote_noauth: bool,
    },
    /// Check what this host supports and say how to get what is missing.
    Doctor {
        #[arg(long, env = "EMBER_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// One JSON object: `{"healthy": …, "checks": [{name, ok, required, detail, fix}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Print the version and the API microversions served.
    Version,
}

fn load(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Result<Config, String> {
    let mut cfg = Config::load(config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(dir) = data_dir {
        cfg.data_dir = dir;
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ember::logging::init(cli.log_format.unwrap_or_else(ember::logging::Format::detect));
    let result = match cli.command {
        Command::Serve { config, data_dir, listen, allow_remote_noauth } => {
            load(config, data_dir).and_then(|mut cfg| {
                if let Some(addr) = listen {
                    cfg.listen = addr;
                }
                cfg.auth.allow_remote_noauth |= allow_remote_noauth;
                let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("start runtime: {e}"))?;
                let result = runtime.block_on(ember::server::serve(cfg));
                // A job still copying or clearing on a blocking thread is not waited
                // for long: its journal row resumes it at the next start.
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
                result
            })
        }
        Command::Doctor { config, data_dir, json } => load(config, data_dir).and_then(|cfg| {
            let checks = ember::doctor::checks(&cfg);
            let healthy = ember::doctor::healthy(&checks);
            if json {
                let all: Vec<_> = checks.iter().map(|c| c.to_json()).collect();
                println!("{}", serde_json::json!({"healthy": healthy, "checks": all}));
            } else {
                checks.iter().for_each(|c| println!("{}", c.line()));
            }
            if healthy { Ok(()) } else { Err("what the configuration needs is missing (see above)".to_string()) }
        }),
        Command::Version => {
            println!("ember {} (Cinder API v3, microversions 3.0-3.71)", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember: {e}");
            ExitCode::FAILURE
        }
    }
}
