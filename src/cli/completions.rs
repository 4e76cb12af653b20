//! `dr completions bash|zsh|fish|elvish|powershell` and `dr man`: generated from the clap definition itself, so
//! they always match the binary. The container image ships both (Dockerfile).

use clap::CommandFactory;
use dr::{Error, Result};

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(args: Args) -> Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "dr", &mut script);
    super::output::write_stdout(&script);
    Ok(())
}

/// Prints the man page dr(1) in roff on stdout: `dr man > /usr/share/man/man1/dr.1`, or `dr man | man -l -`.
pub fn man() -> Result<()> {
    let page = render_man().map_err(|e| Error::io("rendering the man page", e))?;
    super::output::write_stdout(&page);
    Ok(())
}

fn render_man() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    // Each command's own options, so `man dr` answers "what does `dr restore` take?" without --help.
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        page.extend_from_slice(format!(".SH \"DR {}\"\n{}\n", name.to_uppercase(), roff_escape(&about)).as_bytes());
        let args: Vec<_> = sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()).collect();
        for arg in args {
            let mut label = match (arg.get_short(), arg.get_long()) {
                (Some(s), Some(l)) => format!("\\-{s}, \\-\\-{}", roff_escape(l)),
                (None, Some(l)) => format!("\\-\\-{}", roff_escape(l)),
                (Some(s), None) => format!("\\-{s}"),
                (None, None) => format!("<{}>", arg.get_id()),
            };
            if arg.get_action().takes_values()
                && arg.get_long().is_some()
                && let Some(names) = arg.get_value_names()
            {
                let names: Vec<String> = names.iter().map(|n| format!("<{}>", roff_escape(n.as_ref()))).collect();
                label.push(' ');
                label.push_str(&names.join(" "));
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            page.extend_from_slice(format!(".TP\n\\fB{label}\\fR\n{}\n", roff_escape(&help)).as_bytes());
        }
    }
    man.render_extra_section(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// Text as roff reads it literally: backslashes doubled, hyphens escaped, no line starting with a control dot.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('-', "\\-");
    escaped
        .lines()
        .map(|line| if line.starts_with(['.', '\'']) { format!("\\&{line}") } else { line.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}
