//! The `ember` command: `serve`, `doctor`, `image`, `version`.

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
    /// The image store's images: import, list, show, delete.
    Image {
        #[arg(long, env = "EMBER_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Print the version and the API microversions served.
    Version,
}

#[derive(Subcommand)]
enum ImageAction {
    /// Stores FILE (raw or qcow2, found from its bytes) as an active image.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// raw or qcow2; must match what the file holds.
        #[arg(long)]
        disk_format: Option<String>,
        /// public (the default for an operator's images), community, shared or private.
        #[arg(long, default_value = "public")]
        visibility: String,
        /// The owning project.
        #[arg(long, default_value = "admin")]
        project: String,
        #[arg(long, default_value_t = 0)]
        min_disk: u64,
        #[arg(long)]
        protected: bool,
        /// Draw the progress bar even when stderr is not a terminal.
        #[arg(long)]
        progress: bool,
        /// Print the stored record as JSON.
        #[arg(long)]
        json: bool,
    },
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
}

fn image_command(cfg: &Config, action: ImageAction) -> Result<(), String> {
    use ember::image::{Visibility, cli};
    let store = ember::image::open_store(&cfg.images, &cfg.data_dir).map_err(|e| e.to_string())?;
    match action {
        ImageAction::Import { file, name, disk_format, visibility, project, min_disk, protected, progress, json } => {
            let visibility = Visibility::parse(&visibility)
                .ok_or_else(|| format!("--visibility {visibility}: one of {:?}", Visibility::NAMES))?;
            use std::io::IsTerminal;
            let progress = progress || std::io::stderr().is_terminal();
            let req =
                cli::Import { file: &file, name, disk_format, visibility, project, min_disk, protected, progress };
            let record = cli::import(store.as_ref(), &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?);
            } else {
                println!("{}", record.id);
            }
            Ok(())
        }
        ImageAction::List => {
            cli::list_lines(store.as_ref())?.iter().for_each(|l| println!("{l}"));
            Ok(())
        }
        ImageAction::Show { id } => {
            println!("{}", cli::show(store.as_ref(), &id)?);
            Ok(())
        }
        ImageAction::Delete { id } => cli::delete(store.as_ref(), &id),
    }
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
        Command::Image { config, data_dir, action } => {
            load(config, data_dir).and_then(|cfg| image_command(&cfg, action))
        }
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
