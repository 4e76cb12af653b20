//! `dr keygen [--output FILE]`

use std::io::Write;
use std::path::PathBuf;

use dr::{Error, KeyPair, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the identity (private key) here, mode 0600; without it the identity goes to stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let key = KeyPair::generate();
    let stdout_error = |e| Error::io("writing to stdout", e);
    match args.output {
        Some(path) => {
            key.write_identity_file(&path)?;
            errln!(
                "wrote the identity to {} (keep it off the backed-up host; it is needed to restore)",
                path.display()
            );
            errln!("public recipient, for [encryption] recipients:");
            writeln!(std::io::stdout(), "{}", key.recipient()).map_err(stdout_error)
        }
        None => {
            errln!("public recipient: {}", key.recipient());
            write!(std::io::stdout(), "{}", key.identity_file_contents()).map_err(stdout_error)
        }
    }
}
