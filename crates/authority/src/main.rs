//! The `boxapi-authority` executable: everything lives in the library; this maps it to an exit code.
#![forbid(unsafe_code)]

fn main() {
    let code = boxapi_authority::cli::main_with_args(std::env::args_os());
    // Log lines are written by a thread: let it finish before the process ends.
    boxapi_core::log::flush();
    std::process::exit(code);
}
