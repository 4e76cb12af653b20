//! The `dr` command line: a thin layer over the `dr` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
