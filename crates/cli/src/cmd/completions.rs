//! `tenure completions` and `tenure man`: shell completion scripts and man
//! pages, generated from the same clap definitions as `--help`, so they never
//! disagree with the commands.

use std::path::PathBuf;

/// Print a shell completion script for tenure.
///
/// Install it where your shell looks, for example:
///
///   tenure completions bash > ~/.local/share/bash-completion/completions/tenure
///
///   tenure completions zsh > ~/.zfunc/_tenure   (with ~/.zfunc in $fpath)
///
///   tenure completions fish > ~/.config/fish/completions/tenure.fish
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completion script of `cmd` for the shell.
pub fn run(a: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<()> {
    clap_complete::generate(a.shell, &mut cmd, "tenure", &mut std::io::stdout());
    Ok(())
}

/// Write the man pages: tenure(1) and one per command (tenure-retention(1),
/// tenure-funnel(1), ...).
///
/// Without --out, prints tenure(1) to stdout:
///
///   tenure man | man -l -
///
///   tenure man --out /usr/local/share/man/man1
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write tenure.1 and tenure-<command>.1 into (created if
    /// missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Renders the man pages of `cmd`.
pub fn man(a: ManArgs, cmd: clap::Command) -> anyhow::Result<()> {
    match a.out {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| {
                anyhow::anyhow!("cannot write the man pages to {}: {e}", dir.display())
            })?;
            let mut pages: Vec<String> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("tenure") && n.ends_with(".1"))
                .collect();
            pages.sort();
            eprintln!("wrote {} man pages to {}", pages.len(), dir.display());
        }
    }
    Ok(())
}
