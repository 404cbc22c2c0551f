//! What both daemons do first, before any listener opens: the state directory, the persisted
//! control state, the control socket.
use crate::config;
use crate::control::{socket, state, State};
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("state_dir {0}: {1}")]
    StateDir(String, std::io::Error),
    #[error(transparent)]
    Control(#[from] socket::BindError),
    #[error("listen: {0}")]
    Bind(std::io::Error),
}

/// Creates `state_dir`, loads the persisted control state and binds the control socket (which
/// refuses to take over a running daemon's). Must run inside the runtime.
pub fn prepare(server: &config::Server) -> Result<(State, UnixListener), StartError> {
    let dir = &server.state_dir;
    crate::files::create_dir_durable(dir)
        .map_err(|e| StartError::StateDir(dir.display().to_string(), e.source))?;
    // Before anything of this process writes there (files::remove_stale_staging).
    let stale = crate::files::remove_stale_staging(dir);
    if stale > 0 {
        crate::log::event(
            "staging_removed",
            &[
                ("dir", &dir.display().to_string()),
                ("files", &stale.to_string()),
            ],
        );
    }
    let initial = state::load_at_start(dir);
    let control = socket::bind(&server.control_socket)?;
    Ok((initial, control))
}
