//! `spillway`: the command-line interface of a Spillway mesh.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "spillway",
    version,
    about = "Drive a Spillway edge-to-cloud serverless mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check FDL files (OSCAR/SCAR Functions Definition Language, plus Spillway's fields).
    ///
    /// Prints every problem as FILE:LINE:COL: field.path: severity: message on stderr.
    /// Exits 0 when every file is valid (warnings allowed), 1 when any has an error.
    Validate {
        /// FDL files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            match spillway_coordinator::validate::validate_files(&files, &mut out, &mut err) {
                Ok(summary) if summary.invalid == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("spillway: cannot write the report: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
