//! `armitage`: a Nix daemon and store tool compatible with CppNix. This
//! binary is argument parsing and glue; the work is in the `store` crate.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The build child (the daemon starts its own executable to become a
    // builder): not a user command, so not part of the parsed interface.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__build-child") {
        let spec = argv.next().unwrap_or_default();
        armitage::build::child::run(std::path::Path::new(&spec));
    }
    let args = cli::Cli::parse();
    cli::init_logging(args.global.verbose);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            // One line: what failed, on what, why (the causes, innermost last).
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
            }
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
