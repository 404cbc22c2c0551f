//! Nothing to link: the system tests (tests/) start the real `boxapi` and `boxapi-authority`
//! binaries together. They live here so that each daemon's crate passes its own tests alone.
#![forbid(unsafe_code)]
