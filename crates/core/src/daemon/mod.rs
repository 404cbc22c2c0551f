//! The daemon kit: what the box daemon and the authority run the same way, so that the two cannot
//! drift apart (command line and exit codes, start-up, snapshot and reload, connections, drain).
pub mod conn;
pub mod current;
pub mod exit;
pub mod reload;
pub mod start;

pub use current::Current;
pub use reload::{Daemon, Snapshot};
