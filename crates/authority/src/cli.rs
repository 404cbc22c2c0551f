//! The authority's command line: `serve` and `check-config`, with the box's exit codes
//! (0 ok, 1 failure, 64 usage or configuration).
use crate::app::App;
use crate::snapshot::Snapshot;
use crate::store::Store;
use boxapi_core::control::socket;
use boxapi_core::daemon::exit;
use boxapi_core::daemon::reload;
use boxapi_core::daemon::start::{self, StartError};
use boxapi_core::log;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use boxapi_core::daemon::exit::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

#[derive(Parser)]
#[command(
    name = "boxapi-authority",
    version,
    about = "The operator's boxapi authority: access tokens for measurement tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authority in the foreground
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names; list all problems
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        // Help and version (exit 0) or a usage error (64), as clap prints them.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => exit::check_config(&config, Snapshot::load),
    }
}

/// Start-up failures: the kit's, and the authority's own listeners and store.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("authority.metrics_listen: {0}")]
    BindMetrics(std::io::Error),
    #[error("authority.store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn serve(config: &Path) -> i32 {
    match exit::load(config, Snapshot::load) {
        Ok(snapshot) => exit::ran(run(snapshot)),
        Err(code) => code,
    }
}

/// Start-up (state, control socket, SIGHUP, listeners) and the run until SIGTERM/SIGINT.
fn run(snapshot: Snapshot) -> Result<(), RunError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async {
        let stop = boxapi_core::control::stop_signal();
        let (initial, control) = start::prepare(&snapshot.config.common.server)?;
        reload::accepted(&snapshot);
        let dir = snapshot.config.common.server.state_dir.clone();
        let listeners = crate::server::bind(&snapshot.config.listen).map_err(StartError::Bind)?;
        let metrics_listener = match snapshot.config.authority.metrics_listen {
            Some(addr) => crate::server::bind(&[addr])
                .map_err(RunError::BindMetrics)?
                .pop(),
            None => None,
        };
        let store = Store::open(
            &snapshot.config.authority.store,
            snapshot.store_password.clone(),
            crate::app::load_shared_revocations(&dir),
            boxapi_core::time::unix_now(),
        )?;
        // Not a start condition: an authority started while Redis is down answers 503 until it
        // is up, then serves without a restart. Said once here for the operator.
        match tokio::time::timeout(Duration::from_secs(2), store.refresh()).await {
            Ok(Ok(())) => log::event("store_ready", &[("kind", store.kind())]),
            Ok(Err(e)) => log::event("store_unavailable", &[("error", &e.to_string())]),
            Err(_) => log::event("store_unavailable", &[("error", "no answer within 2 s")]),
        }
        let app = App::new(snapshot, initial, store);
        app.fleet.load(&app.snapshot());
        tokio::spawn(crate::app::follow_shared_fleet(app.clone()));
        crate::app::note_registry(&app);
        if let Some(l) = metrics_listener {
            tokio::spawn(crate::server::serve_metrics(app.clone(), l));
        }
        tokio::spawn(crate::app::save_shared_revocations(
            app.clone(),
            dir.clone(),
        ));
        let handler_app = app.clone();
        let handler = move |line: &[u8]| crate::control::execute(&handler_app, line);
        tokio::spawn(socket::serve(control, Arc::new(handler)));
        reload::watch(&app);
        // The ACME account is loaded (or created) now rather than by the first enrolment; a CA
        // that cannot be reached yet is tried again by each enrolment.
        if let Some(settings) = app.snapshot().enrolment.clone() {
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = app.issuer.account(&settings.acme).await {
                    log::event("acme_account_unavailable", &[("error", &e.to_string())]);
                }
            });
        }
        log::event("authority_started", &[]);
        crate::server::run(app, listeners, stop).await;
        Ok(())
    })
}
