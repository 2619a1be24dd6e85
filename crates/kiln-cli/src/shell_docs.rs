//! What a shell and `man` need from kiln: completion scripts and manual pages, generated
//! from the same clap definitions as `--help`, so they cannot drift from it.

use std::path::Path;

use anyhow::Result;

use crate::exit_code;

/// Writes the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> Result<()> {
    clap_complete::generate(shell, &mut command, "kiln", &mut std::io::stdout());
    Ok(())
}

/// Writes kiln.1 on stdout, or with `out_dir` kiln.1 and one page per subcommand there.
pub fn manual(command: clap::Command, out_dir: Option<&Path>) -> Result<()> {
    let Some(dir) = out_dir else {
        let stdout = Path::new("stdout");
        return clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| exit_code::output(stdout, e));
    };
    std::fs::create_dir_all(dir).map_err(|e| exit_code::output(dir, e))?;
    clap_mangen::generate_to(command, dir).map_err(|e| exit_code::output(dir, e))
}
