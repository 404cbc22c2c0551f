//! Exit codes (contract §2) and the shape of each daemon's command line: load, run, map the
//! outcome to a code (each daemon parses its own arguments: the box without clap).
use crate::config::Problem;
use std::path::Path;

pub const EXIT_OK: i32 = 0;
/// Any other failure (a start that cannot bind, a run that fails).
pub const EXIT_FAILURE: i32 = 1;
/// Bad usage or an invalid configuration.
pub const EXIT_USAGE: i32 = 64;
/// The daemon is not reachable (`ctl`).
pub const EXIT_UNAVAILABLE: i32 = 69;

/// Runs `main_with_args` on the process's arguments and exits with its code, once the log thread
/// has written every line.
pub fn main(main_with_args: impl FnOnce(std::env::ArgsOs) -> i32) -> ! {
    let code = main_with_args(std::env::args_os());
    crate::log::flush();
    std::process::exit(code)
}

/// Contract §2: every problem on stderr, one per line, naming the key or file.
pub fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

/// Loads a configuration with `load`; every problem is printed and the code is 64.
pub fn load<S>(path: &Path, load: impl FnOnce(&Path) -> Result<S, Vec<Problem>>) -> Result<S, i32> {
    load(path).map_err(|problems| {
        print_problems(&problems);
        EXIT_USAGE
    })
}

/// `check-config`: `PATH: OK` and 0, or every problem and 64.
pub fn check_config<S>(path: &Path, loader: impl FnOnce(&Path) -> Result<S, Vec<Problem>>) -> i32 {
    match load(path, loader) {
        Ok(_) => {
            println!("{}: OK", path.display());
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// A daemon's run: 0 when it stopped as asked, else the error on stderr and 1.
pub fn ran<E: std::fmt::Display>(result: Result<(), E>) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("{e}");
            EXIT_FAILURE
        }
    }
}
