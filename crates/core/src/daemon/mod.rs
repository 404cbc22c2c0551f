//! The daemon kit: what the box daemon and the authority run the same way (the command line's
//! shape and exit codes, start-up, the snapshot in force and its reload, each connection's
//! deadlines and the drain at shutdown), so that the two cannot drift apart.
pub mod conn;
pub mod current;
pub mod exit;
pub mod reload;
pub mod start;

pub use current::Current;
pub use reload::{Daemon, Snapshot};
