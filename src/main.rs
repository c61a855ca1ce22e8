//! `pexc`: the command line. Thin: parsing arguments and exit codes; the work is in the
//! library crates.

use clap::Parser;

fn main() {
    let cli = pexc::cli::Cli::parse();
    std::process::exit(pexc::cli::run(cli));
}
